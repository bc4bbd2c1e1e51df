//! Compatibility of Protobuf schemas, by Confluent's Schema Registry rules: messages by
//! full name, fields by number (kind, scalar kind, named type, label, proto2 `required`),
//! and the package, as differences from an original schema to an update (see
//! `json_compat.rs` for how a check uses them). Not covered: oneof moves.

use prost_reflect::{Cardinality, FieldDescriptor, Kind, MessageDescriptor};

use super::json_compat::{push, Difference};
use crate::format::protobuf::Compiled;

/// The Protobuf differences from `original` to `update` that break readers of `update`.
/// Messages match by their names within the package (a package may change: Confluent
/// counts `PACKAGE_CHANGED` compatible); field types that are messages, imported ones too,
/// are compared where fields use them, as are map values.
pub fn protobuf_incompatible(original: &Compiled, update: &Compiled) -> Vec<Difference> {
    let mut out = Vec::new();
    let (Some(a), Some(b)) =
        (original.pool.get_file_by_name(&original.file), update.pool.get_file_by_name(&update.file))
    else {
        return out;
    };
    if a.package_name() != b.package_name() {
        push(&mut out, "PACKAGE_CHANGED", "#/");
    }
    let mut seen = std::collections::HashSet::new();
    let mut messages: Vec<MessageDescriptor> = a.messages().collect();
    while let Some(m) = messages.pop() {
        messages.extend(m.child_messages().filter(|c| !c.is_map_entry()));
        let name = relative(&m);
        let path = format!("#/{name}");
        let other = b
            .messages()
            .find(|x| relative(x) == name)
            .or_else(|| b.messages().flat_map(|x| all_nested(&x)).find(|x| relative(x) == name));
        let Some(other) = other else {
            push(&mut out, "MESSAGE_REMOVED", &path);
            continue;
        };
        message_diff(&m, &other, &path, &mut seen, &mut out);
    }
    out.retain(|d| !PROTOBUF_COMPATIBLE.contains(&d.kind));
    out
}

/// A message's name within its package (`Outer.Inner`).
fn relative(m: &MessageDescriptor) -> String {
    let package = m.package_name();
    match m.full_name().strip_prefix(package).and_then(|r| r.strip_prefix('.')) {
        Some(r) if !package.is_empty() => r.to_string(),
        _ => m.full_name().to_string(),
    }
}

/// A message's nested messages, at any depth (map entries left out).
fn all_nested(m: &MessageDescriptor) -> Vec<MessageDescriptor> {
    let mut out = Vec::new();
    let mut stack: Vec<MessageDescriptor> = m.child_messages().filter(|c| !c.is_map_entry()).collect();
    while let Some(c) = stack.pop() {
        stack.extend(c.child_messages().filter(|x| !x.is_map_entry()));
        out.push(c);
    }
    out
}

/// Differences between two versions of one message; `seen` stops a pair being compared
/// twice (and recursive types looping).
fn message_diff(
    a: &MessageDescriptor,
    b: &MessageDescriptor,
    path: &str,
    seen: &mut std::collections::HashSet<(String, String)>,
    out: &mut Vec<Difference>,
) {
    if !seen.insert((a.full_name().to_string(), b.full_name().to_string())) {
        return;
    }
    for f in a.fields() {
        let at = format!("{path}/{}", f.number());
        match b.get_field(f.number()) {
            None if f.cardinality() == Cardinality::Required => push(out, "REQUIRED_FIELD_REMOVED", &at),
            None => {}
            Some(g) => field_diff(&f, &g, &at, seen, out),
        }
    }
    for g in b.fields().filter(|g| a.get_field(g.number()).is_none()) {
        if g.cardinality() == Cardinality::Required {
            push(out, "REQUIRED_FIELD_ADDED", &format!("{path}/{}", g.number()));
        }
    }
}

/// Kinds of field: a scalar, a message (or group), a map.
#[derive(PartialEq)]
enum FieldKind {
    Scalar,
    Named,
    Map,
}

fn field_kind(f: &FieldDescriptor) -> FieldKind {
    if f.is_map() {
        return FieldKind::Map;
    }
    match f.kind() {
        Kind::Message(_) => FieldKind::Named,
        _ => FieldKind::Scalar,
    }
}

/// Scalars Protobuf reads one as the other (Confluent's groups of wire-compatible kinds).
fn scalar_group(kind: &Kind) -> u8 {
    match kind {
        Kind::Int32 | Kind::Int64 | Kind::Uint32 | Kind::Uint64 | Kind::Bool | Kind::Enum(_) => 0,
        Kind::Sint32 | Kind::Sint64 => 1,
        Kind::String | Kind::Bytes => 2,
        Kind::Fixed32 | Kind::Sfixed32 => 3,
        Kind::Fixed64 | Kind::Sfixed64 => 4,
        Kind::Float => 5,
        Kind::Double => 6,
        Kind::Message(_) => 7,
    }
}

fn field_diff(
    a: &FieldDescriptor,
    b: &FieldDescriptor,
    path: &str,
    seen: &mut std::collections::HashSet<(String, String)>,
    out: &mut Vec<Difference>,
) {
    let (ka, kb) = (field_kind(a), field_kind(b));
    if ka != kb {
        return push(out, "FIELD_KIND_CHANGED", path);
    }
    if ka == FieldKind::Map {
        // The entries' values (keys are scalars of one kind in both, or a kind change).
        if let (Kind::Message(x), Kind::Message(y)) = (a.kind(), b.kind()) {
            let (kx, ky) = (x.map_entry_key_field(), y.map_entry_key_field());
            if scalar_group(&kx.kind()) != scalar_group(&ky.kind()) {
                push(out, "FIELD_SCALAR_KIND_CHANGED", path);
            }
            field_diff(&x.map_entry_value_field(), &y.map_entry_value_field(), path, seen, out);
        }
        return;
    }
    match (a.kind(), b.kind()) {
        (Kind::Message(x), Kind::Message(y)) if relative(&x) != relative(&y) => {
            push(out, "FIELD_NAMED_TYPE_CHANGED", path)
        }
        (Kind::Message(x), Kind::Message(y)) => message_diff(&x, &y, path, seen, out),
        (Kind::Enum(x), Kind::Enum(y)) if x.name() != y.name() => push(out, "FIELD_NAMED_TYPE_CHANGED", path),
        (x, y) if scalar_group(&x) != scalar_group(&y) => push(out, "FIELD_SCALAR_KIND_CHANGED", path),
        _ => {}
    }
    if a.is_list() != b.is_list() && ka == FieldKind::Scalar {
        let stringy = matches!(a.kind(), Kind::String | Kind::Bytes);
        push(out, if stringy { "FIELD_STRING_OR_BYTES_LABEL_CHANGED" } else { "FIELD_NUMERIC_LABEL_CHANGED" }, path);
    }
    if a.cardinality() != Cardinality::Required && b.cardinality() == Cardinality::Required {
        push(out, "REQUIRED_FIELD_ADDED", path);
    } else if a.cardinality() == Cardinality::Required && b.cardinality() != Cardinality::Required {
        push(out, "REQUIRED_FIELD_REMOVED", path);
    }
}

/// Confluent's compatible Protobuf changes, of those this module finds.
const PROTOBUF_COMPATIBLE: &[&str] = &["FIELD_STRING_OR_BYTES_LABEL_CHANGED", "PACKAGE_CHANGED"];

#[cfg(test)]
mod tests {
    use super::*;

    fn kinds(d: &[Difference]) -> Vec<&'static str> {
        d.iter().map(|d| d.kind).collect()
    }

    fn proto(text: &str) -> Compiled {
        crate::format::protobuf::compile(text, &[]).unwrap()
    }

    #[test]
    fn protobuf_changes() {
        let v1 = proto("syntax = \"proto3\"; package p; message M { int64 id = 1; string name = 2; N n = 3; } message N { int32 a = 1; }");
        // Adding and removing fields, widening int32 to int64: compatible.
        let v2 = proto("syntax = \"proto3\"; package p; message M { int64 id = 1; N n = 3; bool b = 4; } message N { int64 a = 1; }");
        assert!(protobuf_incompatible(&v1, &v2).is_empty(), "{:?}", protobuf_incompatible(&v1, &v2));
        // A field number reused with another scalar kind, a message type changed, a message gone.
        let v3 = proto("syntax = \"proto3\"; package p; message M { double id = 1; string name = 2; O n = 3; } message O { int32 a = 1; }");
        let mut found = kinds(&protobuf_incompatible(&v1, &v3));
        found.sort();
        assert_eq!(found, ["FIELD_NAMED_TYPE_CHANGED", "FIELD_SCALAR_KIND_CHANGED", "MESSAGE_REMOVED"]);
        // A scalar field that became a message; a package change.
        let v4 = proto("syntax = \"proto3\"; package p; message M { N id = 1; } message N { int32 a = 1; }");
        assert_eq!(kinds(&protobuf_incompatible(&v1, &v4)), ["FIELD_KIND_CHANGED"]);
        // A package change alone is compatible (messages match within their packages).
        let v5 = proto("syntax = \"proto3\"; package q; message M { int64 id = 1; string name = 2; N n = 3; } message N { int32 a = 1; }");
        assert!(protobuf_incompatible(&v1, &v5).is_empty(), "{:?}", protobuf_incompatible(&v1, &v5));
        // A map's value type, and a field of a message a field uses.
        let m1 =
            proto("syntax = \"proto3\"; message M { map<string, int32> m = 1; N n = 2; } message N { int32 a = 1; }");
        let m2 =
            proto("syntax = \"proto3\"; message M { map<string, string> m = 1; N n = 2; } message N { string a = 1; }");
        let mut found = kinds(&protobuf_incompatible(&m1, &m2));
        found.sort();
        found.dedup();
        assert_eq!(found, ["FIELD_SCALAR_KIND_CHANGED"]);
        assert!(protobuf_incompatible(&m1, &m2).iter().any(|d| d.path == "#/M/1"));
        // proto2 required fields added.
        let p2a = proto("syntax = \"proto2\"; message M { optional int32 a = 1; }");
        let p2b = proto("syntax = \"proto2\"; message M { optional int32 a = 1; required int32 b = 2; }");
        assert_eq!(kinds(&protobuf_incompatible(&p2a, &p2b)), ["REQUIRED_FIELD_ADDED"]);
    }
}
