//! Cohort's wire types: the protobuf messages and the tonic gRPC clients and servers
//! generated from the `.proto` files under `proto/`.
//!
//! - `proto/mpc/router/v1/message_router.proto` (package `mpc.router.v1`, module
//!   [`router`]) is written from the MPC wallet message router's interface document
//!   (`shared/specs/mpc-router.proto.txt`), so Cohort serves that API wire-compatibly.
//! - `proto/cohort/v1/cohort.proto` (package `cohort.v1`, module [`cohort`]) is Cohort's
//!   own API for what the router lacks: login, session creation, encryption keys, admin,
//!   and `Mailbox`, one bidirectional stream per connection for batched sends, deliveries
//!   under credit-based flow control and cumulative acknowledgements.
//!
//! Message names, field names and field numbers are a wire contract: changing one breaks
//! existing peers. `tests/wire_contract.rs` checks the router proto against the spec.
//!
//! Code is generated at build time with `tonic-prost-build`, using the protoc binary from
//! `protoc-bin-vendored`.

#![forbid(unsafe_code)]

/// `mpc.router.v1`: the MPC router API (`MessageRouter` service and its messages).
///
/// Server: [`router::message_router_server::MessageRouterServer`]; client:
/// [`router::message_router_client::MessageRouterClient`].
#[allow(clippy::all, clippy::pedantic, missing_docs)]
pub mod router {
    tonic::include_proto!("mpc.router.v1");
}

/// `cohort.v1`: Cohort's own services (`Auth`, `Sessions`, `Keys`, `Admin`, `Mailbox`).
#[allow(clippy::all, clippy::pedantic, missing_docs)]
pub mod cohort {
    tonic::include_proto!("cohort.v1");
}

/// Encoded `google.protobuf.FileDescriptorSet` of both protos, for gRPC reflection
/// (`tonic_reflection::server::Builder::register_encoded_file_descriptor_set`).
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/cohort_wire_descriptor.bin"));
