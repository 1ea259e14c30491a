//! The database and its `-wal` and `-shm` files are readable and writable by the relay's user
//! only (mode 0600), whatever the umask: they hold party records, token hashes and messages.

use std::path::{Path, PathBuf};

use cohort_core::Error;

use super::error;

/// The files SQLite keeps beside the database in WAL mode.
pub(crate) fn wal_files(db: &Path) -> [PathBuf; 2] {
    let with = |suffix: &str| {
        let mut name = db.as_os_str().to_owned();
        name.push(suffix);
        PathBuf::from(name)
    };
    [with("-wal"), with("-shm")]
}

/// Before SQLite opens `db`: creates it empty with mode 0600 if missing, and narrows an
/// existing file (and any `-wal`/`-shm` left beside it) to 0600. SQLite creates the `-wal`
/// and `-shm` files with the database file's mode, so they start out 0600 as well.
pub(crate) fn prepare(db: &Path) -> Result<(), Error> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        match std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(db)
        {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(error::io(db, "cannot create the database file", &e)),
        }
    }
    restrict(db)
}

/// Sets mode 0600 on the database and on whichever of its `-wal` and `-shm` files exist.
pub(crate) fn restrict(db: &Path) -> Result<(), Error> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let [wal, shm] = wal_files(db);
        for path in [db.to_path_buf(), wal, shm] {
            match std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => {
                    return Err(error::io(
                        &path,
                        "cannot make the file private to this user (mode 0600)",
                        &e,
                    ))
                }
            }
        }
    }
    #[cfg(not(unix))]
    let _ = db;
    Ok(())
}
