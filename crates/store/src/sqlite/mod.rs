//! [`SqliteStore`]: the embedded store on one SQLite file.

mod error;
mod private;
mod reader;
mod schema;
mod tx;
mod writer;

use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::mpsc;
use std::sync::{Arc, Mutex, PoisonError, RwLock};
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
/// dropped; the future resolves after the group holding it has committed.
/// [`SqliteStore::close`] stops taking calls, lets the threads finish every queued write and
/// read, checkpoints the WAL into the database file and closes every connection, so no
/// `-wal` or `-shm` file is left beside it. Dropping an open store does the same and waits
/// for it (unless dropped on one of the store's own threads, which then finish in the
/// background).
pub struct SqliteStore {
    path: PathBuf,
    /// `None` once the store is closing: calls fail with `Unavailable`.
    writes: RwLock<Option<mpsc::Sender<WriteJob>>>,
    reads: RwLock<Option<mpsc::Sender<ReadJob>>>,
    /// The writer and reader threads, taken by whoever closes the store.
    threads: Mutex<Vec<StoreThread>>,
    counters: Arc<Counters>,
}

/// A store thread and what it reports when it has closed its connection: `close` awaits
/// that without blocking the runtime, then joins the (by then ending) thread.
struct StoreThread {
    handle: JoinHandle<()>,
    closed: oneshot::Receiver<Result<(), Error>>,
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
        // Each reader holds a sender until it has closed its connection; the writer's
        // receiver sees them all gone, and only then checkpoints and closes the file.
        let (reader_alive, readers_closed) = mpsc::channel::<()>();
        let mut threads = Vec::with_capacity(read_conns.len() + 1);
        let counters = Arc::new(Counters::default());
        let writer = Writer::new(
            write_conn,
            write_jobs,
            readers_closed,
            options.max_batch,
            Arc::clone(&counters),
        );
        threads.push(spawn(path, "cohort-store-writer".to_owned(), move || {
            writer.run()
        })?);
        for (i, conn) in read_conns.into_iter().enumerate() {
            let jobs = Arc::clone(&read_jobs);
            let alive = reader_alive.clone();
            threads.push(spawn(
                path,
                format!("cohort-store-reader-{i}"),
                move || {
                    let closed = reader::run(conn, jobs);
                    drop(alive);
                    closed
                },
            )?);
        }
        drop(reader_alive);
        tracing::info!(path = %path.display(), version = schema::SCHEMA_VERSION, "store opened");
        Ok(SqliteStore {
            path: path.to_owned(),
            writes: RwLock::new(Some(writes)),
            reads: RwLock::new(Some(reads)),
            threads: Mutex::new(threads),
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

    /// Stops taking calls, lets the threads finish every queued write and read, checkpoints
    /// the WAL into the database file (`wal_checkpoint(TRUNCATE)`) and closes every
    /// connection, so no `-wal` or `-shm` file remains. Reports a thread that died or a
    /// connection that failed to close. Later calls, this one included, fail with
    /// `Unavailable`. The same as [`Store::close`].
    pub async fn close(&self) -> Result<(), Error> {
        let threads = self.stop()?;
        let mut failed = Vec::new();
        for StoreThread { handle, closed } in threads {
            let name = handle.thread().name().unwrap_or("store thread").to_owned();
            // The thread reports as its last act, so the join below does not block.
            let outcome = closed.await;
            let joined = handle.join();
            match (outcome, joined) {
                (Ok(Ok(())), Ok(())) => {}
                (Ok(Err(e)), _) => failed.push(format!("{name}: {}", e.message)),
                (Err(_), _) | (_, Err(_)) => failed.push(format!("{name} panicked")),
            }
        }
        if failed.is_empty() {
            tracing::info!(path = %self.path.display(), "store closed");
            Ok(())
        } else {
            Err(Error::internal(format!(
                "store {}: closing failed: {}",
                self.path.display(),
                failed.join("; ")
            )))
        }
    }

    /// Drops the job queues, so the threads drain them and end, and hands over the threads.
    /// Fails with `Unavailable` if the store is already closing.
    fn stop(&self) -> Result<Vec<StoreThread>, Error> {
        let writes = self
            .writes
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        let reads = self
            .reads
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if writes.is_none() && reads.is_none() {
            return Err(error::closed());
        }
        let threads =
            std::mem::take(&mut *self.threads.lock().unwrap_or_else(PoisonError::into_inner));
        Ok(threads)
    }
}

impl Drop for SqliteStore {
    /// [`SqliteStore::close`], best effort and blocking, for a store that was not closed.
    fn drop(&mut self) {
        let Ok(threads) = self.stop() else {
            return;
        };
        // Dropped by a closure running on a store thread: joining would wait for itself.
        let here = std::thread::current().id();
        if threads.iter().any(|t| t.handle.thread().id() == here) {
            tracing::warn!(path = %self.path.display(), "store dropped on its own thread; it closes in the background");
            return;
        }
        for StoreThread { handle, mut closed } in threads {
            let name = handle.thread().name().unwrap_or("store thread").to_owned();
            // After the join the report is there (or its sender was dropped by a panic).
            let joined = handle.join();
            match (closed.try_recv(), joined) {
                (Ok(Ok(())), Ok(())) => {}
                (Ok(Err(e)), _) => {
                    tracing::warn!(thread = name, error = %e, "closing the store on drop failed")
                }
                (Err(_), _) | (_, Err(_)) => {
                    tracing::error!(thread = name, "a store thread panicked")
                }
            }
        }
    }
}

/// Starts a named store thread that reports how closing its connection went.
fn spawn(
    path: &Path,
    name: String,
    body: impl FnOnce() -> Result<(), Error> + Send + 'static,
) -> Result<StoreThread, Error> {
    let (report, closed) = oneshot::channel();
    let handle = std::thread::Builder::new()
        .name(name)
        .spawn(move || {
            // A panic drops `report` unsent, which `close` reads as the thread dying.
            let _ = report.send(body());
        })
        .map_err(|e| error::io(path, "cannot start a store thread", &e))?;
    Ok(StoreThread { handle, closed })
}

impl Store for SqliteStore {
    fn write_boxed(&self, f: WriteFn) -> BoxFuture<'_, AnyResult> {
        let (reply, answer) = oneshot::channel();
        // Queued now, not at the first poll, so writes run in the order they were issued.
        let queued = match &*self.writes.read().unwrap_or_else(PoisonError::into_inner) {
            Some(writes) => writes
                .send(WriteJob { f, reply })
                .map_err(|_| error::closed()),
            None => Err(error::closed()),
        };
        Box::pin(async move {
            queued?;
            answer.await.map_err(|_| error::closed())?
        })
    }

    fn read_boxed(&self, f: ReadFn) -> BoxFuture<'_, AnyResult> {
        let (reply, answer) = oneshot::channel();
        let queued = match &*self.reads.read().unwrap_or_else(PoisonError::into_inner) {
            Some(reads) => reads
                .send(ReadJob { f, reply })
                .map_err(|_| error::closed()),
            None => Err(error::closed()),
        };
        Box::pin(async move {
            queued?;
            answer.await.map_err(|_| error::closed())?
        })
    }

    fn close(&self) -> BoxFuture<'_, Result<(), Error>> {
        Box::pin(SqliteStore::close(self))
    }
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStore")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}
