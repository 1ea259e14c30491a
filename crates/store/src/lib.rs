//! Cohort's stores: implementations of [`cohort_core::store::Store`].
//!
//! [`SqliteStore`] is the embedded default: one SQLite file in WAL mode, one writer thread that
//! groups concurrent writes into one transaction and one fsync, and a few reader connections
//! that read snapshots in parallel. The cluster store (NATS JetStream) will live here too.
#![forbid(unsafe_code)]

mod sqlite;

pub use sqlite::{Durability, SqliteStore, StoreOptions, StoreStats};
