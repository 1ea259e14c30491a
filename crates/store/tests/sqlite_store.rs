//! `SqliteStore` against a real SQLite file in a temp dir, with `MemTx` as the reference.

use std::path::{Path, PathBuf};
use std::sync::{mpsc, Arc};

use cohort_core::store::{MemTx, Pair, Store, StoreExt, Table, Tx, View};
use cohort_core::{Error, ErrorKind};
use cohort_store::{Durability, SqliteStore, StoreOptions, StoreStats};
use tempfile::TempDir;

fn db_path(dir: &TempDir) -> PathBuf {
    dir.path().join("data").join("cohort.sqlite")
}

fn open(path: &Path) -> SqliteStore {
    match SqliteStore::open(path, StoreOptions::default()) {
        Ok(store) => store,
        Err(e) => panic!("open {}: {e}", path.display()),
    }
}

async fn put(store: &SqliteStore, table: Table, key: &[u8], value: &[u8]) {
    let (key, value) = (key.to_vec(), value.to_vec());
    store
        .write(move |tx| tx.put(table, &key, &value))
        .await
        .expect("put commits");
}

async fn get(store: &SqliteStore, table: Table, key: &[u8]) -> Option<Vec<u8>> {
    let key = key.to_vec();
    store
        .read(move |v| v.get(table, &key))
        .await
        .expect("get reads")
}

async fn scan_all(store: &SqliteStore, table: Table) -> Vec<Pair> {
    store
        .read(move |v| v.scan(table, b"", b"", usize::MAX))
        .await
        .expect("scan reads")
}

/// A small deterministic PRNG (xorshift64*), so the randomized test needs no new dependency
/// and a failure replays exactly.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    /// Short keys over a tiny alphabet, including the empty key and 0x00/0xff bytes, so puts
    /// collide, deletes hit, and scan bounds fall on, between and around stored keys.
    fn key(&mut self) -> Vec<u8> {
        const ALPHABET: [u8; 4] = [0x00, 0x01, 0x7f, 0xff];
        let len = self.below(4) as usize;
        (0..len).map(|_| ALPHABET[self.below(4) as usize]).collect()
    }
    fn value(&mut self) -> Vec<u8> {
        let len = self.below(5) as usize;
        (0..len).map(|_| self.next() as u8).collect()
    }
}

#[derive(Debug, Clone)]
enum Op {
    Put(Table, Vec<u8>, Vec<u8>),
    Delete(Table, Vec<u8>),
    Get(Table, Vec<u8>),
    Scan(Table, Vec<u8>, Vec<u8>, usize),
}

#[derive(Debug, Clone, PartialEq)]
enum Outcome {
    Done,
    Got(Option<Vec<u8>>),
    Scanned(Vec<Pair>),
}

fn random_ops(rng: &mut Rng, n: usize) -> Vec<Op> {
    const TABLES: [Table; 3] = [Table::Mailbox, Table::Logs, Table::Meta];
    (0..n)
        .map(|_| {
            let table = TABLES[rng.below(3) as usize];
            match rng.below(10) {
                0..=3 => Op::Put(table, rng.key(), rng.value()),
                4..=5 => Op::Delete(table, rng.key()),
                6..=7 => Op::Get(table, rng.key()),
                _ => {
                    let (a, b) = (rng.key(), rng.key());
                    // MemTx's BTreeMap::range panics on from > to, so keep from <= to; an
                    // empty `to` (unbounded) comes up naturally.
                    let (from, to) = if b.is_empty() || a <= b {
                        (a, b)
                    } else {
                        (b, a)
                    };
                    let limit = [0, 1, 2, 5, usize::MAX][rng.below(5) as usize];
                    Op::Scan(table, from, to, limit)
                }
            }
        })
        .collect()
}

fn apply(tx: &mut dyn Tx, ops: &[Op]) -> cohort_core::Result<Vec<Outcome>> {
    ops.iter()
        .map(|op| match op {
            Op::Put(t, k, v) => tx.put(*t, k, v).map(|()| Outcome::Done),
            Op::Delete(t, k) => tx.delete(*t, k).map(|()| Outcome::Done),
            Op::Get(t, k) => tx.get(*t, k).map(Outcome::Got),
            Op::Scan(t, from, to, limit) => tx.scan(*t, from, to, *limit).map(Outcome::Scanned),
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn put_get_delete_scan_match_memtx_on_a_random_sequence() {
    let dir = TempDir::new().unwrap();
    let store = open(&db_path(&dir));
    let mut reference = MemTx::new();
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    for round in 0..60 {
        let ops = random_ops(&mut rng, 40);
        let expected = apply(&mut reference, &ops).unwrap();
        let sent = ops.clone();
        let got = store.write(move |tx| apply(tx, &sent)).await.unwrap();
        assert_eq!(got, expected, "round {round}: {ops:?}");
    }
    for table in [Table::Mailbox, Table::Logs, Table::Meta] {
        let expected = reference.scan(table, b"", b"", usize::MAX).unwrap();
        assert_eq!(
            scan_all(&store, table).await,
            expected,
            "{table:?} after all rounds"
        );
    }
    store.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn reads_match_memtx_after_writes() {
    let dir = TempDir::new().unwrap();
    let store = open(&db_path(&dir));
    let mut reference = MemTx::new();
    let mut rng = Rng(42);
    for _ in 0..20 {
        let writes: Vec<Op> = random_ops(&mut rng, 30)
            .into_iter()
            .filter(|op| matches!(op, Op::Put(..) | Op::Delete(..)))
            .collect();
        apply(&mut reference, &writes).unwrap();
        store.write(move |tx| apply(tx, &writes)).await.unwrap();

        let reads: Vec<Op> = random_ops(&mut rng, 30)
            .into_iter()
            .filter(|op| matches!(op, Op::Get(..) | Op::Scan(..)))
            .collect();
        let expected = apply(&mut reference.clone(), &reads).unwrap();
        let got = store
            .read(move |view| {
                reads
                    .iter()
                    .map(|op| match op {
                        Op::Get(t, k) => view.get(*t, k).map(Outcome::Got),
                        Op::Scan(t, f, to, l) => view.scan(*t, f, to, *l).map(Outcome::Scanned),
                        _ => unreachable!("only reads were kept"),
                    })
                    .collect::<cohort_core::Result<Vec<_>>>()
            })
            .await
            .unwrap();
        assert_eq!(got, expected);
    }
    store.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn every_table_stores_and_scans_its_own_keys() {
    let dir = TempDir::new().unwrap();
    let store = open(&db_path(&dir));
    for table in Table::ALL {
        put(&store, table, b"k", table.name().as_bytes()).await;
    }
    for table in Table::ALL {
        assert_eq!(
            get(&store, table, b"k").await.as_deref(),
            Some(table.name().as_bytes())
        );
        assert_eq!(scan_all(&store, table).await.len(), 1, "{table:?}");
    }
    store.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn scan_with_from_after_to_is_empty() {
    let dir = TempDir::new().unwrap();
    let store = open(&db_path(&dir));
    put(&store, Table::Meta, b"b", b"1").await;
    let pairs = store
        .read(|v| v.scan(Table::Meta, b"c", b"a", 10))
        .await
        .unwrap();
    assert_eq!(pairs, Vec::<Pair>::new());
    store.close().await.unwrap();
}

/// Queues a write that holds the writer until `release` is signalled, and returns once the
/// writer is running it, so everything queued meanwhile lands in the following groups.
async fn hold_writer(
    store: &SqliteStore,
) -> (
    impl std::future::Future<Output = cohort_core::Result<()>> + '_,
    mpsc::Sender<()>,
) {
    let (release, wait) = mpsc::channel::<()>();
    let (started, running) = tokio::sync::oneshot::channel::<()>();
    // A write closure may run more than once (FnMut); only the first run signals.
    let mut started = Some(started);
    let held = store.write(move |_tx| {
        if let Some(started) = started.take() {
            let _ = started.send(());
        }
        let _ = wait.recv();
        Ok(())
    });
    running.await.expect("the writer runs the holding write");
    (held, release)
}

#[tokio::test(flavor = "multi_thread")]
async fn err_closure_rolls_back_only_its_own_writes() {
    let dir = TempDir::new().unwrap();
    let store = open(&db_path(&dir));
    put(&store, Table::Meta, b"shared", b"before").await;

    let (held, release) = hold_writer(&store).await;
    // Writes are queued when issued, so these two form the next group, in this order.
    let failing = store.write(|tx| {
        tx.put(Table::Meta, b"from-failing", b"x")?;
        tx.put(Table::Meta, b"shared", b"failing")?;
        Err::<(), _>(Error::precondition("the rule refused"))
    });
    let after = store.write(|tx| {
        let seen = tx.get(Table::Meta, b"shared")?;
        tx.put(Table::Meta, b"from-after", b"y")?;
        Ok(seen)
    });
    release.send(()).unwrap();
    held.await.unwrap();

    let refused = failing.await.unwrap_err();
    assert_eq!(refused, Error::precondition("the rule refused"));
    assert_eq!(
        after.await.unwrap().as_deref(),
        Some(&b"before"[..]),
        "the later closure saw the rollback"
    );
    assert_eq!(get(&store, Table::Meta, b"from-failing").await, None);
    assert_eq!(
        get(&store, Table::Meta, b"shared").await.as_deref(),
        Some(&b"before"[..])
    );
    assert_eq!(
        get(&store, Table::Meta, b"from-after").await.as_deref(),
        Some(&b"y"[..])
    );
    store.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn writes_queued_while_the_writer_is_busy_share_one_commit() {
    let dir = TempDir::new().unwrap();
    let store = open(&db_path(&dir));
    let (held, release) = hold_writer(&store).await;
    let queued: Vec<_> = (0..100u32)
        .map(|i| store.write(move |tx| tx.put(Table::Pending, &i.to_be_bytes(), b"")))
        .collect();
    release.send(()).unwrap();
    held.await.unwrap();
    for write in queued {
        write.await.unwrap();
    }
    assert_eq!(
        store.stats(),
        StoreStats {
            groups: 2,
            writes: 101
        }
    );
    assert_eq!(scan_all(&store, Table::Pending).await.len(), 100);
    store.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn max_batch_caps_the_group_size() {
    let dir = TempDir::new().unwrap();
    let options = StoreOptions {
        max_batch: 10,
        ..StoreOptions::default()
    };
    let store = SqliteStore::open(&db_path(&dir), options).unwrap();
    let (held, release) = hold_writer(&store).await;
    let queued: Vec<_> = (0..25u32)
        .map(|i| store.write(move |tx| tx.put(Table::Pending, &i.to_be_bytes(), b"")))
        .collect();
    release.send(()).unwrap();
    held.await.unwrap();
    for write in queued {
        write.await.unwrap();
    }
    // The holding write alone, then 10 + 10 + 5.
    assert_eq!(
        store.stats(),
        StoreStats {
            groups: 4,
            writes: 26
        }
    );
    store.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn closures_in_one_group_see_earlier_closures_writes() {
    let dir = TempDir::new().unwrap();
    let store = open(&db_path(&dir));
    let (held, release) = hold_writer(&store).await;
    let first = store.write(|tx| tx.put(Table::Meta, b"counter", &[1]));
    let second = store.write(|tx| {
        let n = tx.get(Table::Meta, b"counter")?.unwrap_or_default();
        tx.put(
            Table::Meta,
            b"counter",
            &[n.first().copied().unwrap_or(0) + 1],
        )
    });
    release.send(()).unwrap();
    held.await.unwrap();
    first.await.unwrap();
    second.await.unwrap();
    assert_eq!(get(&store, Table::Meta, b"counter").await, Some(vec![2]));
    store.close().await.unwrap();
}

async fn concurrent_writes_survive_reopen(options: StoreOptions) {
    let dir = TempDir::new().unwrap();
    let path = db_path(&dir);
    let store = Arc::new(SqliteStore::open(&path, options.clone()).unwrap());
    let tasks: Vec<_> = (0..200u32)
        .map(|i| {
            let store = Arc::clone(&store);
            tokio::spawn(async move {
                store
                    .write(move |tx| tx.put(Table::Mailbox, &i.to_be_bytes(), &i.to_le_bytes()))
                    .await
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap().unwrap();
    }
    let store = Arc::into_inner(store).expect("no task holds the store");
    store.close().await.unwrap();

    let store = SqliteStore::open(&path, options).unwrap();
    let pairs = scan_all(&store, Table::Mailbox).await;
    let expected: Vec<Pair> = (0..200u32)
        .map(|i| (i.to_be_bytes().to_vec(), i.to_le_bytes().to_vec()))
        .collect();
    assert_eq!(pairs, expected);
    store.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 8)]
async fn two_hundred_concurrent_writes_all_commit_and_survive_reopen() {
    concurrent_writes_survive_reopen(StoreOptions::default()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 8)]
async fn concurrent_writes_commit_with_a_batch_of_one() {
    concurrent_writes_survive_reopen(StoreOptions {
        max_batch: 1,
        readers: 1,
        ..StoreOptions::default()
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 8)]
async fn normal_durability_commits_and_survives_reopen() {
    concurrent_writes_survive_reopen(StoreOptions {
        durability: Durability::Normal,
        ..StoreOptions::default()
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn data_survives_drop_and_reopen() {
    let dir = TempDir::new().unwrap();
    let path = db_path(&dir);
    let store = open(&path);
    put(&store, Table::Sessions, b"s1", b"open").await;
    put(&store, Table::Sessions, b"s2", b"closed").await;
    store
        .write(|tx| tx.delete(Table::Sessions, b"s2"))
        .await
        .unwrap();
    drop(store);

    let store = open(&path);
    assert_eq!(
        scan_all(&store, Table::Sessions).await,
        vec![(b"s1".to_vec(), b"open".to_vec())]
    );
    store.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn read_sees_one_snapshot_while_a_write_commits() {
    let dir = TempDir::new().unwrap();
    let store = open(&db_path(&dir));
    put(&store, Table::Meta, b"k", b"old").await;

    let (first_read_done, wait_first_read) = mpsc::channel::<()>();
    let (write_done, wait_write) = mpsc::channel::<()>();
    let read = store.read(move |view| {
        let before = view.get(Table::Meta, b"k")?;
        let _ = first_read_done.send(());
        let _ = wait_write.recv();
        let after = view.get(Table::Meta, b"k")?;
        Ok((before, after))
    });
    let (read_result, ()) = tokio::join!(read, async {
        tokio::task::spawn_blocking(move || wait_first_read.recv())
            .await
            .unwrap()
            .unwrap();
        put(&store, Table::Meta, b"k", b"new").await;
        write_done.send(()).unwrap();
    });
    let (before, after) = read_result.unwrap();
    assert_eq!(before.as_deref(), Some(&b"old"[..]));
    assert_eq!(
        after.as_deref(),
        Some(&b"old"[..]),
        "the read kept its snapshot"
    );
    assert_eq!(
        get(&store, Table::Meta, b"k").await.as_deref(),
        Some(&b"new"[..])
    );
    store.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn panicking_write_returns_internal_and_store_keeps_working() {
    let dir = TempDir::new().unwrap();
    let store = open(&db_path(&dir));
    let err = store
        .write(|tx| -> cohort_core::Result<()> {
            tx.put(Table::Meta, b"half-done", b"x")?;
            panic!("rule bug");
        })
        .await
        .unwrap_err();
    assert_eq!(err.kind, ErrorKind::Internal);
    assert!(err.message.contains("rule bug"), "{err}");

    put(&store, Table::Meta, b"after", b"ok").await;
    assert_eq!(get(&store, Table::Meta, b"half-done").await, None);
    assert_eq!(
        get(&store, Table::Meta, b"after").await.as_deref(),
        Some(&b"ok"[..])
    );
    store.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn panicking_read_returns_internal_and_store_keeps_working() {
    let dir = TempDir::new().unwrap();
    let store = StoreOptions {
        readers: 1,
        ..StoreOptions::default()
    };
    let store = SqliteStore::open(&db_path(&dir), store).unwrap();
    let err = store
        .read(|_view| -> cohort_core::Result<()> { panic!("view bug") })
        .await
        .unwrap_err();
    assert_eq!(err.kind, ErrorKind::Internal);
    put(&store, Table::Meta, b"k", b"v").await;
    assert_eq!(
        get(&store, Table::Meta, b"k").await.as_deref(),
        Some(&b"v"[..])
    );
    store.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn database_with_newer_schema_version_is_refused_naming_the_path() {
    let dir = TempDir::new().unwrap();
    let path = db_path(&dir);
    open(&path).close().await.unwrap();
    let conn = rusqlite::Connection::open(&path).unwrap();
    conn.pragma_update(None, "user_version", 99).unwrap();
    drop(conn);

    let err = SqliteStore::open(&path, StoreOptions::default()).unwrap_err();
    assert_eq!(err.kind, ErrorKind::FailedPrecondition);
    assert!(err.message.contains(&path.display().to_string()), "{err}");
    assert!(err.message.contains("99"), "{err}");
    assert!(err.message.contains("upgrade cohort"), "{err}");
}

#[tokio::test(flavor = "multi_thread")]
async fn reopening_a_current_database_keeps_its_schema_version() {
    let dir = TempDir::new().unwrap();
    let path = db_path(&dir);
    open(&path).close().await.unwrap();
    open(&path).close().await.unwrap();
    let conn = rusqlite::Connection::open(&path).unwrap();
    let version: i64 = conn
        .pragma_query_value(None, "user_version", |row| row.get(0))
        .unwrap();
    assert_eq!(version, 3);
    let mode: String = conn
        .pragma_query_value(None, "journal_mode", |row| row.get(0))
        .unwrap();
    assert_eq!(mode, "wal");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_version_1_database_without_messages_is_migrated_keeping_its_data() {
    let dir = TempDir::new().unwrap();
    let path = db_path(&dir);
    let store = open(&path);
    put(&store, Table::Meta, b"k", b"v").await;
    store.close().await.unwrap();
    // Make the file what version 1 wrote: no payloads or send_ids table.
    let conn = rusqlite::Connection::open(&path).unwrap();
    conn.execute_batch(
        "DROP TABLE payloads; DROP TABLE send_ids; DROP TABLE enrollments; PRAGMA user_version = 1;",
    )
        .unwrap();
    drop(conn);

    let store = open(&path);
    assert_eq!(
        get(&store, Table::Meta, b"k").await.as_deref(),
        Some(&b"v"[..])
    );
    put(&store, Table::SendIds, b"s", b"m").await;
    assert_eq!(
        get(&store, Table::SendIds, b"s").await.as_deref(),
        Some(&b"m"[..])
    );
    store.close().await.unwrap();
}

#[test]
fn opening_a_directory_fails_naming_the_path() {
    let dir = TempDir::new().unwrap();
    let err = SqliteStore::open(dir.path(), StoreOptions::default()).unwrap_err();
    assert!(
        err.message.contains(&dir.path().display().to_string()),
        "{err}"
    );
    assert!(err.message.contains("directory"), "{err}");
}

#[test]
fn opening_a_file_that_is_not_a_database_fails_naming_the_path() {
    let dir = TempDir::new().unwrap();
    let path = dir.path().join("notes.txt");
    std::fs::write(&path, vec![b'x'; 4096]).unwrap();
    let err = SqliteStore::open(&path, StoreOptions::default()).unwrap_err();
    assert_eq!(err.kind, ErrorKind::FailedPrecondition);
    assert!(err.message.contains(&path.display().to_string()), "{err}");
    assert!(err.message.contains("not a SQLite database"), "{err}");
}

#[tokio::test(flavor = "multi_thread")]
async fn open_creates_missing_parent_directories_and_reports_its_path() {
    let dir = TempDir::new().unwrap();
    let path = dir.path().join("a").join("b").join("cohort.sqlite");
    let store = open(&path);
    assert_eq!(store.path(), path);
    assert!(path.is_file());
    store.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn store_is_usable_as_a_trait_object() {
    let dir = TempDir::new().unwrap();
    let store: Arc<dyn Store> = Arc::new(open(&db_path(&dir)));
    store
        .write(|tx| tx.put(Table::Meta, b"k", b"v"))
        .await
        .unwrap();
    let v = store
        .read(|view| view.get(Table::Meta, b"k"))
        .await
        .unwrap();
    assert_eq!(v.as_deref(), Some(&b"v"[..]));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_version_1_database_holding_data_is_refused_not_misread() {
    let dir = TempDir::new().unwrap();
    let path = db_path(&dir);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    {
        let conn = rusqlite::Connection::open(&path).unwrap();
        for t in ["messages", "sessions", "meta"] {
            conn.execute_batch(&format!(
                "CREATE TABLE {t} (k BLOB PRIMARY KEY, v BLOB NOT NULL) WITHOUT ROWID;"
            ))
            .unwrap();
        }
        conn.execute_batch("INSERT INTO sessions VALUES (x'01', x'02'); PRAGMA user_version = 1;")
            .unwrap();
    }
    let err = SqliteStore::open(&path, StoreOptions::default()).expect_err("old data refused");
    assert!(err.message.contains("move it aside"), "{err}");
}

/// A database as schema version 2 left it: its 15 tables, with `rows` in them.
fn version_2_database(path: &std::path::Path, rows: &str) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let conn = rusqlite::Connection::open(path).unwrap();
    for t in [
        "parties",
        "challenges",
        "tokens",
        "sessions",
        "session_idempotency",
        "open_sessions",
        "purge",
        "messages",
        "mailbox",
        "mailbox_meta",
        "pending",
        "logs",
        "log_tips",
        "meta",
        "payloads",
    ] {
        conn.execute_batch(&format!(
            "CREATE TABLE {t} (k BLOB PRIMARY KEY, v BLOB NOT NULL) WITHOUT ROWID;"
        ))
        .unwrap();
    }
    conn.execute_batch(rows).unwrap();
    conn.execute_batch("PRAGMA user_version = 2;").unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_version_2_database_holding_sessions_is_refused_not_misread() {
    let dir = TempDir::new().unwrap();
    let path = db_path(&dir);
    version_2_database(&path, "INSERT INTO sessions VALUES (x'01', x'02');");
    let err = SqliteStore::open(&path, StoreOptions::default()).expect_err("old sessions refused");
    assert!(err.message.contains("move it aside"), "{err}");
    assert!(err.message.contains("schema 2"), "{err}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_version_2_database_without_sessions_migrates_dropping_its_credentials() {
    let dir = TempDir::new().unwrap();
    let path = db_path(&dir);
    version_2_database(
        &path,
        "INSERT INTO parties VALUES (x'01', x'02');
         INSERT INTO tokens VALUES (x'03', x'04');
         INSERT INTO challenges VALUES (x'05', x'06');",
    );
    let store = SqliteStore::open(&path, StoreOptions::default()).expect("migrates");
    let (parties, tokens, challenges, enrollments) = store
        .read(|v| {
            Ok((
                v.scan(Table::Parties, &[], &[], 10)?.len(),
                v.scan(Table::Tokens, &[], &[], 10)?.len(),
                v.scan(Table::Challenges, &[], &[], 10)?.len(),
                v.scan(Table::Enrollments, &[], &[], 10)?.len(),
            ))
        })
        .await
        .unwrap();
    assert_eq!((parties, tokens, challenges, enrollments), (1, 0, 0, 0));
    store.close().await.unwrap();
}
