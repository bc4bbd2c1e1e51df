//! Runs every `sql-tests/*.slt` file against a fresh server over pgwire (simple protocol).

use std::path::Path;

use sqllogictest::{AsyncDB, DBOutput, DefaultColumnType};

use crate::common::Server;

pub struct PgDb {
    client: tokio_postgres::Client,
}

#[derive(Debug)]
pub struct PgError(String);

impl std::fmt::Display for PgError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}
impl std::error::Error for PgError {}

impl From<tokio_postgres::Error> for PgError {
    fn from(e: tokio_postgres::Error) -> Self {
        match e.as_db_error() {
            Some(db) => {
                PgError(format!("db error: {}: {} (SQLSTATE {})", db.severity(), db.message(), db.code().code()))
            }
            None => PgError(e.to_string()),
        }
    }
}

#[async_trait::async_trait]
impl AsyncDB for PgDb {
    type Error = PgError;
    type ColumnType = DefaultColumnType;

    async fn run(&mut self, sql: &str) -> Result<DBOutput<DefaultColumnType>, PgError> {
        let messages = self.client.simple_query(sql).await?;
        let mut rows = Vec::new();
        let mut described = false;
        let mut count = 0;
        for m in messages {
            match m {
                tokio_postgres::SimpleQueryMessage::Row(r) => {
                    rows.push(
                        (0..r.len())
                            .map(|i| {
                                r.get(i)
                                    .map(|v| if v.is_empty() { "(empty)".to_string() } else { v.to_string() })
                                    .unwrap_or_else(|| "NULL".into())
                            })
                            .collect::<Vec<_>>(),
                    );
                }
                tokio_postgres::SimpleQueryMessage::RowDescription(_) => described = true,
                tokio_postgres::SimpleQueryMessage::CommandComplete(n) => count = n,
                _ => {}
            }
        }
        if described || !rows.is_empty() {
            let width = rows.first().map_or(0, Vec::len);
            Ok(DBOutput::Rows { types: vec![DefaultColumnType::Any; width], rows })
        } else {
            Ok(DBOutput::StatementComplete(count))
        }
    }

    async fn shutdown(&mut self) {}

    async fn sleep(dur: std::time::Duration) {
        tokio::time::sleep(dur).await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sql_logic_tests() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("sql-tests");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "slt"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no .slt files in {}", dir.display());
    let mut failures = Vec::new();
    for file in files {
        // Each file gets a fresh server and data directory.
        let tmp = tempfile::tempdir().unwrap();
        let server = Server::start(tmp.path());
        let conn = server.conn_string();
        let mut runner = sqllogictest::Runner::new(move || {
            let conn = conn.clone();
            async move {
                let (client, connection) = tokio_postgres::connect(&conn, tokio_postgres::NoTls).await?;
                tokio::spawn(async move {
                    let _ = connection.await;
                });
                Ok::<_, PgError>(PgDb { client })
            }
        });
        if let Err(e) = runner.run_file_async(&file).await {
            failures.push(format!("{}: {e}", file.display()));
        }
    }
    assert!(failures.is_empty(), "sqllogictest failures:\n{}", failures.join("\n\n"));
}
