//! How SQLite's failures become [`cohort_core::Error`]s.

use std::path::Path;

use cohort_core::Error;
use rusqlite::ErrorCode;

/// A failure at run time (the store is open). The message names the operation but not the
/// file path: it may travel to a remote caller.
pub(crate) fn runtime(what: &str, e: &rusqlite::Error) -> Error {
    let message = format!("store: {what}: {e}");
    if is_transient(e) {
        Error::unavailable(message)
    } else {
        Error::internal(message)
    }
}

/// Busy, locked, full or failing disks: the operator can fix these and the caller may retry,
/// so they are `Unavailable` rather than `Internal`.
fn is_transient(e: &rusqlite::Error) -> bool {
    matches!(
        e.sqlite_error_code(),
        Some(
            ErrorCode::DatabaseBusy
                | ErrorCode::DatabaseLocked
                | ErrorCode::DiskFull
                | ErrorCode::SystemIoFailure
                | ErrorCode::CannotOpen
                | ErrorCode::ReadOnly
                | ErrorCode::OutOfMemory
        )
    )
}

/// A failure while opening: the message names the file and what the operator can do.
pub(crate) fn opening(path: &Path, e: &rusqlite::Error) -> Error {
    match e.sqlite_error_code() {
        Some(ErrorCode::NotADatabase) => Error::precondition(format!(
            "cannot open database {}: the file is not a SQLite database; \
             move it away or choose another path",
            path.display()
        )),
        Some(ErrorCode::DatabaseCorrupt) => Error::precondition(format!(
            "cannot open database {}: the file is corrupt; restore it from a backup \
             or choose another path",
            path.display()
        )),
        Some(ErrorCode::CannotOpen) => cannot_open(path),
        _ => {
            let message = format!(
                "cannot open database {}: {e}; check that the file and its directory are \
                 writable by this user, or choose another path",
                path.display()
            );
            if is_transient(e) {
                Error::unavailable(message)
            } else {
                Error::internal(message)
            }
        }
    }
}

/// SQLite only says "unable to open database file"; ask the file system why, so the operator
/// reads "is a directory" or "permission denied" instead.
fn cannot_open(path: &Path) -> Error {
    let reason = if path.is_dir() {
        "the path is a directory".to_owned()
    } else {
        match std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
        {
            Err(io) => io.to_string(),
            Ok(_) => "unable to open database file".to_owned(),
        }
    };
    Error::unavailable(format!(
        "cannot open database {}: {reason}; check that the path names a file in a directory \
         writable by this user, or choose another path",
        path.display()
    ))
}

/// An I/O failure around the database file (creating its directory, spawning threads).
pub(crate) fn io(path: &Path, what: &str, e: &std::io::Error) -> Error {
    Error::unavailable(format!(
        "cannot open database {}: {what}: {e}; check that the directory is writable by this \
         user, or choose another path",
        path.display(),
    ))
}

/// The text of a panic payload, for the error the panicking closure's caller receives.
pub(crate) fn panic_message(payload: &(dyn std::any::Any + Send)) -> &str {
    if let Some(s) = payload.downcast_ref::<&'static str>() {
        s
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s
    } else {
        "non-string panic payload"
    }
}

/// What a caller gets when the store's threads are gone.
pub(crate) fn closed() -> Error {
    Error::unavailable("store: the store is closed")
}
