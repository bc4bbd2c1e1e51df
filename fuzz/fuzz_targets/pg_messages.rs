//! Fuzzes the Postgres client input Eddy reads itself (pgwire frames the messages; these
//! read what is inside). The first byte picks one:
//! - 0: a SCRAM-SHA-256/512 exchange (`auth::ScramServer::step`, the SASL messages of
//!   start-up): the client-first message, then a client-final one, fuzzed or written by an
//!   honest client with the right or a wrong password. Any bytes give a reply or an error;
//!   the server's nonce extends the client's; an exchange authenticates only an honest client
//!   that knows the password, as a user that exists, and then the server's signature is
//!   right; nothing more after it ends.
//! - 1: one binary parameter of a Bind message (`pgwire::params::binary_param`) of a type a
//!   byte picks: numbers read back to the same value, fixed-width ones only from their width,
//!   array elements only from their own bytes.
//! - 2: an array written the way drivers send it in binary, read back
//!   (`binary_array_param`) as array text that gives the same elements.
//! - 3: a statement and its parameters (`count_params`, `param_types`, `substitute`): every
//!   parameter `$n` outside quotes and comments is replaced, and a parameter's value never
//!   changes the statement's tokens (only the contents of its string literal).
#![no_main]

use std::sync::OnceLock;

use base64::Engine as _;
use libfuzzer_sys::fuzz_target;
use ring::{digest, hmac, pbkdf2};

#[path = "../stand_ins/error.rs"]
mod error;

#[path = "../stand_ins/state.rs"]
mod state;

#[path = "../../src/auth.rs"]
#[allow(dead_code)]
mod auth;

#[path = "../../src/pgwire/params.rs"]
#[allow(dead_code)]
mod params;

use auth::{ScramHash, ScramServer, Users};
use datafusion::sql::sqlparser::dialect::GenericDialect;
use datafusion::sql::sqlparser::tokenizer::{Token, Tokenizer};
use error::EddyError;
use pgwire::api::Type;

const USER: &str = "alice";
const PASSWORD: &str = "s3cret";

fuzz_target!(|data: &[u8]| {
    let Some((&which, rest)) = data.split_first() else { return };
    match which % 4 {
        0 => scram(rest),
        1 => binary_param(rest),
        2 => array_round_trip(rest),
        _ => statement(rest),
    }
});

fn users() -> &'static Users {
    static USERS: OnceLock<Users> = OnceLock::new();
    USERS.get_or_init(|| Users::parse(&format!("{USER}:{PASSWORD}")).expect("a users file"))
}

fn b64() -> base64::engine::GeneralPurpose {
    base64::engine::general_purpose::STANDARD
}

fn algorithms(hash: ScramHash) -> (pbkdf2::Algorithm, hmac::Algorithm, &'static digest::Algorithm, usize) {
    match hash {
        ScramHash::Sha256 => (pbkdf2::PBKDF2_HMAC_SHA256, hmac::HMAC_SHA256, &digest::SHA256, 32),
        ScramHash::Sha512 => (pbkdf2::PBKDF2_HMAC_SHA512, hmac::HMAC_SHA512, &digest::SHA512, 64),
    }
}

/// The honest client's SaltedPassword for `USER` (RFC 5802), from the salt and iteration
/// count the server keeps; derived once per hash.
fn salted_password(hash: ScramHash) -> &'static [u8] {
    static SALTED: [OnceLock<Vec<u8>>; 2] = [OnceLock::new(), OnceLock::new()];
    SALTED[hash as usize].get_or_init(|| {
        let verifier = users().verifier(USER, hash).expect("the user's verifier");
        let (kdf, _, _, len) = algorithms(hash);
        let mut salted = vec![0u8; len];
        let rounds = std::num::NonZeroU32::new(verifier.iterations).expect("iterations");
        pbkdf2::derive(kdf, rounds, &verifier.salt, PASSWORD.as_bytes(), &mut salted);
        salted
    })
}

fn sign(hash: ScramHash, key: &[u8], data: &[u8]) -> Vec<u8> {
    hmac::sign(&hmac::Key::new(algorithms(hash).1, key), data).as_ref().to_vec()
}

/// Flags: bit 0 SHA-512; bit 1 the user comes from SCRAM's `n=` rather than the startup
/// message; bit 2 an honest client writes the client-final message; bit 3 with a wrong
/// password. The rest is the client-first message, a 0 byte, and the client-final one.
fn scram(data: &[u8]) {
    let Some((&flags, rest)) = data.split_first() else { return };
    let hash = if flags & 1 == 0 { ScramHash::Sha256 } else { ScramHash::Sha512 };
    let (first, fuzzed_final) = match rest.iter().position(|&b| b == 0) {
        Some(i) => (&rest[..i], &rest[i + 1..]),
        None => (rest, &[][..]),
    };
    let mut server = if flags & 2 == 0 { ScramServer::for_user(hash, USER) } else { ScramServer::new(hash) };
    let server_first = match server.step(users(), first) {
        Ok(step) => {
            assert!(step.authenticated.is_none(), "authenticated by a client-first message");
            String::from_utf8(step.reply).expect("server-first is text")
        }
        Err(_) => {
            assert!(server.step(users(), fuzzed_final).is_err(), "a step after a failed one");
            return;
        }
    };
    // r=<client nonce><server nonce>,s=<salt>,i=<iterations>
    let nonce = server_first.strip_prefix("r=").and_then(|s| s.split(',').next()).expect("server-first nonce");
    let text = std::str::from_utf8(first).expect("accepted client-first is UTF-8");
    let client_nonce = text.split(',').filter_map(|a| a.strip_prefix("r=")).last().expect("client nonce");
    assert!(nonce.len() > client_nonce.len() && nonce.starts_with(client_nonce), "{nonce} extends {client_nonce}");
    let honest = flags & 4 != 0;
    let without_proof = format!("c={},r={nonce}", b64().encode(&text[..3]));
    let auth_message = format!("{},{server_first},{without_proof}", &text[3..]);
    let final_message = if honest {
        let mut client_key = sign(hash, salted_password(hash), b"Client Key");
        if flags & 8 != 0 {
            client_key[0] ^= 1;
        }
        let stored_key = digest::digest(algorithms(hash).2, &client_key);
        let signature = sign(hash, stored_key.as_ref(), auth_message.as_bytes());
        let proof: Vec<u8> = client_key.iter().zip(&signature).map(|(k, s)| k ^ s).collect();
        format!("{without_proof},p={}", b64().encode(proof)).into_bytes()
    } else {
        fuzzed_final.to_vec()
    };
    let result = server.step(users(), &final_message);
    match &result {
        Ok(step) => {
            assert!(honest && flags & 8 == 0, "authenticated without the password: {final_message:?}");
            assert_eq!(step.authenticated.as_deref(), Some(USER));
            // The server proves it knows the password too.
            let server_key = sign(hash, salted_password(hash), b"Server Key");
            let expected = format!("v={}", b64().encode(sign(hash, &server_key, auth_message.as_bytes())));
            assert_eq!(step.reply, expected.into_bytes(), "server-final");
        }
        Err(e) => {
            // The honest client fails only with a wrong password, or as a user that does
            // not exist (`n=` from the message).
            let known = flags & 2 == 0 || users().exists(client_user(&text[3..]).as_deref().unwrap_or(""));
            assert!(!(honest && flags & 8 == 0 && known), "the honest client was refused: {e}");
        }
    }
    assert!(server.step(users(), &final_message).is_err(), "a step after the exchange ended");
}

/// SCRAM's user name in a client-first-bare message (`n=`, with `=2C` and `=3D` decoded).
fn client_user(bare: &str) -> Option<String> {
    bare.split(',').filter_map(|a| a.strip_prefix("n=")).last().map(|u| u.replace("=2C", ",").replace("=3D", "="))
}

const TYPES: &[Option<Type>] = &[
    Some(Type::INT2),
    Some(Type::INT4),
    Some(Type::INT8),
    Some(Type::FLOAT4),
    Some(Type::FLOAT8),
    Some(Type::BOOL),
    Some(Type::OID_ARRAY),
    Some(Type::INT4_ARRAY),
    Some(Type::INT8_ARRAY),
    Some(Type::TEXT_ARRAY),
    Some(Type::TEXT),
    Some(Type::VARCHAR),
    Some(Type::UNKNOWN),
    None,
    Some(Type::NUMERIC),
    Some(Type::TIMESTAMP),
    Some(Type::TIMESTAMPTZ),
    Some(Type::DATE),
    Some(Type::TIME),
    Some(Type::BYTEA),
    Some(Type::JSONB),
];

fn binary_param(data: &[u8]) {
    let Some((&pick, bytes)) = data.split_first() else { return };
    let ty = &TYPES[pick as usize % TYPES.len()];
    let result = params::binary_param(bytes, ty.as_ref());
    let fixed = |width: usize| {
        assert_eq!(result.is_ok(), bytes.len() == width, "{ty:?} from {} bytes: {result:?}", bytes.len());
    };
    match ty {
        Some(t) if *t == Type::INT2 => {
            fixed(2);
            if let Ok(text) = &result {
                assert_eq!(text.parse::<i16>().ok(), Some(i16::from_be_bytes([bytes[0], bytes[1]])));
            }
        }
        Some(t) if *t == Type::INT4 => {
            fixed(4);
            if let Ok(text) = &result {
                assert_eq!(text.parse::<i32>().ok(), bytes.try_into().ok().map(i32::from_be_bytes));
            }
        }
        Some(t) if *t == Type::INT8 => {
            fixed(8);
            if let Ok(text) = &result {
                assert_eq!(text.parse::<i64>().ok(), bytes.try_into().ok().map(i64::from_be_bytes));
            }
        }
        Some(t) if *t == Type::FLOAT4 => {
            fixed(4);
            if let Ok(text) = &result {
                let sent = f32::from_be_bytes(bytes.try_into().expect("4 bytes"));
                let read: f32 = text.parse().expect("a float");
                assert!(read == sent || (read.is_nan() && sent.is_nan()), "{sent} read as {text}");
            }
        }
        Some(t) if *t == Type::FLOAT8 => {
            fixed(8);
            if let Ok(text) = &result {
                let sent = f64::from_be_bytes(bytes.try_into().expect("8 bytes"));
                let read: f64 = text.parse().expect("a float");
                assert!(read == sent || (read.is_nan() && sent.is_nan()), "{sent} read as {text}");
            }
        }
        Some(t) if *t == Type::BOOL => assert!(result.is_ok()),
        Some(t) if [Type::TIMESTAMP, Type::TIMESTAMPTZ, Type::DATE, Type::TIME].contains(t) => {
            let width = if *t == Type::DATE { 4 } else { 8 };
            if let Ok(text) = &result {
                assert_eq!(bytes.len(), width, "{t} from {} bytes: {text}", bytes.len());
                let shape = text.bytes().all(|b| b.is_ascii_digit() || b"-:. +".contains(&b));
                assert!(shape, "{t} as {text:?}");
            } else {
                assert!(!matches!(result, Err(EddyError::NotImplemented(_))), "{result:?}");
            }
        }
        Some(t) if *t == Type::NUMERIC => {
            if let Ok(text) = &result {
                let digits = text.strip_prefix('-').unwrap_or(text);
                let (int, frac) = digits.split_once('.').unwrap_or((digits, "0"));
                let decimal = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
                assert!(decimal(int) && decimal(frac), "numeric as {text:?}");
            }
        }
        Some(t) if [Type::OID_ARRAY, Type::INT4_ARRAY, Type::INT8_ARRAY, Type::TEXT_ARRAY].contains(t) => {
            if result.is_ok() {
                assert!(elements_in_bounds(bytes), "array elements read past their own bytes: {bytes:?}");
            }
        }
        Some(t) if *t == Type::TEXT || *t == Type::VARCHAR || *t == Type::UNKNOWN => {
            assert_eq!(result.ok().as_deref(), Some(&*String::from_utf8_lossy(bytes)));
        }
        None => assert_eq!(result.ok().as_deref(), Some(&*String::from_utf8_lossy(bytes))),
        Some(_) => assert!(matches!(result, Err(EddyError::NotImplemented(_))), "{result:?}"),
    }
}

/// Whether each element of an accepted binary array has the width its type says (oid and
/// int4: 4 bytes, int8: 8), so no value is read from another element's bytes.
fn elements_in_bounds(bytes: &[u8]) -> bool {
    let int = |at: usize| bytes.get(at..at + 4).map(|b| i32::from_be_bytes(b.try_into().expect("4 bytes")));
    let (Some(ndim), Some(elem)) = (int(0), int(8)) else { return false };
    if ndim == 0 {
        return true;
    }
    let width = match elem {
        26 | 23 => Some(4),
        20 => Some(8),
        _ => None,
    };
    let Some(count) = int(12) else { return false };
    let mut at = 20;
    for _ in 0..count.max(0) {
        let Some(len) = int(at) else { return false };
        at += 4;
        if len < 0 || width.is_some_and(|w| w != len as usize) || bytes.len() < at + len as usize {
            return false;
        }
        at += len as usize;
    }
    true
}

/// The element type, then the elements: numbers from the bytes, or text pieces split at 0.
fn array_round_trip(data: &[u8]) {
    let Some((&pick, rest)) = data.split_first() else { return };
    let (oid, width) = [(26u32, 4usize), (23, 4), (20, 8), (25, 0)][pick as usize % 4];
    let elements: Vec<(Vec<u8>, String)> = if width == 0 {
        let text = String::from_utf8_lossy(rest);
        text.split('\0').map(|s| (s.as_bytes().to_vec(), s.to_string())).collect()
    } else {
        rest.chunks_exact(width)
            .map(|b| {
                let shown = match oid {
                    26 => u32::from_be_bytes(b.try_into().expect("4 bytes")).to_string(),
                    23 => i32::from_be_bytes(b.try_into().expect("4 bytes")).to_string(),
                    _ => i64::from_be_bytes(b.try_into().expect("8 bytes")).to_string(),
                };
                (b.to_vec(), shown)
            })
            .collect()
    };
    // ndim, has-nulls flag, element oid, then per dimension its length and lower bound.
    let mut wire = Vec::new();
    for v in [1u32, 0, oid, elements.len() as u32, 1] {
        wire.extend_from_slice(&v.to_be_bytes());
    }
    for (bytes, _) in &elements {
        wire.extend_from_slice(&(bytes.len() as u32).to_be_bytes());
        wire.extend_from_slice(bytes);
    }
    let text = params::binary_array_param(&wire).expect("a well-formed array");
    let expected: Vec<String> = elements.into_iter().map(|(_, shown)| shown).collect();
    assert_eq!(read_array_text(&text), Some(expected), "{text}");
}

/// A one-dimensional Postgres array text, read as Postgres's `array_in` reads it: elements
/// between commas, double-quoted ones with backslash escapes. `{}` is empty.
fn read_array_text(text: &str) -> Option<Vec<String>> {
    let body = text.strip_prefix('{')?.strip_suffix('}')?;
    if body.is_empty() {
        return Some(Vec::new());
    }
    let mut out = Vec::new();
    let mut chars = body.chars().peekable();
    loop {
        let mut element = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            loop {
                match chars.next()? {
                    '"' => break,
                    '\\' => element.push(chars.next()?),
                    c => element.push(c),
                }
            }
        } else {
            while let Some(&c) = chars.peek() {
                if c == ',' {
                    break;
                }
                element.push(c);
                chars.next();
            }
        }
        out.push(element);
        match chars.next() {
            Some(',') => continue,
            None => return Some(out),
            Some(_) => return None,
        }
    }
}

/// The statement's text up to a 0 byte, then its parameters separated by 0 bytes.
fn statement(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let mut parts = text.split('\0');
    let sql = parts.next().unwrap_or_default();
    let values: Vec<Option<String>> = parts.map(|p| (p != "NULL").then(|| p.to_string())).collect();
    // What Parse does (`EddyQueryParser::parse_sql`).
    let Ok(count) = params::count_params(sql) else { return };
    let declared: Vec<Option<Type>> = values.iter().map(|_| None).collect();
    let nulls = params::substitute(sql, &vec![None; count]);
    let types = params::param_types(sql, &declared, count);
    assert_eq!(types.len(), count);
    for ty in &types {
        // Only types whose binary form Eddy reads are described to the client.
        let readable = !matches!(params::binary_param(&[0; 8], Some(ty)), Err(EddyError::NotImplemented(_)));
        assert!(readable, "described as {ty}, which Eddy cannot read in binary");
    }
    if !sql.contains('$') {
        assert_eq!(nulls, sql);
        return;
    }
    // What Execute does: every parameter becomes a literal...
    let plain: Vec<Option<String>> = values.iter().map(|v| v.as_ref().map(|_| "v".to_string())).collect();
    let Some(reference) = significant_tokens(&params::substitute(sql, &plain)) else { return };
    let substituted = params::substitute(sql, &values);
    let tokens =
        significant_tokens(&substituted).unwrap_or_else(|| panic!("a parameter broke {sql:?}: {substituted:?}"));
    // (Except inside MySQL-style hints, `/*! ... */`, where sqlparser misplaces its tokens.)
    for t in tokens.iter().filter(|_| !sql.contains("/*!")) {
        if let Token::Placeholder(p) = t {
            let n = p.strip_prefix('$').and_then(|n| n.parse::<usize>().ok());
            assert!(!n.is_some_and(|n| (1..=values.len()).contains(&n)), "{p} left in {substituted:?}");
        }
    }
    // ...and the same statement comes out whatever the values are.
    assert_eq!(shape(&reference), shape(&tokens), "a parameter changed {sql:?} into {substituted:?}");
}

/// The tokens `sql::parse` reads, without whitespace and comments.
fn significant_tokens(sql: &str) -> Option<Vec<Token>> {
    let tokens = Tokenizer::new(&GenericDialect {}, sql).tokenize().ok()?;
    Some(tokens.into_iter().filter(|t| !matches!(t, Token::Whitespace(_))).collect())
}

/// Tokens with the contents of string literals left out.
fn shape(tokens: &[Token]) -> Vec<Token> {
    tokens
        .iter()
        .map(|t| match t {
            Token::SingleQuotedString(_) => Token::SingleQuotedString(String::new()),
            t => t.clone(),
        })
        .collect()
}
