//! The reader threads: each owns a read-only connection and runs read closures on a snapshot.
//!
//! WAL lets these read while the writer commits, so reads never wait for a group's fsync.
//! Dedicated threads (rather than `spawn_blocking`) keep each connection's statement cache
//! warm and make the store independent of the caller's runtime.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::mpsc::Receiver;
use std::sync::{Arc, Mutex};

use cohort_core::store::{AnyResult, ReadFn};
use cohort_core::Error;
use rusqlite::Connection;
use tokio::sync::oneshot;

use super::error::{panic_message, runtime};
use super::tx::SqlTx;

/// One queued read: the closure and where its result goes.
pub(crate) struct ReadJob {
    pub(crate) f: ReadFn,
    pub(crate) reply: oneshot::Sender<AnyResult>,
}

/// All readers take jobs from one queue, so a read goes to whichever connection is idle.
pub(crate) type SharedJobs = Arc<Mutex<Receiver<ReadJob>>>;

/// Serves reads until the store drops the queue's sender, then closes the connection.
pub(crate) fn run(conn: Connection, jobs: SharedJobs) -> Result<(), Error> {
    loop {
        // The lock is held only while waiting for a job: one idle reader waits on the queue,
        // the others wait for the lock.
        let next = {
            let jobs = jobs.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            jobs.recv()
        };
        let Ok(job) = next else { break };
        let result = read_snapshot(&conn, job.f);
        let _ = job.reply.send(result);
    }
    conn.close()
        .map_err(|(_, e)| runtime("close a read connection", &e))
}

/// Runs `f` inside one read transaction, so every get and scan it makes sees the same
/// snapshot even while the writer commits.
fn read_snapshot(conn: &Connection, f: ReadFn) -> AnyResult {
    // Only a failed ROLLBACK below leaves a transaction open; clear it before the next read.
    if !conn.is_autocommit() {
        let _ = exec(conn, "ROLLBACK");
    }
    exec(conn, "BEGIN").map_err(|e| runtime("begin a read transaction", &e))?;
    let view = SqlTx::new(conn);
    let result = catch_unwind(AssertUnwindSafe(|| f(&view))).unwrap_or_else(|payload| {
        let message = panic_message(payload.as_ref());
        tracing::error!(panic = message, "a read closure panicked");
        Err(Error::internal(format!(
            "store: the read panicked: {message}"
        )))
    });
    // Ending a read transaction releases its snapshot so the WAL can be checkpointed.
    if let Err(e) = exec(conn, "COMMIT") {
        let _ = exec(conn, "ROLLBACK");
        if result.is_ok() {
            return Err(runtime("end a read transaction", &e));
        }
    }
    result
}

fn exec(conn: &Connection, sql: &str) -> rusqlite::Result<()> {
    conn.prepare_cached(sql)?.execute([])?;
    Ok(())
}
