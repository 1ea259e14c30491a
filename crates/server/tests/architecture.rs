//! Architecture invariants (ARCHITECTURE.md) that are cheap to check: which crate may depend
//! on what. A change that breaks one fails here, not in review.

use std::path::PathBuf;

/// The names in the `[dependencies]` table of a workspace crate's manifest, leaving out
/// optional ones (core's `conformance` feature brings tokio to stores' tests only).
fn dependencies(krate: &str) -> Vec<String> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(krate)
        .join("Cargo.toml");
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    let mut in_deps = false;
    let mut out = Vec::new();
    for line in text.lines() {
        let line = line.trim();
        if line.starts_with('[') {
            in_deps = line == "[dependencies]";
            continue;
        }
        if in_deps
            && !line.is_empty()
            && !line.starts_with('#')
            && !line.contains("optional = true")
        {
            if let Some(name) = line.split(['=', '.', ' ']).next() {
                out.push(name.trim().to_string());
            }
        }
    }
    assert!(!out.is_empty(), "{} lists no dependencies", path.display());
    out
}

fn assert_none_of(krate: &str, forbidden: &[&str], why: &str) {
    let deps = dependencies(krate);
    for f in forbidden {
        assert!(
            !deps.iter().any(|d| d == f),
            "crates/{krate} depends on {f}, but {why}"
        );
    }
}

#[test]
fn core_has_no_runtime_no_wire_and_no_store() {
    assert_none_of(
        "core",
        &[
            "tokio",
            "async-std",
            "tonic",
            "prost",
            "rusqlite",
            "cohort-store",
            "cohort-wire",
            "cohort-relay",
            "cohort-server",
            "rand",
        ],
        "cohort-core is sans-IO: rules over the Store port, randomness passed in",
    );
}

#[test]
fn relay_knows_no_wire_format_and_no_concrete_store() {
    assert_none_of(
        "relay",
        &[
            "tonic",
            "prost",
            "cohort-wire",
            "rusqlite",
            "cohort-store",
            "hyper",
        ],
        "the application service knows no front and no store implementation",
    );
}

#[test]
fn fronts_never_touch_the_store() {
    assert_none_of(
        "grpc",
        &["rusqlite", "cohort-store"],
        "a front only translates into calls on the relay",
    );
}

#[test]
fn sdk_and_protocols_speak_only_the_wire() {
    for krate in ["client", "tss"] {
        assert_none_of(
            krate,
            &[
                "cohort-core",
                "cohort-store",
                "cohort-relay",
                "cohort-server",
            ],
            "the SDK and the protocol runners reach the relay over the wire only",
        );
    }
    assert_none_of(
        "tss",
        &["tonic"],
        "protocol runners see the SDK's errors, not the transport's",
    );
}
