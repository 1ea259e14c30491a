//! The composition of a relay: configuration, the store it opens, the application service
//! ([`cohort_relay::Relay`]) and the fronts it serves ([`cohort_grpc`]), the metrics endpoint,
//! and an orderly shutdown. The `cohort` binary and the integration tests start relays
//! through [`start`].
#![forbid(unsafe_code)]

pub mod config;
mod http;
pub mod serve;

pub use cohort_relay::Relay;
pub use config::Config;
pub use serve::{start, Running};
