//! Connection settings and the versioned schema migrations.

use std::path::Path;
use std::time::Duration;

use cohort_core::Error;
use rusqlite::{Connection, OpenFlags, TransactionBehavior};

use super::error;
use super::private;
use super::tx::STATEMENT_CACHE_CAPACITY;
use super::Durability;

/// How long a connection waits for a lock held by another connection (a checkpoint, another
/// process) before a statement fails with `Unavailable`.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Page cache per connection, in KiB (SQLite reads a negative `cache_size` as KiB).
const CACHE_SIZE_KIB: i64 = 16 * 1024;

/// A schema migration: runs inside its own transaction, which also sets `user_version`.
type Migration = fn(&Connection) -> rusqlite::Result<()>;

/// Migration `i` takes the schema from version `i` to version `i + 1`. Append only: a
/// released migration never changes, because databases in the field already ran it.
const MIGRATIONS: &[Migration] = &[create_tables, split_payloads, enroll_identities];

/// The schema version this build writes and understands.
pub(crate) const SCHEMA_VERSION: usize = MIGRATIONS.len();

/// Version 1: one table per `Table` variant. `WITHOUT ROWID` makes the key the B-tree key,
/// so get, put, delete and range scans are single B-tree operations whatever the table size.
/// The names are spelled out rather than taken from `Table::ALL`, so that adding a variant
/// later needs (and gets) a new migration instead of silently changing this one.
fn create_tables(conn: &Connection) -> rusqlite::Result<()> {
    const TABLES: [&str; 14] = [
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
    ];
    for name in TABLES {
        conn.execute_batch(&format!(
            "CREATE TABLE {name} (k BLOB PRIMARY KEY, v BLOB NOT NULL) WITHOUT ROWID;"
        ))?;
    }
    Ok(())
}

/// Version 2: payloads live apart from message headers (`payloads`), so settling a copy
/// never reads its payload, and `send_ids` (`Table::SendIds`) holds the client ids of
/// streaming sends. The stored values of version 1 (messages with their payloads, sessions
/// without a failure culprit) are not readable by this build, and a development database
/// holding any is refused rather than misread.
fn split_payloads(conn: &Connection) -> rusqlite::Result<()> {
    let held: i64 = conn.query_row(
        "SELECT (SELECT count(*) FROM messages) + (SELECT count(*) FROM sessions)",
        [],
        |row| row.get(0),
    )?;
    if held > 0 {
        return Err(rusqlite::Error::InvalidParameterName(
            "this data directory was written by a development build whose stored format changed \
             (schema 1); move it aside and start with an empty one"
                .into(),
        ));
    }
    conn.execute_batch(
        "CREATE TABLE payloads (k BLOB PRIMARY KEY, v BLOB NOT NULL) WITHOUT ROWID;
         CREATE TABLE send_ids (k BLOB PRIMARY KEY, v BLOB NOT NULL) WITHOUT ROWID;",
    )
}

/// Version 3: party ids are bound to keys by enrollment (`enrollments`); a session names each
/// participant's identity key and keeps only the hash of its join token; an access token
/// records the key that logged in. Sessions of version 2 are not readable by this build, and
/// a development database holding any is refused rather than misread. Access tokens and
/// challenges of version 2 are dropped: their holders log in again.
fn enroll_identities(conn: &Connection) -> rusqlite::Result<()> {
    let held: i64 = conn.query_row("SELECT count(*) FROM sessions", [], |row| row.get(0))?;
    if held > 0 {
        return Err(rusqlite::Error::InvalidParameterName(
            "this data directory holds sessions written by a development build whose stored \
             format changed (schema 2: join tokens in clear, no identity keys); move it aside \
             and start with an empty one"
                .into(),
        ));
    }
    conn.execute_batch(
        "CREATE TABLE enrollments (k BLOB PRIMARY KEY, v BLOB NOT NULL) WITHOUT ROWID;
         DELETE FROM tokens;
         DELETE FROM challenges;",
    )
}

/// Opens the read-write connection the writer thread owns, switches the file to WAL and
/// brings the schema up to [`SCHEMA_VERSION`].
pub(crate) fn open_writer(path: &Path, durability: Durability) -> Result<Connection, Error> {
    let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
        | OpenFlags::SQLITE_OPEN_CREATE
        | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    private::prepare(path)?;
    let mut conn =
        Connection::open_with_flags(path, flags).map_err(|e| error::opening(path, &e))?;
    configure(&conn).map_err(|e| error::opening(path, &e))?;
    // What a row held (a settled event with its join token, an acknowledged payload) is
    // zeroed on its page when the row goes, not left for someone reading the file.
    conn.pragma_update(None, "secure_delete", "FAST")
        .map_err(|e| error::opening(path, &e))?;
    // WAL lets readers keep reading their snapshot while the writer commits.
    let mode: String = conn
        .pragma_update_and_check(None, "journal_mode", "WAL", |row| row.get(0))
        .map_err(|e| error::opening(path, &e))?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(Error::precondition(format!(
            "cannot open database {}: the file system does not support WAL mode (got {mode}); \
             put the database on a local disk",
            path.display()
        )));
    }
    // FULL fsyncs the WAL on every commit; NORMAL only at checkpoints (a power loss can
    // lose the last commits, an application crash cannot).
    let synchronous = match durability {
        Durability::Full => "FULL",
        Durability::Normal => "NORMAL",
    };
    conn.pragma_update(None, "synchronous", synchronous)
        .map_err(|e| error::opening(path, &e))?;
    migrate(&mut conn, path)?;
    // The -wal and -shm files exist by now; SQLite made them with the database's mode.
    private::restrict(path)?;
    Ok(conn)
}

/// Opens one read-only connection for the reader pool. Opened after [`open_writer`], so the
/// file is in WAL mode and the schema is current.
pub(crate) fn open_reader(path: &Path) -> Result<Connection, Error> {
    let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let conn = Connection::open_with_flags(path, flags).map_err(|e| error::opening(path, &e))?;
    configure(&conn).map_err(|e| error::opening(path, &e))?;
    Ok(conn)
}

/// How much of the file readers and the writer map into memory.
const MMAP_SIZE_BYTES: i64 = 256 * 1024 * 1024;

fn configure(conn: &Connection) -> rusqlite::Result<()> {
    conn.busy_timeout(BUSY_TIMEOUT)?;
    conn.pragma_update(None, "cache_size", -CACHE_SIZE_KIB)?;
    // Reads through a memory map skip a read() and a copy per page.
    conn.pragma_update(None, "mmap_size", MMAP_SIZE_BYTES)?;
    conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE_CAPACITY);
    Ok(())
}

/// Applies every migration the file has not run yet, each in its own transaction, and
/// refuses a file written by a newer build (its schema may mean something this build does
/// not know).
fn migrate(conn: &mut Connection, path: &Path) -> Result<(), Error> {
    let found: i64 = conn
        .pragma_query_value(None, "user_version", |row| row.get(0))
        .map_err(|e| error::opening(path, &e))?;
    let found = usize::try_from(found).map_err(|_| {
        Error::precondition(format!(
            "cannot open database {}: its schema version {found} is invalid; \
             restore it from a backup or choose another path",
            path.display()
        ))
    })?;
    if found > SCHEMA_VERSION {
        return Err(Error::precondition(format!(
            "cannot open database {}: its schema version is {found} but this build of cohort \
             understands versions up to {SCHEMA_VERSION}; upgrade cohort or choose another path",
            path.display()
        )));
    }
    for (version, migration) in MIGRATIONS.iter().enumerate().skip(found) {
        let to = version + 1;
        let fail = |e: rusqlite::Error| {
            Error::internal(format!(
                "cannot open database {}: migration to schema version {to} failed: {e}; \
                 the file is unchanged at version {version}",
                path.display()
            ))
        };
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(|e| error::opening(path, &e))?;
        migration(&tx).map_err(fail)?;
        tx.pragma_update(None, "user_version", to as i64)
            .map_err(fail)?;
        tx.commit().map_err(fail)?;
        tracing::info!(path = %path.display(), version = to, "migrated store schema");
    }
    Ok(())
}
