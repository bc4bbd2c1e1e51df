//! Connection start-up: SCRAM-SHA-256 password authentication (against `auth::Users`, which
//! keeps only verifiers), or trust where the server allows it; then the database check and
//! the connection limit, with slots reserved for superusers (Postgres's
//! `superuser_reserved_connections`), and the session's user.

use std::fmt::Debug;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use futures::{Sink, SinkExt};
use pgwire::api::auth::{
    finish_authentication, protocol_negotiation, save_startup_parameters_to_metadata, DefaultServerParameterProvider,
    StartupHandler,
};
use pgwire::api::{
    ClientInfo, PgWireConnectionState, PidSecretKeyGenerator, RandomPidSecretKeyGenerator, METADATA_DATABASE,
    METADATA_USER,
};
use pgwire::error::{ErrorInfo, PgWireError, PgWireResult};
use pgwire::messages::startup::Authentication;
use pgwire::messages::{PgWireBackendMessage, PgWireFrontendMessage};

use super::{ConnSession, PgServer, DATABASE};
use crate::auth::{ScramHash, ScramServer};

const SCRAM_SHA_256: &str = "SCRAM-SHA-256";

/// Counts admitted sessions; the last `reserved` of `max` slots only admit superusers.
#[derive(Debug)]
pub struct Admission {
    max: usize,
    reserved: usize,
    admitted: AtomicUsize,
}

/// Holds one slot until the connection ends (kept in its session extensions).
pub struct Admitted(Arc<Admission>);

impl Drop for Admitted {
    fn drop(&mut self) {
        self.0.admitted.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Admission {
    pub fn new(max: usize, reserved: usize) -> Arc<Admission> {
        Arc::new(Admission {
            max: max.max(1),
            reserved: reserved.min(max.saturating_sub(1)),
            admitted: AtomicUsize::new(0),
        })
    }

    /// A slot, or Postgres's message for why not.
    pub fn admit(self: &Arc<Self>, superuser: bool) -> Result<Admitted, &'static str> {
        let limit = if superuser { self.max } else { self.max - self.reserved };
        let mut now = self.admitted.load(Ordering::SeqCst);
        loop {
            if now >= limit {
                return Err(if now >= self.max {
                    "sorry, too many clients already"
                } else {
                    "remaining connection slots are reserved for roles with the SUPERUSER attribute"
                });
            }
            match self.admitted.compare_exchange(now, now + 1, Ordering::SeqCst, Ordering::SeqCst) {
                Ok(_) => return Ok(Admitted(self.clone())),
                Err(actual) => now = actual,
            }
        }
    }
}

/// A SCRAM exchange in progress on one connection.
struct PendingScram {
    started: bool,
    server: ScramServer,
}

struct Pending(Mutex<PendingScram>);

fn fatal(code: &str, message: String) -> PgWireError {
    PgWireError::UserError(Box::new(ErrorInfo::new("FATAL".into(), code.into(), message)))
}

fn auth_failed(user: &str) -> PgWireError {
    fatal("28P01", format!("password authentication failed for user \"{user}\""))
}

#[async_trait]
impl StartupHandler for PgServer {
    async fn on_startup<C>(&self, client: &mut C, message: PgWireFrontendMessage) -> PgWireResult<()>
    where
        C: ClientInfo + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        match message {
            PgWireFrontendMessage::Startup(ref startup) => {
                protocol_negotiation(client, startup).await?;
                save_startup_parameters_to_metadata(client, startup);
                let (pid, secret_key) = RandomPidSecretKeyGenerator::default().generate(client);
                client.set_pid_and_secret_key(pid, secret_key);
                let user = user_of(client);
                if self.options.auth_required {
                    let server = ScramServer::for_user(ScramHash::Sha256, &user);
                    client.session_extensions().insert(Pending(Mutex::new(PendingScram { started: false, server })));
                    client.set_state(PgWireConnectionState::AuthenticationInProgress);
                    client
                        .send(PgWireBackendMessage::Authentication(Authentication::SASL(vec![SCRAM_SHA_256.into()])))
                        .await?;
                    return Ok(());
                }
                self.admit(client, &user).await
            }
            PgWireFrontendMessage::PasswordMessageFamily(message) => {
                let user = user_of(client);
                let pending = client
                    .session_extensions()
                    .get::<Pending>()
                    .ok_or_else(|| fatal("08P01", "unexpected password message".into()))?;
                let step = {
                    let mut p = pending.0.lock().unwrap_or_else(|e| e.into_inner());
                    let data = if p.started {
                        message.into_sasl_response()?.data
                    } else {
                        let initial = message.into_sasl_initial_response()?;
                        if initial.auth_method != SCRAM_SHA_256 {
                            return Err(fatal(
                                "28000",
                                format!("SASL mechanism {} is not supported (use SCRAM-SHA-256)", initial.auth_method),
                            ));
                        }
                        p.started = true;
                        initial.data.unwrap_or_default()
                    };
                    p.server.step(&self.engine.users, &data)
                };
                match step {
                    Err(e) => {
                        tracing::info!(%user, "password authentication failed: {e}");
                        Err(auth_failed(&user))
                    }
                    Ok(step) if step.authenticated.is_none() => {
                        let reply =
                            PgWireBackendMessage::Authentication(Authentication::SASLContinue(step.reply.into()));
                        client.send(reply).await?;
                        Ok(())
                    }
                    Ok(step) => {
                        let reply = PgWireBackendMessage::Authentication(Authentication::SASLFinal(step.reply.into()));
                        client.feed(reply).await?;
                        self.admit(client, &user).await
                    }
                }
            }
            _ => Ok(()),
        }
    }
}

fn user_of<C: ClientInfo>(client: &C) -> String {
    client.metadata().get(METADATA_USER).cloned().unwrap_or_default()
}

impl PgServer {
    /// After authentication: the database, a connection slot, the session; then ReadyForQuery.
    async fn admit<C>(&self, client: &mut C, user: &str) -> PgWireResult<()>
    where
        C: ClientInfo + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let db = client.metadata().get(METADATA_DATABASE).cloned().unwrap_or_default();
        if !db.is_empty() && db != DATABASE {
            return Err(fatal(
                "3D000",
                format!("database \"{db}\" does not exist (Eddy's database is \"{DATABASE}\")"),
            ));
        }
        let slot = self.admission.admit(self.engine.users.is_superuser(user)).map_err(|m| fatal("53300", m.into()))?;
        client.session_extensions().insert(slot);
        let (pid, secret_key) = client.pid_and_secret_key();
        let (handle, guard) = self.manager.register(pid, secret_key);
        client.session_extensions().insert(handle);
        client.session_extensions().insert(guard);
        client.session_extensions().insert(ConnSession::new(user));
        // pgwire's default says "16.6-pgwire-..."; clients parse the version, so report the
        // Postgres version whose catalog Eddy imitates.
        let mut parameters = DefaultServerParameterProvider::default();
        if let Some(v) = crate::engine::pg_catalog::setting("server_version") {
            parameters.server_version = v;
        }
        if let Some(v) = crate::engine::pg_catalog::setting("search_path") {
            parameters.search_path = v;
        }
        parameters.is_superuser = self.engine.users.is_superuser(user);
        finish_authentication(client, &parameters).await
    }
}

#[cfg(test)]
mod tests {
    use super::Admission;

    #[test]
    fn reserved_slots_admit_only_superusers() {
        let a = Admission::new(3, 1);
        let first = a.admit(false).unwrap();
        let _second = a.admit(false).unwrap();
        assert_eq!(
            a.admit(false).err(),
            Some("remaining connection slots are reserved for roles with the SUPERUSER attribute")
        );
        let _admin = a.admit(true).unwrap();
        assert_eq!(a.admit(true).err(), Some("sorry, too many clients already"));
        // The superuser holds one of the three: a freed slot is still a reserved one.
        drop(first);
        assert!(a.admit(false).is_err());
        drop(_admin);
        assert!(a.admit(false).is_ok());
    }
}
