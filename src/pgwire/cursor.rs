//! Cursors and the per-statement limits of one connection.
//!
//! `DECLARE c CURSOR FOR SELECT ...` keeps the query's output (a pull query's rows, or a
//! push query's live stream) under its name; `FETCH n FROM c` returns up to n rows, waiting
//! for a push query's rows at most `eddy.fetch_timeout` (default 1 s; fewer rows, possibly
//! none, when it expires); `CLOSE c` ends it (a push query's subscription with it).
//! Extended-protocol portals fetched in parts (Execute with a row limit, as JDBC's fetch size
//! does) are kept the same way, without the timeout. `statement_timeout` (57014) bounds
//! pull queries. A connection holds at most `--max-cursors-per-connection` cursors and kept
//! portals together (53400 beyond); a kept portal the client closed, or that a Sync ended,
//! no longer counts.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::SchemaRef;
use pgwire::api::store::{Entry, PortalStore};
use pgwire::api::ClientPortalStore;
use pgwire::error::{ErrorInfo, PgWireError, PgWireResult};

use super::error::to_pg;
use super::PgServer;
use crate::engine::{Output, Session};
use crate::error::EddyError;
use crate::sql::{Located, Statement};

/// How long FETCH waits for a push query's rows unless `SET eddy.fetch_timeout`.
pub const DEFAULT_FETCH_TIMEOUT: Duration = Duration::from_secs(1);

/// A query's output, read a few rows at a time.
pub struct Cursor {
    schema: SchemaRef,
    buffered: VecDeque<RecordBatch>,
    rx: Option<tokio::sync::mpsc::Receiver<crate::error::Result<RecordBatch>>>,
    /// Rows a push query's LIMIT still allows.
    remaining: usize,
}

impl Cursor {
    pub fn new(output: Output) -> Result<Cursor, EddyError> {
        match output {
            Output::Rows { schema, batches, .. } => {
                Ok(Cursor { schema, buffered: batches.into(), rx: None, remaining: usize::MAX })
            }
            Output::Push { schema, limit, rx } => {
                Ok(Cursor { schema, buffered: VecDeque::new(), rx: Some(rx), remaining: limit.unwrap_or(usize::MAX) })
            }
            _ => Err(EddyError::InvalidValue("a cursor needs a SELECT".into())),
        }
    }

    pub fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    /// Up to `n` rows. Rows at hand come at once; a push query's are waited for until `wait`
    /// has passed (`None`: until there are `n` or the query ends).
    pub async fn fetch(&mut self, n: usize, wait: Option<Duration>) -> Result<Vec<RecordBatch>, EddyError> {
        let deadline = wait.map(|w| tokio::time::Instant::now() + w);
        let mut out = Vec::new();
        let mut got = 0;
        while got < n && self.remaining > 0 {
            if let Some(b) = self.buffered.pop_front() {
                let take = (n - got).min(self.remaining).min(b.num_rows());
                if take < b.num_rows() {
                    self.buffered.push_front(b.slice(take, b.num_rows() - take));
                }
                if take > 0 {
                    out.push(b.slice(0, take));
                    got += take;
                    self.remaining -= take;
                }
                continue;
            }
            let Some(rx) = self.rx.as_mut() else { break };
            let next = match deadline {
                Some(d) => match tokio::time::timeout_at(d, rx.recv()).await {
                    Ok(next) => next,
                    Err(_) => break,
                },
                None => rx.recv().await,
            };
            match next {
                Some(Ok(b)) => self.buffered.push_back(b),
                Some(Err(e)) => return Err(e),
                None => self.rx = None,
            }
        }
        if self.remaining == 0 {
            // The LIMIT is reached: end the push query now.
            self.rx = None;
            self.buffered.clear();
        }
        Ok(out)
    }

    /// Nothing more will come.
    pub fn exhausted(&self) -> bool {
        self.remaining == 0 || (self.buffered.is_empty() && self.rx.is_none())
    }
}

/// A connection's session, its cursors, and its partly fetched portals.
pub struct ConnSession {
    pub session: tokio::sync::Mutex<Session>,
    pub cursors: tokio::sync::Mutex<HashMap<String, Cursor>>,
    /// Portal name → (identity of the bound portal, its output so far).
    pub portals: tokio::sync::Mutex<HashMap<String, (usize, Cursor)>>,
    /// Whether a BEGIN is open, and the rows INSERTed since (see `transaction_step`).
    transaction: std::sync::Mutex<(bool, u64)>,
}

impl ConnSession {
    pub fn new(user: &str) -> ConnSession {
        ConnSession {
            session: tokio::sync::Mutex::new(Session::for_user(user)),
            cursors: tokio::sync::Mutex::new(HashMap::new()),
            portals: tokio::sync::Mutex::new(HashMap::new()),
            transaction: std::sync::Mutex::new((false, 0)),
        }
    }

    /// Follows BEGIN/COMMIT/ROLLBACK (`tag`, a statement's) and INSERTs (`inserted` rows)
    /// so that a ROLLBACK after INSERTs can say what it cannot take back: Eddy has no
    /// transactions, an INSERT is in the topic when it returns (README, "Transactions").
    /// Returns that warning.
    pub fn transaction_step(&self, tag: Option<&str>, inserted: u64) -> Option<String> {
        let mut t = self.transaction.lock().unwrap_or_else(|p| p.into_inner());
        let (open, rows) = *t;
        match tag {
            Some("BEGIN") => *t = (true, 0),
            Some("COMMIT") => *t = (false, 0),
            Some(tag @ ("ROLLBACK" | "ROLLBACK TO")) => {
                *t = (tag == "ROLLBACK TO" && open, 0);
                if open && rows > 0 {
                    return Some(format!(
                        "Eddy has no transactions: the {rows} row(s) inserted in this transaction stay written ({} takes back nothing)",
                        if tag == "ROLLBACK" { "ROLLBACK" } else { "ROLLBACK TO SAVEPOINT" }
                    ));
                }
            }
            _ if open => t.1 += inserted,
            _ => {}
        }
        None
    }
}

fn statement_timeout_error() -> PgWireError {
    PgWireError::UserError(Box::new(ErrorInfo::new(
        "ERROR".into(),
        "57014".into(),
        "canceling statement due to statement timeout".into(),
    )))
}

impl PgServer {
    /// Runs one statement for a connection: cursors here, the rest in the engine (pull
    /// queries under the statement timeout).
    pub(super) async fn run(&self, conn: &ConnSession, located: Located) -> PgWireResult<Output> {
        match located.statement {
            Statement::DeclareCursor { name, query } => {
                if conn.cursors.lock().await.contains_key(&name) {
                    return Err(to_pg_code("42P03", format!("cursor \"{name}\" already exists")));
                }
                self.check_cursor_room(conn).await?;
                let inner = Located { statement: Statement::Select(query), ..located };
                let cursor = Cursor::new(self.run_in_engine(conn, inner).await?).map_err(to_pg)?;
                conn.cursors.lock().await.insert(name, cursor);
                Ok(Output::Command { tag: "DECLARE CURSOR".into() })
            }
            Statement::Fetch { name, count, discard } => {
                let wait = {
                    let mut s = conn.session.lock().await;
                    s.system = self.engine.catalog.system_settings();
                    s.duration("eddy.fetch_timeout").unwrap_or(Some(DEFAULT_FETCH_TIMEOUT))
                };
                let mut cursors = conn.cursors.lock().await;
                let cursor = cursors
                    .get_mut(&name)
                    .ok_or_else(|| to_pg_code("34000", format!("cursor \"{name}\" does not exist")))?;
                let batches = cursor.fetch(count.unwrap_or(usize::MAX), wait).await.map_err(to_pg)?;
                let n: usize = batches.iter().map(RecordBatch::num_rows).sum();
                if discard {
                    return Ok(Output::Command { tag: format!("MOVE {n}") });
                }
                Ok(Output::Rows { schema: cursor.schema(), batches, tag: "FETCH".into() })
            }
            Statement::CloseCursor { name: Some(name) } => {
                if conn.cursors.lock().await.remove(&name).is_none() {
                    return Err(to_pg_code("34000", format!("cursor \"{name}\" does not exist")));
                }
                Ok(Output::Command { tag: "CLOSE CURSOR".into() })
            }
            Statement::CloseCursor { name: None } => {
                conn.cursors.lock().await.clear();
                Ok(Output::Command { tag: "CLOSE CURSOR ALL".into() })
            }
            statement => self.run_in_engine(conn, Located { statement, ..located }).await,
        }
    }

    async fn run_in_engine(&self, conn: &ConnSession, located: Located) -> PgWireResult<Output> {
        let pull = match &located.statement {
            Statement::Select(s) | Statement::CopyOut(s) => !s.emit_changes,
            _ => false,
        };
        let mut s = conn.session.lock().await;
        s.system = self.engine.catalog.system_settings();
        let timeout = s.duration("statement_timeout").unwrap_or(self.engine.config.statement_timeout);
        match timeout.filter(|_| pull) {
            Some(t) => match tokio::time::timeout(t, self.engine.execute(&mut s, located)).await {
                Ok(r) => r.map_err(to_pg),
                Err(_) => Err(statement_timeout_error()),
            },
            None => self.engine.execute(&mut s, located).await.map_err(to_pg),
        }
    }

    /// Room for one more cursor or kept portal on this connection, or 53400.
    pub(super) async fn check_cursor_room(&self, conn: &ConnSession) -> PgWireResult<()> {
        let max = self.options.max_cursors_per_connection;
        let open = conn.cursors.lock().await.len() + conn.portals.lock().await.len();
        if open >= max {
            return Err(to_pg_code(
                "53400",
                format!(
                    "too many open cursors on this connection: at most {max} cursors and partly fetched portals (CLOSE one, or raise --max-cursors-per-connection)"
                ),
            ));
        }
        Ok(())
    }

    /// The schema of an open cursor (Describe of `FETCH`, or of the cursor's portal).
    pub(super) async fn cursor_schema(&self, conn: &ConnSession, name: &str) -> Option<SchemaRef> {
        conn.cursors.lock().await.get(name).map(Cursor::schema)
    }
}

/// Forgets kept portals that pgwire no longer has under their name (closed, replaced by a new
/// Bind, or ended by Sync): their output can never be fetched again.
pub(super) async fn prune_portals<C>(client: &C, conn: &ConnSession)
where
    C: ClientPortalStore,
    C::PortalStore: PortalStore,
{
    let store = client.portal_store();
    conn.portals.lock().await.retain(|name, (identity, _)| match store.get_portal(name) {
        Some(Entry::Value(p)) => Arc::as_ptr(&p) as usize == *identity,
        _ => false,
    });
}

fn to_pg_code(code: &str, message: String) -> PgWireError {
    PgWireError::UserError(Box::new(ErrorInfo::new("ERROR".into(), code.into(), message)))
}
