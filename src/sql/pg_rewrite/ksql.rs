//! ksqlDB's dialect inside expressions, rewritten to what DataFusion plans: the STRUCT and
//! MAP constructors, TIMESTAMPADD/SUB and friends, ksqlDB's names for DataFusion's functions
//! (`ksql_alias`, in every query), and in continuous and push queries ksqlDB's meaning of
//! functions Postgres has under the same name (`ksql_functions`).

use super::*;

/// ksqlDB's meaning of functions Postgres (and DataFusion) have under the same name, for a
/// continuous or push query (pull queries keep Postgres's): `ROUND`, `CEIL`, `FLOOR`,
/// `SUBSTRING`, `INITCAP`, `INSTR` and `TRIM(s)` call Eddy's own (`functions::ksql_semantics`,
/// named here as text: the fuzz targets build this module alone), `REGEXP_REPLACE` replaces
/// every match, `GENERATE_SERIES(a, b)` counts down when b < a, `LPAD`/`RPAD` are NULL for
/// an empty padding or a negative length. Whether it changed anything.
pub fn ksql_functions(query: &mut Query) -> bool {
    let mut changed = false;
    let _ = ast::visit_expressions_mut(query, |e| {
        let ceil = matches!(e, Expr::Ceil { .. });
        let mut padded = None;
        match e {
            Expr::Substring { expr, substring_from: Some(from), substring_for, .. } => {
                let mut args = vec![expr.to_string(), from.to_string()];
                args.extend(substring_for.as_ref().map(|f| f.to_string()));
                if let Some(call) = try_parse_expr(&format!("ksql_substring({})", args.join(", "))) {
                    *e = call;
                    changed = true;
                }
            }
            // `CEIL(x)` and `FLOOR(x)` (sqlparser's own expressions; no `TO` field or scale).
            Expr::Ceil { expr, field: ast::CeilFloorKind::DateTimeField(ast::DateTimeField::NoDateTime) }
            | Expr::Floor { expr, field: ast::CeilFloorKind::DateTimeField(ast::DateTimeField::NoDateTime) } => {
                let name = if ceil { "ksql_ceil" } else { "ksql_floor" };
                if let Some(call) = try_parse_expr(&format!("{name}({expr})")) {
                    *e = call;
                    changed = true;
                }
            }
            Expr::Trim { expr, trim_where: None, trim_what: None, trim_characters: None } => {
                if let Some(call) = try_parse_expr(&format!("ksql_trim({expr})")) {
                    *e = call;
                    changed = true;
                }
            }
            Expr::Function(f) => {
                let FunctionArguments::List(list) = &mut f.args else { return ControlFlow::<()>::Continue(()) };
                let n = list.args.len();
                let renamed = match (last_part(&f.name).as_str(), n) {
                    ("round", 1 | 2) => Some("ksql_round"),
                    ("initcap", 1) => Some("ksql_initcap"),
                    ("instr", 2..=4) => Some("ksql_instr"),
                    ("ceil" | "ceiling", 1) => Some("ksql_ceil"),
                    ("floor", 1) => Some("ksql_floor"),
                    ("regexp_replace", 3) => {
                        let g = Expr::Value(ast::Value::SingleQuotedString("g".into()).into());
                        list.args.push(ast::FunctionArg::Unnamed(ast::FunctionArgExpr::Expr(g)));
                        changed = true;
                        None
                    }
                    // GENERATE_SERIES(start, end) counts down when end < start.
                    ("generate_series", 2) => {
                        let (start, end) = (list.args[0].to_string(), list.args[1].to_string());
                        if let Some(step) = try_parse_expr(&format!("CASE WHEN ({end}) < ({start}) THEN -1 ELSE 1 END"))
                        {
                            list.args.push(ast::FunctionArg::Unnamed(ast::FunctionArgExpr::Expr(step)));
                            changed = true;
                        }
                        None
                    }
                    // LPAD and RPAD are NULL for an empty padding or a negative length.
                    ("lpad" | "rpad", 3) => {
                        let (length, padding) = (list.args[1].to_string(), list.args[2].to_string());
                        padded = try_parse_expr(&format!(
                            "CASE WHEN ({length}) < 0 OR ({padding}) = '' THEN NULL ELSE {f} END"
                        ));
                        None
                    }
                    _ => None,
                };
                if let Some(name) = renamed {
                    f.name = ObjectName::from(vec![ast::Ident::new(name)]);
                    changed = true;
                }
            }
            _ => {}
        }
        if let Some(p) = padded {
            *e = p;
            changed = true;
        }
        ControlFlow::<()>::Continue(())
    });
    changed
}

/// ksqlDB's constructors: `STRUCT(f := v, ...)` → `named_struct('f', v, ...)` and
/// `MAP(k := v, ...)` → `map([k, ...], [v, ...])` (DataFusion's forms).
pub(super) fn constructor(e: &Expr) -> Option<Expr> {
    let (name, pairs) = super::super::named_pairs(e)?;
    if pairs.is_empty() {
        return None;
    }
    match name.as_str() {
        "STRUCT" => {
            let fields = pairs.iter().map(|(k, v)| {
                let field = match k {
                    Expr::Identifier(i) => super::super::normalize_ident(i),
                    other => other.to_string().trim_matches('\'').to_string(),
                };
                format!("'{}', {v}", field.replace('\'', "''"))
            });
            try_parse_expr(&format!("named_struct({})", fields.collect::<Vec<_>>().join(", ")))
        }
        "MAP" => {
            let keys: Vec<String> = pairs.iter().map(|(k, _)| k.to_string()).collect();
            let values: Vec<String> = pairs.iter().map(|(_, v)| v.to_string()).collect();
            try_parse_expr(&format!("map([{}], [{}])", keys.join(", "), values.join(", ")))
        }
        _ => None,
    }
}

/// ksqlDB's `TIMESTAMPADD(unit, n, ts)`, `TIMESTAMPSUB`, `DATEADD(DAYS, n, date)`, `DATESUB`,
/// `TIMEADD(unit, n, time)` and `TIMESUB` (a time wraps around midnight), as arithmetic on
/// milliseconds; `unit` is one of ksqlDB's: MILLISECONDS, SECONDS, MINUTES, HOURS, DAYS.
pub(super) fn time_arithmetic(e: &Expr) -> Option<Expr> {
    let Expr::Function(f) = e else { return None };
    let name = last_part(&f.name);
    let sign = match name.as_str() {
        "timestampadd" | "dateadd" | "timeadd" => "+",
        "timestampsub" | "datesub" | "timesub" => "-",
        _ => return None,
    };
    let FunctionArguments::List(list) = &f.args else { return None };
    use ast::{FunctionArg as Arg, FunctionArgExpr as ArgExpr};
    let [Arg::Unnamed(ArgExpr::Expr(Expr::Identifier(unit))), Arg::Unnamed(ArgExpr::Expr(n)), Arg::Unnamed(ArgExpr::Expr(value))] =
        list.args.as_slice()
    else {
        return None;
    };
    let unit = unit.value.to_ascii_lowercase();
    let ms: i64 = match unit.trim_end_matches('s') {
        "millisecond" => 1,
        "second" => 1_000,
        "minute" => 60_000,
        "hour" => 3_600_000,
        "day" => 86_400_000,
        _ => return None,
    };
    let delta = format!("{sign} arrow_cast({n}, 'Int64') * {ms}");
    let text = match name.as_str() {
        "timestampadd" | "timestampsub" => format!(
            "arrow_cast(arrow_cast(arrow_cast({value}, 'Timestamp(Millisecond, None)'), 'Int64') {delta}, 'Timestamp(Millisecond, None)')"
        ),
        "dateadd" | "datesub" if ms == 86_400_000 => {
            format!("arrow_cast(arrow_cast(arrow_cast({value}, 'Date32'), 'Int32') {sign} arrow_cast({n}, 'Int32'), 'Date32')")
        }
        "timeadd" | "timesub" => format!(
            "arrow_cast(arrow_cast(((arrow_cast(arrow_cast(arrow_cast({value}, 'Time32(Millisecond)'), 'Int32'), 'Int64') {delta}) % 86400000 + 86400000) % 86400000, 'Int32'), 'Time32(Millisecond)')"
        ),
        _ => return None,
    };
    try_parse_expr(&text)
}

/// ksqlDB's names for what DataFusion has under another: `SIGN` (signum, as an INT), `SLICE`
/// (array_slice: 1-based, inclusive, as in ksqlDB), `AS_MAP(keys, values)` (map),
/// `COUNT_DISTINCT(x)` (COUNT(DISTINCT x)), `AS_VALUE(x)` (x itself: the value copy of a key
/// column), `UNIX_DATE([date])` (days since 1970-01-01) and `FROM_DAYS(n)` (its inverse);
/// and ksqlDB's meaning where DataFusion has the name with another: `ARRAY_REMOVE` (every
/// match), `ARRAY_SORT` (NULLs last), `ARRAY_JOIN` (',' by default, NULL as `null`); and
/// `ELT`, `FIELD`, `GEO_DISTANCE` written in DataFusion's functions.
pub(super) fn ksql_alias(e: &Expr) -> Option<Expr> {
    let Expr::Function(f) = e else { return None };
    let FunctionArguments::List(list) = &f.args else { return None };
    if list.duplicate_treatment.is_some() || !list.clauses.is_empty() {
        return None;
    }
    let args: Vec<String> = list
        .args
        .iter()
        .map(|a| match a {
            ast::FunctionArg::Unnamed(ast::FunctionArgExpr::Expr(x)) => Some(x.to_string()),
            _ => None,
        })
        .collect::<Option<_>>()?;
    let text = match (last_part(&f.name).as_str(), args.as_slice()) {
        ("sign", [x]) => format!("CAST(signum({x}) AS INT)"),
        ("slice", [a, from, to]) => format!("array_slice({a}, {from}, {to})"),
        ("as_map", [keys, values]) => format!("map({keys}, {values})"),
        ("count_distinct", [x]) => format!("count(DISTINCT {x})"),
        ("as_value", [x]) => format!("({x})"),
        ("unix_date", []) => "arrow_cast(arrow_cast(current_date(), 'Date32'), 'Int32')".to_string(),
        ("unix_date", [d]) => format!("arrow_cast(arrow_cast({d}, 'Date32'), 'Int32')"),
        ("from_days", [n]) => format!("arrow_cast(arrow_cast({n}, 'Int32'), 'Date32')"),
        // ksqlDB's ARRAY_CONTAINS is false for a NULL array, and finds a NULL element
        // (DataFusion's array_has answers NULL for both).
        ("array_contains", [a, x]) => format!("(array_position({a}, {x}) IS NOT NULL)"),
        // ksqlDB's ARRAY_LENGTH(a) is an INT (Postgres's takes a dimension too).
        ("array_length", [a]) => format!("CAST(list_length({a}) AS INT)"),
        // ksqlDB (and Postgres) remove every match; DataFusion's array_remove the first.
        ("array_remove", [a, x]) => format!("array_remove_all({a}, {x})"),
        // ksqlDB's INSTR with a start position and an occurrence (DataFusion's takes two).
        ("instr", [s, sub, position]) => format!("ksql_instr({s}, {sub}, {position})"),
        ("instr", [s, sub, position, occurrence]) => format!("ksql_instr({s}, {sub}, {position}, {occurrence})"),
        // ksqlDB sorts NULLs last in both directions.
        ("array_sort", [a]) => format!("array_sort({a}, 'ASC', 'NULLS LAST')"),
        ("array_sort", [a, dir]) => format!("array_sort({a}, upper({dir}), 'NULLS LAST')"),
        // ksqlDB's delimiter defaults to ',' and NULL elements print as `null`.
        ("array_join", [a]) => format!("array_to_string({a}, ',', 'null')"),
        ("array_join", [a, d]) => format!("array_to_string({a}, {d}, 'null')"),
        // ksqlDB's ENCODE(s, from, to) (DataFusion's encode takes two arguments).
        ("encode", [x, from, to]) => format!("ksql_encode({x}, {from}, {to})"),
        // ELT(n, s1, s2, ...): the n-th string (NULL out of range).
        ("elt", [n, strings @ ..]) if !strings.is_empty() => {
            format!("array_element(make_array({}), {n})", strings.join(", "))
        }
        // FIELD(s, s1, s2, ...): s's 1-based position among the rest, 0 when absent or NULL.
        ("field", [x, strings @ ..]) if !strings.is_empty() => {
            format!("CAST(coalesce(array_position(make_array({}), {x}), 0) AS INT)", strings.join(", "))
        }
        // GEO_DISTANCE(lat1, lon1, lat2, lon2 [, unit]): the haversine distance on a sphere of
        // ksqlDB's radius, 6371 km or 3959 miles.
        ("geo_distance", [lat1, lon1, lat2, lon2, unit @ ..]) if unit.len() <= 1 => {
            let radius = match unit {
                [u] => format!(
                    "CASE WHEN upper({u}) IN ('MI', 'MILES') THEN 3959.0 WHEN upper({u}) IN ('KM', 'KILOMETERS') THEN 6371.0 END"
                ),
                _ => "6371.0".to_string(),
            };
            format!(
                "({radius}) * 2 * asin(sqrt(power(sin(radians(({lat2}) - ({lat1})) / 2), 2) + \
                 power(sin(radians(({lon2}) - ({lon1})) / 2), 2) * cos(radians({lat1})) * cos(radians({lat2}))))"
            )
        }
        _ => return None,
    };
    try_parse_expr(&text)
}
