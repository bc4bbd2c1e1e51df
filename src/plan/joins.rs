//! The joins of a continuous query: reading DataFusion's `Join` nodes into the operators'
//! plans (stream–table lookups, stream–stream interval joins, table–table joins) and the
//! key of a join's result as ksqlDB keys it. `plan_continuous` (in `mod.rs`) calls these.

use super::*;

/// Reads `s JOIN t1 ON ... JOIN t2 ON ...`: each join adds one table to the stream's rows.
pub(super) fn lookup_chain(
    node: &LogicalPlan,
    stream: &RelationDef,
    tables: &[&RelationDef],
    phys: &Phys<'_>,
) -> Result<Vec<(JoinPlan, String)>> {
    match skip_alias(node) {
        LogicalPlan::TableScan(s) if s.table_name.table() == stream.name => Ok(Vec::new()),
        LogicalPlan::Join(j) => {
            let mut chain = lookup_chain(&j.left, stream, tables, phys)?;
            let right = match skip_alias(&j.right) {
                LogicalPlan::TableScan(s) => tables.iter().find(|t| t.name == s.table_name.table()),
                _ => None,
            };
            let Some(table) = right else {
                return Err(EddyError::NotImplemented(
                    "in a join of several inputs, each JOIN adds a table to the stream (FROM stream JOIN t1 ON ... JOIN t2 ON ...)".into(),
                ));
            };
            chain.push(join_plan(j, table, phys)?);
            Ok(chain)
        }
        other => Err(unsupported(other)),
    }
}

/// The kind of a join of two scans (of two streams or two tables).
pub(super) fn two_input_join_kind(j: &Join, what: &str) -> Result<JoinKind> {
    for side in [&j.left, &j.right] {
        if !matches!(skip_alias(side), LogicalPlan::TableScan(_)) {
            return Err(EddyError::NotImplemented("joins of more than two inputs in a continuous query".into()));
        }
    }
    match j.join_type {
        JoinType::Inner => Ok(JoinKind::Inner),
        JoinType::Left => Ok(JoinKind::Left),
        JoinType::Full => Ok(JoinKind::Full),
        t => Err(EddyError::NotImplemented(format!(
            "{t} JOIN of two {what} (supported: INNER, LEFT, FULL OUTER; swap the sides for RIGHT)"
        ))),
    }
}

/// Reads `a [LEFT|FULL] JOIN b WITHIN ... ON a.x = b.y [AND ...]` between two streams.
pub(super) fn interval_join_plan(
    j: &Join,
    left: &RelationDef,
    right: &RelationDef,
    window: JoinWindow,
    phys: &Phys<'_>,
) -> Result<(IntervalJoinPlan, String)> {
    let kind = two_input_join_kind(j, "streams")?;
    let pairs = equi_pairs(j)?;
    let refers_to = |e: &Expr, side: &LogicalPlan| {
        let cols = e.column_refs();
        !cols.is_empty() && cols.iter().all(|c| side.schema().has_column(c))
    };
    let (mut left_keys, mut right_keys) = (Vec::new(), Vec::new());
    for (a, b) in pairs {
        let (l, r) = if refers_to(&a, &j.left) && refers_to(&b, &j.right) {
            (a, b)
        } else if refers_to(&b, &j.left) && refers_to(&a, &j.right) {
            (b, a)
        } else {
            return Err(EddyError::InvalidValue(format!(
                "join condition {a} = {b} must compare an expression of {} with one of {}",
                left.name, right.name
            )));
        };
        left_keys.push(phys(&l, &j.left)?);
        right_keys.push(phys(&r, &j.right)?);
    }
    if left_keys.is_empty() {
        return Err(EddyError::InvalidValue("a join needs an equality in ON (a join without a key)".into()));
    }
    let rowtime = |rel: &RelationDef| {
        if crate::plan::pseudo_columns(rel).is_empty() {
            Err(EddyError::InvalidValue(format!(
                "{} has its own ROWTIME column; a stream join needs event time",
                rel.name
            )))
        } else {
            Ok(rel.columns.len())
        }
    };
    let line = format!(
        "IntervalJoinOperator({kind:?}, within -{}ms..+{}ms, grace={}ms, state=RocksDB)",
        window.before_ms, window.after_ms, window.grace_ms
    );
    let plan = IntervalJoinPlan {
        right: right.clone(),
        kind,
        left_keys,
        right_keys,
        window,
        left_rowtime: rowtime(left)?,
        right_rowtime: rowtime(right)?,
    };
    Ok((plan, line))
}

/// Reads `a [LEFT|FULL] JOIN b ON a.col = b.pk` between two tables.
pub(super) fn table_join_plan(j: &Join, left: &RelationDef, right: &RelationDef) -> Result<(TableJoinPlan, String)> {
    let kind = two_input_join_kind(j, "tables")?;
    let column_of = |e: &Expr, side: &LogicalPlan, rel: &RelationDef| -> Option<usize> {
        let c = match e {
            Expr::Column(c) => c,
            Expr::Cast(cast) => match cast.expr.as_ref() {
                Expr::Column(c) => c,
                _ => return None,
            },
            _ => return None,
        };
        side.schema().has_column(c).then(|| rel.columns.iter().position(|rc| rc.name == c.name)).flatten()
    };
    let mut by_key: Vec<Option<usize>> = vec![None; right.columns.len()];
    for (a, b) in equi_pairs(j)? {
        let pair = match (column_of(&a, &j.left, left), column_of(&b, &j.right, right)) {
            (Some(l), Some(r)) => (l, r),
            _ => match (column_of(&b, &j.left, left), column_of(&a, &j.right, right)) {
                (Some(l), Some(r)) => (l, r),
                _ => {
                    return Err(EddyError::InvalidValue(format!(
                        "a table–table join compares columns: {a} = {b} must name a column of {} and one of {}",
                        left.name, right.name
                    )))
                }
            },
        };
        if !right.columns[pair.1].key {
            return Err(EddyError::InvalidValue(format!(
                "a table–table join must use {}'s PRIMARY KEY: {} is not a key column",
                right.name, right.columns[pair.1].name
            )));
        }
        by_key[pair.1] = Some(pair.0);
    }
    let mut left_key_columns = Vec::new();
    for (c, l) in right.columns.iter().zip(&by_key) {
        match (c.key, l) {
            (true, Some(l)) => left_key_columns.push(*l),
            (true, None) => {
                return Err(EddyError::InvalidValue(format!(
                    "the join with table {} needs an equality on its PRIMARY KEY column {}",
                    right.name, c.name
                )))
            }
            _ => {}
        }
    }
    let foreign = left_key_columns.iter().any(|&i| !left.columns[i].key);
    let line =
        format!("TableJoinOperator({kind:?}, {} key, state=RocksDB)", if foreign { "foreign" } else { "primary" });
    Ok((TableJoinPlan { right: right.clone(), kind, left_key_columns }, line))
}

/// The equalities of a join's ON clause; anything else is refused.
pub(super) fn equi_pairs(j: &Join) -> Result<Vec<(Expr, Expr)>> {
    let mut pairs: Vec<(Expr, Expr)> = j.on.clone();
    if let Some(f) = &j.filter {
        for conj in split_conjunction(f) {
            match conj {
                Expr::BinaryExpr(b) if b.op == Operator::Eq => pairs.push((*b.left.clone(), *b.right.clone())),
                other => {
                    return Err(EddyError::NotImplemented(format!(
                        "join condition {other}: continuous joins are equalities (put other conditions in WHERE)"
                    )))
                }
            }
        }
    }
    Ok(pairs)
}

/// Reads `stream [LEFT] JOIN table ON stream.x = table.pk`: the ON clause must give every
/// primary-key column of the table an equality with the stream.
pub(super) fn join_plan(j: &Join, table: &RelationDef, phys: &Phys<'_>) -> Result<(JoinPlan, String)> {
    let side_is_table = |p: &LogicalPlan| match skip_alias(p) {
        LogicalPlan::TableScan(s) => s.table_name.table() == table.name,
        _ => false,
    };
    let stream_first = !side_is_table(&j.left);
    let (stream_side, table_side) = if stream_first { (&j.left, &j.right) } else { (&j.right, &j.left) };
    if !matches!(skip_alias(table_side), LogicalPlan::TableScan(_)) {
        return Err(EddyError::NotImplemented(format!("a join whose {} side is not a table", table.name)));
    }
    let left_outer = match (j.join_type, stream_first) {
        (JoinType::Inner, _) => false,
        (JoinType::Left, true) | (JoinType::Right, false) => true,
        (t, _) => {
            return Err(EddyError::NotImplemented(format!(
                "{t} JOIN between a stream and a table (supported: INNER and LEFT, stream on the left)"
            )))
        }
    };
    let pairs = equi_pairs(j)?;
    let refers_to = |e: &Expr, side: &LogicalPlan| {
        let cols = e.column_refs();
        !cols.is_empty() && cols.iter().all(|c| side.schema().has_column(c))
    };
    let mut by_key: Vec<Option<Expr>> = vec![None; table.columns.len()];
    for (a, b) in pairs {
        let (s, t) = if refers_to(&a, stream_side) && refers_to(&b, table_side) {
            (a, b)
        } else if refers_to(&b, stream_side) && refers_to(&a, table_side) {
            (b, a)
        } else {
            return Err(EddyError::InvalidValue(format!(
                "join condition {a} = {b} must compare a stream expression with a column of table {}",
                table.name
            )));
        };
        let key_column = match &t {
            Expr::Column(c) => table.columns.iter().position(|tc| tc.key && tc.name == c.name),
            Expr::Cast(c) => match c.expr.as_ref() {
                Expr::Column(c) => table.columns.iter().position(|tc| tc.key && tc.name == c.name),
                _ => None,
            },
            _ => None,
        };
        let Some(k) = key_column else {
            return Err(EddyError::InvalidValue(format!(
                "a stream–table join must use the table's PRIMARY KEY: {t} is not a key column of {}",
                table.name
            )));
        };
        by_key[k] = Some(s);
    }
    let mut stream_keys = Vec::new();
    for (c, e) in table.columns.iter().zip(&by_key) {
        match (c.key, e) {
            (true, Some(e)) => stream_keys.push(phys(e, stream_side)?),
            (true, None) => {
                return Err(EddyError::InvalidValue(format!(
                    "the join with table {} needs an equality on its PRIMARY KEY column {}",
                    table.name, c.name
                )))
            }
            _ => {}
        }
    }
    let line = format!(
        "JoinOperator({} stream–table, lookup {} by primary key, state=RocksDB)",
        if left_outer { "LEFT" } else { "INNER" },
        table.name
    );
    let schema = Arc::new(j.schema.as_arrow().clone());
    Ok((JoinPlan { table: table.clone(), left_outer, stream_keys, stream_first, schema }, line))
}

/// The key of a projection's result, as ksqlDB keys it: for each key column, the indices in
/// `top_input`'s schema of the columns that hold it (selecting any one keys the result by it).
/// - one stream or table: its key columns;
/// - stream–table join: the stream's side of the ON equalities (the stream is re-keyed by the
///   join column when that is not its key), or the table's key column in an INNER join;
/// - stream–stream join: the left side's join columns (or the right's in an INNER join); a
///   FULL OUTER join none;
/// - table–table join: the left table's PRIMARY KEY (a primary-key join's right key too when
///   INNER; a foreign-key join's result stays keyed by the left table's key).
///
/// A join on expressions that are not columns has no key here (ksqlDB gives it a synthetic
/// `ROWKEY`).
pub(super) fn result_key_slots(
    input_plan: &LogicalPlan,
    source: &RelationDef,
    top_input: &LogicalPlan,
    interval: bool,
    table_join: bool,
) -> Vec<Vec<usize>> {
    let out = top_input.schema();
    let LogicalPlan::Join(j) = input_plan else {
        return out
            .iter()
            .enumerate()
            .filter(|(_, (_, f))| source.column(f.name()).is_some_and(|c| c.key))
            .map(|(i, _)| vec![i])
            .collect();
    };
    let inner = j.join_type == JoinType::Inner;
    if interval {
        // A FULL OUTER join's join columns are NULL on one side or the other: ksqlDB keys it
        // by a synthetic ROWKEY, which Eddy does not make; its result has no key.
        if j.join_type == JoinType::Full {
            return Vec::new();
        }
        return join_key_slots(j, &j.left, inner, out);
    }
    if table_join {
        let on = join_key_slots(j, &j.left, inner, out);
        let left = j.left.schema().columns();
        return source
            .columns
            .iter()
            .filter(|c| c.key)
            .filter_map(|k| {
                let idx = out.index_of_column(left.iter().find(|c| c.name == k.name)?).ok()?;
                Some(on.iter().find(|s| s.first() == Some(&idx)).cloned().unwrap_or_else(|| vec![idx]))
            })
            .collect();
    }
    // A stream joined to tables: the first join (the innermost) compares the stream.
    let mut first = j;
    while let LogicalPlan::Join(inner_join) = skip_alias(&first.left) {
        first = inner_join;
    }
    let is_stream =
        |p: &LogicalPlan| matches!(skip_alias(p), LogicalPlan::TableScan(s) if s.table_name.table() == source.name);
    let stream_side = if is_stream(&first.right) { &first.right } else { &first.left };
    join_key_slots(first, stream_side, first.join_type == JoinType::Inner, out)
}

/// The SELECT items that key the result: for each key slot, the first item naming its most
/// preferred column (ksqlDB: of `l.id` and `r.id` in an inner join on them, `l.id` when both
/// are selected; an alias renames the key).
pub(super) fn key_items(items: &[Expr], input: &datafusion::common::DFSchema, slots: &[Vec<usize>]) -> Vec<usize> {
    let index = |e: &Expr| match e {
        Expr::Alias(a) => match a.expr.as_ref() {
            Expr::Column(c) => input.index_of_column(c).ok(),
            _ => None,
        },
        Expr::Column(c) => input.index_of_column(c).ok(),
        _ => None,
    };
    slots
        .iter()
        .filter_map(|slot| slot.iter().find_map(|candidate| items.iter().position(|e| index(e) == Some(*candidate))))
        .collect()
}

/// For each ON equality of two columns: its column on `primary`'s side, then (when `both`)
/// the other side's, as indices in `out`.
pub(super) fn join_key_slots(
    j: &Join,
    primary: &LogicalPlan,
    both: bool,
    out: &datafusion::common::DFSchema,
) -> Vec<Vec<usize>> {
    let column = |e: &Expr| match e {
        Expr::Column(c) => Some(c.clone()),
        Expr::Cast(cast) => match cast.expr.as_ref() {
            Expr::Column(c) => Some(c.clone()),
            _ => None,
        },
        _ => None,
    };
    let Ok(pairs) = equi_pairs(j) else { return Vec::new() };
    pairs
        .iter()
        .filter_map(|(a, b)| {
            let (a, b) = (column(a)?, column(b)?);
            let (p, o) = if primary.schema().has_column(&a) { (a, b) } else { (b, a) };
            let mut slot = vec![out.index_of_column(&p).ok()?];
            if both {
                slot.extend(out.index_of_column(&o).ok());
            }
            Some(slot)
        })
        .collect()
}
