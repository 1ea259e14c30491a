//! [`MemStore`]: the port's reference [`Store`], in memory.

use std::collections::BTreeMap;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{Mutex, MutexGuard};

use super::{AnyResult, BoxFuture, MemTx, Pair, ReadFn, Store, Table, Tx, View, WriteFn};
use crate::error::{Error, Result};

/// A [`Store`] over one [`MemTx`] behind a mutex: writes and reads run one at a time, at the
/// call (the returned future is already complete). A write runs on a copy of the tables it
/// changes, swapped in only when it returns `Ok`, so an `Err` (or a panic) leaves nothing
/// behind. Not durable: for tests of code that runs rules through a store.
#[derive(Debug)]
pub struct MemStore {
    /// `None` once closed.
    state: Mutex<Option<MemTx>>,
}

impl Default for MemStore {
    fn default() -> Self {
        Self::with(MemTx::new())
    }
}

impl MemStore {
    /// An empty, open store.
    pub fn new() -> Self {
        Self::default()
    }

    /// A store holding `tx`'s tables.
    pub fn with(tx: MemTx) -> Self {
        MemStore {
            state: Mutex::new(Some(tx)),
        }
    }

    /// A copy of every table as last committed.
    pub fn snapshot(&self) -> Result<MemTx> {
        self.lock().as_ref().cloned().ok_or_else(closed)
    }

    fn lock(&self) -> MutexGuard<'_, Option<MemTx>> {
        // A panicking closure ran on a copy, so the state behind a poisoned lock is intact.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

fn closed() -> Error {
    Error::unavailable("store: the store is closed")
}

fn caught<T>(what: &str, f: impl FnOnce() -> Result<T>) -> Result<T> {
    catch_unwind(AssertUnwindSafe(f)).unwrap_or_else(|_| {
        Err(Error::internal(format!(
            "store: the {what} panicked; nothing was changed"
        )))
    })
}

impl Store for MemStore {
    fn write_boxed(&self, mut f: WriteFn) -> BoxFuture<'_, AnyResult> {
        let mut state = self.lock();
        let result = match state.as_mut() {
            None => Err(closed()),
            Some(base) => {
                let mut copy = CopyOnWrite {
                    base,
                    changed: MemTx::new(),
                };
                let result = caught("write", || f(&mut copy));
                let changed = copy.changed;
                if result.is_ok() {
                    base.tables.extend(changed.tables);
                }
                result
            }
        };
        Box::pin(std::future::ready(result))
    }

    fn read_boxed(&self, f: ReadFn) -> BoxFuture<'_, AnyResult> {
        let state = self.lock();
        let result = match state.as_ref() {
            None => Err(closed()),
            Some(tx) => caught("read", || f(tx)),
        };
        Box::pin(std::future::ready(result))
    }

    fn close(&self) -> BoxFuture<'_, Result<()>> {
        let result = self.lock().take().map(|_| ()).ok_or_else(closed);
        Box::pin(std::future::ready(result))
    }
}

/// The committed tables, with a private copy of each table a write changes: reads see the
/// write's own changes, and dropping the copies undoes them.
struct CopyOnWrite<'a> {
    base: &'a MemTx,
    changed: MemTx,
}

impl CopyOnWrite<'_> {
    fn source(&self, table: Table) -> &MemTx {
        if self.changed.tables.contains_key(&table) {
            &self.changed
        } else {
            self.base
        }
    }

    fn copy(&mut self, table: Table) {
        if !self.changed.tables.contains_key(&table) {
            let current: BTreeMap<Vec<u8>, Vec<u8>> =
                self.base.tables.get(&table).cloned().unwrap_or_default();
            self.changed.tables.insert(table, current);
        }
    }
}

impl View for CopyOnWrite<'_> {
    fn get(&self, table: Table, key: &[u8]) -> Result<Option<Vec<u8>>> {
        self.source(table).get(table, key)
    }

    fn scan(&self, table: Table, from: &[u8], to: &[u8], limit: usize) -> Result<Vec<Pair>> {
        self.source(table).scan(table, from, to, limit)
    }
}

impl Tx for CopyOnWrite<'_> {
    fn put(&mut self, table: Table, key: &[u8], value: &[u8]) -> Result<()> {
        self.copy(table);
        self.changed.put(table, key, value)
    }

    fn delete(&mut self, table: Table, key: &[u8]) -> Result<()> {
        self.copy(table);
        self.changed.delete(table, key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::StoreExt;

    /// Polls a future that is complete at creation, as every `MemStore` future is.
    fn now<T>(f: BoxFuture<'_, T>) -> T {
        let mut f = f;
        let waker = std::task::Waker::noop();
        match f.as_mut().poll(&mut std::task::Context::from_waker(waker)) {
            std::task::Poll::Ready(v) => v,
            std::task::Poll::Pending => panic!("a MemStore future was not ready"),
        }
    }

    #[test]
    fn failed_write_leaves_nothing_and_ok_write_commits() -> Result<()> {
        let store = MemStore::new();
        now(store.write(|tx| tx.put(Table::Meta, b"a", b"1")))?;
        let failed = now(store.write(|tx| {
            tx.put(Table::Meta, b"a", b"2")?;
            tx.put(Table::Tokens, b"b", b"2")?;
            assert_eq!(tx.get(Table::Meta, b"a")?, Some(b"2".to_vec()));
            Err::<(), _>(Error::precondition("no"))
        }));
        assert_eq!(
            failed.map_err(|e| e.kind),
            Err(crate::ErrorKind::FailedPrecondition)
        );
        let snap = store.snapshot()?;
        assert_eq!(snap.get(Table::Meta, b"a")?, Some(b"1".to_vec()));
        assert_eq!(snap.get(Table::Tokens, b"b")?, None);
        now(store.close())?;
        let e = now(store.read(|v| v.get(Table::Meta, b"a")));
        assert_eq!(e.map_err(|e| e.kind), Err(crate::ErrorKind::Unavailable));
        Ok(())
    }
}
