//! Users and passwords: one store serving the Postgres endpoint (SCRAM-SHA-256) and the Kafka
//! endpoint (SASL PLAIN, SCRAM-SHA-256/512).
//!
//! Only SCRAM verifiers are kept, never passwords: for each user a SCRAM-SHA-256 verifier in
//! Postgres's own text form (`SCRAM-SHA-256$4096:<salt>$<StoredKey>:<ServerKey>`) and a
//! SCRAM-SHA-512 one for Kafka clients. Users made with `CREATE USER` live in the catalog
//! column family (`user/<name>`, one synced RocksDB write each); the bootstrap superuser
//! `eddy` (password from `EDDY_PASSWORD` / `--password-file`) and the users of a
//! `--users-file` (`name:password` per line, `#` comments) are derived at start-up.
//!
//! Whether a connection must authenticate is decided by the server (`ServerConfig`): with a
//! bootstrap password or a users file every connection must; without, loopback clients are
//! trusted.

use std::collections::HashMap;
use std::path::Path;
use std::sync::RwLock;

use base64::Engine as _;
use ring::{digest, hmac, pbkdf2, rand::SecureRandom};
use serde::{Deserialize, Serialize};

use crate::state::{StateStore, CATALOG_CF};

/// The bootstrap superuser.
pub const SUPERUSER: &str = "eddy";
const SCRAM_ITERATIONS: u32 = 4096;

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
    fn name(self) -> &'static str {
        match self {
            ScramHash::Sha256 => "SCRAM-SHA-256",
            ScramHash::Sha512 => "SCRAM-SHA-512",
        }
    }
}

fn b64() -> base64::engine::GeneralPurpose {
    base64::engine::general_purpose::STANDARD
}

fn random<const N: usize>() -> [u8; N] {
    let mut out = [0u8; N];
    ring::rand::SystemRandom::new().fill(&mut out).expect("system randomness");
    out
}

fn mac(hash: ScramHash, key: &[u8], data: &[u8]) -> Vec<u8> {
    hmac::sign(&hmac::Key::new(hash.hmac(), key), data).as_ref().to_vec()
}

/// What a server keeps of a SCRAM password (RFC 5802): salt, iterations, StoredKey, ServerKey.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verifier {
    pub hash: ScramHash,
    pub iterations: u32,
    pub salt: Vec<u8>,
    pub stored_key: Vec<u8>,
    pub server_key: Vec<u8>,
}

impl Verifier {
    /// A verifier for `password` with a fresh random salt.
    pub fn new(hash: ScramHash, password: &str) -> Verifier {
        Verifier::derive(hash, password, &random::<16>(), SCRAM_ITERATIONS)
    }

    fn derive(hash: ScramHash, password: &str, salt: &[u8], iterations: u32) -> Verifier {
        let mut salted = vec![0u8; hash.len()];
        let rounds = std::num::NonZeroU32::new(iterations.max(1)).expect("nonzero");
        pbkdf2::derive(hash.pbkdf2(), rounds, salt, password.as_bytes(), &mut salted);
        let client_key = mac(hash, &salted, b"Client Key");
        Verifier {
            hash,
            iterations,
            salt: salt.to_vec(),
            stored_key: digest::digest(hash.digest(), &client_key).as_ref().to_vec(),
            server_key: mac(hash, &salted, b"Server Key"),
        }
    }

    /// Does `password` produce this verifier? (SASL PLAIN.)
    pub fn matches(&self, password: &str) -> bool {
        let other = Verifier::derive(self.hash, password, &self.salt, self.iterations);
        constant_time_eq(&other.stored_key, &self.stored_key)
    }

    /// Postgres's text form, as `pg_authid.rolpassword` holds it.
    pub fn encode(&self) -> String {
        let b = b64();
        format!(
            "{}${}:{}${}:{}",
            self.hash.name(),
            self.iterations,
            b.encode(&self.salt),
            b.encode(&self.stored_key),
            b.encode(&self.server_key)
        )
    }

    pub fn parse(text: &str) -> Option<Verifier> {
        let (name, rest) = text.split_once('$')?;
        let hash = [ScramHash::Sha256, ScramHash::Sha512].into_iter().find(|h| h.name() == name)?;
        let (params, keys) = rest.split_once('$')?;
        let (iterations, salt) = params.split_once(':')?;
        let (stored, server) = keys.split_once(':')?;
        let b = b64();
        Some(Verifier {
            hash,
            iterations: iterations.parse().ok()?,
            salt: b.decode(salt).ok()?,
            stored_key: b.decode(stored).ok()?,
            server_key: b.decode(server).ok()?,
        })
    }
}

/// One user as stored (`user/<name>` in the catalog column family).
#[derive(Debug, Clone, Serialize, Deserialize)]
struct UserRecord {
    name: String,
    superuser: bool,
    /// Verifiers in Postgres's text form, one per hash.
    verifiers: Vec<String>,
}

#[derive(Debug, Clone)]
struct User {
    superuser: bool,
    /// Kept in the catalog (CREATE USER) rather than derived at start-up.
    durable: bool,
    verifiers: Vec<Verifier>,
}

impl User {
    fn with_password(password: &str, superuser: bool, durable: bool) -> User {
        User {
            superuser,
            durable,
            verifiers: vec![Verifier::new(ScramHash::Sha256, password), Verifier::new(ScramHash::Sha512, password)],
        }
    }

    fn verifier(&self, hash: ScramHash) -> Option<&Verifier> {
        self.verifiers.iter().find(|v| v.hash == hash)
    }
}

/// What a Kafka client asks to do with a topic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TopicAccess {
    /// Fetch (and ListOffsets, OffsetCommit of a group reading it).
    Read,
    /// Produce.
    Write,
    /// DeleteTopics.
    Delete,
}

/// Who may do what with topics, for Kafka clients; set by the engine, which knows which
/// streams and tables use a topic and who was granted what on them.
pub trait TopicPolicy: Send + Sync {
    /// Whether (non-superuser) `user` may `access` `topic`.
    fn may(&self, user: &str, topic: &str, access: TopicAccess) -> bool;
    /// Every grant, as Kafka ACLs: (topic, user, what the user may do), for DescribeAcls.
    fn grants(&self) -> Vec<(String, String, TopicAccess)>;
}

/// The user store (see the module comment).
#[derive(Default)]
pub struct Users {
    users: RwLock<HashMap<String, User>>,
    store: Option<StateStore>,
    /// Privileges on topics for Kafka clients (none set: every user may do everything).
    topic_policy: RwLock<Option<Box<dyn TopicPolicy>>>,
}

impl std::fmt::Debug for Users {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Users").field("count", &self.read().len()).finish()
    }
}

fn user_key(name: &str) -> Vec<u8> {
    format!("user/{name}").into_bytes()
}

impl Users {
    /// The users kept in the catalog.
    pub fn open(store: StateStore) -> Result<Users, String> {
        let mut users = HashMap::new();
        for (_, v) in store.scan_prefix(CATALOG_CF, b"user/", usize::MAX).map_err(|e| e.to_string())? {
            let r: UserRecord = serde_json::from_slice(&v).map_err(|e| format!("catalog user entry: {e}"))?;
            let verifiers = r.verifiers.iter().filter_map(|v| Verifier::parse(v)).collect();
            users.insert(r.name, User { superuser: r.superuser, durable: true, verifiers });
        }
        Ok(Users { users: RwLock::new(users), store: Some(store), topic_policy: RwLock::new(None) })
    }

    /// Adds the users of a users file (kept in memory; the file stays their source).
    pub fn load_file(&self, path: &Path) -> Result<(), String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("users file {}: {e}", path.display()))?;
        for (user, password) in parse_users_file(&text)? {
            self.write().insert(user.clone(), User::with_password(&password, user == SUPERUSER, false));
        }
        Ok(())
    }

    /// In memory only: `name:password` lines (tests).
    pub fn parse(text: &str) -> Result<Users, String> {
        let users = Users::default();
        for (user, password) in parse_users_file(text)? {
            users.write().insert(user.clone(), User::with_password(&password, user == SUPERUSER, false));
        }
        Ok(users)
    }

    /// Sets the bootstrap superuser's password (every start; not written to disk).
    pub fn bootstrap(&self, password: &str) {
        self.write().insert(SUPERUSER.into(), User::with_password(password, true, false));
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, HashMap<String, User>> {
        self.users.read().unwrap_or_else(|p| p.into_inner())
    }
    fn write(&self) -> std::sync::RwLockWriteGuard<'_, HashMap<String, User>> {
        self.users.write().unwrap_or_else(|p| p.into_inner())
    }

    pub fn is_empty(&self) -> bool {
        self.read().is_empty()
    }

    pub fn exists(&self, user: &str) -> bool {
        self.read().contains_key(user)
    }

    pub fn set_topic_policy(&self, policy: Box<dyn TopicPolicy>) {
        *self.topic_policy.write().unwrap_or_else(|p| p.into_inner()) = Some(policy);
    }

    /// Whether `user` (authenticated) may `access` `topic`: superusers always may.
    pub fn may_access_topic(&self, user: &str, topic: &str, access: TopicAccess) -> bool {
        if self.is_superuser(user) {
            return true;
        }
        match self.topic_policy.read().unwrap_or_else(|p| p.into_inner()).as_ref() {
            Some(policy) => policy.may(user, topic, access),
            None => true,
        }
    }

    /// What the grants say, as Kafka ACLs (topic, user, access).
    pub fn topic_grants(&self) -> Vec<(String, String, TopicAccess)> {
        self.topic_policy.read().unwrap_or_else(|p| p.into_inner()).as_ref().map(|p| p.grants()).unwrap_or_default()
    }

    /// The bootstrap user is always a superuser (also under trust authentication).
    pub fn is_superuser(&self, user: &str) -> bool {
        user == SUPERUSER || self.read().get(user).is_some_and(|u| u.superuser)
    }

    /// (name, superuser, stored in the catalog) of every user, sorted.
    pub fn list(&self) -> Vec<(String, bool, bool)> {
        let mut out: Vec<_> = self.read().iter().map(|(n, u)| (n.clone(), u.superuser, u.durable)).collect();
        out.sort();
        out
    }

    fn persist(&self, name: &str, user: Option<&User>) -> Result<(), String> {
        let Some(store) = &self.store else { return Ok(()) };
        let mut cp = store.checkpoint(CATALOG_CF);
        let result = match user {
            Some(u) => {
                let record = UserRecord {
                    name: name.to_string(),
                    superuser: u.superuser,
                    verifiers: u.verifiers.iter().map(Verifier::encode).collect(),
                };
                let bytes = serde_json::to_vec(&record).map_err(|e| e.to_string())?;
                cp.put(store, &user_key(name), &bytes)
            }
            None => cp.delete(store, &user_key(name)),
        };
        result.and_then(|_| store.commit(cp)).map_err(|e| e.to_string())?;
        store.request_backup();
        Ok(())
    }

    /// CREATE USER: fails if the name is taken.
    pub fn create(&self, name: &str, password: Option<&str>, superuser: bool) -> Result<(), String> {
        if self.exists(name) || name == SUPERUSER {
            return Err(format!("role \"{name}\" already exists"));
        }
        let user = match password {
            Some(p) => User::with_password(p, superuser, true),
            // No password: the user can log in only where trust is allowed.
            None => User { superuser, durable: true, verifiers: Vec::new() },
        };
        self.persist(name, Some(&user))?;
        self.write().insert(name.to_string(), user);
        Ok(())
    }

    /// ALTER USER: a new password and/or superuser flag.
    pub fn alter(&self, name: &str, password: Option<&str>, superuser: Option<bool>) -> Result<(), String> {
        let mut user = self.read().get(name).cloned().ok_or_else(|| format!("role \"{name}\" does not exist"))?;
        if !user.durable {
            return Err(format!(
                "role \"{name}\" comes from the server's configuration (EDDY_PASSWORD, --password-file or --users-file); change it there"
            ));
        }
        if let Some(p) = password {
            user.verifiers = User::with_password(p, user.superuser, true).verifiers;
        }
        if let Some(s) = superuser {
            user.superuser = s;
        }
        self.persist(name, Some(&user))?;
        self.write().insert(name.to_string(), user);
        Ok(())
    }

    pub fn drop_user(&self, name: &str, if_exists: bool) -> Result<bool, String> {
        let Some(user) = self.read().get(name).cloned() else {
            return if if_exists { Ok(false) } else { Err(format!("role \"{name}\" does not exist")) };
        };
        if !user.durable {
            return Err(format!("role \"{name}\" comes from the server's configuration and cannot be dropped"));
        }
        self.persist(name, None)?;
        self.write().remove(name);
        Ok(true)
    }

    /// Checks a password (SASL PLAIN) against the stored verifier, without early exit.
    pub fn verify(&self, user: &str, password: &str) -> bool {
        match self.verifier(user, ScramHash::Sha256) {
            Some(v) => v.matches(password),
            None => {
                // Same work for unknown users, so timing does not tell which names exist.
                let _ = Verifier::new(ScramHash::Sha256, password);
                false
            }
        }
    }

    pub fn verifier(&self, user: &str, hash: ScramHash) -> Option<Verifier> {
        self.read().get(user).and_then(|u| u.verifier(hash).cloned())
    }
}

fn parse_users_file(text: &str) -> Result<Vec<(String, String)>, String> {
    let mut out = Vec::new();
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
        out.push((user.to_string(), password.to_string()));
    }
    Ok(out)
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

/// Server side of one SCRAM exchange (RFC 5802/7677): two round trips, against a verifier.
pub struct ScramServer {
    hash: ScramHash,
    /// Postgres clients leave SCRAM's user name empty: the startup message names the user.
    user: Option<String>,
    state: ScramState,
}

enum ScramState {
    Start,
    SentFirst(Box<SentFirst>),
    Done,
}

struct SentFirst {
    user: String,
    gs2_header: String,
    client_first_bare: String,
    server_first: String,
    nonce: String,
    verifier: Verifier,
    known: bool,
}

/// What one step produced: bytes to send, and the user once authenticated.
pub struct ScramStep {
    pub reply: Vec<u8>,
    pub authenticated: Option<String>,
}

impl ScramServer {
    pub fn new(hash: ScramHash) -> Self {
        ScramServer { hash, user: None, state: ScramState::Start }
    }

    /// For Postgres: the user is the startup message's, whatever SCRAM's `n=` says.
    pub fn for_user(hash: ScramHash, user: &str) -> Self {
        ScramServer { hash, user: Some(user.to_string()), state: ScramState::Start }
    }

    /// The server's answer to the client's next message. Any error ends the exchange.
    pub fn step(&mut self, users: &Users, message: &[u8]) -> Result<ScramStep, String> {
        let state = std::mem::replace(&mut self.state, ScramState::Done);
        let text = std::str::from_utf8(message).map_err(|_| "SCRAM message is not UTF-8".to_string())?;
        match state {
            ScramState::Start => {
                // client-first: gs2-header ("n,," or "y,,": no channel binding) then "n=user,r=nonce"
                let (gs2_header, bare) = match (text.strip_prefix("n,,"), text.strip_prefix("y,,")) {
                    (Some(b), _) => ("n,,", b),
                    (_, Some(b)) => ("y,,", b),
                    _ => return Err("SCRAM channel binding is not supported".into()),
                };
                let mut user = None;
                let mut client_nonce = None;
                for attr in bare.split(',') {
                    if let Some(u) = attr.strip_prefix("n=") {
                        user = Some(u.replace("=2C", ",").replace("=3D", "="));
                    } else if let Some(r) = attr.strip_prefix("r=") {
                        client_nonce = Some(r.to_string());
                    }
                }
                let user = self.user.clone().or(user);
                let (Some(user), Some(client_nonce)) = (user, client_nonce) else {
                    return Err("malformed SCRAM client-first message".into());
                };
                let nonce = format!("{client_nonce}{}", b64().encode(random::<18>()));
                // Unknown users get a made-up verifier so the exchange fails at the proof,
                // without telling the client which user names exist.
                let stored = users.verifier(&user, self.hash);
                let known = stored.is_some();
                let verifier = stored.unwrap_or_else(|| Verifier::new(self.hash, &b64().encode(random::<18>())));
                let server_first = format!("r={nonce},s={},i={}", b64().encode(&verifier.salt), verifier.iterations);
                self.state = ScramState::SentFirst(Box::new(SentFirst {
                    user,
                    gs2_header: gs2_header.to_string(),
                    client_first_bare: bare.to_string(),
                    server_first: server_first.clone(),
                    nonce,
                    verifier,
                    known,
                }));
                Ok(ScramStep { reply: server_first.into_bytes(), authenticated: None })
            }
            ScramState::SentFirst(first) => {
                let SentFirst { user, gs2_header, client_first_bare, server_first, nonce, verifier, known } = *first;
                let fail = || format!("authentication failed for user {user}");
                let (without_proof, proof) = text.rsplit_once(",p=").ok_or("SCRAM client-final has no proof")?;
                if !without_proof.split(',').any(|a| a == format!("r={nonce}")) {
                    tracing::debug!("SCRAM nonce mismatch: sent r={nonce}, got {without_proof}");
                    return Err("SCRAM nonce mismatch".into());
                }
                let binding = format!("c={}", b64().encode(gs2_header.as_bytes()));
                if !without_proof.split(',').any(|a| a == binding) {
                    return Err("SCRAM channel binding does not match the client-first message".into());
                }
                let proof = b64().decode(proof).map_err(|_| "SCRAM proof is not base64")?;
                let auth_message = format!("{client_first_bare},{server_first},{without_proof}");
                let signature = mac(self.hash, &verifier.stored_key, auth_message.as_bytes());
                if proof.len() != signature.len() {
                    return Err(fail());
                }
                let client_key: Vec<u8> = proof.iter().zip(&signature).map(|(a, b)| a ^ b).collect();
                let recovered = digest::digest(self.hash.digest(), &client_key);
                if !constant_time_eq(recovered.as_ref(), &verifier.stored_key) || !known {
                    return Err(fail());
                }
                let server_signature = mac(self.hash, &verifier.server_key, auth_message.as_bytes());
                Ok(ScramStep {
                    reply: format!("v={}", b64().encode(server_signature)).into_bytes(),
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
        assert!(plain(&users, b"\0carol\0x").is_err());
        assert!(plain(&users, b"garbage").is_err());
    }

    #[test]
    fn verifier_text_round_trips_like_postgres() {
        let v = Verifier::new(ScramHash::Sha256, "pw");
        let text = v.encode();
        assert!(text.starts_with("SCRAM-SHA-256$4096:"), "{text}");
        assert_eq!(Verifier::parse(&text), Some(v.clone()));
        assert!(v.matches("pw") && !v.matches("pw2"));
    }

    #[test]
    fn rfc7677_test_vector() {
        let v = Verifier::derive(ScramHash::Sha256, "pencil", &b64().decode("W22ZaJ0SNY7soEsUEjb6gQ==").unwrap(), 4096);
        let users = Users::default();
        users.write().insert("user".into(), User { superuser: false, durable: false, verifiers: vec![v] });
        let server_first = "r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096";
        let final_no_proof = "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0";
        let proof =
            client_proof(ScramHash::Sha256, "pencil", "n=user,r=rOprNGfwEbeRWgbNEkqO", server_first, final_no_proof);
        assert_eq!(proof, "dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=");
        let verifier = users.verifier("user", ScramHash::Sha256).unwrap();
        let auth = format!("n=user,r=rOprNGfwEbeRWgbNEkqO,{server_first},{final_no_proof}");
        let signature = mac(ScramHash::Sha256, &verifier.server_key, auth.as_bytes());
        assert_eq!(b64().encode(signature), "6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=");
    }

    /// A client side written from RFC 5802, to check the server end to end.
    fn client_proof(
        hash: ScramHash,
        password: &str,
        client_first_bare: &str,
        server_first: &str,
        final_no_proof: &str,
    ) -> String {
        let attrs: HashMap<&str, &str> = server_first.split(',').filter_map(|a| a.split_once('=')).collect();
        let salt = b64().decode(attrs["s"]).unwrap();
        let iterations: u32 = attrs["i"].parse().unwrap();
        let mut salted = vec![0u8; hash.len()];
        pbkdf2::derive(
            hash.pbkdf2(),
            std::num::NonZeroU32::new(iterations).unwrap(),
            &salt,
            password.as_bytes(),
            &mut salted,
        );
        let client_key = mac(hash, &salted, b"Client Key");
        let stored = digest::digest(hash.digest(), &client_key);
        let auth = format!("{client_first_bare},{server_first},{final_no_proof}");
        let sig = mac(hash, stored.as_ref(), auth.as_bytes());
        let proof: Vec<u8> = client_key.iter().zip(&sig).map(|(a, b)| a ^ b).collect();
        b64().encode(proof)
    }

    #[test]
    fn scram_round_trip_and_wrong_password() {
        let users = Users::parse("alice:s3cret").unwrap();
        for hash in [ScramHash::Sha256, ScramHash::Sha512] {
            for (user, password, ok) in [("alice", "s3cret", true), ("alice", "nope", false), ("bob", "s3cret", false)]
            {
                let mut server = ScramServer::new(hash);
                let first = server.step(&users, format!("n,,n={user},r=abc").as_bytes()).unwrap();
                let server_first = String::from_utf8(first.reply).unwrap();
                let nonce = server_first.split(',').next().unwrap().trim_start_matches("r=").to_string();
                let final_no_proof = format!("c=biws,r={nonce}");
                let proof = client_proof(hash, password, &format!("n={user},r=abc"), &server_first, &final_no_proof);
                let result = server.step(&users, format!("{final_no_proof},p={proof}").as_bytes());
                assert_eq!(result.is_ok(), ok, "{user}/{password}");
                if ok {
                    assert_eq!(result.unwrap().authenticated.as_deref(), Some("alice"));
                }
            }
        }
    }

    /// Found by the fuzz target `pg_messages`: a message that was not UTF-8 failed without
    /// ending the exchange, so the client could go on where it stood.
    #[test]
    fn every_failed_step_ends_the_exchange() {
        let users = Users::parse("alice:s3cret").unwrap();
        let mut server = ScramServer::for_user(ScramHash::Sha256, "alice");
        assert!(server.step(&users, b"n,,n=,r=\xff").is_err());
        assert_eq!(server.step(&users, b"n,,n=,r=abc").err().as_deref(), Some("SCRAM exchange already finished"));
    }

    #[test]
    fn postgres_clients_name_the_user_in_the_startup_message() {
        let users = Users::parse("alice:s3cret").unwrap();
        let mut server = ScramServer::for_user(ScramHash::Sha256, "alice");
        let first = server.step(&users, b"y,,n=,r=xyz").unwrap();
        let server_first = String::from_utf8(first.reply).unwrap();
        let nonce = server_first.split(',').next().unwrap().trim_start_matches("r=").to_string();
        let final_no_proof = format!("c=eSws,r={nonce}");
        let proof = client_proof(ScramHash::Sha256, "s3cret", "n=,r=xyz", &server_first, &final_no_proof);
        let step = server.step(&users, format!("{final_no_proof},p={proof}").as_bytes()).unwrap();
        assert_eq!(step.authenticated.as_deref(), Some("alice"));
    }
}
