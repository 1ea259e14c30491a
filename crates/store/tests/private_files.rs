//! The database, its `-wal` and its `-shm` are mode 0600 whatever the umask: created so, and
//! narrowed to it when an older file was more open. On a real SQLite file in a temp dir.
#![cfg(unix)]

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use cohort_core::store::{StoreExt, Table};
use cohort_store::{SqliteStore, StoreOptions};

type TestResult = std::result::Result<(), Box<dyn std::error::Error>>;

fn mode(path: &Path) -> std::io::Result<u32> {
    Ok(std::fs::metadata(path)?.permissions().mode() & 0o777)
}

/// The database and both WAL files, each with its mode.
fn modes(db: &Path) -> std::io::Result<Vec<(String, u32)>> {
    ["", "-wal", "-shm"]
        .iter()
        .map(|suffix| {
            let path = format!("{}{suffix}", db.display());
            Ok((path.clone(), mode(Path::new(&path))?))
        })
        .collect()
}

async fn write_a_row(store: &SqliteStore) -> cohort_core::Result<()> {
    store.write(|tx| tx.put(Table::Meta, b"k", b"v")).await
}

#[tokio::test]
async fn a_new_database_and_its_wal_and_shm_are_private() -> TestResult {
    let dir = tempfile::tempdir()?;
    let db = dir.path().join("cohort.sqlite");
    let store = SqliteStore::open(&db, StoreOptions::default())?;
    write_a_row(&store).await?;
    for (path, m) in modes(&db)? {
        assert_eq!(m, 0o600, "{path} is {m:o}");
    }
    store.close().await?;
    assert_eq!(mode(&db)?, 0o600);
    Ok(())
}

#[tokio::test]
async fn an_existing_world_readable_database_is_narrowed_to_0600() -> TestResult {
    let dir = tempfile::tempdir()?;
    let db = dir.path().join("cohort.sqlite");
    let store = SqliteStore::open(&db, StoreOptions::default())?;
    write_a_row(&store).await?;
    store.close().await?;
    // As an older build (or a copy) left it.
    std::fs::set_permissions(&db, std::fs::Permissions::from_mode(0o644))?;

    let store = SqliteStore::open(&db, StoreOptions::default())?;
    write_a_row(&store).await?;
    for (path, m) in modes(&db)? {
        assert_eq!(m, 0o600, "{path} is {m:o}");
    }
    store.close().await?;
    Ok(())
}
