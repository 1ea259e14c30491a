//! `SqliteStore::close` (and drop): queued work drains, the WAL is checkpointed into the
//! database file, every connection closes, no `-wal` or `-shm` file is left, and the store
//! refuses later calls. On a real SQLite file in a temp dir.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use cohort_core::store::{Store, StoreExt, Table};
use cohort_core::{ErrorKind, Result};
use cohort_store::{SqliteStore, StoreOptions};
use tempfile::TempDir;

type TestResult = std::result::Result<(), Box<dyn std::error::Error>>;

fn db_path(dir: &TempDir) -> PathBuf {
    dir.path().join("cohort.sqlite")
}

/// The files in `dir`, by name, sorted.
fn files_in(dir: &Path) -> std::io::Result<Vec<String>> {
    let mut names = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        names.push(entry?.file_name().to_string_lossy().into_owned());
    }
    names.sort();
    Ok(names)
}

async fn write_rows(store: &dyn Store, rows: u32) -> Result<()> {
    for chunk in 0..rows / 100 {
        store
            .write(move |tx| {
                for i in chunk * 100..(chunk + 1) * 100 {
                    tx.put(Table::Mailbox, &i.to_be_bytes(), &[7; 300])?;
                    tx.put(Table::Meta, &i.to_be_bytes(), &i.to_le_bytes())?;
                }
                Ok(())
            })
            .await?;
    }
    Ok(())
}

/// Reopens `path` and checks every row of [`write_rows`] is there and the file is sound.
async fn check_rows(path: &Path, rows: u32) -> TestResult {
    let store = SqliteStore::open(path, StoreOptions::default())?;
    let (mailbox, meta) = store
        .read(|v| {
            Ok((
                v.scan(Table::Mailbox, &[], &[], usize::MAX)?,
                v.scan(Table::Meta, &[], &[], usize::MAX)?,
            ))
        })
        .await?;
    assert_eq!(mailbox.len(), rows as usize);
    let want: Vec<(Vec<u8>, Vec<u8>)> = (0..rows)
        .map(|i| (i.to_be_bytes().to_vec(), i.to_le_bytes().to_vec()))
        .collect();
    assert_eq!(meta, want);
    store.close().await?;
    let conn = rusqlite::Connection::open(path)?;
    let integrity: String = conn.query_row("PRAGMA integrity_check", [], |row| row.get(0))?;
    assert_eq!(integrity, "ok");
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn close_checkpoints_and_leaves_no_wal_or_shm_file() -> TestResult {
    let dir = TempDir::new()?;
    let path = db_path(&dir);
    let store = SqliteStore::open(&path, StoreOptions::default())?;
    write_rows(&store, 2000).await?;
    // A read holds a reader connection open until close.
    let n = store
        .read(|v| Ok(v.scan(Table::Meta, &[], &[], usize::MAX)?.len()))
        .await?;
    assert_eq!(n, 2000);
    let before = files_in(dir.path())?;
    assert!(
        before.contains(&"cohort.sqlite-wal".to_owned()),
        "the WAL exists while open: {before:?}"
    );
    store.close().await?;
    assert_eq!(files_in(dir.path())?, vec!["cohort.sqlite".to_owned()]);
    let kind = |r: Result<()>| r.err().map(|e| e.kind);
    assert_eq!(
        kind(store.write(|tx| tx.put(Table::Meta, b"late", b"1")).await),
        Some(ErrorKind::Unavailable)
    );
    assert_eq!(
        kind(store.read(|v| v.get(Table::Meta, b"late").map(drop)).await),
        Some(ErrorKind::Unavailable)
    );
    assert_eq!(kind(store.close().await), Some(ErrorKind::Unavailable));
    drop(store);
    check_rows(&path, 2000).await?;
    assert_eq!(files_in(dir.path())?, vec!["cohort.sqlite".to_owned()]);
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn close_through_the_port_drains_queued_writes() -> TestResult {
    let dir = TempDir::new()?;
    let path = db_path(&dir);
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(&path, StoreOptions::default())?);
    // Queued, not awaited, before close: close runs them before it closes the file.
    let queued: Vec<_> = (0..500u32)
        .map(|i| store.write(move |tx| tx.put(Table::Meta, &i.to_be_bytes(), &i.to_le_bytes())))
        .collect();
    store.close().await?;
    for w in queued {
        w.await?;
    }
    assert_eq!(files_in(dir.path())?, vec!["cohort.sqlite".to_owned()]);
    drop(store);
    let reopened = SqliteStore::open(&path, StoreOptions::default())?;
    let n = reopened
        .read(|v| Ok(v.scan(Table::Meta, &[], &[], usize::MAX)?.len()))
        .await?;
    assert_eq!(n, 500);
    reopened.close().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn dropping_an_open_store_closes_it_cleanly() -> TestResult {
    let dir = TempDir::new()?;
    let path = db_path(&dir);
    let store = SqliteStore::open(&path, StoreOptions::default())?;
    write_rows(&store, 1000).await?;
    drop(store);
    assert_eq!(files_in(dir.path())?, vec!["cohort.sqlite".to_owned()]);
    check_rows(&path, 1000).await
}
