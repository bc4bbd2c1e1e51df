//! Users and passwords, shared by the Kafka (SASL PLAIN, SCRAM-SHA-256/512) and, later, the
//! Postgres endpoints. Without a users file both endpoints trust loopback clients; with one,
//! every Kafka connection must authenticate.
//!
//! The users file has one `name:password` per line (`#` starts a comment).

use std::collections::HashMap;
use std::path::Path;

use base64::Engine as _;
use ring::{digest, hmac, pbkdf2, rand::SecureRandom};

#[derive(Debug, Clone, Default)]
pub struct Users {
    passwords: HashMap<String, String>,
}

impl Users {
    pub fn load(path: &Path) -> Result<Users, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("users file {}: {e}", path.display()))?;
        Users::parse(&text)
    }

    pub fn parse(text: &str) -> Result<Users, String> {
        let mut passwords = HashMap::new();
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (user, password) =
                line.split_once(':').ok_or_else(|| format!("users file line {}: expected name:password", n + 1))?;
            if user.is_empty() {
                return Err(format!("users file line {}: empty user name", n + 1));
            }
            passwords.insert(user.to_string(), password.to_string());
        }
        Ok(Users { passwords })
    }

    pub fn is_empty(&self) -> bool {
        self.passwords.is_empty()
    }

    /// Constant-time check of a password.
    pub fn verify(&self, user: &str, password: &str) -> bool {
        match self.passwords.get(user) {
            Some(p) => constant_time_eq(p.as_bytes(), password.as_bytes()),
            None => false,
        }
    }

    fn password(&self, user: &str) -> Option<&str> {
        self.passwords.get(user).map(String::as_str)
    }
}

/// Compares without an early exit, so timing does not tell how much matched.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// SASL PLAIN (RFC 4616): `authzid \0 authcid \0 password`. Returns the user on success.
pub fn plain(users: &Users, message: &[u8]) -> Result<String, String> {
    let mut parts = message.split(|b| *b == 0);
    let (Some(_authzid), Some(user), Some(password), None) = (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err("malformed PLAIN message".into());
    };
    let user = String::from_utf8_lossy(user).into_owned();
    if users.verify(&user, &String::from_utf8_lossy(password)) {
        Ok(user)
    } else {
        Err(format!("authentication failed for user {user}"))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScramHash {
    Sha256,
    Sha512,
}

impl ScramHash {
    fn pbkdf2(self) -> pbkdf2::Algorithm {
        match self {
            ScramHash::Sha256 => pbkdf2::PBKDF2_HMAC_SHA256,
            ScramHash::Sha512 => pbkdf2::PBKDF2_HMAC_SHA512,
        }
    }
    fn hmac(self) -> hmac::Algorithm {
        match self {
            ScramHash::Sha256 => hmac::HMAC_SHA256,
            ScramHash::Sha512 => hmac::HMAC_SHA512,
        }
    }
    fn digest(self) -> &'static digest::Algorithm {
        match self {
            ScramHash::Sha256 => &digest::SHA256,
            ScramHash::Sha512 => &digest::SHA512,
        }
    }
    fn len(self) -> usize {
        match self {
            ScramHash::Sha256 => 32,
            ScramHash::Sha512 => 64,
        }
    }
}

const SCRAM_ITERATIONS: u32 = 4096;

/// Server side of one SCRAM exchange (RFC 5802/7677): two round trips.
pub struct ScramServer {
    hash: ScramHash,
    state: ScramState,
}

enum ScramState {
    Start,
    SentFirst { user: String, client_first_bare: String, server_first: String, nonce: String, salted: Vec<u8> },
    Done,
}

/// What one step produced: bytes to send, and the user once authenticated.
pub struct ScramStep {
    pub reply: Vec<u8>,
    pub authenticated: Option<String>,
}

impl ScramServer {
    pub fn new(hash: ScramHash) -> Self {
        ScramServer { hash, state: ScramState::Start }
    }

    pub fn step(&mut self, users: &Users, message: &[u8]) -> Result<ScramStep, String> {
        let text = std::str::from_utf8(message).map_err(|_| "SCRAM message is not UTF-8".to_string())?;
        match std::mem::replace(&mut self.state, ScramState::Done) {
            ScramState::Start => {
                // client-first: gs2-header "n,," then "n=user,r=nonce"
                let bare = text.strip_prefix("n,,").ok_or("SCRAM channel binding is not supported")?;
                let mut user = None;
                let mut client_nonce = None;
                for attr in bare.split(',') {
                    if let Some(u) = attr.strip_prefix("n=") {
                        user = Some(u.replace("=2C", ",").replace("=3D", "="));
                    } else if let Some(r) = attr.strip_prefix("r=") {
                        client_nonce = Some(r.to_string());
                    }
                }
                let (Some(user), Some(client_nonce)) = (user, client_nonce) else {
                    return Err("malformed SCRAM client-first message".into());
                };
                let rng = ring::rand::SystemRandom::new();
                let mut salt = [0u8; 16];
                let mut server_nonce = [0u8; 18];
                rng.fill(&mut salt).map_err(|_| "no randomness")?;
                rng.fill(&mut server_nonce).map_err(|_| "no randomness")?;
                let b64 = base64::engine::general_purpose::STANDARD;
                let nonce = format!("{client_nonce}{}", b64.encode(server_nonce));
                // Unknown users get a made-up password so the exchange fails at the proof,
                // without telling the client which user names exist.
                let password = users.password(&user).map(str::to_string).unwrap_or_else(|| b64.encode(server_nonce));
                let mut salted = vec![0u8; self.hash.len()];
                pbkdf2::derive(
                    self.hash.pbkdf2(),
                    std::num::NonZeroU32::new(SCRAM_ITERATIONS).expect("nonzero"),
                    &salt,
                    password.as_bytes(),
                    &mut salted,
                );
                let server_first = format!("r={nonce},s={},i={SCRAM_ITERATIONS}", b64.encode(salt));
                self.state = ScramState::SentFirst {
                    user,
                    client_first_bare: bare.to_string(),
                    server_first: server_first.clone(),
                    nonce,
                    salted,
                };
                Ok(ScramStep { reply: server_first.into_bytes(), authenticated: None })
            }
            ScramState::SentFirst { user, client_first_bare, server_first, nonce, salted } => {
                let (without_proof, proof) = text.rsplit_once(",p=").ok_or("SCRAM client-final has no proof")?;
                if !without_proof.split(',').any(|a| a == format!("r={nonce}")) {
                    tracing::debug!("SCRAM nonce mismatch: sent r={nonce}, got {without_proof}");
                    return Err("SCRAM nonce mismatch".into());
                }
                let b64 = base64::engine::general_purpose::STANDARD;
                let proof = b64.decode(proof).map_err(|_| "SCRAM proof is not base64")?;
                let auth_message = format!("{client_first_bare},{server_first},{without_proof}");
                let key =
                    |k: &[u8], data: &[u8]| hmac::sign(&hmac::Key::new(self.hash.hmac(), k), data).as_ref().to_vec();
                let client_key = key(&salted, b"Client Key");
                let stored_key = digest::digest(self.hash.digest(), &client_key);
                let signature = key(stored_key.as_ref(), auth_message.as_bytes());
                if proof.len() != signature.len() {
                    return Err(format!("authentication failed for user {user}"));
                }
                let recovered: Vec<u8> = proof.iter().zip(&signature).map(|(a, b)| a ^ b).collect();
                let recovered_stored = digest::digest(self.hash.digest(), &recovered);
                if !constant_time_eq(recovered_stored.as_ref(), stored_key.as_ref()) || users.password(&user).is_none()
                {
                    return Err(format!("authentication failed for user {user}"));
                }
                let server_key = key(&salted, b"Server Key");
                let server_signature = key(&server_key, auth_message.as_bytes());
                Ok(ScramStep {
                    reply: format!("v={}", b64.encode(server_signature)).into_bytes(),
                    authenticated: Some(user),
                })
            }
            ScramState::Done => Err("SCRAM exchange already finished".into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_checks_the_password() {
        let users = Users::parse("alice:s3cret\n# comment\nbob:x").unwrap();
        assert_eq!(plain(&users, b"\0alice\0s3cret").unwrap(), "alice");
        assert!(plain(&users, b"\0alice\0wrong").is_err());
        assert!(plain(&users, b"garbage").is_err());
    }

    /// A client side written from RFC 5802, to check the server end to end.
    fn client_proof(
        hash: ScramHash,
        password: &str,
        client_first_bare: &str,
        server_first: &str,
        final_no_proof: &str,
    ) -> String {
        let b64 = base64::engine::general_purpose::STANDARD;
        let attrs: HashMap<&str, &str> = server_first.split(',').filter_map(|a| a.split_once('=')).collect();
        let salt = b64.decode(attrs["s"]).unwrap();
        let iterations: u32 = attrs["i"].parse().unwrap();
        let mut salted = vec![0u8; hash.len()];
        pbkdf2::derive(
            hash.pbkdf2(),
            std::num::NonZeroU32::new(iterations).unwrap(),
            &salt,
            password.as_bytes(),
            &mut salted,
        );
        let client_key = hmac::sign(&hmac::Key::new(hash.hmac(), &salted), b"Client Key");
        let stored = digest::digest(hash.digest(), client_key.as_ref());
        let auth = format!("{client_first_bare},{server_first},{final_no_proof}");
        let sig = hmac::sign(&hmac::Key::new(hash.hmac(), stored.as_ref()), auth.as_bytes());
        let proof: Vec<u8> = client_key.as_ref().iter().zip(sig.as_ref()).map(|(a, b)| a ^ b).collect();
        b64.encode(proof)
    }

    #[test]
    fn scram_round_trip_and_wrong_password() {
        let users = Users::parse("alice:s3cret").unwrap();
        for hash in [ScramHash::Sha256, ScramHash::Sha512] {
            for (password, ok) in [("s3cret", true), ("nope", false)] {
                let mut server = ScramServer::new(hash);
                let first = server.step(&users, b"n,,n=alice,r=abc").unwrap();
                let server_first = String::from_utf8(first.reply).unwrap();
                let nonce = server_first.split(',').next().unwrap().trim_start_matches("r=").to_string();
                let final_no_proof = format!("c=biws,r={nonce}");
                let proof = client_proof(hash, password, "n=alice,r=abc", &server_first, &final_no_proof);
                let result = server.step(&users, format!("{final_no_proof},p={proof}").as_bytes());
                assert_eq!(result.is_ok(), ok);
                if ok {
                    assert_eq!(result.unwrap().authenticated.as_deref(), Some("alice"));
                }
            }
        }
    }
}
