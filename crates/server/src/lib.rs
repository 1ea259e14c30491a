//! Cohort's relay: [`relay::Relay`], the application service over the core and a store, and
//! the wire fronts that translate their protocols into calls on it.
#![forbid(unsafe_code)]

pub mod config;
pub mod grpc;
pub mod metrics;
pub mod relay;
pub mod serve;
pub mod wake;

pub use config::Config;
pub use relay::Relay;
pub use serve::{start, Running};
