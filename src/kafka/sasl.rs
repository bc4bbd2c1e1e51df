//! SASL on the Kafka listener: SaslHandshake (v0 raw tokens, v1 SaslAuthenticate framing)
//! with PLAIN and SCRAM-SHA-256/512 against the configured users.

use bytes::Bytes;
use kafka_protocol::messages::{
    ApiKey, SaslAuthenticateRequest, SaslAuthenticateResponse, SaslHandshakeRequest, SaslHandshakeResponse,
};
use kafka_protocol::protocol::{Decodable, StrBytes};

use super::error::*;
use super::{encode_response, Broker, ConnError};
use crate::auth::{plain, ScramHash, ScramServer};

const MECHANISMS: [&str; 3] = ["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"];

enum Mechanism {
    Plain,
    Scram(ScramServer),
}

pub struct Session {
    authenticated: bool,
    /// Who authenticated (`None` without SASL: then no privileges are checked).
    user: Option<String>,
    mechanism: Option<Mechanism>,
    raw_tokens: bool,
    failed: bool,
}

impl Session {
    pub fn new(authenticated: bool) -> Session {
        Session { authenticated, user: None, mechanism: None, raw_tokens: false, failed: false }
    }
    pub fn user(&self) -> Option<&str> {
        self.user.as_deref()
    }
    pub fn authenticated(&self) -> bool {
        self.authenticated
    }
    pub fn raw_tokens(&self) -> bool {
        self.raw_tokens && !self.authenticated
    }
    pub fn failed(&self) -> bool {
        self.failed
    }

    pub fn handle(
        &mut self,
        broker: &Broker,
        key: ApiKey,
        version: i16,
        correlation_id: i32,
        mut body: Bytes,
    ) -> Result<Bytes, ConnError> {
        let bad = |e: String| ConnError::Frame(format!("decode: {e}"));
        if key == ApiKey::SaslHandshake {
            let req = SaslHandshakeRequest::decode(&mut body, version).map_err(|e| bad(e.to_string()))?;
            let mut r = SaslHandshakeResponse::default();
            r.mechanisms = MECHANISMS.iter().map(|m| StrBytes::from_static_str(m)).collect();
            r.error_code = if broker.users.is_none() || self.authenticated {
                ILLEGAL_SASL_STATE
            } else {
                match req.mechanism.as_str() {
                    "PLAIN" => {
                        self.mechanism = Some(Mechanism::Plain);
                        NONE
                    }
                    "SCRAM-SHA-256" => {
                        self.mechanism = Some(Mechanism::Scram(ScramServer::new(ScramHash::Sha256)));
                        NONE
                    }
                    "SCRAM-SHA-512" => {
                        self.mechanism = Some(Mechanism::Scram(ScramServer::new(ScramHash::Sha512)));
                        NONE
                    }
                    _ => UNSUPPORTED_SASL_MECHANISM,
                }
            };
            self.raw_tokens = version == 0 && r.error_code == NONE;
            return encode_response(correlation_id, key, version, &r);
        }
        let req = SaslAuthenticateRequest::decode(&mut body, version).map_err(|e| bad(e.to_string()))?;
        let mut r = SaslAuthenticateResponse::default();
        match self.step(broker, &req.auth_bytes) {
            Ok(reply) => r.auth_bytes = Bytes::from(reply),
            Err(message) => {
                r.error_code = SASL_AUTHENTICATION_FAILED;
                r.error_message = Some(StrBytes::from_string(message));
                self.failed = true;
            }
        }
        encode_response(correlation_id, key, version, &r)
    }

    /// One token after a v0 handshake; a failure closes the connection.
    pub fn raw_step(&mut self, broker: &Broker, token: &[u8]) -> Result<Vec<u8>, String> {
        self.step(broker, token)
    }

    fn step(&mut self, broker: &Broker, token: &[u8]) -> Result<Vec<u8>, String> {
        let users = broker.users.as_deref().ok_or("SASL is not enabled")?;
        match self.mechanism.as_mut() {
            None => Err("SaslAuthenticate before SaslHandshake".into()),
            Some(Mechanism::Plain) => {
                self.user = Some(plain(users, token)?);
                self.authenticated = true;
                Ok(Vec::new())
            }
            Some(Mechanism::Scram(server)) => {
                let step = server.step(users, token)?;
                if let Some(user) = step.authenticated {
                    self.user = Some(user);
                    self.authenticated = true;
                }
                Ok(step.reply)
            }
        }
    }
}
