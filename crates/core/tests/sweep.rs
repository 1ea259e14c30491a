//! The sweepers reach every entry over successive calls, however many healthy entries sort
//! before the expired ones: over `MemTx` and over a real `SqliteStore` in a temp dir.

use cohort_core::identity::{self, Party, Principal};
use cohort_core::session::{self, CreateRequest, SessionStatus, SweepOutcome};
use cohort_core::store::{StoreExt, Table, Tx};
use cohort_core::{Limits, Millis, Result};
use cohort_store::{Durability, SqliteStore, StoreOptions};

const T0: Millis = 1_700_000_000_000;
/// Sessions per group; more than the sweep limit, so one page cannot hold them all.
const SESSIONS: u16 = 300;
const SWEEP_LIMIT: usize = 256;

type TestResult = std::result::Result<(), Box<dyn std::error::Error>>;

/// Runs write closures: directly on a `MemTx`, or through `Store::write` on a real store.
trait Driver {
    fn write<R, F>(&mut self, f: F) -> Result<R>
    where
        R: Send + 'static,
        F: FnMut(&mut dyn Tx) -> Result<R> + Send + 'static;
}

struct OnMemTx(cohort_core::store::MemTx);

impl Driver for OnMemTx {
    fn write<R, F>(&mut self, mut f: F) -> Result<R>
    where
        R: Send + 'static,
        F: FnMut(&mut dyn Tx) -> Result<R> + Send + 'static,
    {
        f(&mut self.0)
    }
}

struct OnSqlite {
    runtime: tokio::runtime::Runtime,
    store: SqliteStore,
    _dir: tempfile::TempDir,
}

impl OnSqlite {
    fn open() -> std::result::Result<Self, Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let options = StoreOptions {
            durability: Durability::Normal,
            ..StoreOptions::default()
        };
        let store = SqliteStore::open(&dir.path().join("cohort.sqlite"), options)?;
        let runtime = tokio::runtime::Builder::new_current_thread().build()?;
        Ok(OnSqlite {
            runtime,
            store,
            _dir: dir,
        })
    }
}

impl Driver for OnSqlite {
    fn write<R, F>(&mut self, f: F) -> Result<R>
    where
        R: Send + 'static,
        F: FnMut(&mut dyn Tx) -> Result<R> + Send + 'static,
    {
        self.runtime.block_on(self.store.write(f))
    }
}

fn coordinator() -> Principal {
    Principal {
        id: "coordinator".into(),
        coordinator: true,
        identity_key: [0xc0; 32],
    }
}

fn add_parties(tx: &mut dyn Tx) -> Result<()> {
    for id in ["a", "b"] {
        identity::put_party(
            tx,
            &Party {
                id: id.into(),
                identity_key: vec![id.as_bytes()[0]; 32],
                role: "persistent".into(),
                version: "1".into(),
                notification: None,
                registered_at: T0,
                last_seen_at: T0,
                encryption_key: None,
            },
        )?;
    }
    Ok(())
}

/// Creates `SESSIONS` sessions of a and b whose ids start with the byte `lead`, so a group
/// with a lower `lead` sorts entirely before one with a higher `lead` in `OpenSessions`.
fn create_group(
    lead: u8,
    expires_in_ms: Millis,
) -> impl FnMut(&mut dyn Tx) -> Result<Vec<String>> + Send + 'static {
    move |tx| {
        let mut ids = Vec::with_capacity(usize::from(SESSIONS));
        for i in 0..SESSIONS {
            let mut calls = 0u8;
            let mut entropy = |b: &mut [u8]| {
                calls += 1;
                b.fill(calls);
                if calls == 1 {
                    b[0] = lead;
                    b[1..3].copy_from_slice(&i.to_be_bytes());
                }
            };
            let req = CreateRequest {
                session_type: "keygen".into(),
                n: 2,
                t: 1,
                parties: vec!["a".into(), "b".into()],
                expires_in_ms,
                ..CreateRequest::default()
            };
            let limits = Limits::default();
            let made = session::create(tx, &coordinator(), req, &mut entropy, T0, &limits)?;
            assert!(made.created);
            ids.push(made.session.id);
        }
        Ok(ids)
    }
}

fn sweep_at(now: Millis) -> impl FnMut(&mut dyn Tx) -> Result<SweepOutcome> + Send + 'static {
    move |tx| session::sweep(tx, now, &Limits::default(), SWEEP_LIMIT)
}

fn statuses(
    ids: Vec<String>,
) -> impl FnMut(&mut dyn Tx) -> Result<Vec<SessionStatus>> + Send + 'static {
    move |tx| {
        ids.iter()
            .map(|id| Ok(session::require(tx, id)?.status))
            .collect()
    }
}

fn open_sessions(tx: &mut dyn Tx) -> Result<usize> {
    Ok(tx.scan(Table::OpenSessions, &[], &[], usize::MAX)?.len())
}

/// 300 healthy sessions sort before 300 that expire: repeated sweeps of 256 expire all 300
/// and nothing else, then the healthy ones too once their time comes.
fn every_open_session_is_reached(d: &mut impl Driver) -> TestResult {
    let limits = Limits::default();
    d.write(add_parties)?;
    // Expiry well inside the stall timeout, so only expiry can close these sessions.
    let short = 30_000;
    assert!(short < limits.stall_timeout_ms);
    let healthy = d.write(create_group(0x10, limits.session_ttl_ms))?;
    let expiring = d.write(create_group(0x80, short))?;
    assert!(healthy.iter().max() < expiring.iter().min());
    assert_eq!(d.write(open_sessions)?, 2 * usize::from(SESSIONS));

    let now = T0 + short + 1;
    let mut expired = Vec::new();
    for _ in 0..6 {
        let out = d.write(sweep_at(now))?;
        assert!(out.stalled.is_empty(), "stalled: {:?}", out.stalled);
        expired.extend(out.expired);
    }
    expired.sort();
    let mut want = expiring.clone();
    want.sort();
    assert_eq!(expired, want, "every short-lived session expired once");
    assert!(d
        .write(statuses(expiring))?
        .iter()
        .all(|s| *s == SessionStatus::Expired));
    assert!(d
        .write(statuses(healthy.clone()))?
        .iter()
        .all(|s| *s == SessionStatus::Created));
    assert_eq!(d.write(open_sessions)?, usize::from(SESSIONS));

    let later = T0 + limits.session_ttl_ms;
    let mut expired = 0;
    for _ in 0..3 {
        expired += d.write(sweep_at(later))?.expired.len();
    }
    assert_eq!(expired, usize::from(SESSIONS));
    assert!(d
        .write(statuses(healthy))?
        .iter()
        .all(|s| *s == SessionStatus::Expired));
    assert_eq!(d.write(open_sessions)?, 0);
    Ok(())
}

#[test]
fn session_sweep_reaches_every_open_session_over_mem_tx() -> TestResult {
    every_open_session_is_reached(&mut OnMemTx(Default::default()))
}

#[test]
fn session_sweep_reaches_every_open_session_over_sqlite() -> TestResult {
    every_open_session_is_reached(&mut OnSqlite::open()?)
}

/// Two groups of challenges, one expired: repeated credential sweeps of 256 remove every
/// expired one and leave every live one (ids start with the issue time, so the live group is
/// told apart by that prefix).
fn every_challenge_is_reached(d: &mut impl Driver) -> TestResult {
    let limits = Limits::default();
    let issue = |lead: u8, now: Millis| {
        move |tx: &mut dyn Tx| {
            for i in 0..SESSIONS {
                let mut random = [lead; 64];
                random[1..3].copy_from_slice(&i.to_be_bytes());
                identity::issue_challenge(tx, "a", &[7; 32], random, now, &Limits::default())?;
            }
            Ok(())
        }
    };
    let later = T0 + limits.challenge_ttl_ms;
    // Issued later, so still live when the first group has expired.
    d.write(issue(0x10, later))?;
    d.write(issue(0x80, T0))?;
    let count = |tx: &mut dyn Tx| Ok(tx.scan(Table::Challenges, &[], &[], usize::MAX)?.len());
    assert_eq!(d.write(count)?, 2 * usize::from(SESSIONS));
    let mut removed = 0;
    for _ in 0..6 {
        removed += d.write(move |tx| identity::sweep_credentials(tx, later + 1, SWEEP_LIMIT))?;
    }
    assert_eq!(removed, usize::from(SESSIONS));
    let left = d.write(|tx| tx.scan(Table::Challenges, &[], &[], usize::MAX))?;
    assert_eq!(left.len(), usize::from(SESSIONS));
    let live_prefix = hex::encode(later.to_be_bytes());
    assert!(
        left.iter()
            .all(|(k, _)| k.starts_with(live_prefix.as_bytes())),
        "only the live group is left"
    );
    Ok(())
}

#[test]
fn credential_sweep_reaches_every_challenge_over_mem_tx() -> TestResult {
    every_challenge_is_reached(&mut OnMemTx(Default::default()))
}

#[test]
fn credential_sweep_reaches_every_challenge_over_sqlite() -> TestResult {
    every_challenge_is_reached(&mut OnSqlite::open()?)
}
