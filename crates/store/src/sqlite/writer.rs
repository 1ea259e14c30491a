//! The writer thread: group commit of many write closures into one SQLite transaction.
//!
//! Callers queue closures; the thread takes everything queued (up to `max_batch`), runs each
//! closure under its own SAVEPOINT inside one `BEGIN IMMEDIATE ... COMMIT`, and answers the
//! callers only after the COMMIT returned. One fsync thus covers every write that arrived
//! while the previous group was syncing, which is what lets throughput grow with load.

use std::collections::VecDeque;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, TryRecvError};
use std::sync::Arc;

use cohort_core::store::{AnyResult, WriteFn};
use cohort_core::Error;
use rusqlite::Connection;
use tokio::sync::oneshot;

use super::error::{panic_message, runtime};
use super::tx::SqlTx;

/// One queued write: the closure and where its result goes.
pub(crate) struct WriteJob {
    pub(crate) f: WriteFn,
    pub(crate) reply: oneshot::Sender<AnyResult>,
}

/// Counters the writer keeps for [`super::SqliteStore::stats`].
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) groups: AtomicU64,
    pub(crate) writes: AtomicU64,
}

/// A closure that has run inside the current group and waits for the group's COMMIT.
struct Ran {
    reply: oneshot::Sender<AnyResult>,
    result: AnyResult,
}

pub(crate) struct Writer {
    conn: Connection,
    jobs: Receiver<WriteJob>,
    /// Disconnects once every reader has closed its connection: then the writer's is the
    /// last one, and its checkpoint and close can remove the WAL and shared-memory files.
    readers_closed: Receiver<()>,
    max_batch: usize,
    /// Received but not yet run: a group that fails midway leaves its unrun jobs here for
    /// the next group rather than failing callers whose closures never ran.
    queue: VecDeque<WriteJob>,
    counters: Arc<Counters>,
}

impl Writer {
    pub(crate) fn new(
        conn: Connection,
        jobs: Receiver<WriteJob>,
        readers_closed: Receiver<()>,
        max_batch: usize,
        counters: Arc<Counters>,
    ) -> Self {
        Writer {
            conn,
            jobs,
            readers_closed,
            max_batch: max_batch.max(1),
            queue: VecDeque::new(),
            counters,
        }
    }

    /// Runs until every sender is dropped and the queue is drained, then closes the file.
    pub(crate) fn run(mut self) -> Result<(), Error> {
        loop {
            if self.queue.is_empty() {
                match self.jobs.recv() {
                    Ok(job) => self.queue.push_back(job),
                    Err(_) => break,
                }
            }
            while self.queue.len() < self.max_batch {
                match self.jobs.try_recv() {
                    Ok(job) => self.queue.push_back(job),
                    Err(TryRecvError::Empty | TryRecvError::Disconnected) => break,
                }
            }
            self.commit_group();
        }
        self.finish()
    }

    /// Once the readers have closed, moves the whole WAL into the database file and empties
    /// it, then closes the last connection, which deletes the `-wal` and `-shm` files.
    fn finish(self) -> Result<(), Error> {
        // Err once every reader's sender is gone; nothing is ever sent.
        let _ = self.readers_closed.recv();
        if !self.conn.is_autocommit() {
            let _ = exec(&self.conn, "ROLLBACK");
        }
        let checkpoint = self
            .conn
            .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |row| {
                row.get::<_, i64>(0)
            });
        match checkpoint {
            Ok(0) => {}
            // Another process has the file open: the WAL stays, and so does every commit.
            Ok(_) => tracing::warn!(
                "WAL checkpoint at close was blocked by another connection; the WAL file stays"
            ),
            Err(e) => {
                tracing::warn!(error = %e, "WAL checkpoint at close failed; the WAL file stays")
            }
        }
        self.conn
            .close()
            .map_err(|(_, e)| runtime("close the write connection", &e))
    }

    /// Runs up to `max_batch` queued closures in one transaction and answers their callers.
    ///
    /// Optimistic first: the closures run back to back with no savepoint between them, which
    /// spares two statements and the sub-journal's page copies per closure. If one fails
    /// (an `Err` must undo only its own writes), the group is rolled back and run again with
    /// a savepoint around each closure; closures may run more than once (the port says so).
    fn commit_group(&mut self) {
        let size = self.queue.len().min(self.max_batch);
        let mut jobs: Vec<WriteJob> = self.queue.drain(..size).collect();
        if !self.begin(&mut jobs) {
            return;
        }
        let mut results = Vec::with_capacity(jobs.len());
        let mut clean = true;
        for i in 0..jobs.len() {
            let result = self.run_closure(&mut jobs[i].f);
            if self.conn.is_autocommit() {
                let cause = Error::unavailable(
                    "store: SQLite rolled back the write group after an I/O error; retry",
                );
                results.push(result);
                // Those that did not run yet wait for the next group.
                self.requeue(jobs.split_off(i + 1));
                self.abandon(zip(jobs, results), cause);
                return;
            }
            if result.is_err() {
                clean = false;
                break;
            }
            results.push(result);
        }
        if clean {
            self.commit(zip(jobs, results));
            return;
        }
        // One failed: start over with each closure isolated by a savepoint.
        drop(results);
        if let Err(e) = exec(&self.conn, "ROLLBACK") {
            let cause = runtime("roll back an optimistic write group", &e);
            let results = jobs.iter().map(|_| Err(cause.clone())).collect();
            self.abandon(zip(jobs, results), cause);
            return;
        }
        if !self.begin(&mut jobs) {
            return;
        }
        let mut ran = Vec::with_capacity(jobs.len());
        let mut jobs = jobs.into_iter();
        for mut job in jobs.by_ref() {
            let (result, group) = self.run_in_savepoint(&mut job.f);
            ran.push(Ran {
                reply: job.reply,
                result,
            });
            if let Err(cause) = group {
                self.requeue(jobs.collect());
                self.abandon(ran, cause);
                return;
            }
        }
        self.commit(ran);
    }

    /// Puts jobs that did not run back at the front of the queue, in order.
    fn requeue(&mut self, jobs: Vec<WriteJob>) {
        for job in jobs.into_iter().rev() {
            self.queue.push_front(job);
        }
    }

    /// Opens the group's transaction; on failure answers every job and returns false.
    fn begin(&mut self, jobs: &mut Vec<WriteJob>) -> bool {
        // Only a failed ROLLBACK in `abandon` leaves a transaction open; without this every
        // later BEGIN would fail.
        if !self.conn.is_autocommit() {
            let _ = exec(&self.conn, "ROLLBACK");
        }
        if let Err(e) = exec(&self.conn, "BEGIN IMMEDIATE") {
            let e = runtime("begin a write transaction", &e);
            tracing::warn!(error = %e, size = jobs.len(), "write group could not start");
            for job in jobs.drain(..) {
                let _ = job.reply.send(Err(e.clone()));
            }
            return false;
        }
        true
    }

    /// Commits the group and answers its callers, or abandons it if the commit fails.
    fn commit(&mut self, ran: Vec<Ran>) {
        if let Err(e) = exec(&self.conn, "COMMIT") {
            let cause = runtime("commit a write group", &e);
            self.abandon(ran, cause);
            return;
        }
        tracing::trace!(size = ran.len(), "write group committed");
        self.counters.groups.fetch_add(1, Ordering::Relaxed);
        self.counters
            .writes
            .fetch_add(ran.len() as u64, Ordering::Relaxed);
        for Ran { reply, result } in ran {
            // A caller that stopped waiting still had its write committed; nothing to undo.
            let _ = reply.send(result);
        }
    }

    /// Runs one closure in the open transaction. A panicking rule must cost its caller only:
    /// the writer thread serves everyone.
    fn run_closure(&self, f: &mut WriteFn) -> AnyResult {
        let mut tx = SqlTx::new(&self.conn);
        catch_unwind(AssertUnwindSafe(|| f(&mut tx))).unwrap_or_else(|payload| {
            let message = panic_message(payload.as_ref());
            tracing::error!(
                panic = message,
                "a write closure panicked; its writes are rolled back"
            );
            Err(Error::internal(format!(
                "store: the write panicked: {message}"
            )))
        })
    }

    /// Runs one closure under a savepoint. Returns the closure's result and whether the group
    /// transaction is still usable: SQLite rolls the whole transaction back on some I/O
    /// errors, and then no closure of the group can commit.
    fn run_in_savepoint(&self, f: &mut WriteFn) -> (AnyResult, Result<(), Error>) {
        if let Err(e) = exec(&self.conn, "SAVEPOINT write") {
            let e = runtime("open a savepoint", &e);
            return (Err(e.clone()), Err(e));
        }
        let result = self.run_closure(f);
        if self.conn.is_autocommit() {
            let e = Error::unavailable(
                "store: SQLite rolled back the write group after an I/O error; retry",
            );
            return (result, Err(e));
        }
        let end = if result.is_ok() {
            exec(&self.conn, "RELEASE write")
        } else {
            exec(&self.conn, "ROLLBACK TO write").and_then(|()| exec(&self.conn, "RELEASE write"))
        };
        let group = end.map_err(|e| runtime("end a savepoint", &e));
        (result, group)
    }

    /// The group cannot commit: roll it back and fail every closure that ran in it. A closure
    /// that failed on its own keeps its own error, which is the more useful one.
    fn abandon(&self, ran: Vec<Ran>, cause: Error) {
        tracing::warn!(error = %cause, size = ran.len(), "write group rolled back");
        if !self.conn.is_autocommit() {
            if let Err(e) = exec(&self.conn, "ROLLBACK") {
                tracing::error!(error = %e, "rolling back a failed write group failed");
            }
        }
        for Ran { reply, result } in ran {
            let answer = match result {
                Ok(_) => Err(cause.clone()),
                Err(own) => Err(own),
            };
            let _ = reply.send(answer);
        }
    }
}

/// Pairs jobs that ran with their results; jobs that did not run get none (they are answered
/// by whoever ends the group).
fn zip(jobs: Vec<WriteJob>, results: Vec<AnyResult>) -> Vec<Ran> {
    jobs.into_iter()
        .zip(results)
        .map(|(job, result)| Ran {
            reply: job.reply,
            result,
        })
        .collect()
}

/// Runs a fixed statement through the statement cache: these run for every write.
fn exec(conn: &Connection, sql: &str) -> rusqlite::Result<()> {
    conn.prepare_cached(sql)?.execute([])?;
    Ok(())
}
