//! The wire contract, checked against the generated descriptor set.
//!
//! The router proto is compared with the contract of the interface document it was written
//! from: `tests/data/mpc-router.contract.txt`, a table of every message, field name, field
//! number, field type and label, and every rpc of `MessageRouter`, extracted from
//! `mpc-router.proto.txt` (in `../shared/specs/` beside the repository). Both must match in
//! both directions. The table is committed so the check runs in a clone without `../shared`;
//! where the document is present, the table must be exactly what it parses to. The
//! `cohort.v1` proto is compared with the table of its API.
//!
//! After the document changes, regenerate the table and review its diff:
//! `COHORT_WIRE_WRITE_CONTRACT=1 cargo test -p cohort-wire --test wire_contract`.
//! `COHORT_SHARED_SPECS=<dir>` reads the document from another directory.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use cohort_wire::router::MpcMessage;
use cohort_wire::FILE_DESCRIPTOR_SET;
use prost::Message;
use prost_types::field_descriptor_proto::{Label, Type};
use prost_types::{DescriptorProto, FileDescriptorProto, FileDescriptorSet};

// ---------------------------------------------------------------------------------------
// A small line parser for the spec document (one declaration per line, no nesting).
// ---------------------------------------------------------------------------------------

#[derive(Debug, Clone, PartialEq, Eq)]
struct SpecField {
    name: String,
    number: i32,
    repeated: bool,
    /// Scalar type name, message name, or `map<K,V>` (no spaces).
    ty: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct SpecRpc {
    name: String,
    input: String,
    output: String,
    client_streaming: bool,
    server_streaming: bool,
}

#[derive(Debug, Default, PartialEq, Eq)]
struct Spec {
    package: String,
    messages: BTreeMap<String, Vec<SpecField>>,
    services: BTreeMap<String, Vec<SpecRpc>>,
}

enum Ctx {
    Top,
    Message(String),
    Service(String),
}

/// The interface document, beside the repository (or in `$COHORT_SHARED_SPECS`).
fn spec_path() -> PathBuf {
    let dir = match std::env::var_os("COHORT_SHARED_SPECS") {
        Some(dir) => PathBuf::from(dir),
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/specs"),
    };
    dir.join("mpc-router.proto.txt")
}

/// The committed contract table.
fn contract_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/mpc-router.contract.txt")
}

fn contract() -> Spec {
    let path = contract_path();
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("read the contract table {}: {e}", path.display()));
    parse_contract(&text)
}

const CONTRACT_HEADER: &str = "\
# The wire contract of the MPC message router, extracted from the interface document
# mpc-router.proto.txt (../shared/specs/ beside this repository): every message with its
# fields in document order (number, name, type, then `repeated` if repeated), and every rpc
# (name, request type, response type, each after `stream` if streamed). Comments and prose
# of the document are left out. Do not edit by hand; regenerate with
#   COHORT_WIRE_WRITE_CONTRACT=1 cargo test -p cohort-wire --test wire_contract
# and review the diff. crates/wire/tests/wire_contract.rs checks the protos against it.
";

/// The table form of a spec: one declaration per line, messages and services by name.
fn render_contract(spec: &Spec) -> String {
    let mut out = String::from(CONTRACT_HEADER);
    out.push_str(&format!("package {}\n", spec.package));
    for (name, fields) in &spec.messages {
        out.push_str(&format!("message {name}\n"));
        for f in fields {
            let repeated = if f.repeated { " repeated" } else { "" };
            out.push_str(&format!(
                "  field {} {} {}{repeated}\n",
                f.number, f.name, f.ty
            ));
        }
    }
    for (name, rpcs) in &spec.services {
        out.push_str(&format!("service {name}\n"));
        for r in rpcs {
            let stream = |on: bool| if on { "stream " } else { "" };
            out.push_str(&format!(
                "  rpc {} {}{} {}{}\n",
                r.name,
                stream(r.client_streaming),
                r.input,
                stream(r.server_streaming),
                r.output
            ));
        }
    }
    out
}

fn parse_contract(text: &str) -> Spec {
    let mut spec = Spec::default();
    let mut ctx = Ctx::Top;
    for (i, line) in text.lines().enumerate() {
        let lineno = i + 1;
        let bad = || -> ! { panic!("contract line {lineno}: cannot read {line:?}") };
        if line.starts_with('#') || line.trim().is_empty() {
            continue;
        }
        let toks: Vec<&str> = line.split_whitespace().collect();
        match (toks.as_slice(), &ctx) {
            (["package", p], _) => spec.package = p.to_string(),
            (["message", name], _) => {
                spec.messages.insert(name.to_string(), Vec::new());
                ctx = Ctx::Message(name.to_string());
            }
            (["service", name], _) => {
                spec.services.insert(name.to_string(), Vec::new());
                ctx = Ctx::Service(name.to_string());
            }
            (["field", number, name, ty, rest @ ..], Ctx::Message(msg)) => {
                let repeated = match rest {
                    [] => false,
                    ["repeated"] => true,
                    _ => bad(),
                };
                let number = number.parse().unwrap_or_else(|_| bad());
                if let Some(fields) = spec.messages.get_mut(msg) {
                    fields.push(SpecField {
                        name: name.to_string(),
                        number,
                        repeated,
                        ty: ty.to_string(),
                    });
                }
            }
            (["rpc", name, rest @ ..], Ctx::Service(svc)) => {
                let (client_streaming, rest) = match rest {
                    ["stream", rest @ ..] => (true, rest),
                    _ => (false, rest),
                };
                let (input, rest) = rest.split_first().unwrap_or_else(|| bad());
                let (server_streaming, output) = match rest {
                    ["stream", output] => (true, output),
                    [output] => (false, output),
                    _ => bad(),
                };
                if let Some(rpcs) = spec.services.get_mut(svc) {
                    rpcs.push(SpecRpc {
                        name: name.to_string(),
                        input: input.to_string(),
                        output: output.to_string(),
                        client_streaming,
                        server_streaming,
                    });
                }
            }
            _ => bad(),
        }
    }
    spec
}

fn parse_spec(text: &str) -> Spec {
    let mut spec = Spec::default();
    let mut ctx = Ctx::Top;
    // The document was scraped from a web page: everything before `syntax` is page chrome.
    let mut started = false;
    for (i, raw) in text.lines().enumerate() {
        let lineno = i + 1;
        let line = raw.split("//").next().unwrap_or("").trim();
        if !started {
            started = line.starts_with("syntax") && line.contains("proto3");
            continue;
        }
        if line.is_empty() {
            continue;
        }
        match &ctx {
            Ctx::Top => {
                if let Some(rest) = line.strip_prefix("package ") {
                    spec.package = rest.trim_end_matches(';').trim().to_string();
                } else if line.starts_with("option ") {
                    // Options (go_package) are not part of the wire contract.
                } else if let Some(name) = block_name(line, "message") {
                    spec.messages.insert(name.clone(), Vec::new());
                    ctx = Ctx::Message(name);
                } else if let Some(name) = block_name(line, "service") {
                    spec.services.insert(name.clone(), Vec::new());
                    ctx = Ctx::Service(name);
                } else {
                    panic!("spec line {lineno}: unexpected top-level line: {raw:?}");
                }
            }
            Ctx::Message(msg) => {
                if line == "}" {
                    ctx = Ctx::Top;
                } else {
                    let field = parse_field(line)
                        .unwrap_or_else(|| panic!("spec line {lineno}: not a field: {raw:?}"));
                    spec.messages.get_mut(msg).unwrap().push(field);
                }
            }
            Ctx::Service(svc) => {
                if line == "}" {
                    ctx = Ctx::Top;
                } else {
                    let rpc = parse_rpc(line)
                        .unwrap_or_else(|| panic!("spec line {lineno}: not an rpc: {raw:?}"));
                    spec.services.get_mut(svc).unwrap().push(rpc);
                }
            }
        }
    }
    assert!(started, "no `syntax = \"proto3\";` line in the spec");
    assert!(matches!(ctx, Ctx::Top), "spec ends inside a block");
    spec
}

/// `message Foo {` -> `Foo`.
fn block_name(line: &str, keyword: &str) -> Option<String> {
    let rest = line.strip_prefix(keyword)?.strip_prefix(' ')?;
    let name = rest.strip_suffix('{')?.trim();
    is_ident(name).then(|| name.to_string())
}

fn is_ident(s: &str) -> bool {
    !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.')
}

/// `[repeated] type name = N;` or `map<K, V> name = N;`.
fn parse_field(line: &str) -> Option<SpecField> {
    let decl = line.strip_suffix(';')?;
    let (lhs, number) = decl.split_once('=')?;
    let number: i32 = number.trim().parse().ok()?;
    let lhs = lhs.trim();
    let (repeated, ty, name) = if let Some(rest) = lhs.strip_prefix("map<") {
        let (args, name) = rest.split_once('>')?;
        let (k, v) = args.split_once(',')?;
        (
            false,
            format!("map<{},{}>", k.trim(), v.trim()),
            name.trim(),
        )
    } else {
        let toks: Vec<&str> = lhs.split_whitespace().collect();
        match toks.as_slice() {
            ["repeated", ty, name] => (true, ty.to_string(), *name),
            [ty, name] => (false, ty.to_string(), *name),
            _ => return None,
        }
    };
    (is_ident(name) && is_ident(&ty.replace(['<', '>', ','], ""))).then(|| SpecField {
        name: name.to_string(),
        number,
        repeated,
        ty,
    })
}

/// `rpc Name(Req) returns (stream Resp);`
fn parse_rpc(line: &str) -> Option<SpecRpc> {
    let rest = line.strip_prefix("rpc ")?.strip_suffix(';')?;
    let (name, rest) = rest.split_once('(')?;
    let (input, rest) = rest.split_once(')')?;
    let rest = rest.trim().strip_prefix("returns")?.trim();
    let output = rest.strip_prefix('(')?.strip_suffix(')')?;
    let stream = |s: &str| match s.trim().strip_prefix("stream ") {
        Some(t) => (true, t.trim().to_string()),
        None => (false, s.trim().to_string()),
    };
    let (client_streaming, input) = stream(input);
    let (server_streaming, output) = stream(output);
    Some(SpecRpc {
        name: name.trim().to_string(),
        input,
        output,
        client_streaming,
        server_streaming,
    })
}

// ---------------------------------------------------------------------------------------
// Descriptor helpers.
// ---------------------------------------------------------------------------------------

fn descriptor_set() -> FileDescriptorSet {
    FileDescriptorSet::decode(FILE_DESCRIPTOR_SET).expect("FILE_DESCRIPTOR_SET decodes")
}

fn file_for_package(set: &FileDescriptorSet, package: &str) -> FileDescriptorProto {
    let files: Vec<_> = set.file.iter().filter(|f| f.package() == package).collect();
    assert_eq!(files.len(), 1, "exactly one file with package {package}");
    files[0].clone()
}

fn scalar_type(ty: &str) -> Option<Type> {
    Some(match ty {
        "double" => Type::Double,
        "float" => Type::Float,
        "int32" => Type::Int32,
        "int64" => Type::Int64,
        "uint32" => Type::Uint32,
        "uint64" => Type::Uint64,
        "sint32" => Type::Sint32,
        "sint64" => Type::Sint64,
        "fixed32" => Type::Fixed32,
        "fixed64" => Type::Fixed64,
        "sfixed32" => Type::Sfixed32,
        "sfixed64" => Type::Sfixed64,
        "bool" => Type::Bool,
        "string" => Type::String,
        "bytes" => Type::Bytes,
        _ => return None,
    })
}

/// Renders a descriptor field's type the way the spec writes it (`string`, `Foo`,
/// `map<K,V>`), and whether it is `repeated` (maps are not).
fn describe_field(
    package: &str,
    msg: &DescriptorProto,
    f: &prost_types::FieldDescriptorProto,
) -> (bool, String) {
    let repeated = f.label() == Label::Repeated;
    let named = |type_name: &str| {
        let prefix = format!(".{package}.");
        type_name
            .strip_prefix(&prefix)
            .unwrap_or(type_name)
            .to_string()
    };
    match f.r#type() {
        Type::Message | Type::Enum => {
            let entry = msg.nested_type.iter().find(|n| {
                n.options.as_ref().and_then(|o| o.map_entry) == Some(true)
                    && f.type_name() == format!(".{package}.{}.{}", msg.name(), n.name())
            });
            if let (true, Some(entry)) = (repeated, entry) {
                let kv: Vec<String> = ["key", "value"]
                    .iter()
                    .map(|which| {
                        let ef = entry.field.iter().find(|x| x.name() == *which).unwrap();
                        describe_field(package, entry, ef).1
                    })
                    .collect();
                (false, format!("map<{},{}>", kv[0], kv[1]))
            } else {
                (repeated, named(f.type_name()))
            }
        }
        t => {
            let s = t
                .as_str_name()
                .trim_start_matches("TYPE_")
                .to_ascii_lowercase();
            (repeated, s)
        }
    }
}

// ---------------------------------------------------------------------------------------
// Tests.
// ---------------------------------------------------------------------------------------

/// The committed table is exactly what the interface document parses to, when the document
/// is there (it is not in a plain clone); with `COHORT_WIRE_WRITE_CONTRACT=1`, writes it.
#[test]
fn contract_table_is_what_the_spec_document_says() {
    let path = spec_path();
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            eprintln!(
                "note: {} is absent ({e}); the protos are still checked against the \
                 committed table {}, but the table is not compared with the document",
                path.display(),
                contract_path().display()
            );
            return;
        }
        Err(e) => panic!("read the router spec {}: {e}", path.display()),
    };
    let rendered = render_contract(&parse_spec(&text));
    if std::env::var_os("COHORT_WIRE_WRITE_CONTRACT").is_some() {
        std::fs::write(contract_path(), &rendered).expect("write the contract table");
        eprintln!("wrote {}", contract_path().display());
    }
    let committed = std::fs::read_to_string(contract_path()).unwrap_or_default();
    assert!(
        committed == rendered,
        "{} differs from what {} parses to; regenerate it with \
         COHORT_WIRE_WRITE_CONTRACT=1 cargo test -p cohort-wire --test wire_contract \
         and review the diff",
        contract_path().display(),
        path.display()
    );
    assert_eq!(parse_contract(&committed), parse_spec(&text));
}

#[test]
fn contract_holds_every_message_rpc_and_field() {
    let spec = contract();
    assert_eq!(spec.package, "mpc.router.v1");
    // Counted by hand in the spec document; guards against the parser (and so the table)
    // skipping things.
    assert_eq!(spec.messages.len(), 37, "messages in the spec");
    assert_eq!(
        spec.messages.values().map(Vec::len).sum::<usize>(),
        127,
        "fields in the spec"
    );
    assert_eq!(
        spec.services.keys().collect::<Vec<_>>(),
        ["MessageRouter"],
        "services in the spec"
    );
    assert_eq!(spec.services["MessageRouter"].len(), 15, "rpcs in the spec");
    // Every type the spec names is a scalar, a map or one of its own messages.
    for (msg, fields) in &spec.messages {
        for f in fields {
            assert!(
                scalar_type(&f.ty).is_some()
                    || f.ty.starts_with("map<")
                    || spec.messages.contains_key(&f.ty),
                "{msg}.{}: unknown type {}",
                f.name,
                f.ty
            );
        }
    }
}

#[test]
fn router_proto_matches_spec() {
    let spec = contract();
    let set = descriptor_set();
    let file = file_for_package(&set, &spec.package);
    let mut errors: Vec<String> = Vec::new();

    // Messages: the same names, and in each the same fields with the same numbers,
    // types and labels.
    let ours: BTreeMap<&str, &DescriptorProto> =
        file.message_type.iter().map(|m| (m.name(), m)).collect();
    let spec_names: BTreeSet<&str> = spec.messages.keys().map(String::as_str).collect();
    let our_names: BTreeSet<&str> = ours.keys().copied().collect();
    for missing in spec_names.difference(&our_names) {
        errors.push(format!(
            "message {missing} is in the spec but not in the proto"
        ));
    }
    for extra in our_names.difference(&spec_names) {
        errors.push(format!(
            "message {extra} is in the proto but not in the spec"
        ));
    }

    for (msg_name, spec_fields) in &spec.messages {
        let Some(msg) = ours.get(msg_name.as_str()) else {
            continue;
        };
        let spec_pairs: BTreeSet<(&str, i32)> = spec_fields
            .iter()
            .map(|f| (f.name.as_str(), f.number))
            .collect();
        let our_pairs: BTreeSet<(&str, i32)> =
            msg.field.iter().map(|f| (f.name(), f.number())).collect();
        for (name, number) in spec_pairs.difference(&our_pairs) {
            errors.push(format!(
                "{msg_name}: spec has `{name} = {number}`, proto does not"
            ));
        }
        for (name, number) in our_pairs.difference(&spec_pairs) {
            errors.push(format!(
                "{msg_name}: proto has `{name} = {number}`, spec does not"
            ));
        }
        for sf in spec_fields {
            let Some(of) = msg.field.iter().find(|f| f.name() == sf.name) else {
                continue;
            };
            let (repeated, ty) = describe_field(&spec.package, msg, of);
            if (repeated, ty.as_str()) != (sf.repeated, sf.ty.as_str()) {
                errors.push(format!(
                    "{msg_name}.{}: spec type {}{}, proto type {}{}",
                    sf.name,
                    if sf.repeated { "repeated " } else { "" },
                    sf.ty,
                    if repeated { "repeated " } else { "" },
                    ty
                ));
            }
            if of.proto3_optional() {
                errors.push(format!("{msg_name}.{}: proto adds `optional`", sf.name));
            }
        }
    }

    // Services: only MessageRouter, with the spec's rpcs, types and streaming.
    let our_services: Vec<&str> = file.service.iter().map(|s| s.name()).collect();
    if our_services != ["MessageRouter"] {
        errors.push(format!(
            "services in the proto: {our_services:?}, spec: [MessageRouter]"
        ));
    }
    if let Some(svc) = file.service.iter().find(|s| s.name() == "MessageRouter") {
        let prefix = format!(".{}.", spec.package);
        let ours: BTreeMap<&str, SpecRpc> = svc
            .method
            .iter()
            .map(|m| {
                let strip = |t: &str| t.strip_prefix(&prefix).unwrap_or(t).to_string();
                (
                    m.name(),
                    SpecRpc {
                        name: m.name().to_string(),
                        input: strip(m.input_type()),
                        output: strip(m.output_type()),
                        client_streaming: m.client_streaming(),
                        server_streaming: m.server_streaming(),
                    },
                )
            })
            .collect();
        let spec_rpcs = &spec.services["MessageRouter"];
        for rpc in spec_rpcs {
            match ours.get(rpc.name.as_str()) {
                None => errors.push(format!(
                    "rpc {} is in the spec but not in the proto",
                    rpc.name
                )),
                Some(our) if our != rpc => {
                    errors.push(format!("rpc {}: spec {rpc:?}, proto {our:?}", rpc.name))
                }
                Some(_) => {}
            }
        }
        for name in ours.keys() {
            if !spec_rpcs.iter().any(|r| r.name == *name) {
                errors.push(format!("rpc {name} is in the proto but not in the spec"));
            }
        }
    }

    assert!(
        errors.is_empty(),
        "router proto drifted from the spec:\n  {}",
        errors.join("\n  ")
    );
}

/// `(message, field, number)` for every field of `cohort.v1`, from the API definition.
const COHORT_FIELDS: &[(&str, &str, i32)] = &[
    ("GetChallengeRequest", "party_id", 1),
    ("GetChallengeRequest", "public_key", 2),
    ("GetChallengeResponse", "challenge_id", 1),
    ("GetChallengeResponse", "challenge", 2),
    ("GetChallengeResponse", "expires_at", 3),
    ("LoginRequest", "challenge_id", 1),
    ("LoginRequest", "party_id", 2),
    ("LoginRequest", "public_key", 3),
    ("LoginRequest", "signature", 4),
    ("LoginResponse", "access_token", 1),
    ("LoginResponse", "expires_at", 2),
    ("LoginResponse", "coordinator", 3),
    ("CreateSessionRequest", "session_type", 1),
    ("CreateSessionRequest", "threshold_n", 2),
    ("CreateSessionRequest", "threshold_t", 3),
    ("CreateSessionRequest", "parties", 4),
    ("CreateSessionRequest", "role_filter", 5),
    ("CreateSessionRequest", "message_hash", 6),
    ("CreateSessionRequest", "expires_in_ms", 7),
    ("CreateSessionRequest", "idempotency_key", 8),
    ("CreateSessionRequest", "descriptor", 9),
    ("CreateSessionRequest", "descriptor_signature", 10),
    ("CreateSessionRequest", "party_keys", 11),
    ("Participant", "party_id", 1),
    ("Participant", "party_index", 2),
    ("Participant", "joined", 3),
    ("Participant", "ready", 4),
    ("Participant", "completed", 5),
    ("Participant", "identity_key", 6),
    ("CreateSessionResponse", "session_id", 1),
    ("CreateSessionResponse", "join_tokens", 2),
    ("CreateSessionResponse", "expires_at", 3),
    ("CreateSessionResponse", "participants", 4),
    ("CreateSessionResponse", "created", 5),
    ("ListSessionsRequest", "status", 1),
    ("ListSessionsRequest", "limit", 2),
    ("ListSessionsResponse", "sessions", 1),
    ("GetSessionRequest", "session_id", 1),
    ("SessionSummary", "session_id", 1),
    ("SessionSummary", "session_type", 2),
    ("SessionSummary", "status", 3),
    ("SessionSummary", "threshold_n", 4),
    ("SessionSummary", "threshold_t", 5),
    ("SessionSummary", "participants", 6),
    ("SessionSummary", "created_at", 7),
    ("SessionSummary", "expires_at", 8),
    ("SessionSummary", "failure_reason", 9),
    ("SessionSummary", "waiting_for", 10),
    ("SessionSummary", "public_key", 11),
    ("SessionSummary", "signature", 12),
    ("SessionSummary", "message_hash", 13),
    ("SessionSummary", "descriptor", 14),
    ("SessionSummary", "descriptor_signature", 15),
    ("SessionSummary", "creator", 16),
    ("SessionSummary", "result", 17),
    ("SessionSummary", "failure_culprit", 18),
    ("JoinRequest", "session_id", 1),
    ("JoinRequest", "party_id", 2),
    ("JoinRequest", "join_token", 3),
    ("JoinRequest", "ready", 4),
    ("JoinResponse", "session", 1),
    ("JoinResponse", "party_index", 2),
    ("JoinResponse", "all_ready", 3),
    ("GetDelegateSharesRequest", "session_id", 1),
    ("DelegateShare", "party_id", 1),
    ("DelegateShare", "encrypted_share", 2),
    ("DelegateShare", "public_key", 3),
    ("DelegateShare", "party_index", 4),
    ("GetDelegateSharesResponse", "shares", 1),
    ("ReportFailureRequest", "session_id", 1),
    ("ReportFailureRequest", "party_id", 2),
    ("ReportFailureRequest", "reason", 3),
    ("ReportFailureRequest", "culprit", 4),
    ("PublishEncryptionKeyRequest", "encryption_key", 1),
    ("PublishEncryptionKeyRequest", "signature", 2),
    ("PublishEncryptionKeyResponse", "published_at", 1),
    ("EncryptionKey", "party_id", 1),
    ("EncryptionKey", "identity_key", 2),
    ("EncryptionKey", "encryption_key", 3),
    ("EncryptionKey", "signature", 4),
    ("EncryptionKey", "published_at", 5),
    ("GetEncryptionKeysRequest", "party_ids", 1),
    ("GetEncryptionKeysResponse", "keys", 1),
    ("Enrollment", "party_id", 1),
    ("Enrollment", "identity_key", 2),
    ("Enrollment", "role", 3),
    ("Enrollment", "source", 4),
    ("Enrollment", "enrolled_by", 5),
    ("Enrollment", "enrolled_at", 6),
    ("EnrollRequest", "party_id", 1),
    ("EnrollRequest", "identity_key", 2),
    ("EnrollRequest", "role", 3),
    ("EnrollResponse", "enrollment", 1),
    ("UnenrollRequest", "party_id", 1),
    ("UnenrollResponse", "removed", 1),
    ("ListEnrolledRequest", "party_ids", 1),
    ("ListEnrolledResponse", "enrollments", 1),
    ("ServerInfoResponse", "version", 1),
    ("ServerInfoResponse", "server_time", 2),
    ("ServerInfoResponse", "sessions_open", 3),
    // Mailbox (streaming)
    ("ClientFrame", "subscribe", 1),
    ("ClientFrame", "unsubscribe", 2),
    ("ClientFrame", "credit", 3),
    ("ClientFrame", "send", 4),
    ("ClientFrame", "ack", 5),
    ("ClientFrame", "ack_ids", 6),
    ("Subscribe", "session_id", 1),
    ("Subscribe", "party_id", 2),
    ("Subscribe", "after_seq", 3),
    ("Subscribe", "credit", 4),
    ("Subscribe", "subscription_id", 5),
    ("Unsubscribe", "session_id", 1),
    ("Credit", "session_id", 1),
    ("Credit", "n", 2),
    ("SendBatch", "request_id", 1),
    ("SendBatch", "items", 2),
    ("SendItem", "client_id", 1),
    ("SendItem", "session_id", 2),
    ("SendItem", "to_parties", 3),
    ("SendItem", "round", 4),
    ("SendItem", "message_type", 5),
    ("SendItem", "payload", 6),
    ("Ack", "request_id", 1),
    ("Ack", "session_id", 2),
    ("Ack", "up_to_seq", 3),
    ("AckIds", "request_id", 1),
    ("AckIds", "message_ids", 2),
    ("ServerFrame", "delivery", 1),
    ("ServerFrame", "ended", 2),
    ("ServerFrame", "send_result", 3),
    ("ServerFrame", "ack_result", 4),
    ("ServerFrame", "error", 5),
    ("Delivery", "session_id", 1),
    ("Delivery", "subscription_id", 2),
    ("Delivery", "messages", 3),
    ("StreamMessage", "seq", 1),
    ("StreamMessage", "message_id", 2),
    ("StreamMessage", "from_party", 3),
    ("StreamMessage", "is_broadcast", 4),
    ("StreamMessage", "round", 5),
    ("StreamMessage", "message_type", 6),
    ("StreamMessage", "payload", 7),
    ("StreamMessage", "created_at", 8),
    ("SubscriptionEnded", "session_id", 1),
    ("SubscriptionEnded", "subscription_id", 2),
    ("SubscriptionEnded", "failure", 3),
    ("SendResult", "request_id", 1),
    ("SendResult", "outcomes", 2),
    ("SendOutcome", "client_id", 1),
    ("SendOutcome", "message_id", 2),
    ("SendOutcome", "duplicate", 3),
    ("SendOutcome", "failure", 4),
    ("AckResult", "request_id", 1),
    ("AckResult", "settled", 2),
    ("AckResult", "failures", 3),
    ("AckFailure", "message_id", 1),
    ("AckFailure", "failure", 2),
    ("FrameError", "request_id", 1),
    ("FrameError", "failure", 2),
    ("Failure", "code", 1),
    ("Failure", "message", 2),
    ("Failure", "culprit", 3),
];

/// `(service, rpc, input, output)` for every rpc of `cohort.v1`.
const COHORT_RPCS: &[(&str, &str, &str, &str)] = &[
    (
        "Auth",
        "GetChallenge",
        "GetChallengeRequest",
        "GetChallengeResponse",
    ),
    ("Auth", "Login", "LoginRequest", "LoginResponse"),
    (
        "Sessions",
        "CreateSession",
        "CreateSessionRequest",
        "CreateSessionResponse",
    ),
    (
        "Sessions",
        "ListSessions",
        "ListSessionsRequest",
        "ListSessionsResponse",
    ),
    (
        "Sessions",
        "GetSession",
        "GetSessionRequest",
        "SessionSummary",
    ),
    (
        "Sessions",
        "GetDelegateShares",
        "GetDelegateSharesRequest",
        "GetDelegateSharesResponse",
    ),
    (
        "Sessions",
        "ReportFailure",
        "ReportFailureRequest",
        "ReportFailureResponse",
    ),
    ("Sessions", "Join", "JoinRequest", "JoinResponse"),
    (
        "Keys",
        "PublishEncryptionKey",
        "PublishEncryptionKeyRequest",
        "PublishEncryptionKeyResponse",
    ),
    (
        "Keys",
        "GetEncryptionKeys",
        "GetEncryptionKeysRequest",
        "GetEncryptionKeysResponse",
    ),
    (
        "Admin",
        "ServerInfo",
        "ServerInfoRequest",
        "ServerInfoResponse",
    ),
    ("Mailbox", "Open", "ClientFrame", "ServerFrame"),
    ("Directory", "Enroll", "EnrollRequest", "EnrollResponse"),
    (
        "Directory",
        "Unenroll",
        "UnenrollRequest",
        "UnenrollResponse",
    ),
    (
        "Directory",
        "ListEnrolled",
        "ListEnrolledRequest",
        "ListEnrolledResponse",
    ),
];

/// The one streaming rpc of `cohort.v1`: bidirectional.
const COHORT_STREAMING: (&str, &str) = ("Mailbox", "Open");

#[test]
fn cohort_proto_matches_api_table() {
    let file = file_for_package(&descriptor_set(), "cohort.v1");

    let ours: BTreeSet<(String, String, i32)> = file
        .message_type
        .iter()
        .flat_map(|m| {
            m.field
                .iter()
                .map(|f| (m.name().to_string(), f.name().to_string(), f.number()))
        })
        .collect();
    let table: BTreeSet<(String, String, i32)> = COHORT_FIELDS
        .iter()
        .map(|(m, f, n)| (m.to_string(), f.to_string(), *n))
        .collect();
    assert_eq!(ours, table, "cohort.v1 fields differ from the API table");

    // Messages without fields do not show up in the field table.
    let messages: BTreeSet<&str> = file.message_type.iter().map(|m| m.name()).collect();
    let mut expected: BTreeSet<&str> = COHORT_FIELDS.iter().map(|(m, _, _)| *m).collect();
    expected.insert("ServerInfoRequest");
    expected.insert("ReportFailureResponse");
    assert_eq!(messages, expected, "cohort.v1 messages");

    let ours: BTreeSet<(String, String, String, String)> = file
        .service
        .iter()
        .flat_map(|s| {
            s.method.iter().map(|m| {
                let streaming = (s.name(), m.name()) == COHORT_STREAMING;
                assert_eq!(
                    (m.client_streaming(), m.server_streaming()),
                    (streaming, streaming),
                    "{}/{}: only Mailbox/Open streams, both ways",
                    s.name(),
                    m.name()
                );
                (
                    s.name().to_string(),
                    m.name().to_string(),
                    m.input_type().trim_start_matches(".cohort.v1.").to_string(),
                    m.output_type()
                        .trim_start_matches(".cohort.v1.")
                        .to_string(),
                )
            })
        })
        .collect();
    let table: BTreeSet<(String, String, String, String)> = COHORT_RPCS
        .iter()
        .map(|(s, r, i, o)| (s.to_string(), r.to_string(), i.to_string(), o.to_string()))
        .collect();
    assert_eq!(ours, table, "cohort.v1 rpcs differ from the API table");

    // The map fields.
    for (message, field, ty) in [
        ("CreateSessionResponse", "join_tokens", "map<string,string>"),
        ("CreateSessionRequest", "party_keys", "map<string,bytes>"),
    ] {
        let m = file
            .message_type
            .iter()
            .find(|m| m.name() == message)
            .unwrap();
        let f = m.field.iter().find(|f| f.name() == field).unwrap();
        assert_eq!(
            describe_field("cohort.v1", m, f),
            (false, ty.to_string()),
            "{message}.{field}"
        );
    }
}

#[test]
fn descriptor_set_holds_both_files() {
    let set = descriptor_set();
    let names: BTreeSet<&str> = set.file.iter().map(|f| f.name()).collect();
    assert_eq!(
        names,
        BTreeSet::from([
            "cohort/v1/cohort.proto",
            "mpc/router/v1/message_router.proto",
        ])
    );
    let router = file_for_package(&set, "mpc.router.v1");
    assert_eq!(router.syntax(), "proto3");
    assert!(
        router
            .options
            .as_ref()
            .and_then(|o| o.go_package.as_ref())
            .is_none(),
        "no go_package option"
    );
}

#[test]
fn mpc_message_round_trip() {
    let msg = MpcMessage {
        message_id: "0190a6c2-7b1e-7c3d-8e4f-123456789abc".into(),
        session_id: "session-1".into(),
        from_party: "party-a".into(),
        is_broadcast: true,
        round_number: 3,
        message_type: "dkg.round1".into(),
        payload: vec![0, 1, 2, 0xfe, 0xff],
        created_at: 1_700_000_000_123,
    };
    let bytes = msg.encode_to_vec();
    assert_eq!(bytes.len(), msg.encoded_len());
    let back = MpcMessage::decode(bytes.as_slice()).expect("decode");
    assert_eq!(back, msg);

    // An empty message encodes to nothing (proto3 defaults are not sent).
    assert!(MpcMessage::default().encode_to_vec().is_empty());
}

#[test]
fn mpc_message_field_numbers_on_the_wire() {
    // Hand-encoded: each field's tag is (number << 3) | wire type.
    let msg = MpcMessage {
        message_id: "m".into(),   // 1, length-delimited: 0x0a
        session_id: "s".into(),   // 2: 0x12
        from_party: "f".into(),   // 3: 0x1a
        is_broadcast: true,       // 4, varint: 0x20
        round_number: 5,          // 5: 0x28
        message_type: "t".into(), // 6: 0x32
        payload: vec![0xab],      // 7: 0x3a
        created_at: 9,            // 8: 0x40
    };
    let expected = [
        0x0a, 1, b'm', 0x12, 1, b's', 0x1a, 1, b'f', 0x20, 1, 0x28, 5, 0x32, 1, b't', 0x3a, 1,
        0xab, 0x40, 9,
    ];
    assert_eq!(msg.encode_to_vec(), expected);
    assert_eq!(MpcMessage::decode(&expected[..]).unwrap(), msg);
}
