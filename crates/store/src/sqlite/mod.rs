//! [`SqliteStore`]: the embedded store on one SQLite file.

mod error;
mod reader;
mod schema;
mod tx;
mod writer;

use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use cohort_core::store::{AnyResult, BoxFuture, ReadFn, Store, WriteFn};
use cohort_core::Error;
use tokio::sync::oneshot;

use reader::ReadJob;
use writer::{Counters, WriteJob, Writer};

/// When a write counts as done.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Durability {
    /// Every commit is fsynced before the writes' callers are answered: an acknowledged write
    /// survives a power loss.
    #[default]
    Full,
    /// Commits reach the OS but are fsynced only at WAL checkpoints: an acknowledged write
    /// survives a crash of the process, not of the machine. For tests and benchmarks.
    Normal,
}

/// How [`SqliteStore::open`] sets up the store. `StoreOptions::default()` is right for a
/// server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreOptions {
    pub durability: Durability,
    /// The most write closures committed together in one transaction and one fsync. Larger
    /// groups amortise the fsync further but make every caller in the group wait for all of
    /// them. Zero is read as one.
    pub max_batch: usize,
    /// Read-only connections, each on its own thread, serving reads in parallel. Zero is
    /// read as one.
    pub readers: usize,
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            durability: Durability::Full,
            max_batch: 512,
            readers: 4,
        }
    }
}

/// What the writer has done since the store was opened: `writes / groups` is the average
/// group size, i.e. how many writes shared each fsync.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct StoreStats {
    /// Transactions committed, one per group.
    pub groups: u64,
    /// Write closures that ran in a committed group, including those that returned an error
    /// and were rolled back to their savepoint.
    pub writes: u64,
}

/// The embedded store: one SQLite file in WAL mode, written by one thread that commits
/// concurrent writes as a group (one transaction, one fsync), read by a small pool of
/// read-only connections.
///
/// A write is queued when [`Store::write_boxed`] is called and runs even if its future is
/// dropped; the future resolves after the group holding it has committed. Dropping the store
/// lets its threads finish the queued work and exit in the background; [`SqliteStore::close`]
/// waits for them.
pub struct SqliteStore {
    path: PathBuf,
    writes: mpsc::Sender<WriteJob>,
    reads: mpsc::Sender<ReadJob>,
    /// Each thread's handle and a receiver that completes when the thread has closed its
    /// connection, so [`SqliteStore::close`] can wait without blocking the runtime.
    threads: Vec<(JoinHandle<()>, oneshot::Receiver<()>)>,
    counters: Arc<Counters>,
}

impl SqliteStore {
    /// Opens (or creates) the database at `path`, creating its directory if missing, and
    /// brings its schema up to date. Fails, naming the path, if the file cannot be opened or
    /// was written by a newer build of cohort.
    pub fn open(path: &Path, options: StoreOptions) -> Result<SqliteStore, Error> {
        if let Some(dir) = path.parent().filter(|dir| !dir.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| {
                error::io(
                    path,
                    &format!("cannot create directory {}", dir.display()),
                    &e,
                )
            })?;
        }
        let write_conn = schema::open_writer(path, options.durability)?;
        let read_conns = (0..options.readers.max(1))
            .map(|_| schema::open_reader(path))
            .collect::<Result<Vec<_>, _>>()?;

        let (writes, write_jobs) = mpsc::channel();
        let (reads, read_jobs) = mpsc::channel();
        let read_jobs: reader::SharedJobs = Arc::new(Mutex::new(read_jobs));
        let mut threads = Vec::with_capacity(read_conns.len() + 1);
        let counters = Arc::new(Counters::default());
        let writer = Writer::new(
            write_conn,
            write_jobs,
            options.max_batch,
            Arc::clone(&counters),
        );
        threads.push(spawn(path, "cohort-store-writer".to_owned(), move || {
            writer.run()
        })?);
        for (i, conn) in read_conns.into_iter().enumerate() {
            let jobs = Arc::clone(&read_jobs);
            threads.push(spawn(
                path,
                format!("cohort-store-reader-{i}"),
                move || reader::run(conn, jobs),
            )?);
        }
        tracing::info!(path = %path.display(), version = schema::SCHEMA_VERSION, "store opened");
        Ok(SqliteStore {
            path: path.to_owned(),
            writes,
            reads,
            threads,
            counters,
        })
    }

    /// The database file this store writes.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Counts of committed groups and writes, for metrics and for checking that concurrent
    /// writes share commits.
    pub fn stats(&self) -> StoreStats {
        StoreStats {
            groups: self.counters.groups.load(Ordering::Relaxed),
            writes: self.counters.writes.load(Ordering::Relaxed),
        }
    }

    /// Lets the threads finish every queued write and read, waits until they have closed the
    /// file, and reports a thread that died instead of exiting.
    pub async fn close(self) -> Result<(), Error> {
        let SqliteStore {
            path,
            writes,
            reads,
            threads,
            counters: _,
        } = self;
        drop(writes);
        drop(reads);
        let mut died = Vec::new();
        for (handle, exited) in threads {
            // The sender drops as the thread's last act, so the join below does not block.
            let _ = exited.await;
            let name = handle.thread().name().unwrap_or("store thread").to_owned();
            if handle.join().is_err() {
                died.push(name);
            }
        }
        if died.is_empty() {
            Ok(())
        } else {
            Err(Error::internal(format!(
                "store {}: threads {} panicked before closing",
                path.display(),
                died.join(", ")
            )))
        }
    }
}

/// Starts a named store thread that signals when it is done.
fn spawn(
    path: &Path,
    name: String,
    body: impl FnOnce() + Send + 'static,
) -> Result<(JoinHandle<()>, oneshot::Receiver<()>), Error> {
    let (exited_tx, exited) = oneshot::channel::<()>();
    let handle = std::thread::Builder::new()
        .name(name)
        .spawn(move || {
            // Dropped when the thread ends, even by a panic, which wakes `close`.
            let _exited = exited_tx;
            body();
        })
        .map_err(|e| error::io(path, "cannot start a store thread", &e))?;
    Ok((handle, exited))
}

impl Store for SqliteStore {
    fn write_boxed(&self, f: WriteFn) -> BoxFuture<'_, AnyResult> {
        let (reply, answer) = oneshot::channel();
        // Queued now, not at the first poll, so writes run in the order they were issued.
        let queued = self.writes.send(WriteJob { f, reply });
        Box::pin(async move {
            queued.map_err(|_| error::closed())?;
            answer.await.map_err(|_| error::closed())?
        })
    }

    fn read_boxed(&self, f: ReadFn) -> BoxFuture<'_, AnyResult> {
        let (reply, answer) = oneshot::channel();
        let queued = self.reads.send(ReadJob { f, reply });
        Box::pin(async move {
            queued.map_err(|_| error::closed())?;
            answer.await.map_err(|_| error::closed())?
        })
    }

    fn close(&self) -> BoxFuture<'_, cohort_core::Result<()>> {
        // Placeholder until the close that checkpoints the WAL lands.
        Box::pin(async { Ok(()) })
    }
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStore")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}
