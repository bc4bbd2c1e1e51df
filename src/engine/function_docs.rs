//! ksqlDB's `SHOW FUNCTIONS` and `DESCRIBE FUNCTION name`: the functions queries can call
//! (DataFusion's built-ins and Eddy's ksqlDB functions), with their type (SCALAR, AGGREGATE,
//! TABLE), category and, where the function carries documentation, its description and
//! syntax. Eddy's internal stand-ins (`ksql_round` ...) are not listed: their ksqlDB names are.

use std::collections::BTreeMap;

use datafusion::logical_expr::Documentation;

use super::inspect::strings_output;
use super::{Engine, Output};
use crate::error::{EddyError, Result};
use crate::functions::table::TableFunction;

/// What SHOW FUNCTIONS and DESCRIBE FUNCTION say of one function.
struct FunctionInfo {
    kind: &'static str,
    category: String,
    description: String,
    syntax: String,
}

impl FunctionInfo {
    fn new(kind: &'static str, docs: Option<&Documentation>, default_category: &str) -> FunctionInfo {
        FunctionInfo {
            kind,
            category: docs.map_or(default_category.to_string(), |d| d.doc_section.label.to_string()),
            description: docs.map(|d| d.description.clone()).unwrap_or_default(),
            syntax: docs.map(|d| d.syntax_example.clone()).unwrap_or_default(),
        }
    }
}

/// Every callable function by (upper-case) name.
fn catalog() -> BTreeMap<String, FunctionInfo> {
    let ctx = crate::plan::session_with(false);
    let state = ctx.state();
    let mut out = BTreeMap::new();
    let internal = |name: &str| name.starts_with("ksql_");
    for (name, udf) in state.scalar_functions() {
        if internal(name) {
            continue;
        }
        let info = if TableFunction::from_name(name).is_some() {
            FunctionInfo::new("TABLE", udf.documentation(), "Table Functions")
        } else {
            FunctionInfo::new("SCALAR", udf.documentation(), "Other Functions")
        };
        out.insert(name.to_uppercase(), info);
    }
    for (name, udaf) in state.aggregate_functions() {
        if !internal(name) {
            out.insert(
                name.to_uppercase(),
                FunctionInfo::new("AGGREGATE", udaf.documentation(), "Aggregate Functions"),
            );
        }
    }
    for (name, udwf) in state.window_functions() {
        out.entry(name.to_uppercase())
            .or_insert_with(|| FunctionInfo::new("WINDOW", udwf.documentation(), "Window Functions"));
    }
    for f in crate::functions::lambdas::functions() {
        out.insert(f.name().to_uppercase(), FunctionInfo::new("SCALAR", None, "Lambda Functions"));
    }
    out
}

impl Engine {
    /// `SHOW FUNCTIONS`: name, type and category of every function.
    pub(super) fn show_functions(&self) -> Result<Output> {
        let rows = catalog().into_iter().map(|(name, f)| vec![name, f.kind.to_string(), f.category]).collect();
        Ok(strings_output(&["function_name", "type", "category"], rows, "SHOW"))
    }

    /// `DESCRIBE FUNCTION name`: one row (name, type, category, description, syntax).
    pub(super) fn describe_function(&self, name: &str) -> Result<Output> {
        let wanted = name.to_uppercase();
        let mut all = catalog();
        let f = all.remove(&wanted).ok_or_else(|| {
            EddyError::UndefinedObject(format!("function {name} does not exist (SHOW FUNCTIONS lists them)"))
        })?;
        let row = vec![wanted, f.kind.to_string(), f.category, f.description, f.syntax];
        Ok(strings_output(&["name", "type", "category", "description", "syntax"], vec![row], "DESCRIBE"))
    }
}
