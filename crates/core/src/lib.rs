//! Cohort's core: the domain types and the rules over mailboxes, sessions, logs, identity and
//! the directory. Sans-IO: no sockets, no runtime, no wire types. Every rule is a synchronous
//! function over a [`store::Tx`], so it runs atomically inside any store's transaction.
#![forbid(unsafe_code)]

pub mod error;
pub mod store;

pub use error::{Error, ErrorKind, Result};
