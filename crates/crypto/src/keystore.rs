//! Key shares at rest: one encrypted file per party holding named secrets.
//!
//! The whole store is one XChaCha20-Poly1305 ciphertext (the 24-byte-nonce variant of
//! ChaCha20-Poly1305, so a fresh random nonce per write never repeats in practice), under a
//! key derived from the party's secret:
//!
//! - a **passphrase**: Argon2id with m = 19 MiB, t = 2, p = 1 (the OWASP minimum
//!   recommendation; about a tenth of a second on a laptop), and a random 16-byte salt;
//! - a **key file**: at least 32 bytes of random data (e.g. `head -c 32 /dev/urandom`),
//!   through HKDF-SHA256 with the same salt. Use this for unattended party daemons.
//!
//! # File format (version 1)
//!
//! ```text
//! offset 0   magic      8 bytes  "COHORTKS"
//! offset 8   version    u8       1
//! offset 9   kdf        u8       1 = Argon2id passphrase, 2 = key file (HKDF-SHA256)
//! offset 10  m_cost     u32 BE   Argon2 memory in KiB (0 for a key file)
//! offset 14  t_cost     u32 BE   Argon2 passes (0 for a key file)
//! offset 18  p_cost     u32 BE   Argon2 lanes (0 for a key file)
//! offset 22  salt       16 bytes
//! offset 38  nonce      24 bytes, fresh for every write
//! offset 62  ciphertext the entries, sealed with the 62 header bytes as AAD
//! ```
//!
//! The entries, once opened: `u32 count`, then per entry `u16 name_len || name (UTF-8) ||
//! u32 value_len || value`, all big-endian.
//!
//! Every write replaces the file atomically: a temporary file in the same directory, fsync,
//! rename, fsync of the directory. A crash leaves the old store or the new one, never a mix.
//! Opening with the wrong secret only reads the file. One process at a time should hold a
//! store open for writing; the store does not lock the file.
//!
//! # Concurrent writers: group commit
//!
//! [`KeyStore`] is for one owner. [`SharedKeyStore`] is for many tasks changing one store at
//! once (a party running several sessions): each change is queued, and whoever finds no
//! write in progress takes every change queued so far and writes them in one atomic rewrite
//! and one fsync, while later changes queue for the next. A caller is answered only once
//! its change is durable, or with the error that stopped the write: then its change is not
//! in the store (should the file already hold it, the next write leaves it out again). So N
//! sessions that each need a nonce on disk before sending pay about one fsync between them,
//! not N in a row.

use std::collections::BTreeMap;
use std::fs;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

use argon2::{Algorithm, Argon2, Params, Version};
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use hkdf::Hkdf;
use rand::rngs::OsRng;
use rand::RngCore;
use sha2::Sha256;
use zeroize::{Zeroize, Zeroizing};

const MAGIC: &[u8; 8] = b"COHORTKS";
const VERSION: u8 = 1;
const KDF_ARGON2ID: u8 = 1;
const KDF_KEY_FILE: u8 = 2;
const SALT_LEN: usize = 16;
const NONCE_LEN: usize = 24;
const HEADER_LEN: usize = 8 + 1 + 1 + 12 + SALT_LEN + NONCE_LEN;
const TAG_LEN: usize = 16;
const KEY_FILE_INFO: &[u8] = b"cohort/keystore/v1 key-file";

/// Argon2id memory cost in KiB used for new passphrase stores (19 MiB, OWASP minimum).
pub const ARGON2_M_COST_KIB: u32 = 19 * 1024;
/// Argon2id passes used for new passphrase stores.
pub const ARGON2_T_COST: u32 = 2;
/// Argon2id lanes used for new passphrase stores.
pub const ARGON2_P_COST: u32 = 1;
/// A store file larger than this is refused before it is read.
pub const MAX_STORE_LEN: u64 = 64 * 1024 * 1024;
/// Shortest key file accepted.
pub const MIN_KEY_FILE_LEN: usize = 32;

// Bounds on Argon2 parameters read from a file, so a doctored header cannot make `open`
// allocate gigabytes or spin for hours.
const MAX_M_COST_KIB: u32 = 1024 * 1024;
const MAX_T_COST: u32 = 64;
const MAX_P_COST: u32 = 64;

/// What unlocks a store.
pub enum KeyStoreSecret {
    /// A passphrase a person types; stretched with Argon2id.
    Passphrase(String),
    /// The bytes of a key file (at least [`MIN_KEY_FILE_LEN`] random bytes).
    KeyFile(Vec<u8>),
}

impl KeyStoreSecret {
    /// Reads a key file's bytes.
    pub fn from_key_file(path: impl AsRef<Path>) -> Result<Self, KeyStoreError> {
        let path = path.as_ref();
        let bytes = fs::read(path).map_err(|source| KeyStoreError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        Ok(KeyStoreSecret::KeyFile(bytes))
    }

    fn kind_name(&self) -> &'static str {
        match self {
            KeyStoreSecret::Passphrase(_) => "passphrase",
            KeyStoreSecret::KeyFile(_) => "key file",
        }
    }
}

impl Drop for KeyStoreSecret {
    fn drop(&mut self) {
        match self {
            KeyStoreSecret::Passphrase(p) => p.zeroize(),
            KeyStoreSecret::KeyFile(k) => k.zeroize(),
        }
    }
}

impl std::fmt::Debug for KeyStoreSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "KeyStoreSecret::{}(<redacted>)", self.kind_name())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum KeyStoreError {
    #[error("key store {}: wrong passphrase or key file (or the file is damaged); the file was not changed", path.display())]
    WrongSecret { path: PathBuf },
    #[error("key store {} is locked with a {expected}, but a {given} was given", path.display())]
    SecretKindMismatch {
        path: PathBuf,
        expected: &'static str,
        given: &'static str,
    },
    #[error("key store {} already exists: open it instead, or move it away to start a new one", path.display())]
    AlreadyExists { path: PathBuf },
    #[error("key store {} is not a Cohort key store (version 1) or is damaged: {reason}", path.display())]
    Corrupt { path: PathBuf, reason: &'static str },
    #[error("unusable key store secret: {0}")]
    BadSecret(&'static str),
    #[error("entry name must be 1 to 1024 bytes")]
    BadName,
    #[error("key store {}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

#[derive(Clone, Copy)]
struct Header {
    kdf: u8,
    m_cost: u32,
    t_cost: u32,
    p_cost: u32,
    salt: [u8; SALT_LEN],
}

type Entries = BTreeMap<String, Zeroizing<Vec<u8>>>;

/// Where a store lives and what seals it: enough to rewrite the file.
struct StoreFile {
    path: PathBuf,
    header: Header,
    key: Zeroizing<[u8; 32]>,
}

/// An open key store: the decrypted entries in memory, the derived key to rewrite the file.
pub struct KeyStore {
    file: StoreFile,
    entries: Entries,
}

impl KeyStore {
    /// Creates a new, empty store at `path`; fails if a file is already there.
    pub fn create(path: impl AsRef<Path>, secret: &KeyStoreSecret) -> Result<Self, KeyStoreError> {
        let path = path.as_ref().to_path_buf();
        if path.exists() {
            return Err(KeyStoreError::AlreadyExists { path });
        }
        let mut salt = [0u8; SALT_LEN];
        OsRng.fill_bytes(&mut salt);
        let header = match secret {
            KeyStoreSecret::Passphrase(p) if p.is_empty() => {
                return Err(KeyStoreError::BadSecret("empty passphrase"))
            }
            KeyStoreSecret::Passphrase(_) => Header {
                kdf: KDF_ARGON2ID,
                m_cost: ARGON2_M_COST_KIB,
                t_cost: ARGON2_T_COST,
                p_cost: ARGON2_P_COST,
                salt,
            },
            KeyStoreSecret::KeyFile(_) => Header {
                kdf: KDF_KEY_FILE,
                m_cost: 0,
                t_cost: 0,
                p_cost: 0,
                salt,
            },
        };
        let key = derive_key(&header, secret)?;
        let store = KeyStore {
            file: StoreFile { path, header, key },
            entries: BTreeMap::new(),
        };
        store.file.write(&store.entries, true)?;
        Ok(store)
    }

    /// Opens the store at `path` with `secret`. A wrong secret is [`KeyStoreError::WrongSecret`]
    /// and leaves the file as it was.
    pub fn open(path: impl AsRef<Path>, secret: &KeyStoreSecret) -> Result<Self, KeyStoreError> {
        let path = path.as_ref().to_path_buf();
        let bytes = read_bounded(&path)?;
        let corrupt = |reason| KeyStoreError::Corrupt {
            path: path.clone(),
            reason,
        };
        if bytes.len() < HEADER_LEN + TAG_LEN {
            return Err(corrupt("shorter than a header"));
        }
        let (aad, ciphertext) = bytes.split_at(HEADER_LEN);
        let header = parse_header(aad).map_err(corrupt)?;
        let expected = if header.kdf == KDF_ARGON2ID {
            "passphrase"
        } else {
            "key file"
        };
        if expected != secret.kind_name() {
            return Err(KeyStoreError::SecretKindMismatch {
                path,
                expected,
                given: secret.kind_name(),
            });
        }
        let key = derive_key(&header, secret)?;
        let nonce = XNonce::from_slice(&aad[HEADER_LEN - NONCE_LEN..]);
        let plaintext = XChaCha20Poly1305::new(key.as_ref().into())
            .decrypt(
                nonce,
                Payload {
                    msg: ciphertext,
                    aad,
                },
            )
            .map(Zeroizing::new)
            .map_err(|_| KeyStoreError::WrongSecret { path: path.clone() })?;
        let entries = decode_entries(&plaintext).map_err(corrupt)?;
        Ok(KeyStore {
            file: StoreFile { path, header, key },
            entries,
        })
    }

    /// Stores `value` under `name`, replacing any previous value, and rewrites the file.
    pub fn put(&mut self, name: &str, value: &[u8]) -> Result<(), KeyStoreError> {
        check_name(name)?;
        let mut next = self.entries.clone();
        next.insert(name.to_string(), Zeroizing::new(value.to_vec()));
        self.file.write(&next, false)?;
        self.entries = next;
        Ok(())
    }

    pub fn get(&self, name: &str) -> Option<&[u8]> {
        self.entries.get(name).map(|v| v.as_slice())
    }

    /// Removes `name` and rewrites the file; returns whether it was there.
    pub fn remove(&mut self, name: &str) -> Result<bool, KeyStoreError> {
        if !self.entries.contains_key(name) {
            return Ok(false);
        }
        let mut next = self.entries.clone();
        next.remove(name);
        self.file.write(&next, false)?;
        self.entries = next;
        Ok(true)
    }

    /// Puts and removes several entries in one atomic write of the file (one fsync'd
    /// rewrite instead of one per entry). Removing an absent entry is not an error.
    pub fn apply(&mut self, puts: &[(&str, &[u8])], removes: &[&str]) -> Result<(), KeyStoreError> {
        let change = Change::new(puts, removes)?;
        let mut next = self.entries.clone();
        let mut changed = !puts.is_empty();
        changed |= change.apply_to(&mut next);
        if !changed {
            return Ok(());
        }
        self.file.write(&next, false)?;
        self.entries = next;
        Ok(())
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.entries.keys().map(String::as_str)
    }

    pub fn path(&self) -> &Path {
        &self.file.path
    }

    /// This store as a [`SharedKeyStore`], for several concurrent writers.
    pub fn into_shared(self) -> SharedKeyStore {
        SharedKeyStore {
            shared: Arc::new(Shared {
                file: self.file,
                state: Mutex::new(GroupState {
                    entries: self.entries,
                    queue: Vec::new(),
                    next_ticket: 0,
                    outcomes: BTreeMap::new(),
                    writing: false,
                    writes: 0,
                }),
                written: Condvar::new(),
                #[cfg(test)]
                before_write: Mutex::new(None),
            }),
        }
    }
}

impl StoreFile {
    /// Replaces the file with `entries`: temporary file, fsync, rename, directory fsync.
    fn write(&self, entries: &Entries, new_file: bool) -> Result<(), KeyStoreError> {
        let io = |source| KeyStoreError::Io {
            path: self.path.clone(),
            source,
        };
        let mut nonce = [0u8; NONCE_LEN];
        OsRng.fill_bytes(&mut nonce);
        let aad = encode_header(&self.header, &nonce);
        let plaintext = encode_entries(entries);
        let ciphertext = XChaCha20Poly1305::new(self.key.as_ref().into())
            .encrypt(
                XNonce::from_slice(&nonce),
                Payload {
                    msg: &plaintext,
                    aad: &aad,
                },
            )
            .map_err(|_| KeyStoreError::Corrupt {
                path: self.path.clone(),
                reason: "store too large to encrypt",
            })?;

        let dir = match self.path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let mut tmp = tempfile::Builder::new()
            .prefix(".cohort-keystore-")
            .tempfile_in(&dir)
            .map_err(io)?;
        tmp.write_all(&aad).map_err(io)?;
        tmp.write_all(&ciphertext).map_err(io)?;
        tmp.as_file().sync_all().map_err(io)?;
        if new_file {
            tmp.persist_noclobber(&self.path)
                .map_err(|e| match e.error.kind() {
                    std::io::ErrorKind::AlreadyExists => KeyStoreError::AlreadyExists {
                        path: self.path.clone(),
                    },
                    _ => io(e.error),
                })?;
        } else {
            tmp.persist(&self.path).map_err(|e| io(e.error))?;
        }
        sync_dir(&dir).map_err(io)
    }
}

impl std::fmt::Debug for KeyStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyStore")
            .field("path", &self.file.path)
            .field("entries", &self.entries.len())
            .finish()
    }
}

fn check_name(name: &str) -> Result<(), KeyStoreError> {
    if name.is_empty() || name.len() > 1024 {
        return Err(KeyStoreError::BadName);
    }
    Ok(())
}

/// Entries to put and names to remove, applied together.
struct Change {
    puts: Vec<(String, Zeroizing<Vec<u8>>)>,
    removes: Vec<String>,
}

impl Change {
    fn new(puts: &[(&str, &[u8])], removes: &[&str]) -> Result<Self, KeyStoreError> {
        for (name, _) in puts {
            check_name(name)?;
        }
        Ok(Change {
            puts: puts
                .iter()
                .map(|(n, v)| (n.to_string(), Zeroizing::new(v.to_vec())))
                .collect(),
            removes: removes.iter().map(|n| n.to_string()).collect(),
        })
    }

    /// Applies the change; returns whether it altered `entries`.
    fn apply_to(&self, entries: &mut Entries) -> bool {
        let mut changed = false;
        for (name, value) in &self.puts {
            changed |= entries.insert(name.clone(), value.clone()).as_ref() != Some(value);
        }
        for name in &self.removes {
            changed |= entries.remove(name).is_some();
        }
        changed
    }

    /// Whether applying it to `entries` would leave them as they are.
    fn is_no_op(&self, entries: &Entries) -> bool {
        self.puts.iter().all(|(n, v)| entries.get(n) == Some(v))
            && self.removes.iter().all(|n| !entries.contains_key(n))
    }
}

/// A key store several threads or tasks change at once; clones share it. Changes queued
/// while a write is in progress go out together in the next one (group commit: see the
/// module docs). Reads see what is durable.
///
/// The methods block (a file write and fsync); from async code, call them through
/// `spawn_blocking`.
#[derive(Clone)]
pub struct SharedKeyStore {
    shared: Arc<Shared>,
}

struct Shared {
    file: StoreFile,
    state: Mutex<GroupState>,
    /// Signalled after every write, when outcomes are posted and `writing` is off.
    written: Condvar,
    /// Test hook, called by the writer with the batch size before it writes; an error
    /// stands for a crash before the write reached the disk.
    #[cfg(test)]
    before_write: Mutex<Option<WriteHook>>,
}

#[cfg(test)]
type WriteHook = Box<dyn FnMut(usize) -> std::io::Result<()> + Send>;

struct GroupState {
    /// The entries as they are on disk.
    entries: Entries,
    /// Changes waiting for the next write, with the ticket their caller waits on.
    queue: Vec<(u64, Change)>,
    next_ticket: u64,
    /// Outcomes of written batches, by ticket, until their callers collect them.
    outcomes: BTreeMap<u64, Result<(), KeyStoreError>>,
    /// A writer is rewriting the file (outside the lock).
    writing: bool,
    /// File rewrites so far.
    writes: u64,
}

impl SharedKeyStore {
    fn lock(&self) -> MutexGuard<'_, GroupState> {
        self.shared.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Puts and removes entries in one change; returns once the change is durable, sharing
    /// the rewrite and fsync with every change queued alongside it. A change that alters
    /// nothing, with nothing queued before it, returns at once.
    pub fn apply(&self, puts: &[(&str, &[u8])], removes: &[&str]) -> Result<(), KeyStoreError> {
        let change = Change::new(puts, removes)?;
        let mut state = self.lock();
        // Only with nothing queued or in flight: a pending change to the same names must not
        // be overtaken.
        if !state.writing && state.queue.is_empty() && change.is_no_op(&state.entries) {
            return Ok(());
        }
        let ticket = state.next_ticket;
        state.next_ticket += 1;
        state.queue.push((ticket, change));
        loop {
            if let Some(outcome) = state.outcomes.remove(&ticket) {
                return outcome;
            }
            state = if state.writing {
                self.shared
                    .written
                    .wait(state)
                    .unwrap_or_else(|p| p.into_inner())
            } else {
                self.write_queued(state)
            };
        }
    }

    /// Stores `value` under `name`; returns once durable (see [`SharedKeyStore::apply`]).
    pub fn put(&self, name: &str, value: &[u8]) -> Result<(), KeyStoreError> {
        self.apply(&[(name, value)], &[])
    }

    /// Removes `name`; returns once durable (see [`SharedKeyStore::apply`]).
    pub fn remove(&self, name: &str) -> Result<(), KeyStoreError> {
        self.apply(&[], &[name])
    }

    /// The durable value of `name`.
    pub fn get(&self, name: &str) -> Option<Zeroizing<Vec<u8>>> {
        self.lock().entries.get(name).cloned()
    }

    pub fn contains(&self, name: &str) -> bool {
        self.lock().entries.contains_key(name)
    }

    /// The durable entry names, in order.
    pub fn names(&self) -> Vec<String> {
        self.lock().entries.keys().cloned().collect()
    }

    pub fn path(&self) -> &Path {
        &self.shared.file.path
    }

    /// How many times the file has been rewritten (one fsync'd rewrite each) through this
    /// store.
    pub fn writes(&self) -> u64 {
        self.lock().writes
    }

    /// Writes every queued change in one rewrite, with the lock released during the I/O,
    /// then posts each change's outcome and wakes the waiters.
    fn write_queued<'a>(
        &'a self,
        mut state: MutexGuard<'a, GroupState>,
    ) -> MutexGuard<'a, GroupState> {
        let batch = std::mem::take(&mut state.queue);
        let mut next = state.entries.clone();
        for (_, change) in &batch {
            change.apply_to(&mut next);
        }
        let changed = next != state.entries;
        state.writing = true;
        drop(state);
        // Should the write panic, the guard still posts an outcome for every ticket and clears
        // `writing`, so no waiter is left waiting for a writer that is gone.
        let mut posting = Posting {
            store: self,
            tickets: batch.iter().map(|(t, _)| *t).collect(),
            result: Err(KeyStoreError::Io {
                path: self.shared.file.path.clone(),
                source: std::io::Error::other("the key store writer panicked"),
            }),
            next: None,
        };
        let result = if changed {
            self.before_write(batch.len())
                .and_then(|()| self.shared.file.write(&next, false))
        } else {
            Ok(())
        };
        posting.next = (changed && result.is_ok()).then_some(next);
        posting.result = result;
        drop(posting);
        self.lock()
    }

    #[cfg(test)]
    fn before_write(&self, batch: usize) -> Result<(), KeyStoreError> {
        let mut hook = self
            .shared
            .before_write
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        match hook.as_mut() {
            Some(h) => h(batch).map_err(|source| KeyStoreError::Io {
                path: self.shared.file.path.clone(),
                source,
            }),
            None => Ok(()),
        }
    }

    #[cfg(not(test))]
    fn before_write(&self, _batch: usize) -> Result<(), KeyStoreError> {
        Ok(())
    }
}

/// Posts a batch's outcome when dropped (after the write, or while unwinding from it).
struct Posting<'a> {
    store: &'a SharedKeyStore,
    tickets: Vec<u64>,
    result: Result<(), KeyStoreError>,
    /// The entries now on disk, when the write changed them.
    next: Option<Entries>,
}

impl Drop for Posting<'_> {
    fn drop(&mut self) {
        let mut state = self.store.lock();
        state.writing = false;
        if let Some(next) = self.next.take() {
            state.entries = next;
            state.writes += 1;
        }
        for &ticket in &self.tickets {
            let outcome = match &self.result {
                Ok(()) => Ok(()),
                Err(e) => Err(e.again()),
            };
            state.outcomes.insert(ticket, outcome);
        }
        drop(state);
        self.store.shared.written.notify_all();
    }
}

impl KeyStoreError {
    /// The same failure, for each caller whose change was in the batch that hit it.
    fn again(&self) -> KeyStoreError {
        match self {
            KeyStoreError::WrongSecret { path } => {
                KeyStoreError::WrongSecret { path: path.clone() }
            }
            KeyStoreError::SecretKindMismatch {
                path,
                expected,
                given,
            } => KeyStoreError::SecretKindMismatch {
                path: path.clone(),
                expected,
                given,
            },
            KeyStoreError::AlreadyExists { path } => {
                KeyStoreError::AlreadyExists { path: path.clone() }
            }
            KeyStoreError::Corrupt { path, reason } => KeyStoreError::Corrupt {
                path: path.clone(),
                reason,
            },
            KeyStoreError::BadSecret(why) => KeyStoreError::BadSecret(why),
            KeyStoreError::BadName => KeyStoreError::BadName,
            KeyStoreError::Io { path, source } => KeyStoreError::Io {
                path: path.clone(),
                source: std::io::Error::new(source.kind(), source.to_string()),
            },
        }
    }
}

impl std::fmt::Debug for SharedKeyStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = self.lock();
        f.debug_struct("SharedKeyStore")
            .field("path", &self.shared.file.path)
            .field("entries", &state.entries.len())
            .field("queued", &state.queue.len())
            .finish()
    }
}

#[cfg(unix)]
fn sync_dir(dir: &Path) -> std::io::Result<()> {
    fs::File::open(dir)?.sync_all()
}

#[cfg(not(unix))]
fn sync_dir(_dir: &Path) -> std::io::Result<()> {
    Ok(())
}

fn read_bounded(path: &Path) -> Result<Vec<u8>, KeyStoreError> {
    let io = |source| KeyStoreError::Io {
        path: path.to_path_buf(),
        source,
    };
    let file = fs::File::open(path).map_err(io)?;
    let mut bytes = Vec::new();
    file.take(MAX_STORE_LEN + 1)
        .read_to_end(&mut bytes)
        .map_err(io)?;
    if bytes.len() as u64 > MAX_STORE_LEN {
        return Err(KeyStoreError::Corrupt {
            path: path.to_path_buf(),
            reason: "larger than the 64 MiB limit",
        });
    }
    Ok(bytes)
}

fn derive_key(
    header: &Header,
    secret: &KeyStoreSecret,
) -> Result<Zeroizing<[u8; 32]>, KeyStoreError> {
    let mut key = Zeroizing::new([0u8; 32]);
    match secret {
        KeyStoreSecret::Passphrase(passphrase) => {
            let params = Params::new(header.m_cost, header.t_cost, header.p_cost, Some(32))
                .map_err(|_| KeyStoreError::BadSecret("invalid Argon2 parameters"))?;
            Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
                .hash_password_into(passphrase.as_bytes(), &header.salt, key.as_mut())
                .map_err(|_| KeyStoreError::BadSecret("Argon2 rejected the passphrase"))?;
        }
        KeyStoreSecret::KeyFile(bytes) => {
            if bytes.len() < MIN_KEY_FILE_LEN {
                return Err(KeyStoreError::BadSecret(
                    "a key file needs at least 32 random bytes",
                ));
            }
            Hkdf::<Sha256>::new(Some(&header.salt), bytes)
                .expand(KEY_FILE_INFO, key.as_mut())
                .map_err(|_| KeyStoreError::BadSecret("key derivation failed"))?;
        }
    }
    Ok(key)
}

fn encode_header(h: &Header, nonce: &[u8; NONCE_LEN]) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER_LEN);
    out.extend_from_slice(MAGIC);
    out.push(VERSION);
    out.push(h.kdf);
    out.extend_from_slice(&h.m_cost.to_be_bytes());
    out.extend_from_slice(&h.t_cost.to_be_bytes());
    out.extend_from_slice(&h.p_cost.to_be_bytes());
    out.extend_from_slice(&h.salt);
    out.extend_from_slice(nonce);
    out
}

fn parse_header(b: &[u8]) -> Result<Header, &'static str> {
    if b.len() != HEADER_LEN || &b[..8] != MAGIC {
        return Err("bad magic bytes");
    }
    if b[8] != VERSION {
        return Err("unknown version");
    }
    let kdf = b[9];
    let u32_at = |i: usize| u32::from_be_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
    let (m_cost, t_cost, p_cost) = (u32_at(10), u32_at(14), u32_at(18));
    match kdf {
        KDF_ARGON2ID => {
            if m_cost > MAX_M_COST_KIB || t_cost > MAX_T_COST || p_cost > MAX_P_COST {
                return Err("Argon2 parameters out of bounds");
            }
        }
        KDF_KEY_FILE => {}
        _ => return Err("unknown key derivation"),
    }
    let mut salt = [0u8; SALT_LEN];
    salt.copy_from_slice(&b[22..22 + SALT_LEN]);
    Ok(Header {
        kdf,
        m_cost,
        t_cost,
        p_cost,
        salt,
    })
}

fn encode_entries(entries: &BTreeMap<String, Zeroizing<Vec<u8>>>) -> Zeroizing<Vec<u8>> {
    let len = 4 + entries
        .iter()
        .map(|(k, v)| 2 + k.len() + 4 + v.len())
        .sum::<usize>();
    let mut out = Zeroizing::new(Vec::with_capacity(len));
    out.extend_from_slice(&(entries.len() as u32).to_be_bytes());
    for (name, value) in entries {
        out.extend_from_slice(&(name.len() as u16).to_be_bytes());
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(&(value.len() as u32).to_be_bytes());
        out.extend_from_slice(value);
    }
    out
}

fn decode_entries(mut b: &[u8]) -> Result<BTreeMap<String, Zeroizing<Vec<u8>>>, &'static str> {
    fn take<'a>(b: &mut &'a [u8], n: usize) -> Result<&'a [u8], &'static str> {
        if b.len() < n {
            return Err("entries truncated");
        }
        let (head, tail) = b.split_at(n);
        *b = tail;
        Ok(head)
    }
    let count = u32::from_be_bytes(
        take(&mut b, 4)?
            .try_into()
            .map_err(|_| "entries truncated")?,
    );
    let mut entries = BTreeMap::new();
    for _ in 0..count {
        let name_len = u16::from_be_bytes(
            take(&mut b, 2)?
                .try_into()
                .map_err(|_| "entries truncated")?,
        );
        let name = std::str::from_utf8(take(&mut b, name_len as usize)?)
            .map_err(|_| "entry name is not UTF-8")?;
        let value_len = u32::from_be_bytes(
            take(&mut b, 4)?
                .try_into()
                .map_err(|_| "entries truncated")?,
        );
        let value = take(&mut b, value_len as usize)?;
        entries.insert(name.to_string(), Zeroizing::new(value.to_vec()));
    }
    if !b.is_empty() {
        return Err("trailing bytes after the entries");
    }
    Ok(entries)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn passphrase(p: &str) -> KeyStoreSecret {
        KeyStoreSecret::Passphrase(p.to_string())
    }

    #[test]
    fn entries_survive_reopening_with_a_passphrase() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("party.keystore");
        let mut store = KeyStore::create(&path, &passphrase("correct horse")).unwrap();
        store.put("share/ed25519/k1", b"key share bytes").unwrap();
        store.put("nonce/s1", b"nonce").unwrap();
        assert!(store.remove("nonce/s1").unwrap());
        assert!(!store.remove("nonce/s1").unwrap());

        let reopened = KeyStore::open(&path, &passphrase("correct horse")).unwrap();
        assert_eq!(
            reopened.get("share/ed25519/k1"),
            Some(&b"key share bytes"[..])
        );
        assert_eq!(reopened.get("nonce/s1"), None);
        assert_eq!(
            reopened.names().collect::<Vec<_>>(),
            vec!["share/ed25519/k1"]
        );
    }

    #[test]
    fn wrong_passphrase_is_refused_and_leaves_the_file_untouched() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("party.keystore");
        let mut store = KeyStore::create(&path, &passphrase("correct horse")).unwrap();
        store.put("share", b"secret").unwrap();
        let before = fs::read(&path).unwrap();

        let err = KeyStore::open(&path, &passphrase("battery staple")).unwrap_err();
        assert!(matches!(err, KeyStoreError::WrongSecret { .. }), "{err:?}");
        assert!(err.to_string().contains("wrong passphrase"));
        assert_eq!(fs::read(&path).unwrap(), before);
        let err = KeyStore::open(&path, &KeyStoreSecret::KeyFile(vec![7; 32])).unwrap_err();
        assert!(
            matches!(err, KeyStoreError::SecretKindMismatch { .. }),
            "{err:?}"
        );
        assert_eq!(fs::read(&path).unwrap(), before);
    }

    #[test]
    fn key_file_store_round_trips_and_rejects_another_key_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("party.keystore");
        let key_file = dir.path().join("party.key");
        fs::write(&key_file, [42u8; 32]).unwrap();
        let secret = KeyStoreSecret::from_key_file(&key_file).unwrap();
        let mut store = KeyStore::create(&path, &secret).unwrap();
        store.put("a", b"1").unwrap();
        let before = fs::read(&path).unwrap();
        assert_eq!(
            KeyStore::open(&path, &secret).unwrap().get("a"),
            Some(&b"1"[..])
        );
        let err = KeyStore::open(&path, &KeyStoreSecret::KeyFile(vec![43; 32])).unwrap_err();
        assert!(matches!(err, KeyStoreError::WrongSecret { .. }));
        assert_eq!(fs::read(&path).unwrap(), before);
        assert!(matches!(
            KeyStore::create(dir.path().join("b"), &KeyStoreSecret::KeyFile(vec![1; 31])),
            Err(KeyStoreError::BadSecret(_))
        ));
    }

    #[test]
    fn file_holds_no_plaintext_and_each_write_uses_a_fresh_nonce() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s");
        let mut store = KeyStore::create(&path, &KeyStoreSecret::KeyFile(vec![1; 32])).unwrap();
        store.put("name-in-clear?", b"PLAINTEXT-SHARE").unwrap();
        let first = fs::read(&path).unwrap();
        store.put("name-in-clear?", b"PLAINTEXT-SHARE").unwrap();
        let second = fs::read(&path).unwrap();
        for needle in [&b"PLAINTEXT-SHARE"[..], b"name-in-clear?"] {
            assert!(!first.windows(needle.len()).any(|w| w == needle));
        }
        assert_ne!(
            first[HEADER_LEN - NONCE_LEN..HEADER_LEN],
            second[HEADER_LEN - NONCE_LEN..HEADER_LEN]
        );
        // Only the store file is left in the directory: no temporary files.
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn create_refuses_an_existing_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s");
        fs::write(&path, b"something else").unwrap();
        let err = KeyStore::create(&path, &KeyStoreSecret::KeyFile(vec![1; 32])).unwrap_err();
        assert!(matches!(err, KeyStoreError::AlreadyExists { .. }));
        assert_eq!(fs::read(&path).unwrap(), b"something else");
    }

    #[test]
    fn damaged_files_are_errors_not_panics() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s");
        let secret = KeyStoreSecret::KeyFile(vec![1; 32]);
        let mut store = KeyStore::create(&path, &secret).unwrap();
        store.put("a", b"1").unwrap();
        let good = fs::read(&path).unwrap();
        for len in 0..good.len() {
            fs::write(&path, &good[..len]).unwrap();
            assert!(
                KeyStore::open(&path, &secret).is_err(),
                "truncated to {len}"
            );
        }
        for i in 0..good.len() {
            let mut bad = good.clone();
            bad[i] ^= 0x80;
            fs::write(&path, &bad).unwrap();
            assert!(KeyStore::open(&path, &secret).is_err(), "flipped byte {i}");
        }
        // A doctored header asking Argon2 for absurd memory is refused before hashing.
        let mut doctored = encode_header(
            &Header {
                kdf: KDF_ARGON2ID,
                m_cost: u32::MAX,
                t_cost: 1,
                p_cost: 1,
                salt: [0; 16],
            },
            &[0; NONCE_LEN],
        );
        doctored.extend_from_slice(&[0; 32]);
        fs::write(&path, &doctored).unwrap();
        assert!(matches!(
            KeyStore::open(&path, &passphrase("x")),
            Err(KeyStoreError::Corrupt { .. })
        ));
    }

    #[test]
    fn entry_decoder_bounds_lengths() {
        assert!(decode_entries(&[0, 0, 0, 0]).unwrap().is_empty());
        assert!(decode_entries(&[0xff, 0xff, 0xff, 0xff]).is_err());
        assert!(decode_entries(&[0, 0, 0, 1, 0, 1, b'a', 0xff, 0xff, 0xff, 0xff]).is_err());
        assert!(decode_entries(&[0, 0, 0, 0, 9]).is_err());
    }

    #[test]
    fn apply_puts_and_removes_in_one_write() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ks");
        let secret = KeyStoreSecret::KeyFile(vec![7; 32]);
        let mut ks = KeyStore::create(&path, &secret).unwrap();
        ks.put("a", b"1").unwrap();
        ks.apply(&[("b", b"2"), ("c", b"3")], &["a", "absent"])
            .unwrap();
        let reopened = KeyStore::open(&path, &secret).unwrap();
        assert_eq!(reopened.get("a"), None);
        assert_eq!(reopened.get("b"), Some(&b"2"[..]));
        assert_eq!(reopened.get("c"), Some(&b"3"[..]));
        assert!(matches!(
            ks.apply(&[("", b"x")], &[]),
            Err(KeyStoreError::BadName)
        ));
    }

    fn shared_store(dir: &tempfile::TempDir) -> (SharedKeyStore, PathBuf, KeyStoreSecret) {
        let path = dir.path().join("ks");
        let secret = KeyStoreSecret::KeyFile(vec![9; 32]);
        let store = KeyStore::create(&path, &secret).unwrap().into_shared();
        (store, path, secret)
    }

    /// Waits (bounded) until `n` changes are queued behind the write in progress.
    fn wait_until_queued(store: &SharedKeyStore, n: usize) {
        let start = std::time::Instant::now();
        while store.lock().queue.len() < n {
            assert!(
                start.elapsed() < std::time::Duration::from_secs(30),
                "only {} of {n} changes queued",
                store.lock().queue.len()
            );
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
    }

    #[test]
    fn concurrent_puts_share_one_write_and_each_returns_only_once_on_disk() {
        let dir = tempfile::tempdir().unwrap();
        let (store, path, secret) = shared_store(&dir);
        // The first write waits until the test lets it go, so the others queue behind it.
        let (entered_tx, entered) = std::sync::mpsc::channel::<()>();
        let (release, release_rx) = std::sync::mpsc::channel::<()>();
        let release_rx = Mutex::new(release_rx);
        let batches = Arc::new(Mutex::new(Vec::new()));
        let seen = batches.clone();
        *store.shared.before_write.lock().unwrap() = Some(Box::new(move |batch| {
            seen.lock().unwrap().push(batch);
            if seen.lock().unwrap().len() == 1 {
                entered_tx.send(()).unwrap();
                release_rx.lock().unwrap().recv().unwrap();
            }
            Ok(())
        }));

        let put_and_check = |name: String| {
            let (store, path) = (store.clone(), path.clone());
            let secret = KeyStoreSecret::KeyFile(vec![9; 32]);
            std::thread::spawn(move || {
                store.put(&name, name.as_bytes()).unwrap();
                // Answered: the change must already be in the file.
                let on_disk = KeyStore::open(&path, &secret).unwrap();
                assert_eq!(on_disk.get(&name), Some(name.as_bytes()), "{name}");
            })
        };
        let first = put_and_check("first".into());
        entered
            .recv_timeout(std::time::Duration::from_secs(30))
            .expect("the first write started");
        let rest: Vec<_> = (0..31)
            .map(|i| put_and_check(format!("entry/{i}")))
            .collect();
        wait_until_queued(&store, 31);
        assert!(
            !rest.iter().any(|t| t.is_finished()),
            "answered before its write"
        );
        release.send(()).unwrap();
        first.join().unwrap();
        for t in rest {
            t.join().unwrap();
        }

        assert_eq!(*batches.lock().unwrap(), vec![1, 31]);
        assert_eq!(store.writes(), 2);
        let reopened = KeyStore::open(&path, &secret).unwrap();
        assert_eq!(reopened.names().count(), 32);
    }

    #[test]
    fn a_crash_before_the_write_loses_only_unacknowledged_changes() {
        let dir = tempfile::tempdir().unwrap();
        let (store, path, secret) = shared_store(&dir);
        store.put("acknowledged", b"kept").unwrap();

        // From here the process "crashes" before any write reaches the disk: the first write
        // waits until the others are queued behind it, then every write fails.
        let (entered_tx, entered) = std::sync::mpsc::channel::<()>();
        let (release, release_rx) = std::sync::mpsc::channel::<()>();
        let release_rx = Mutex::new(release_rx);
        let mut calls = 0;
        *store.shared.before_write.lock().unwrap() = Some(Box::new(move |_| {
            calls += 1;
            if calls == 1 {
                entered_tx.send(()).unwrap();
                release_rx.lock().unwrap().recv().unwrap();
            }
            Err(std::io::Error::other("simulated crash"))
        }));
        let put = |name: String| {
            let store = store.clone();
            std::thread::spawn(move || store.put(&name, b"lost").is_ok())
        };
        let first = put("lost/0".into());
        entered
            .recv_timeout(std::time::Duration::from_secs(30))
            .expect("the first write started");
        let rest: Vec<_> = (1..8).map(|i| put(format!("lost/{i}"))).collect();
        wait_until_queued(&store, 7);
        release.send(()).unwrap();
        let acknowledged: Vec<bool> = std::iter::once(first)
            .chain(rest)
            .map(|t| t.join().unwrap())
            .collect();
        assert_eq!(acknowledged, vec![false; 8], "a change was acknowledged");
        assert!(store.get("lost/0").is_none());

        // Restart: what was acknowledged is there, nothing else.
        drop(store);
        let reopened = KeyStore::open(&path, &secret).unwrap();
        assert_eq!(reopened.names().collect::<Vec<_>>(), vec!["acknowledged"]);
        assert_eq!(reopened.get("acknowledged"), Some(&b"kept"[..]));

        // And the reopened store takes writes again.
        let store = reopened.into_shared();
        store.put("after", b"restart").unwrap();
        let names = KeyStore::open(&path, &secret).unwrap();
        assert_eq!(
            names.names().collect::<Vec<_>>(),
            vec!["acknowledged", "after"]
        );
    }

    #[test]
    fn a_change_that_alters_nothing_is_not_written() {
        let dir = tempfile::tempdir().unwrap();
        let (store, path, secret) = shared_store(&dir);
        store
            .apply(&[("a", b"1"), ("b", b"2")], &["absent"])
            .unwrap();
        assert_eq!(store.writes(), 1);
        store.put("a", b"1").unwrap();
        store.remove("absent").unwrap();
        assert_eq!(store.writes(), 1);
        store.remove("a").unwrap();
        assert_eq!(store.writes(), 2);
        assert!(!store.contains("a"));
        assert_eq!(
            store.get("b").as_deref().map(Vec::as_slice),
            Some(&b"2"[..])
        );
        assert_eq!(store.names(), vec!["b".to_string()]);
        assert!(matches!(store.put("", b"x"), Err(KeyStoreError::BadName)));
        let reopened = KeyStore::open(&path, &secret).unwrap();
        assert_eq!(reopened.names().collect::<Vec<_>>(), vec!["b"]);
    }
}
