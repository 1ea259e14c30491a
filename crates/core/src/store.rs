//! The port a store implements: an ordered key-value space split into [`Table`]s, read through
//! a [`View`] and changed atomically through a [`Tx`].
//!
//! Rules are plain synchronous functions over a `&mut dyn Tx`; a store runs them inside its
//! transaction, so a rule is atomic on every store (SQLite group commit today, optimistic
//! compare-and-set on a cluster store later) and testable over [`MemTx`] without any I/O.

use std::any::Any;
use std::collections::BTreeMap;
use std::future::Future;
use std::ops::Bound;
use std::pin::Pin;

use crate::error::{Error, Result};

/// The tables of the key space. Keys within a table sort bytewise; rules build keys with
/// [`crate::keys`] so that range scans follow the domain order (a mailbox by seq, ...).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Table {
    /// party id -> Party
    Parties,
    /// challenge id -> Challenge
    Challenges,
    /// sha256(token) -> TokenRecord
    Tokens,
    /// session id -> Session
    Sessions,
    /// (creator, idempotency key) -> session id
    SessionIdempotency,
    /// session id -> () for every session not yet closed: what the sweeper looks at
    OpenSessions,
    /// (purge time, session id) -> (): closed sessions whose data is removed after retention
    Purge,
    /// message id -> Message without its payload (sender, recipients ...), stored once
    Messages,
    /// message id -> payload bytes, as sent
    Payloads,
    /// (owner, channel, seq) -> MailboxEntry
    Mailbox,
    /// (owner, channel) -> MailboxMeta (last seq)
    MailboxMeta,
    /// (owner, channel, seq) -> (): entries not yet acknowledged or failed
    Pending,
    /// (log id, seq) -> LogEntry; (log id) -> LogTip lives in LogTips
    Logs,
    /// log id -> LogTip
    LogTips,
    /// key-value settings and small singletons (server keys, counters)
    Meta,
    /// (session id, sender, client id) -> the message id a streaming send stored: what makes
    /// a retried send idempotent (see [`crate::stream`]); purged with the session
    SendIds,
    /// party id -> Enrollment: the identity key a party id is bound to, and who bound it
    Enrollments,
}

impl Table {
    pub const ALL: [Table; 17] = [
        Table::Parties,
        Table::Challenges,
        Table::Tokens,
        Table::Sessions,
        Table::SessionIdempotency,
        Table::OpenSessions,
        Table::Purge,
        Table::Messages,
        Table::Payloads,
        Table::Mailbox,
        Table::MailboxMeta,
        Table::Pending,
        Table::Logs,
        Table::LogTips,
        Table::Meta,
        Table::SendIds,
        Table::Enrollments,
    ];

    /// A stable name, used by stores as the physical table name.
    pub fn name(self) -> &'static str {
        match self {
            Table::Parties => "parties",
            Table::Challenges => "challenges",
            Table::Tokens => "tokens",
            Table::Sessions => "sessions",
            Table::SessionIdempotency => "session_idempotency",
            Table::OpenSessions => "open_sessions",
            Table::Purge => "purge",
            Table::Messages => "messages",
            Table::Payloads => "payloads",
            Table::Mailbox => "mailbox",
            Table::MailboxMeta => "mailbox_meta",
            Table::Pending => "pending",
            Table::Logs => "logs",
            Table::LogTips => "log_tips",
            Table::Meta => "meta",
            Table::SendIds => "send_ids",
            Table::Enrollments => "enrollments",
        }
    }
}

/// One key-value pair as a scan returns it.
pub type Pair = (Vec<u8>, Vec<u8>);

/// Read access to a consistent snapshot.
pub trait View {
    fn get(&self, table: Table, key: &[u8]) -> Result<Option<Vec<u8>>>;
    /// Pairs with `from <= key < to` in key order, at most `limit` of them.
    /// An empty `to` means "to the end of the table"; `from >= to` gives nothing.
    fn scan(&self, table: Table, from: &[u8], to: &[u8], limit: usize) -> Result<Vec<Pair>>;
}

/// Read and write access inside one atomic transaction.
pub trait Tx: View {
    fn put(&mut self, table: Table, key: &[u8], value: &[u8]) -> Result<()>;
    fn delete(&mut self, table: Table, key: &[u8]) -> Result<()>;
}

/// A boxed future, so the [`Store`] port stays object safe.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;
/// A type-erased result carried through the object-safe port; [`StoreExt`] restores the type.
pub type AnyResult = Result<Box<dyn Any + Send>>;
pub type WriteFn = Box<dyn FnMut(&mut dyn Tx) -> AnyResult + Send>;
pub type ReadFn = Box<dyn FnOnce(&dyn View) -> AnyResult + Send>;

/// A store. `write` runs its function atomically and resolves only once the transaction is
/// durable (per the store's durability setting); an `Err` from the function rolls back that
/// function's writes and nothing else. A write is queued when `write_boxed` is called and runs
/// even if its future is dropped: a cancelled request may still have written.
/// `read` runs on a consistent snapshot.
pub trait Store: Send + Sync + 'static {
    fn write_boxed(&self, f: WriteFn) -> BoxFuture<'_, AnyResult>;
    fn read_boxed(&self, f: ReadFn) -> BoxFuture<'_, AnyResult>;
    /// Flushes and closes the store; later calls fail with Unavailable.
    fn close(&self) -> BoxFuture<'_, Result<()>>;
}

/// Typed calls over the object-safe [`Store`] port.
pub trait StoreExt: Store {
    fn write<R, F>(&self, mut f: F) -> BoxFuture<'_, Result<R>>
    where
        R: Send + 'static,
        F: FnMut(&mut dyn Tx) -> Result<R> + Send + 'static,
    {
        let fut = self.write_boxed(Box::new(move |tx| {
            f(tx).map(|r| Box::new(r) as Box<dyn Any + Send>)
        }));
        Box::pin(async move { downcast(fut.await?) })
    }

    fn read<R, F>(&self, f: F) -> BoxFuture<'_, Result<R>>
    where
        R: Send + 'static,
        F: FnOnce(&dyn View) -> Result<R> + Send + 'static,
    {
        let fut = self.read_boxed(Box::new(move |v| {
            f(v).map(|r| Box::new(r) as Box<dyn Any + Send>)
        }));
        Box::pin(async move { downcast(fut.await?) })
    }
}

impl<S: Store + ?Sized> StoreExt for S {}

fn downcast<R: 'static>(b: Box<dyn Any + Send>) -> Result<R> {
    b.downcast::<R>()
        .map(|b| *b)
        .map_err(|_| Error::internal("store returned a value of the wrong type"))
}

/// An in-memory [`Tx`] over ordered maps: the reference semantics of the port, used by the
/// core's unit tests and by stores as a write buffer.
#[derive(Debug, Default, Clone)]
pub struct MemTx {
    pub tables: BTreeMap<Table, BTreeMap<Vec<u8>, Vec<u8>>>,
}

impl MemTx {
    pub fn new() -> Self {
        Self::default()
    }
}

impl View for MemTx {
    fn get(&self, table: Table, key: &[u8]) -> Result<Option<Vec<u8>>> {
        Ok(self.tables.get(&table).and_then(|t| t.get(key).cloned()))
    }

    fn scan(&self, table: Table, from: &[u8], to: &[u8], limit: usize) -> Result<Vec<Pair>> {
        let Some(t) = self.tables.get(&table) else {
            return Ok(Vec::new());
        };
        if !to.is_empty() && from >= to {
            return Ok(Vec::new());
        }
        let upper = if to.is_empty() {
            Bound::Unbounded
        } else {
            Bound::Excluded(to.to_vec())
        };
        Ok(t.range((Bound::Included(from.to_vec()), upper))
            .take(limit)
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect())
    }
}

impl Tx for MemTx {
    fn put(&mut self, table: Table, key: &[u8], value: &[u8]) -> Result<()> {
        self.tables
            .entry(table)
            .or_default()
            .insert(key.to_vec(), value.to_vec());
        Ok(())
    }

    fn delete(&mut self, table: Table, key: &[u8]) -> Result<()> {
        if let Some(t) = self.tables.get_mut(&table) {
            t.remove(key);
        }
        Ok(())
    }
}

mod mem;
pub use mem::MemStore;

#[cfg(any(test, feature = "conformance"))]
pub mod conformance;
