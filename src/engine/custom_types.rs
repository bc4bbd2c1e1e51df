//! ksqlDB's custom types as statements: `CREATE TYPE`, `DROP TYPE`, `SHOW TYPES`. The
//! catalog keeps them; `sql::custom_types` resolves their names when statements are parsed.

use super::inspect::strings_output;
use super::{Engine, Output};
use crate::error::{EddyError, Result};

impl Engine {
    /// `CREATE TYPE`: the name stands for the type in later column declarations.
    pub(super) async fn create_type(
        &self,
        name: &str,
        ty: crate::format::SqlType,
        if_not_exists: bool,
    ) -> Result<Output> {
        let _ddl = self.ddl.lock().await;
        if let Some(existing) = self.catalog.types().get(&name.to_lowercase()) {
            if if_not_exists {
                return Ok(Output::Command { tag: "CREATE TYPE".into() });
            }
            return Err(EddyError::DuplicateObject(format!(
                "Cannot register custom type '{name}' since it is already registered with type: {}",
                existing.name()
            )));
        }
        self.catalog.set_type(name, Some(&ty))?;
        crate::sql::custom_types::set(self.catalog.types());
        Ok(Output::Command { tag: "CREATE TYPE".into() })
    }

    /// `DROP TYPE`: relations declared with it keep their columns (the type was resolved then).
    pub(super) async fn drop_type(&self, name: &str, if_exists: bool) -> Result<Output> {
        let _ddl = self.ddl.lock().await;
        if !self.catalog.types().contains_key(&name.to_lowercase()) {
            if if_exists {
                return Ok(Output::Command { tag: "DROP TYPE".into() });
            }
            return Err(EddyError::UndefinedObject(format!("type {name} does not exist")));
        }
        self.catalog.set_type(name, None)?;
        crate::sql::custom_types::set(self.catalog.types());
        Ok(Output::Command { tag: "DROP TYPE".into() })
    }

    /// `SHOW TYPES`: each custom type's name and what it stands for.
    pub(super) fn show_types(&self) -> Output {
        let rows = self.catalog.types().into_iter().map(|(name, ty)| vec![name, ty.name()]).collect();
        strings_output(&["type_name", "schema"], rows, "SHOW")
    }
}
