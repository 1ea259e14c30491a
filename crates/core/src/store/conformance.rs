//! The contract of the [`Store`] port, as checks every store's tests run against it.
//!
//! Each check returns `Err` naming the check and what the store did wrong, and `Ok` when the
//! store kept the contract. Each uses tables of its own and expects them empty, so run them
//! (or [`run_all`]) on a fresh store. The concurrent checks spawn tokio tasks: call them
//! inside a tokio runtime. Enabled by the `conformance` feature; the core's normal build has
//! no runtime.

use std::fmt::Debug;
use std::sync::Arc;

use super::{Pair, Store, StoreExt, Table};
use crate::codec::prefix_end;
use crate::error::{Error, ErrorKind, Result};

/// Every check below, in an order that ends with [`closed_store_refuses_calls`]: the store is
/// closed afterwards.
pub async fn run_all(store: Arc<dyn Store>) -> Result<()> {
    get_put_delete(store.as_ref()).await?;
    scan_order_and_bounds(store.as_ref()).await?;
    failed_write_rolls_back_only_itself(store.as_ref()).await?;
    reads_see_committed_writes(store.as_ref()).await?;
    writes_are_atomic_across_tables(Arc::clone(&store)).await?;
    concurrent_writes_land_exactly_once(Arc::clone(&store), 32, 16).await?;
    large_values_round_trip(store.as_ref()).await?;
    keys_with_ff_bytes(store.as_ref()).await?;
    closed_store_refuses_calls(store.as_ref()).await
}

/// get of a missing key is `None`; put, overwrite and delete are seen by later reads and by
/// the writing closure itself; an empty value is a value; deleting a missing key is no error;
/// a key in one table is not in another.
pub async fn get_put_delete(store: &dyn Store) -> Result<()> {
    const CHECK: &str = "get_put_delete";
    let t = Table::Parties;
    expect_empty(store, CHECK, &[t, Table::Challenges]).await?;
    check_eq(
        CHECK,
        "get of a missing key",
        get(store, t, b"k").await?,
        None,
    )?;
    put(store, t, b"k", b"v1").await?;
    check_eq(
        CHECK,
        "get after put",
        get(store, t, b"k").await?,
        Some(b"v1".to_vec()),
    )?;
    put(store, t, b"k", b"v2").await?;
    check_eq(
        CHECK,
        "get after overwrite",
        get(store, t, b"k").await?,
        Some(b"v2".to_vec()),
    )?;
    put(store, t, b"empty", b"").await?;
    check_eq(
        CHECK,
        "an empty value",
        get(store, t, b"empty").await?,
        Some(Vec::new()),
    )?;
    check_eq(
        CHECK,
        "the same key in another table",
        get(store, Table::Challenges, b"k").await?,
        None,
    )?;
    let seen = store
        .write(move |tx| {
            tx.put(t, b"own", b"1")?;
            let after_put = tx.get(t, b"own")?;
            tx.delete(t, b"k")?;
            let after_delete = tx.get(t, b"k")?;
            tx.delete(t, b"never-written")?;
            Ok((after_put, after_delete))
        })
        .await?;
    check_eq(
        CHECK,
        "a write's reads of its own put and delete",
        seen,
        (Some(b"1".to_vec()), None),
    )?;
    check_eq(CHECK, "get after delete", get(store, t, b"k").await?, None)?;
    check_eq(
        CHECK,
        "the table after put, overwrite and delete",
        scan(store, t, b"", b"", usize::MAX).await?,
        vec![pair(b"empty", b""), pair(b"own", b"1")],
    )
}

/// Scans return `from <= key < to` in bytewise key order, at most `limit`; an empty `to` is
/// the end of the table; `from >= to` gives nothing; the empty key sorts first.
pub async fn scan_order_and_bounds(store: &dyn Store) -> Result<()> {
    const CHECK: &str = "scan_order_and_bounds";
    let t = Table::Challenges;
    expect_empty(store, CHECK, &[t]).await?;
    let keys: [&[u8]; 9] = [
        &[1, 0],
        &[0xff],
        &[0, 1],
        &[],
        &[2],
        &[0],
        &[1],
        &[0, 0],
        &[0x80],
    ];
    for (i, k) in keys.iter().enumerate() {
        put(store, t, k, &[i as u8]).await?;
    }
    let mut sorted: Vec<&[u8]> = keys.to_vec();
    sorted.sort();
    let keys_of = |pairs: Vec<Pair>| pairs.into_iter().map(|(k, _)| k).collect::<Vec<_>>();
    let want = |ks: &[&[u8]]| ks.iter().map(|k| k.to_vec()).collect::<Vec<_>>();
    /// What is checked, from, to, limit, the keys expected.
    type Case<'a> = (&'a str, &'a [u8], &'a [u8], usize, Vec<Vec<u8>>);
    let cases: [Case; 12] = [
        ("the whole table", &[], &[], usize::MAX, want(&sorted)),
        (
            "to exclusive",
            &[0],
            &[1],
            usize::MAX,
            want(&[&[0], &[0, 0], &[0, 1]]),
        ),
        (
            "from inclusive",
            &[0, 1],
            &[2],
            usize::MAX,
            want(&[&[0, 1], &[1], &[1, 0]]),
        ),
        (
            "from between keys",
            &[0, 0, 5],
            &[1],
            usize::MAX,
            want(&[&[0, 1]]),
        ),
        (
            "an empty to is the end",
            &[1, 0],
            &[],
            usize::MAX,
            want(&[&[1, 0], &[2], &[0x80], &[0xff]]),
        ),
        ("limit", &[], &[], 3, want(&[&[], &[0], &[0, 0]])),
        ("limit 1 with bounds", &[0, 0], &[2], 1, want(&[&[0, 0]])),
        ("limit 0", &[], &[], 0, Vec::new()),
        ("from == to", &[1], &[1], usize::MAX, Vec::new()),
        ("from > to", &[2], &[1], usize::MAX, Vec::new()),
        (
            "to on the last key",
            &[0x80],
            &[0xff],
            usize::MAX,
            want(&[&[0x80]]),
        ),
        ("past the last key", &[0xff, 0], &[], usize::MAX, Vec::new()),
    ];
    for (what, from, to, limit, expected) in &cases {
        let (from, to) = (from.to_vec(), to.to_vec());
        let (f, o) = (from.clone(), to.clone());
        let got = keys_of(scan(store, t, &from, &to, *limit).await?);
        check_eq(CHECK, &format!("read scan: {what}"), &got, expected)?;
        let limit = *limit;
        let in_write = store.write(move |tx| tx.scan(t, &f, &o, limit)).await?;
        check_eq(
            CHECK,
            &format!("scan inside a write: {what}"),
            &keys_of(in_write),
            expected,
        )?;
    }
    // Values come back with their keys.
    let all = scan(store, t, b"", b"", usize::MAX).await?;
    for (k, v) in &all {
        let i = keys.iter().position(|x| x == k);
        check_eq(
            CHECK,
            "a scanned value",
            i.map(|i| vec![i as u8]),
            Some(v.clone()),
        )?;
    }
    Ok(())
}

/// A write whose closure returns `Err` leaves none of its changes, even when it ran
/// together with other writes (one group commit); the others all land; the caller gets the
/// closure's own error back.
pub async fn failed_write_rolls_back_only_itself(store: &dyn Store) -> Result<()> {
    const CHECK: &str = "failed_write_rolls_back_only_itself";
    let (t, other) = (Table::Tokens, Table::Sessions);
    expect_empty(store, CHECK, &[t, other]).await?;
    put(store, t, b"a", b"committed").await?;
    // Issued before any is awaited, so a group-committing store runs them in one group.
    let first = store.write(move |tx| tx.put(t, b"b", b"first"));
    let failing = store.write(move |tx| {
        tx.put(t, b"a", b"failing")?;
        tx.delete(t, b"b")?;
        tx.put(t, b"c", b"failing")?;
        tx.put(other, b"x", b"failing")?;
        Err::<(), _>(Error::precondition(
            "conformance: this write fails on purpose",
        ))
    });
    let last = store.write(move |tx| tx.put(t, b"d", b"last"));
    first.await?;
    match failing.await {
        Ok(()) => return Err(violation(CHECK, "a closure's Err was reported as Ok")),
        Err(e) => check_eq(
            CHECK,
            "the failing write's error",
            (e.kind, e.message.as_str()),
            (
                ErrorKind::FailedPrecondition,
                "conformance: this write fails on purpose",
            ),
        )?,
    }
    last.await?;
    check_eq(
        CHECK,
        "the table after one failed write among good ones",
        scan(store, t, b"", b"", usize::MAX).await?,
        vec![
            pair(b"a", b"committed"),
            pair(b"b", b"first"),
            pair(b"d", b"last"),
        ],
    )?;
    check_eq(
        CHECK,
        "the failed write's other table",
        scan(store, other, b"", b"", usize::MAX).await?,
        Vec::new(),
    )
}

/// Once a write has resolved, every later read and write sees it.
pub async fn reads_see_committed_writes(store: &dyn Store) -> Result<()> {
    const CHECK: &str = "reads_see_committed_writes";
    let t = Table::SessionIdempotency;
    expect_empty(store, CHECK, &[t]).await?;
    for i in 0u64..64 {
        put(store, t, b"n", &i.to_be_bytes()).await?;
        check_eq(
            CHECK,
            "a read after a write",
            get(store, t, b"n").await?,
            Some(i.to_be_bytes().to_vec()),
        )?;
        let seen = store.write(move |tx| tx.get(t, b"n")).await?;
        check_eq(
            CHECK,
            "a write after a write",
            seen,
            Some(i.to_be_bytes().to_vec()),
        )?;
    }
    Ok(())
}

/// A write's changes to several tables are seen all together or not at all, by reads that
/// run while it commits, and an `Err` undoes them in every table.
pub async fn writes_are_atomic_across_tables(store: Arc<dyn Store>) -> Result<()> {
    const CHECK: &str = "writes_are_atomic_across_tables";
    const TABLES: [Table; 3] = [Table::Messages, Table::Mailbox, Table::Pending];
    expect_empty(store.as_ref(), CHECK, &TABLES).await?;
    let failed = store
        .write(|tx| {
            for t in TABLES {
                tx.put(t, b"n", b"failing")?;
            }
            Err::<(), _>(Error::precondition("conformance: fails on purpose"))
        })
        .await;
    if failed.is_ok() {
        return Err(violation(CHECK, "a closure's Err was reported as Ok"));
    }
    expect_empty(store.as_ref(), CHECK, &TABLES).await?;

    const WRITES: u64 = 200;
    let writer = {
        let store = Arc::clone(&store);
        tokio::spawn(async move {
            for i in 1..=WRITES {
                store
                    .write(move |tx| {
                        for t in TABLES {
                            tx.put(t, b"n", &i.to_be_bytes())?;
                        }
                        Ok(())
                    })
                    .await?;
            }
            Ok::<(), Error>(())
        })
    };
    let read_all = || {
        store.read(|v| {
            TABLES
                .iter()
                .map(|t| v.get(*t, b"n"))
                .collect::<Result<Vec<_>>>()
        })
    };
    let mut reads = 0u64;
    loop {
        let finished = writer.is_finished();
        let seen = read_all().await?;
        reads += 1;
        if seen.iter().any(|v| v != &seen[0]) {
            return Err(violation(
                CHECK,
                &format!("one read saw the tables at different writes: {seen:?}"),
            ));
        }
        if finished {
            break;
        }
        // Lets the writer run on a single-threaded runtime, whose store may never yield.
        tokio::task::yield_now().await;
    }
    writer
        .await
        .map_err(|e| violation(CHECK, &format!("the writer task failed: {e}")))??;
    check_eq(
        CHECK,
        "every table after the last write",
        read_all().await?,
        vec![Some(WRITES.to_be_bytes().to_vec()); 3],
    )?;
    if reads == 0 {
        return Err(violation(CHECK, "no read ran"));
    }
    Ok(())
}

/// `tasks` tasks each make `per_task` read-modify-write increments of one counter at once:
/// every write lands exactly once (the counter ends at `tasks * per_task`, the values the
/// writes saw are each of 1..=that once, and each write's own key is there once).
pub async fn concurrent_writes_land_exactly_once(
    store: Arc<dyn Store>,
    tasks: u64,
    per_task: u64,
) -> Result<()> {
    const CHECK: &str = "concurrent_writes_land_exactly_once";
    let (counter, marks) = (Table::LogTips, Table::OpenSessions);
    expect_empty(store.as_ref(), CHECK, &[counter, marks]).await?;
    let handles: Vec<_> = (0..tasks)
        .map(|task| {
            let store = Arc::clone(&store);
            tokio::spawn(async move {
                let mut seen = Vec::new();
                for j in 0..per_task {
                    let n = store
                        .write(move |tx| {
                            let n = match tx.get(counter, b"counter")? {
                                Some(raw) => u64_of(&raw)?,
                                None => 0,
                            } + 1;
                            tx.put(counter, b"counter", &n.to_be_bytes())?;
                            let mark = [task.to_be_bytes(), j.to_be_bytes()].concat();
                            tx.put(marks, &mark, &n.to_be_bytes())?;
                            Ok(n)
                        })
                        .await?;
                    seen.push(n);
                }
                Ok::<_, Error>(seen)
            })
        })
        .collect();
    let mut seen = Vec::new();
    for h in handles {
        let task_seen = h
            .await
            .map_err(|e| violation(CHECK, &format!("a writing task failed: {e}")))??;
        seen.extend(task_seen);
    }
    let total = tasks * per_task;
    seen.sort_unstable();
    check_eq(
        CHECK,
        "the counter values the writes saw",
        seen,
        (1..=total).collect::<Vec<_>>(),
    )?;
    check_eq(
        CHECK,
        "the counter",
        get(store.as_ref(), counter, b"counter").await?,
        Some(total.to_be_bytes().to_vec()),
    )?;
    let stored = scan(store.as_ref(), marks, b"", b"", usize::MAX).await?;
    let mut values = stored
        .iter()
        .map(|(_, v)| u64_of(v))
        .collect::<Result<Vec<_>>>()?;
    values.sort_unstable();
    check_eq(
        CHECK,
        "each write's own key, once",
        (stored.len(), values),
        (
            usize::try_from(total).unwrap_or(usize::MAX),
            (1..=total).collect::<Vec<_>>(),
        ),
    )
}

/// Values of 1 MiB (and one byte more) round-trip through put, get and scan, and can be
/// replaced and deleted.
pub async fn large_values_round_trip(store: &dyn Store) -> Result<()> {
    const CHECK: &str = "large_values_round_trip";
    let t = Table::Logs;
    expect_empty(store, CHECK, &[t]).await?;
    let mib = 1024 * 1024;
    let big = |seed: u8, len: usize| -> Vec<u8> {
        (0..len)
            .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
            .collect()
    };
    let (a, b) = (big(1, mib), big(2, mib + 1));
    let (a2, b2) = (a.clone(), b.clone());
    store
        .write(move |tx| {
            tx.put(t, b"a", &a2)?;
            tx.put(t, b"b", &b2)
        })
        .await?;
    check_eq(
        CHECK,
        "get of 1 MiB",
        get(store, t, b"a").await?,
        Some(a.clone()),
    )?;
    check_eq(
        CHECK,
        "scan of two large values",
        scan(store, t, b"", b"", usize::MAX).await?,
        vec![(b"a".to_vec(), a), (b"b".to_vec(), b)],
    )?;
    let replaced = big(3, mib);
    put(store, t, b"a", &replaced).await?;
    check_eq(
        CHECK,
        "get after replacing",
        get(store, t, b"a").await?,
        Some(replaced),
    )?;
    store
        .write(move |tx| {
            tx.delete(t, b"a")?;
            tx.delete(t, b"b")
        })
        .await?;
    expect_empty(store, CHECK, &[t]).await
}

/// Keys made of or ending in 0xff bytes are stored, found and ordered like any others, and
/// the scans rules make over them (to [`prefix_end`], which is unbounded for all-0xff
/// prefixes) return the right keys.
pub async fn keys_with_ff_bytes(store: &dyn Store) -> Result<()> {
    const CHECK: &str = "keys_with_ff_bytes";
    let t = Table::Purge;
    expect_empty(store, CHECK, &[t]).await?;
    let long = vec![0xff; 1000];
    let keys: Vec<Vec<u8>> = vec![
        vec![0xff, 0xff],
        vec![0xfe, 0xff],
        vec![0xff],
        vec![0x00, 0xff],
        long.clone(),
        vec![0xff, 0x00],
        vec![0xff, 0xff, 0xff],
        vec![0xfe],
    ];
    for k in &keys {
        put(store, t, k, k).await?;
    }
    for k in &keys {
        check_eq(
            CHECK,
            "get of a 0xff key",
            get(store, t, k).await?,
            Some(k.clone()),
        )?;
    }
    let scanned = |pairs: Vec<Pair>| -> Result<Vec<Vec<u8>>> {
        pairs
            .into_iter()
            .map(|(k, v)| {
                if k == v {
                    Ok(k)
                } else {
                    Err(violation(
                        CHECK,
                        &format!("key {k:?} came back with value {v:?}"),
                    ))
                }
            })
            .collect()
    };
    let mut sorted = keys.clone();
    sorted.sort();
    check_eq(
        CHECK,
        "the whole table in order",
        scanned(scan(store, t, &[], &[], usize::MAX).await?)?,
        sorted,
    )?;
    let ff = [0xff];
    check_eq(
        CHECK,
        "the prefix 0xff up to prefix_end",
        scanned(scan(store, t, &ff, &prefix_end(&ff), usize::MAX).await?)?,
        vec![
            vec![0xff],
            vec![0xff, 0x00],
            vec![0xff, 0xff],
            vec![0xff, 0xff, 0xff],
            long.clone(),
        ],
    )?;
    check_eq(
        CHECK,
        "the prefix 0xfe up to prefix_end",
        scanned(scan(store, t, &[0xfe], &prefix_end(&[0xfe]), usize::MAX).await?)?,
        vec![vec![0xfe], vec![0xfe, 0xff]],
    )?;
    check_eq(
        CHECK,
        "from 0xff 0xff 0xff to the end",
        scanned(scan(store, t, &[0xff, 0xff, 0xff], &[], usize::MAX).await?)?,
        vec![vec![0xff, 0xff, 0xff], long.clone()],
    )?;
    check_eq(
        CHECK,
        "up to 0xff 0xff, exclusive",
        scanned(scan(store, t, &[0xff], &[0xff, 0xff], usize::MAX).await?)?,
        vec![vec![0xff], vec![0xff, 0x00]],
    )?;
    store.write(move |tx| tx.delete(t, &[0xff, 0xff])).await?;
    check_eq(
        CHECK,
        "get after delete",
        get(store, t, &[0xff, 0xff]).await?,
        None,
    )?;
    check_eq(
        CHECK,
        "a longer key after its prefix was deleted",
        get(store, t, &[0xff, 0xff, 0xff]).await?,
        Some(vec![0xff, 0xff, 0xff]),
    )
}

/// After `close`, writes, reads and a second close fail with `Unavailable`.
pub async fn closed_store_refuses_calls(store: &dyn Store) -> Result<()> {
    const CHECK: &str = "closed_store_refuses_calls";
    put(store, Table::Meta, b"before-close", b"1").await?;
    store.close().await?;
    let kind = |r: Result<()>| r.err().map(|e| e.kind);
    let write = store
        .write(|tx| tx.put(Table::Meta, b"after-close", b"1"))
        .await;
    check_eq(
        CHECK,
        "a write after close",
        kind(write),
        Some(ErrorKind::Unavailable),
    )?;
    let read = store
        .read(|v| v.get(Table::Meta, b"before-close").map(drop))
        .await;
    check_eq(
        CHECK,
        "a read after close",
        kind(read),
        Some(ErrorKind::Unavailable),
    )?;
    check_eq(
        CHECK,
        "a second close",
        kind(store.close().await),
        Some(ErrorKind::Unavailable),
    )
}

// ---------------------------------------------------------------------------------------

fn violation(check: &str, what: &str) -> Error {
    Error::internal(format!("store conformance: {check}: {what}"))
}

fn check_eq<T: PartialEq + Debug>(check: &str, what: &str, got: T, want: T) -> Result<()> {
    if got == want {
        Ok(())
    } else {
        let (got, want) = (format!("{got:?}"), format!("{want:?}"));
        Err(violation(
            check,
            &format!("{what}: got {}, want {}", shorten(&got), shorten(&want)),
        ))
    }
}

/// Keeps a failure message readable when the values are a megabyte long.
fn shorten(s: &str) -> String {
    const MAX: usize = 300;
    match s.char_indices().nth(MAX) {
        Some((cut, _)) => format!("{}... ({} chars)", &s[..cut], s.len()),
        None => s.to_owned(),
    }
}

async fn expect_empty(store: &dyn Store, check: &str, tables: &[Table]) -> Result<()> {
    for t in tables {
        let found = scan(store, *t, b"", b"", 1).await?;
        if !found.is_empty() {
            return Err(violation(
                check,
                &format!(
                    "table {} is not empty; run the checks on a fresh store",
                    t.name()
                ),
            ));
        }
    }
    Ok(())
}

fn pair(k: &[u8], v: &[u8]) -> Pair {
    (k.to_vec(), v.to_vec())
}

fn u64_of(raw: &[u8]) -> Result<u64> {
    let bytes: [u8; 8] = raw
        .try_into()
        .map_err(|_| Error::internal(format!("store conformance: {raw:?} is not a u64")))?;
    Ok(u64::from_be_bytes(bytes))
}

async fn put(store: &dyn Store, table: Table, key: &[u8], value: &[u8]) -> Result<()> {
    let (key, value) = (key.to_vec(), value.to_vec());
    store.write(move |tx| tx.put(table, &key, &value)).await
}

async fn get(store: &dyn Store, table: Table, key: &[u8]) -> Result<Option<Vec<u8>>> {
    let key = key.to_vec();
    store.read(move |v| v.get(table, &key)).await
}

async fn scan(
    store: &dyn Store,
    table: Table,
    from: &[u8],
    to: &[u8],
    limit: usize,
) -> Result<Vec<Pair>> {
    let (from, to) = (from.to_vec(), to.to_vec());
    store.read(move |v| v.scan(table, &from, &to, limit)).await
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;
    use crate::store::{AnyResult, BoxFuture, MemStore, MemTx, ReadFn, Tx, View, WriteFn};

    /// A store with one flaw, to show the checks catch it.
    #[derive(Clone, Copy)]
    enum Flaw {
        /// A failed write keeps the changes it made before failing.
        NoRollback,
        /// Scans ignore their upper bound.
        ScanIgnoresTo,
    }

    struct Flawed {
        flaw: Flaw,
        tx: Mutex<MemTx>,
    }

    struct FlawedTx<'a>(Flaw, &'a mut MemTx);

    impl View for FlawedTx<'_> {
        fn get(&self, table: Table, key: &[u8]) -> Result<Option<Vec<u8>>> {
            self.1.get(table, key)
        }
        fn scan(&self, table: Table, from: &[u8], to: &[u8], limit: usize) -> Result<Vec<Pair>> {
            match self.0 {
                Flaw::ScanIgnoresTo => self.1.scan(table, from, &[], limit),
                Flaw::NoRollback => self.1.scan(table, from, to, limit),
            }
        }
    }

    impl Tx for FlawedTx<'_> {
        fn put(&mut self, table: Table, key: &[u8], value: &[u8]) -> Result<()> {
            self.1.put(table, key, value)
        }
        fn delete(&mut self, table: Table, key: &[u8]) -> Result<()> {
            self.1.delete(table, key)
        }
    }

    impl Store for Flawed {
        fn write_boxed(&self, mut f: WriteFn) -> BoxFuture<'_, AnyResult> {
            let mut tx = self.tx.lock().unwrap_or_else(|p| p.into_inner());
            let result = match self.flaw {
                Flaw::NoRollback => f(&mut FlawedTx(self.flaw, &mut tx)),
                Flaw::ScanIgnoresTo => {
                    let mut copy = tx.clone();
                    let result = f(&mut FlawedTx(self.flaw, &mut copy));
                    if result.is_ok() {
                        *tx = copy;
                    }
                    result
                }
            };
            Box::pin(std::future::ready(result))
        }
        fn read_boxed(&self, f: ReadFn) -> BoxFuture<'_, AnyResult> {
            let mut tx = self.tx.lock().unwrap_or_else(|p| p.into_inner());
            let result = f(&FlawedTx(self.flaw, &mut tx));
            Box::pin(std::future::ready(result))
        }
        fn close(&self) -> BoxFuture<'_, Result<()>> {
            Box::pin(std::future::ready(Ok(())))
        }
    }

    fn flawed(flaw: Flaw) -> Flawed {
        Flawed {
            flaw,
            tx: Mutex::new(MemTx::new()),
        }
    }

    #[tokio::test]
    async fn a_store_that_keeps_failed_writes_is_caught() {
        let store = flawed(Flaw::NoRollback);
        let e = failed_write_rolls_back_only_itself(&store).await.err();
        assert!(
            e.as_ref()
                .is_some_and(|e| e.message.contains("after one failed write")),
            "{e:?}"
        );
        let e = writes_are_atomic_across_tables(Arc::new(flawed(Flaw::NoRollback)))
            .await
            .err();
        assert!(
            e.as_ref().is_some_and(|e| e.message.contains("not empty")),
            "{e:?}"
        );
    }

    #[tokio::test]
    async fn a_store_whose_scans_overrun_is_caught() {
        let e = scan_order_and_bounds(&flawed(Flaw::ScanIgnoresTo))
            .await
            .err();
        assert!(
            e.as_ref()
                .is_some_and(|e| e.message.contains("read scan: to exclusive")),
            "{e:?}"
        );
    }

    #[tokio::test]
    async fn a_store_that_does_not_refuse_calls_after_close_is_caught() {
        let e = closed_store_refuses_calls(&flawed(Flaw::NoRollback))
            .await
            .err();
        assert!(
            e.as_ref()
                .is_some_and(|e| e.message.contains("a write after close")),
            "{e:?}"
        );
    }

    #[tokio::test]
    async fn mem_store_keeps_the_contract_on_one_thread() -> Result<()> {
        run_all(Arc::new(MemStore::new())).await
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn mem_store_keeps_the_contract_on_many_threads() -> Result<()> {
        run_all(Arc::new(MemStore::new())).await
    }
}
