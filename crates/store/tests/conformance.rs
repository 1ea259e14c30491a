//! `SqliteStore` keeps the `Store` port's contract (`cohort_core::store::conformance`), on a
//! real SQLite file in a temp dir.

use std::path::PathBuf;
use std::sync::Arc;

use cohort_core::store::conformance;
use cohort_store::{Durability, SqliteStore, StoreOptions};
use tempfile::TempDir;

type TestResult = std::result::Result<(), Box<dyn std::error::Error>>;

fn db_path(dir: &TempDir) -> PathBuf {
    dir.path().join("cohort.sqlite")
}
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sqlite_store_keeps_the_port_contract() -> TestResult {
    let dir = TempDir::new()?;
    let store = SqliteStore::open(&db_path(&dir), StoreOptions::default())?;
    conformance::run_all(Arc::new(store)).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sqlite_store_keeps_the_port_contract_with_one_reader_and_small_groups() -> TestResult {
    let dir = TempDir::new()?;
    let options = StoreOptions {
        durability: Durability::Normal,
        max_batch: 2,
        readers: 1,
    };
    conformance::run_all(Arc::new(SqliteStore::open(&db_path(&dir), options)?)).await?;
    Ok(())
}

#[tokio::test(flavor = "current_thread")]
async fn sqlite_store_keeps_the_port_contract_on_a_single_threaded_runtime() -> TestResult {
    let dir = TempDir::new()?;
    let store = SqliteStore::open(&db_path(&dir), StoreOptions::default())?;
    conformance::run_all(Arc::new(store)).await?;
    Ok(())
}
