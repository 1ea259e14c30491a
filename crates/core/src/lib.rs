//! Cohort's core: the domain types and the rules over mailboxes, sessions, identity and the
//! directory. Sans-IO: no sockets, no runtime, no wire types. Every rule is a synchronous
//! function over a [`store::Tx`], so it runs atomically inside any store's transaction, and
//! its tests run over [`store::MemTx`] without tokio or a network.
#![forbid(unsafe_code)]

pub mod challenges;
pub mod codec;
mod cursor;
pub mod delivery;
pub mod enrollment;
pub mod error;
pub mod identity;
pub mod limits;
pub mod mailbox;
pub mod savepoint;
pub mod session;
pub mod store;
pub mod stream;
pub mod validate;

pub use error::{Error, ErrorKind, Result};
pub use identity::Principal;
pub use limits::{Limits, Millis};
