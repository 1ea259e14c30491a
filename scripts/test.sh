#!/usr/bin/env bash
# The test suite: formatting, lints, then every test of the workspace.
# Needs only a Rust toolchain (protoc comes from a crate, SQLite is built from source).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings
cargo test --workspace --locked
