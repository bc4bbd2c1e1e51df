//! ksqlDB's `RUN SCRIPT 'path'`: the statements of a file, run in order as if the session had
//! sent them, stopping at the first that fails (those before it stay done). As in ksqlDB a
//! script holds statements that define and feed things (CREATE, DROP, ALTER, INSERT, SET, UNSET,
//! DEFINE, UNDEFINE), not queries or SHOW; every statement is checked before any runs. The
//! server reads the file, so only superusers may (as Postgres's COPY from a server file);
//! psql's `\i` runs a file on the client's side.

use std::future::Future;
use std::pin::Pin;

use super::{Engine, Output, Session};
use crate::error::{EddyError, Result};
use crate::sql::{self, Statement};

/// The largest script RUN SCRIPT reads.
const MAX_SCRIPT_BYTES: u64 = 1 << 20;

impl Engine {
    /// Boxed as a `dyn` future: `execute` calls this, and this calls `execute`.
    pub(super) fn run_script<'a>(
        &'a self,
        session: &'a mut Session,
        path: &'a str,
    ) -> Pin<Box<dyn Future<Output = Result<Output>> + Send + 'a>> {
        Box::pin(self.run_script_inner(session, path))
    }

    async fn run_script_inner(&self, session: &mut Session, path: &str) -> Result<Output> {
        self.require_superuser(session, "RUN SCRIPT (the server reads the file)")?;
        let text = read_script(path).await?;
        let in_script = |context: String, e: EddyError| EddyError::InStatement { context, source: Box::new(e) };
        let text = sql::variables::substitute(&text, &session.variables)
            .map_err(|e| in_script(format!("RUN SCRIPT {path}"), e))?;
        let statements = sql::parse(&text).map_err(|e| {
            let at = match &e {
                EddyError::Syntax { position: Some(p), .. } => format!(", line {}", line_of(&text, *p)),
                _ => String::new(),
            };
            in_script(format!("RUN SCRIPT {path}{at}"), e)
        })?;
        let label = |n: usize, l: &sql::Located| {
            format!("RUN SCRIPT {path}, statement {n} at line {}", line_of(&text, l.offset_chars + 1))
        };
        for (i, l) in statements.iter().enumerate() {
            if !runs_in_script(&l.statement) {
                return Err(EddyError::InvalidValue(format!(
                    "{}: a script runs CREATE, DROP, ALTER, INSERT, SET, UNSET, DEFINE and UNDEFINE statements, not `{}`",
                    label(i + 1, l),
                    l.text.split_whitespace().take(3).collect::<Vec<_>>().join(" ")
                )));
            }
        }
        for (i, l) in statements.into_iter().enumerate() {
            let context = label(i + 1, &l);
            self.execute(session, l).await.map_err(|e| in_script(context, e))?;
        }
        Ok(Output::Command { tag: "RUN SCRIPT".into() })
    }
}

/// The script's text: a regular file of at most `MAX_SCRIPT_BYTES` (not a FIFO or a device,
/// whose size says nothing), read no further than that.
async fn read_script(path: &str) -> Result<String> {
    use tokio::io::AsyncReadExt;
    let unreadable = |e: std::io::Error| match e.kind() {
        std::io::ErrorKind::PermissionDenied => {
            EddyError::PermissionDenied(format!("RUN SCRIPT: cannot read {path}: {e}"))
        }
        _ => EddyError::UndefinedObject(format!("RUN SCRIPT: cannot read {path}: {e}")),
    };
    let file = tokio::fs::File::open(path).await.map_err(unreadable)?;
    if !file.metadata().await.map_err(unreadable)?.is_file() {
        return Err(EddyError::InvalidValue(format!("RUN SCRIPT: {path} is not a regular file")));
    }
    let mut bytes = Vec::new();
    file.take(MAX_SCRIPT_BYTES + 1).read_to_end(&mut bytes).await.map_err(unreadable)?;
    if bytes.len() as u64 > MAX_SCRIPT_BYTES {
        return Err(EddyError::LimitExceeded(format!("RUN SCRIPT: {path} is larger than {MAX_SCRIPT_BYTES} bytes")));
    }
    String::from_utf8(bytes).map_err(|_| EddyError::InvalidValue(format!("RUN SCRIPT: {path} is not UTF-8 text")))
}

/// Statements a script may hold (ksqlDB's RUN SCRIPT list, with types and variables).
fn runs_in_script(statement: &Statement) -> bool {
    matches!(
        statement,
        Statement::CreateSource { .. }
            | Statement::CreateAs { .. }
            | Statement::Insert { .. }
            | Statement::InsertSelect { .. }
            | Statement::Drop { .. }
            | Statement::Set { .. }
            | Statement::Unset { .. }
            | Statement::Define { .. }
            | Statement::Undefine { .. }
            | Statement::CreateType { .. }
            | Statement::DropType { .. }
            | Statement::AlterSource { .. }
    )
}

/// The 1-based line of the 1-based character `position` of `text`.
fn line_of(text: &str, position: usize) -> usize {
    1 + text.chars().take(position.saturating_sub(1)).filter(|c| *c == '\n').count()
}
