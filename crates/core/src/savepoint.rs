//! A nested transaction over a [`Tx`]: writes are buffered and reach the outer transaction
//! only on [`Savepoint::commit`]; dropping it discards them.
//!
//! A batch rule uses one per item, so an item that is refused half way (a quota hit after
//! some of its writes) leaves nothing behind while the rest of the batch commits in the same
//! store transaction. The store port has no savepoints of its own, so this works on any store.
//!
//! One around a whole batch is a write buffer: the items' writes to the same key (a
//! mailbox's meta, a session) reach the store once, and with [`Savepoint::caching`] the
//! reads of chosen tables are read from the store once.

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::ops::Bound;

use crate::error::Result;
use crate::store::{Pair, Table, Tx, View};

/// A key of some table.
type TableKey = (Table, Vec<u8>);

pub struct Savepoint<'a> {
    base: &'a mut dyn Tx,
    /// Buffered writes: `Some` a put, `None` a delete.
    writes: BTreeMap<TableKey, Option<Vec<u8>>>,
    /// Tables whose reads from `base` are kept (they do not change under the savepoint).
    cached: &'static [Table],
    reads: RefCell<HashMap<TableKey, Option<Vec<u8>>>>,
}

impl<'a> Savepoint<'a> {
    pub fn new(base: &'a mut dyn Tx) -> Self {
        Self::caching(base, &[])
    }

    /// A savepoint that also keeps what it reads of `tables`, for a batch whose items read
    /// the same keys (small values only: what is read stays in memory until the end).
    pub fn caching(base: &'a mut dyn Tx, tables: &'static [Table]) -> Self {
        Savepoint {
            base,
            writes: BTreeMap::new(),
            cached: tables,
            reads: RefCell::new(HashMap::new()),
        }
    }

    /// Applies the buffered writes to the outer transaction, in key order.
    pub fn commit(self) -> Result<()> {
        for ((table, key), value) in self.writes {
            match value {
                Some(v) => self.base.put(table, &key, &v)?,
                None => self.base.delete(table, &key)?,
            }
        }
        Ok(())
    }

    /// The buffered writes of `table` with `from <= key < to` (empty `to`: unbounded).
    fn buffered<'s>(
        &'s self,
        table: Table,
        from: &[u8],
        to: &[u8],
    ) -> impl Iterator<Item = (&'s Vec<u8>, &'s Option<Vec<u8>>)> + 's {
        let upper = if to.is_empty() {
            Bound::Unbounded
        } else {
            Bound::Excluded((table, to.to_vec()))
        };
        self.writes
            .range((Bound::Included((table, from.to_vec())), upper))
            .take_while(move |((t, _), _)| *t == table)
            .map(|((_, k), v)| (k, v))
    }
}

impl View for Savepoint<'_> {
    fn get(&self, table: Table, key: &[u8]) -> Result<Option<Vec<u8>>> {
        let k = (table, key.to_vec());
        if let Some(buffered) = self.writes.get(&k) {
            return Ok(buffered.clone());
        }
        if !self.cached.contains(&table) {
            return self.base.get(table, key);
        }
        if let Some(read) = self.reads.borrow().get(&k) {
            return Ok(read.clone());
        }
        let read = self.base.get(table, key)?;
        self.reads.borrow_mut().insert(k, read.clone());
        Ok(read)
    }

    fn scan(&self, table: Table, from: &[u8], to: &[u8], limit: usize) -> Result<Vec<Pair>> {
        if !to.is_empty() && from >= to {
            return Ok(Vec::new());
        }
        let buffered: Vec<_> = self.buffered(table, from, to).collect();
        if buffered.is_empty() {
            return self.base.scan(table, from, to, limit);
        }
        // Each buffered delete hides at most one stored pair: read that many more, so the
        // first `limit` of the merged view are all among what was read.
        let read = self
            .base
            .scan(table, from, to, limit.saturating_add(buffered.len()))?;
        let mut merged: BTreeMap<Vec<u8>, Vec<u8>> = read.into_iter().collect();
        for (k, v) in buffered {
            match v {
                Some(v) => merged.insert(k.clone(), v.clone()),
                None => merged.remove(k),
            };
        }
        Ok(merged.into_iter().take(limit).collect())
    }
}

impl Tx for Savepoint<'_> {
    fn put(&mut self, table: Table, key: &[u8], value: &[u8]) -> Result<()> {
        self.writes
            .insert((table, key.to_vec()), Some(value.to_vec()));
        Ok(())
    }

    fn delete(&mut self, table: Table, key: &[u8]) -> Result<()> {
        self.writes.insert((table, key.to_vec()), None);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::MemTx;

    fn keys(pairs: &[Pair]) -> Vec<&[u8]> {
        pairs.iter().map(|(k, _)| k.as_slice()).collect()
    }

    #[test]
    fn writes_reach_the_outer_transaction_only_on_commit() {
        let mut tx = MemTx::new();
        tx.put(Table::Meta, b"a", b"1").unwrap();
        {
            let mut sp = Savepoint::new(&mut tx);
            sp.put(Table::Meta, b"b", b"2").unwrap();
            sp.delete(Table::Meta, b"a").unwrap();
            assert_eq!(sp.get(Table::Meta, b"a").unwrap(), None);
            assert_eq!(sp.get(Table::Meta, b"b").unwrap(), Some(b"2".to_vec()));
            // dropped: discarded
        }
        assert_eq!(tx.get(Table::Meta, b"a").unwrap(), Some(b"1".to_vec()));
        assert_eq!(tx.get(Table::Meta, b"b").unwrap(), None);

        let mut sp = Savepoint::new(&mut tx);
        sp.put(Table::Meta, b"b", b"2").unwrap();
        sp.delete(Table::Meta, b"a").unwrap();
        sp.commit().unwrap();
        assert_eq!(tx.get(Table::Meta, b"a").unwrap(), None);
        assert_eq!(tx.get(Table::Meta, b"b").unwrap(), Some(b"2".to_vec()));
    }

    /// Counts the reads that reach it.
    struct Counting {
        inner: MemTx,
        gets: std::cell::Cell<usize>,
    }

    impl View for Counting {
        fn get(&self, table: Table, key: &[u8]) -> Result<Option<Vec<u8>>> {
            self.gets.set(self.gets.get() + 1);
            self.inner.get(table, key)
        }
        fn scan(&self, table: Table, from: &[u8], to: &[u8], limit: usize) -> Result<Vec<Pair>> {
            self.inner.scan(table, from, to, limit)
        }
    }

    impl Tx for Counting {
        fn put(&mut self, table: Table, key: &[u8], value: &[u8]) -> Result<()> {
            self.inner.put(table, key, value)
        }
        fn delete(&mut self, table: Table, key: &[u8]) -> Result<()> {
            self.inner.delete(table, key)
        }
    }

    #[test]
    fn a_caching_savepoint_reads_its_tables_once_and_sees_its_own_writes() {
        let mut base = Counting {
            inner: MemTx::new(),
            gets: std::cell::Cell::new(0),
        };
        base.put(Table::Sessions, b"s", b"1").unwrap();
        let mut batch = Savepoint::caching(&mut base, &[Table::Sessions]);
        for _ in 0..3 {
            assert_eq!(
                batch.get(Table::Sessions, b"s").unwrap(),
                Some(b"1".to_vec())
            );
            assert_eq!(batch.get(Table::Meta, b"m").unwrap(), None);
        }
        {
            let mut item = Savepoint::new(&mut batch);
            item.put(Table::Sessions, b"s", b"2").unwrap();
            item.commit().unwrap();
        }
        assert_eq!(
            batch.get(Table::Sessions, b"s").unwrap(),
            Some(b"2".to_vec())
        );
        batch.commit().unwrap();
        assert_eq!(base.gets.get(), 1 + 3, "sessions once, meta every time");
        assert_eq!(
            base.inner.get(Table::Sessions, b"s").unwrap(),
            Some(b"2".to_vec())
        );
    }

    #[test]
    fn scans_merge_buffered_writes_in_key_order_within_the_limit() {
        let mut tx = MemTx::new();
        for k in [b"a", b"c", b"e", b"g"] {
            tx.put(Table::Pending, k, b"").unwrap();
        }
        tx.put(Table::Mailbox, b"b", b"").unwrap();
        let mut sp = Savepoint::new(&mut tx);
        sp.delete(Table::Pending, b"a").unwrap();
        sp.delete(Table::Pending, b"c").unwrap();
        sp.put(Table::Pending, b"d", b"").unwrap();
        sp.put(Table::Messages, b"b", b"").unwrap();
        assert_eq!(
            keys(&sp.scan(Table::Pending, b"", b"", 2).unwrap()),
            vec![&b"d"[..], b"e"]
        );
        assert_eq!(
            keys(&sp.scan(Table::Pending, b"a", b"f", 10).unwrap()),
            vec![&b"d"[..], b"e"]
        );
        assert_eq!(
            keys(&sp.scan(Table::Pending, b"", b"", usize::MAX).unwrap()),
            vec![&b"d"[..], b"e", b"g"]
        );
        assert!(sp.scan(Table::Pending, b"f", b"a", 10).unwrap().is_empty());
        assert_eq!(
            keys(&sp.scan(Table::Mailbox, b"", b"", 10).unwrap()),
            vec![&b"b"[..]]
        );
    }
}
