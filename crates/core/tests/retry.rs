//! A store with optimistic concurrency (compare-and-set on a cluster) runs a write closure
//! again when its first attempt lost a conflict. The rules must not notice: run through a
//! store that runs every closure once on a scratch copy and throws that away, then for real,
//! they give the same answers and leave the same state as when run once.

use std::collections::BTreeMap;
use std::sync::Arc;

use cohort_core::codec::decode;
use cohort_core::enrollment;
use cohort_core::identity::{self, IssuedToken, Principal};
use cohort_core::mailbox::{self, Entry, MailboxAddr, Outgoing};
use cohort_core::session::{self, CreateRequest, Report, RouteRequest, Session};
use cohort_core::store::{
    conformance, AnyResult, BoxFuture, MemStore, MemTx, Pair, ReadFn, Store, StoreExt, Table, Tx,
    View, WriteFn,
};
use cohort_core::{Error, ErrorKind, Limits, Millis, Result};
use cohort_crypto::identity::{login_message, IdentityKey, LOGIN_DOMAIN};
use cohort_store::{Durability, SqliteStore, StoreOptions};

const T0: Millis = 1_700_000_000_000;

type TestResult = std::result::Result<(), Box<dyn std::error::Error>>;

/// Runs each write closure twice inside one transaction of `inner`: first against a scratch
/// copy of what it touches, whose changes are dropped (the lost attempt), then for real.
struct RetryingStore {
    inner: Arc<dyn Store>,
}

impl Store for RetryingStore {
    fn write_boxed(&self, mut f: WriteFn) -> BoxFuture<'_, AnyResult> {
        self.inner.write_boxed(Box::new(move |tx| {
            {
                let mut scratch = Scratch {
                    base: &*tx,
                    changed: MemTx::new(),
                };
                // Whatever the lost attempt returned or wrote is discarded.
                let _ = f(&mut scratch);
            }
            f(tx)
        }))
    }

    fn read_boxed(&self, f: ReadFn) -> BoxFuture<'_, AnyResult> {
        self.inner.read_boxed(f)
    }

    fn close(&self) -> BoxFuture<'_, Result<()>> {
        self.inner.close()
    }
}

/// The transaction's state as the lost attempt sees it: a private copy of each table it
/// changes, read-through for the others.
struct Scratch<'a> {
    base: &'a dyn Tx,
    changed: MemTx,
}

impl Scratch<'_> {
    fn copy(&mut self, table: Table) -> Result<()> {
        if !self.changed.tables.contains_key(&table) {
            let all = self.base.scan(table, &[], &[], usize::MAX)?;
            self.changed.tables.insert(table, all.into_iter().collect());
        }
        Ok(())
    }
}

impl View for Scratch<'_> {
    fn get(&self, table: Table, key: &[u8]) -> Result<Option<Vec<u8>>> {
        if self.changed.tables.contains_key(&table) {
            self.changed.get(table, key)
        } else {
            self.base.get(table, key)
        }
    }

    fn scan(&self, table: Table, from: &[u8], to: &[u8], limit: usize) -> Result<Vec<Pair>> {
        if self.changed.tables.contains_key(&table) {
            self.changed.scan(table, from, to, limit)
        } else {
            self.base.scan(table, from, to, limit)
        }
    }
}

impl Tx for Scratch<'_> {
    fn put(&mut self, table: Table, key: &[u8], value: &[u8]) -> Result<()> {
        self.copy(table)?;
        self.changed.put(table, key, value)
    }

    fn delete(&mut self, table: Table, key: &[u8]) -> Result<()> {
        self.copy(table)?;
        self.changed.delete(table, key)
    }
}

// ---------------------------------------------------------------------------------------
// The scenario: login, enroll, register, create, join (and a refused join), ready, route, a plain
// mailbox append, ack, completion, a sweep. Every input is fixed, so two runs can be compared.
// ---------------------------------------------------------------------------------------

/// What each step answered, in order, as text (the answers have different types).
type Answers = Vec<String>;

struct Keys {
    alice: [u8; 32],
    bob: [u8; 32],
    coordinator: [u8; 32],
}

fn answer<T: std::fmt::Debug>(answers: &mut Answers, step: &str, r: Result<T>) -> Result<T> {
    answers.push(format!("{step}: {r:?}"));
    r
}

async fn login(
    store: &dyn Store,
    answers: &mut Answers,
    party: &'static str,
    secret: [u8; 32],
    coordinator_public: [u8; 32],
    n: u8,
) -> Result<Principal> {
    let key = IdentityKey::from_bytes(&secret);
    let public = key.public();
    let mut random = [n; 64];
    random[0] = 0x40;
    let ch = store
        .write(move |tx| {
            identity::issue_challenge(tx, party, &public, random, T0, &Limits::default())
        })
        .await;
    let ch = answer(answers, "challenge", ch)?;
    let sig = key.sign(LOGIN_DOMAIN, &login_message(&ch.challenge, party));
    let token: Result<IssuedToken> = store
        .write(move |tx| {
            identity::login(
                tx,
                &ch.challenge_id,
                party,
                &public,
                &sig,
                [n; 32],
                &[coordinator_public],
                T0 + 1,
                &Limits::default(),
            )
        })
        .await;
    let token = answer(answers, "login", token)?;
    Ok(token.principal)
}

async fn scenario(store: &dyn Store, keys: &Keys) -> Result<Answers> {
    let mut a = Vec::new();
    let limits = Limits::default();
    let coord_public = IdentityKey::from_bytes(&keys.coordinator).public();
    let coord = login(store, &mut a, "coord", keys.coordinator, coord_public, 3).await?;
    for (party, secret) in [("alice", keys.alice), ("bob", keys.bob)] {
        let (c, public) = (coord.clone(), IdentityKey::from_bytes(&secret).public());
        let r = store
            .write(move |tx| enrollment::enroll(tx, &c, party, &public, "", T0))
            .await;
        answer(&mut a, "enroll", r)?;
    }
    let alice = login(store, &mut a, "alice", keys.alice, coord_public, 1).await?;
    let bob = login(store, &mut a, "bob", keys.bob, coord_public, 2).await?;
    for p in [&alice, &bob] {
        let p = p.clone();
        let r = store
            .write(move |tx| identity::register(tx, &p, &p.id, "persistent", "1", None, T0 + 2))
            .await;
        answer(&mut a, "register", r)?;
    }

    let c = coord.clone();
    let l = limits.clone();
    let created = store
        .write(move |tx| {
            let req = CreateRequest {
                session_type: "keygen".into(),
                n: 2,
                t: 2,
                parties: vec!["alice".into(), "bob".into()],
                idempotency_key: "retry-test".into(),
                ..CreateRequest::default()
            };
            let mut n = 0u8;
            let mut entropy = |b: &mut [u8]| {
                n += 1;
                b.fill(n);
            };
            session::create(tx, &c, req, &mut entropy, T0 + 3, &l)
        })
        .await;
    let made = answer(&mut a, "create", created)?;
    let s: Session = made.session;
    let tokens = made.join_tokens;

    for p in [&alice, &bob] {
        let (who, sid, l) = (p.clone(), s.id.clone(), limits.clone());
        let refused = store
            .write(move |tx| {
                session::join(tx, &who, &sid, &who.id, "not-the-token", None, T0 + 4, &l)
            })
            .await;
        if refused.as_ref().map_err(|e| e.kind) != Err(ErrorKind::PermissionDenied) {
            return Err(Error::internal(format!("a wrong join token: {refused:?}")));
        }
        // Recorded, not propagated: the refusal is the expected answer.
        let _ = answer(&mut a, "join with a wrong token", refused);
        let token = tokens
            .iter()
            .find(|(party, _)| *party == p.id)
            .map(|(_, t)| t.clone())
            .unwrap_or_default();
        let (p, sid, l) = (p.clone(), s.id.clone(), limits.clone());
        let joined = store
            .write(move |tx| session::join(tx, &p, &sid, &p.id, &token, None, T0 + 5, &l))
            .await;
        answer(&mut a, "join", joined)?;
    }
    for p in [&alice, &bob] {
        let (p, sid, l) = (p.clone(), s.id.clone(), limits.clone());
        let ready = store
            .write(move |tx| session::mark_ready(tx, &p, &sid, &p.id, T0 + 6, &l))
            .await;
        answer(&mut a, "ready", ready)?;
    }

    let (p, sid, l) = (alice.clone(), s.id.clone(), limits.clone());
    let routed = store
        .write(move |tx| {
            let req = RouteRequest {
                session_id: sid.clone(),
                from_party: "alice".into(),
                to_parties: vec!["bob".into()],
                round: 1,
                message_type: "r1".into(),
                payload: b"round one".to_vec().into(),
            };
            session::route(tx, &p, &req, [0x11; 16], T0 + 7, &l)
        })
        .await;
    answer(&mut a, "route", routed)?;

    let inbox = MailboxAddr::new("carol", b"inbox".to_vec());
    let appended = store
        .write({
            let inbox = inbox.clone();
            move |tx| {
                let out = Outgoing {
                    sender: "alice".into(),
                    session_id: String::new(),
                    round: 0,
                    message_type: "note".into(),
                    is_broadcast: false,
                    payload: vec![1, 2, 3].into(),
                    expires_at: T0 + 60_000,
                };
                mailbox::append(
                    tx,
                    out,
                    std::slice::from_ref(&inbox),
                    [0x22; 16],
                    T0 + 8,
                    10,
                )
            }
        })
        .await;
    answer(&mut a, "append", appended)?;
    let bob_box = MailboxAddr::session("bob", &s.id);
    let acked = store
        .write(move |tx| mailbox::ack_up_to(tx, &bob_box, 1, T0 + 9))
        .await;
    answer(&mut a, "ack", acked)?;

    for p in [&alice, &bob] {
        let (p, sid, l) = (p.clone(), s.id.clone(), limits.clone());
        let reported = store
            .write(move |tx| {
                let report = Report {
                    public_key: vec![9; 32],
                    signature: vec![8; 64],
                };
                session::report_completion(tx, &p, &sid, &p.id, report, T0 + 10, &l)
            })
            .await;
        answer(&mut a, "report", reported)?;
    }
    let swept = store
        .write(move |tx| {
            let out = session::sweep(tx, T0 + 11, &Limits::default(), 256)?;
            identity::sweep_credentials(tx, T0 + 11, 256)?;
            Ok((out.expired, out.stalled, out.purged))
        })
        .await;
    answer(&mut a, "sweep", swept)?;
    Ok(a)
}

/// Every table, with what differs between any two runs taken out: session events get
/// random message ids (UUIDv7), so messages are compared by count and mailbox entries
/// without their message id.
async fn dump(store: &dyn Store) -> Result<BTreeMap<Table, Vec<Pair>>> {
    let mut tables = store
        .read(|v| {
            Table::ALL
                .iter()
                .map(|t| Ok((*t, v.scan(*t, &[], &[], usize::MAX)?)))
                .collect::<Result<BTreeMap<_, _>>>()
        })
        .await?;
    for t in [Table::Messages, Table::Payloads] {
        if let Some(messages) = tables.get_mut(&t) {
            let count = messages.len();
            messages.retain(|(id, _)| id[..] == [0x11; 16] || id[..] == [0x22; 16]);
            messages.push((b"count".to_vec(), count.to_be_bytes().to_vec()));
        }
    }
    if let Some(entries) = tables.get_mut(&Table::Mailbox) {
        for (_, raw) in entries.iter_mut() {
            let mut entry: Entry = decode(raw)?;
            entry.message_id = [0; 16];
            *raw = format!("{entry:?}").into_bytes();
        }
    }
    Ok(tables)
}

/// Runs the scenario once on `plain` and through [`RetryingStore`] on `retried` (two fresh
/// stores of the same kind) and compares answers and state.
async fn retried_rules_match_run_once(
    plain: Arc<dyn Store>,
    retried: Arc<dyn Store>,
) -> TestResult {
    let keys = Keys {
        alice: IdentityKey::generate().to_bytes(),
        bob: IdentityKey::generate().to_bytes(),
        coordinator: IdentityKey::generate().to_bytes(),
    };
    let retried = RetryingStore { inner: retried };
    let once = scenario(plain.as_ref(), &keys).await?;
    let twice = scenario(&retried, &keys).await?;
    assert_eq!(once.len(), twice.len());
    for (a, b) in once.iter().zip(&twice) {
        assert_eq!(a, b);
    }
    assert!(
        once.iter().any(|s| s.starts_with("report: Ok((true")),
        "the session completed: {once:#?}"
    );
    let (a, b) = (dump(plain.as_ref()).await?, dump(&retried).await?);
    for t in Table::ALL {
        assert_eq!(a.get(&t), b.get(&t), "table {}", t.name());
    }
    assert!(
        a.get(&Table::Tokens).is_some_and(|t| t.len() == 3),
        "three logins, three tokens"
    );
    plain.close().await?;
    retried.close().await?;
    Ok(())
}

#[tokio::test]
async fn rules_run_twice_on_a_mem_store_match_run_once() -> TestResult {
    retried_rules_match_run_once(Arc::new(MemStore::new()), Arc::new(MemStore::new())).await
}

fn sqlite(dir: &tempfile::TempDir, name: &str) -> Result<Arc<dyn Store>> {
    let options = StoreOptions {
        durability: Durability::Normal,
        ..StoreOptions::default()
    };
    Ok(Arc::new(SqliteStore::open(
        &dir.path().join(name),
        options,
    )?))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rules_run_twice_on_a_sqlite_store_match_run_once() -> TestResult {
    let dir = tempfile::tempdir()?;
    retried_rules_match_run_once(sqlite(&dir, "once.sqlite")?, sqlite(&dir, "twice.sqlite")?).await
}

/// The retrying wrapper is itself a store that keeps the port's contract, so the
/// comparison above is between two valid stores.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_retrying_store_keeps_the_port_contract() -> TestResult {
    conformance::run_all(Arc::new(RetryingStore {
        inner: Arc::new(MemStore::new()),
    }))
    .await?;
    Ok(())
}
