//! ksqlDB's lambda functions over arrays and maps, as DataFusion higher-order functions:
//!
//! - `TRANSFORM(array, x => ...)` → an array; `TRANSFORM(map, (k, v) => new_key, (k, v) =>
//!   new_value)` → a map;
//! - `FILTER(array, x => ...)` / `FILTER(map, (k, v) => ...)` keep the elements (entries) for
//!   which the lambda is true (NULL counts as false);
//! - `REDUCE(array, initial, (s, x) => ...)` / `REDUCE(map, initial, (s, k, v) => ...)` fold
//!   the elements in order into a state typed as the lambda's result (the initial value is
//!   cast to it).
//!
//! NULLs as in ksqlDB: a NULL collection gives NULL (REDUCE: the initial state); a NULL
//! initial state gives NULL. A lambda's body runs once per batch over every element of every
//! row (REDUCE: once per element position), and may use the row's other columns.
//!
//! ksqlDB writes `x => body` and `(a, b) => body`; sqlparser reads `x => body` inside a call
//! as a named argument, so the statement's text keeps that form (`sql::lambda` turns `(a, b)
//! =>` into the one-name form `"(a,b)" =>`) and [`plan_sql`] turns such arguments into
//! DataFusion lambdas just before planning.

use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, AsArray, BooleanArray, ListArray, MapArray, StructArray, UInt32Array};
use datafusion::arrow::buffer::{NullBuffer, OffsetBuffer};
use datafusion::arrow::compute::{cast, filter, interleave, prep_null_mask_filter, take, take_arrays};
use datafusion::arrow::datatypes::{DataType, Field, FieldRef, Fields};
use datafusion::common::{exec_err, plan_err, Result};
use datafusion::dataframe::DataFrame;
use datafusion::execution::context::SessionContext;
use datafusion::logical_expr::{
    ColumnarValue, HigherOrderFunctionArgs, HigherOrderReturnFieldArgs, HigherOrderSignature, HigherOrderUDF,
    HigherOrderUDFImpl, LambdaArgument, LambdaParametersProgress, LogicalPlan, ValueOrLambda, Volatility,
};
use datafusion::sql::parser::{DFParserBuilder, Statement as DFStatement};
use datafusion::sql::sqlparser::ast::{self, VisitMut, VisitorMut};
use datafusion::sql::sqlparser::dialect::GenericDialect;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Kind {
    Transform,
    Filter,
    Reduce,
}

#[derive(Debug, PartialEq, Eq, Hash)]
struct KsqlLambda {
    kind: Kind,
    name: &'static str,
    signature: HigherOrderSignature,
}

/// TRANSFORM, FILTER and REDUCE, to register in every session.
pub fn functions() -> Vec<Arc<HigherOrderUDF>> {
    [(Kind::Transform, "transform"), (Kind::Filter, "filter"), (Kind::Reduce, "reduce")]
        .into_iter()
        .map(|(kind, name)| {
            Arc::new(HigherOrderUDF::new_from_impl(KsqlLambda {
                kind,
                name,
                signature: HigherOrderSignature::variadic_any(Volatility::Immutable),
            }))
        })
        .collect()
}

/// Plans a statement's text as `SessionContext::sql` does, reading ksqlDB's lambdas (named
/// arguments `x => ...` of a call) as lambdas.
pub async fn plan_sql(ctx: &SessionContext, sql: &str) -> Result<DataFrame> {
    let plan = logical_plan(ctx, sql).await?;
    ctx.execute_logical_plan(plan).await
}

/// The logical plan of a statement's text (`SessionState::create_logical_plan`), lambdas read.
pub async fn logical_plan(ctx: &SessionContext, sql: &str) -> Result<LogicalPlan> {
    let state = ctx.state();
    if !sql.contains("=>") {
        return state.create_logical_plan(sql).await;
    }
    let lists = crate::sql::rewrite_lambda_parameter_lists(sql);
    let sql = lists.as_deref().unwrap_or(sql);
    let mut statement = DFParserBuilder::new(sql).with_dialect(&GenericDialect {}).build()?.parse_statement()?;
    if let DFStatement::Statement(s) = &mut statement {
        let _ = s.visit(&mut ArgumentsToLambdas);
    }
    state.statement_to_plan(statement).await
}

/// Turns each `name => body` argument of a call into the lambda `name -> body`; a name
/// `(a,b)` (quoted: `sql::lambda`) declares several parameters.
struct ArgumentsToLambdas;

impl VisitorMut for ArgumentsToLambdas {
    type Break = ();

    fn post_visit_expr(&mut self, expr: &mut ast::Expr) -> std::ops::ControlFlow<()> {
        let ast::Expr::Function(f) = expr else { return std::ops::ControlFlow::Continue(()) };
        let ast::FunctionArguments::List(list) = &mut f.args else { return std::ops::ControlFlow::Continue(()) };
        for arg in &mut list.args {
            let ast::FunctionArg::Named { name, arg: ast::FunctionArgExpr::Expr(body), operator } = arg else {
                continue;
            };
            if *operator != ast::FunctionArgOperator::RightArrow {
                continue;
            }
            let params = lambda_parameters(name);
            let lambda = ast::Expr::Lambda(ast::LambdaFunction {
                params: if params.len() == 1 {
                    ast::OneOrManyWithParens::One(params.into_iter().next().expect("one"))
                } else {
                    ast::OneOrManyWithParens::Many(params)
                },
                body: Box::new(std::mem::replace(body, ast::Expr::value(ast::Value::Null))),
                syntax: ast::LambdaSyntax::Arrow,
            });
            *arg = ast::FunctionArg::Unnamed(ast::FunctionArgExpr::Expr(lambda));
        }
        std::ops::ControlFlow::Continue(())
    }
}

fn lambda_parameters(name: &ast::Ident) -> Vec<ast::LambdaFunctionParameter> {
    let parameter = |text: &str| ast::LambdaFunctionParameter { name: ast::Ident::new(text.trim()), data_type: None };
    match name.value.strip_prefix('(').and_then(|s| s.strip_suffix(')')) {
        Some(list) if name.quote_style.is_some() => list.split(',').map(parameter).collect(),
        _ => vec![ast::LambdaFunctionParameter { name: name.clone(), data_type: None }],
    }
}

/// An ARRAY or MAP argument, its elements as one flat array (entries of every row in order).
struct Elements {
    /// Per row, where its elements start in the flat arrays (rebased to 0).
    offsets: OffsetBuffer<i32>,
    nulls: Option<NullBuffer>,
    /// The array's elements, or the map's keys.
    values: ArrayRef,
    /// The map's values.
    map_values: Option<ArrayRef>,
}

impl Elements {
    fn of(name: &str, array: &ArrayRef) -> Result<Elements> {
        match array.data_type() {
            DataType::List(_) => {
                let list = array.as_list::<i32>();
                let (start, end) = (list.offsets()[0] as usize, list.offsets()[list.len()] as usize);
                Ok(Elements {
                    offsets: rebased(list.offsets()),
                    nulls: list.nulls().cloned(),
                    values: list.values().slice(start, end - start),
                    map_values: None,
                })
            }
            DataType::Map(_, _) => {
                let map = array.as_map();
                let (start, end) = (map.offsets()[0] as usize, map.offsets()[map.len()] as usize);
                Ok(Elements {
                    offsets: rebased(map.offsets()),
                    nulls: map.nulls().cloned(),
                    values: map.keys().slice(start, end - start),
                    map_values: Some(map.values().slice(start, end - start)),
                })
            }
            other => exec_err!("{}: expected an ARRAY or a MAP, got {other}", name.to_uppercase()),
        }
    }

    /// For each element, the row it belongs to (to spread a lambda's captured columns).
    fn rows(&self) -> UInt32Array {
        let mut rows = Vec::with_capacity(self.values.len());
        for (row, w) in self.offsets.windows(2).enumerate() {
            rows.extend(std::iter::repeat_n(row as u32, (w[1] - w[0]) as usize));
        }
        UInt32Array::from(rows)
    }

    /// Evaluates a lambda over every element: `(x)` for arrays, `(k, v)` for maps.
    fn apply(&self, lambda: &LambdaArgument) -> Result<ArrayRef> {
        let rows = self.rows();
        let keys = || Ok(Arc::clone(&self.values));
        let values =
            || self.map_values.clone().ok_or_else(|| datafusion::common::DataFusionError::Plan("no map values".into()));
        let spread = |captured: &[ArrayRef]| Ok(take_arrays(captured, &rows, None)?);
        lambda.evaluate(&[&keys, &values], spread)?.into_array(self.values.len())
    }
}

fn rebased(offsets: &OffsetBuffer<i32>) -> OffsetBuffer<i32> {
    let first = offsets[0];
    OffsetBuffer::new(offsets.iter().map(|o| o - first).collect::<Vec<_>>().into())
}

fn element_fields(name: &str, collection: &DataType) -> Result<Vec<FieldRef>> {
    match collection {
        DataType::List(f) => Ok(vec![Arc::new(Field::new("x", f.data_type().clone(), true))]),
        DataType::Map(entries, _) => match entries.data_type() {
            DataType::Struct(kv) if kv.len() == 2 => Ok(vec![
                Arc::new(Field::new("k", kv[0].data_type().clone(), true)),
                Arc::new(Field::new("v", kv[1].data_type().clone(), true)),
            ]),
            other => plan_err!("{}: unexpected map entries {other}", name.to_uppercase()),
        },
        DataType::Null => Ok(vec![Arc::new(Field::new("x", DataType::Null, true))]),
        other => plan_err!("{}: expected an ARRAY or a MAP as first argument, got {other}", name.to_uppercase()),
    }
}

impl KsqlLambda {
    fn usage(&self) -> &'static str {
        match self.kind {
            Kind::Transform => "TRANSFORM(array, x => ...) or TRANSFORM(map, (k, v) => key, (k, v) => value)",
            Kind::Filter => "FILTER(array, x => ...) or FILTER(map, (k, v) => ...)",
            Kind::Reduce => "REDUCE(array, initial, (s, x) => ...) or REDUCE(map, initial, (s, k, v) => ...)",
        }
    }

    /// Checks the shape of the call: value and lambda positions, and the lambda count a map
    /// or an array takes.
    fn check_shape<V, L>(&self, args: &[ValueOrLambda<V, L>], collection: &DataType) -> Result<()> {
        let is_map = matches!(collection, DataType::Map(_, _));
        let lambdas = args.iter().filter(|a| matches!(a, ValueOrLambda::Lambda(_))).count();
        let values = args.len() - lambdas;
        let ok = match self.kind {
            Kind::Transform => values == 1 && lambdas == if is_map { 2 } else { 1 },
            Kind::Filter => values == 1 && lambdas == 1,
            Kind::Reduce => values == 2 && lambdas == 1 && matches!(args.get(2), Some(ValueOrLambda::Lambda(_))),
        };
        if !ok || !matches!(args.first(), Some(ValueOrLambda::Value(_))) {
            return plan_err!("{}: expected {}", self.name.to_uppercase(), self.usage());
        }
        Ok(())
    }
}

impl HigherOrderUDFImpl for KsqlLambda {
    fn name(&self) -> &str {
        self.name
    }

    fn signature(&self) -> &HigherOrderSignature {
        &self.signature
    }

    fn lambda_parameters(
        &self,
        _step: usize,
        fields: &[ValueOrLambda<FieldRef, Option<FieldRef>>],
    ) -> Result<LambdaParametersProgress> {
        let Some(ValueOrLambda::Value(collection)) = fields.first() else {
            return plan_err!("{}: expected {}", self.name.to_uppercase(), self.usage());
        };
        self.check_shape(fields, collection.data_type())?;
        let elements = element_fields(self.name, collection.data_type())?;
        match self.kind {
            Kind::Transform if elements.len() == 2 => {
                Ok(LambdaParametersProgress::Complete(vec![elements.clone(), elements]))
            }
            Kind::Transform | Kind::Filter => Ok(LambdaParametersProgress::Complete(vec![elements])),
            Kind::Reduce => {
                // The state is typed as the lambda's result: first planned with the initial
                // value's type, then with what the lambda gives.
                let state = match (&fields[1], &fields[2]) {
                    (_, ValueOrLambda::Lambda(Some(out))) => Arc::new(Field::new("s", out.data_type().clone(), true)),
                    (ValueOrLambda::Value(initial), _) => {
                        let params =
                            [vec![Arc::new(Field::new("s", initial.data_type().clone(), true))], elements].concat();
                        return Ok(LambdaParametersProgress::Partial(vec![Some(params)]));
                    }
                    _ => return plan_err!("REDUCE: expected {}", self.usage()),
                };
                Ok(LambdaParametersProgress::Complete(vec![[vec![state], elements].concat()]))
            }
        }
    }

    fn coerce_values_for_lambdas(&self, fields: &[ValueOrLambda<DataType, DataType>]) -> Result<Option<Vec<DataType>>> {
        match (self.kind, fields) {
            (Kind::Reduce, [ValueOrLambda::Value(c), ValueOrLambda::Value(initial), ValueOrLambda::Lambda(out)])
                if initial != out =>
            {
                Ok(Some(vec![c.clone(), out.clone()]))
            }
            _ => Ok(None),
        }
    }

    fn return_field_from_args(&self, args: HigherOrderReturnFieldArgs) -> Result<FieldRef> {
        let fields = args.arg_fields;
        let Some(ValueOrLambda::Value(collection)) = fields.first() else {
            return plan_err!("{}: expected {}", self.name.to_uppercase(), self.usage());
        };
        self.check_shape(fields, collection.data_type())?;
        let lambda = |i: usize| match fields.get(i) {
            Some(ValueOrLambda::Lambda(f)) => Ok(f.data_type().clone()),
            _ => plan_err!("{}: expected {}", self.name.to_uppercase(), self.usage()),
        };
        let ty = match (self.kind, collection.data_type()) {
            (Kind::Transform, DataType::List(_)) => DataType::List(Arc::new(Field::new_list_field(lambda(1)?, true))),
            (Kind::Transform, DataType::Map(_, _)) => {
                let kv =
                    Fields::from(vec![Field::new("key", lambda(1)?, false), Field::new("value", lambda(2)?, true)]);
                DataType::Map(Arc::new(Field::new("entries", DataType::Struct(kv), false)), false)
            }
            (Kind::Filter, t) => {
                if lambda(1)? != DataType::Boolean && lambda(1)? != DataType::Null {
                    return plan_err!("FILTER: the lambda must give a BOOLEAN, not {}", lambda(1)?);
                }
                t.clone()
            }
            (Kind::Reduce, _) => lambda(2)?,
            (_, t) => t.clone(),
        };
        Ok(Arc::new(Field::new(self.name, ty, true)))
    }

    fn invoke_with_args(&self, args: HigherOrderFunctionArgs) -> Result<ColumnarValue> {
        let n = args.number_rows;
        let return_type = args.return_type().clone();
        let mut values = Vec::new();
        let mut lambdas = Vec::new();
        for arg in &args.args {
            match arg {
                ValueOrLambda::Value(v) => values.push(v.to_array(n)?),
                ValueOrLambda::Lambda(l) => lambdas.push(l),
            }
        }
        let Some(collection) = values.first() else { return exec_err!("{}: no arguments", self.name) };
        if collection.data_type() == &DataType::Null {
            return Ok(ColumnarValue::Array(datafusion::arrow::array::new_null_array(&return_type, n)));
        }
        let elements = Elements::of(self.name, collection)?;
        let out: ArrayRef = match (self.kind, lambdas.as_slice()) {
            (Kind::Transform, [lambda]) => {
                let DataType::List(field) = &return_type else { return exec_err!("TRANSFORM: bad return type") };
                let transformed = elements.apply(lambda)?;
                Arc::new(ListArray::try_new(field.clone(), elements.offsets, transformed, elements.nulls)?)
            }
            (Kind::Transform, [key, value]) => {
                let DataType::Map(entries, _) = &return_type else { return exec_err!("TRANSFORM: bad return type") };
                let DataType::Struct(kv) = entries.data_type() else { return exec_err!("TRANSFORM: bad return type") };
                let keys = elements.apply(key)?;
                if keys.null_count() > 0 {
                    return exec_err!("TRANSFORM: a map key may not be NULL");
                }
                let values = elements.apply(value)?;
                let entries_array = StructArray::try_new(kv.clone(), vec![keys, values], None)?;
                Arc::new(MapArray::try_new(entries.clone(), elements.offsets, entries_array, elements.nulls, false)?)
            }
            (Kind::Filter, [lambda]) => {
                let keep = elements.apply(lambda)?;
                let keep = match keep.data_type() {
                    DataType::Boolean => keep.as_boolean().clone(),
                    _ => BooleanArray::from(vec![false; keep.len()]),
                };
                let keep = if keep.null_count() > 0 { prep_null_mask_filter(&keep) } else { keep };
                let mut offsets = Vec::with_capacity(n + 1);
                offsets.push(0i32);
                for w in elements.offsets.windows(2) {
                    let kept = (w[0]..w[1]).filter(|&i| keep.value(i as usize)).count() as i32;
                    offsets.push(offsets.last().copied().unwrap_or(0) + kept);
                }
                let offsets = OffsetBuffer::new(offsets.into());
                match &return_type {
                    DataType::List(field) => {
                        let kept = filter(&elements.values, &keep)?;
                        Arc::new(ListArray::try_new(field.clone(), offsets, kept, elements.nulls)?)
                    }
                    DataType::Map(entries, _) => {
                        let DataType::Struct(kv) = entries.data_type() else { return exec_err!("FILTER: bad map") };
                        let map_values = elements.map_values.clone().unwrap_or_else(|| Arc::clone(&elements.values));
                        let kept = StructArray::try_new(
                            kv.clone(),
                            vec![filter(&elements.values, &keep)?, filter(&map_values, &keep)?],
                            None,
                        )?;
                        Arc::new(MapArray::try_new(entries.clone(), offsets, kept, elements.nulls, false)?)
                    }
                    other => return exec_err!("FILTER: unexpected type {other}"),
                }
            }
            (Kind::Reduce, [lambda]) => reduce(&elements, &values[1], lambda, &return_type)?,
            _ => return exec_err!("{}: expected {}", self.name.to_uppercase(), self.usage()),
        };
        Ok(ColumnarValue::Array(out))
    }
}

/// Folds each row's elements into its state, one element position at a time over all rows
/// that still have elements.
fn reduce(elements: &Elements, initial: &ArrayRef, lambda: &LambdaArgument, state_type: &DataType) -> Result<ArrayRef> {
    let mut state = if initial.data_type() == state_type { Arc::clone(initial) } else { cast(initial, state_type)? };
    let lengths: Vec<usize> = (0..state.len())
        .map(|r| {
            let null_row = elements.nulls.as_ref().is_some_and(|n| n.is_null(r)) || state.is_null(r);
            if null_row {
                0
            } else {
                (elements.offsets[r + 1] - elements.offsets[r]) as usize
            }
        })
        .collect();
    let longest = lengths.iter().copied().max().unwrap_or(0);
    for position in 0..longest {
        let rows: Vec<u32> = (0..lengths.len()).filter(|&r| lengths[r] > position).map(|r| r as u32).collect();
        let element: UInt32Array =
            rows.iter().map(|&r| elements.offsets[r as usize] as u32 + position as u32).collect();
        let rows = UInt32Array::from(rows);
        let acc = take(&state, &rows, None)?;
        let x = take(&elements.values, &element, None)?;
        let v = match &elements.map_values {
            Some(values) => Some(take(values, &element, None)?),
            None => None,
        };
        let (acc_fn, x_fn) = (|| Ok(Arc::clone(&acc)), || Ok(Arc::clone(&x)));
        let v_fn = || v.clone().ok_or_else(|| datafusion::common::DataFusionError::Plan("no map values".into()));
        let spread = |captured: &[ArrayRef]| Ok(take_arrays(captured, &rows, None)?);
        let next = lambda.evaluate(&[&acc_fn, &x_fn, &v_fn], spread)?.into_array(rows.len())?;
        let next = if next.data_type() == state_type { next } else { cast(&next, state_type)? };
        // Rows with an element at this position take the lambda's result, the others keep
        // their state.
        let mut picks = Vec::with_capacity(state.len());
        let mut j = 0;
        for r in 0..state.len() {
            if j < rows.len() && rows.value(j) as usize == r {
                picks.push((1, j));
                j += 1;
            } else {
                picks.push((0, r));
            }
        }
        state = interleave(&[state.as_ref(), next.as_ref()], &picks)?;
    }
    Ok(state)
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::util::display::array_value_to_string;

    async fn one(sql: &str) -> Result<String> {
        let ctx = SessionContext::new();
        crate::functions::register(&ctx);
        let batches = plan_sql(&ctx, sql).await?.collect().await?;
        let column = batches[0].column(0);
        // NULL shows as nothing.
        Ok((0..column.len()).map(|i| array_value_to_string(column, i).unwrap()).collect::<Vec<_>>().join(" | "))
    }

    #[tokio::test]
    async fn transform_filter_and_reduce_arrays() {
        assert_eq!(one("SELECT transform([1, 2, 3], x => x * 10)").await.unwrap(), "[10, 20, 30]");
        assert_eq!(one("SELECT filter([1, 2, 3, 4], x => x % 2 = 0)").await.unwrap(), "[2, 4]");
        assert_eq!(one("SELECT reduce([1, 2, 3], 10, \"(s,x)\" => s + x)").await.unwrap(), "16");
        // The state takes the lambda's type: an integer start, a DOUBLE sum.
        assert_eq!(one("SELECT reduce([1.5, 2.5], 0, \"(s,x)\" => s + x)").await.unwrap(), "4.0");
        // NULL elements reach the lambda; NULL predicates drop the element.
        assert_eq!(one("SELECT filter([1, NULL, 3], x => x > 1)").await.unwrap(), "[3]");
    }

    #[tokio::test]
    async fn nulls_and_captured_columns() {
        let sql =
            "SELECT transform(a, x => x + k) FROM (VALUES ([1, 2], 10), (NULL, 20), ([], 30), ([5], 40)) AS t(a, k)";
        assert_eq!(one(sql).await.unwrap(), "[11, 12] |  | [] | [45]");
        let sql = "SELECT reduce(a, k, \"(s,x)\" => s * x) FROM (VALUES ([1, 2, 3], 1), (NULL, 20), ([4], NULL), ([2, 5], 3)) AS t(a, k)";
        assert_eq!(one(sql).await.unwrap(), "6 | 20 |  | 30");
    }

    #[tokio::test]
    async fn maps() {
        let m = "map(['a', 'b', 'c'], [1, 2, 3])";
        assert_eq!(
            one(&format!("SELECT transform({m}, \"(k,v)\" => upper(k), \"(k,v)\" => v * 2)")).await.unwrap(),
            "{A: 2, B: 4, C: 6}"
        );
        assert_eq!(one(&format!("SELECT filter({m}, \"(k,v)\" => v <> 2)")).await.unwrap(), "{a: 1, c: 3}");
        assert_eq!(one(&format!("SELECT reduce({m}, '', \"(s,k,v)\" => s || k)")).await.unwrap(), "abc");
    }

    #[tokio::test]
    async fn wrong_shapes_are_refused() {
        let e = one("SELECT transform([1], x => x, x => x)").await.unwrap_err().to_string();
        assert!(e.contains("TRANSFORM: expected"), "{e}");
        let e = one("SELECT filter([1], x => x + 1)").await.unwrap_err().to_string();
        assert!(e.contains("must give a BOOLEAN"), "{e}");
        let e = one("SELECT reduce(1, 0, \"(s,x)\" => s)").await.unwrap_err().to_string();
        assert!(e.contains("ARRAY or a MAP"), "{e}");
    }
}
