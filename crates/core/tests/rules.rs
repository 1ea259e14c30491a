//! The core's rules over the in-memory transaction: no runtime, no sockets.

use std::collections::HashMap;

use cohort_core::enrollment;
use cohort_core::identity::{self, Principal};
use cohort_core::mailbox::{self, DeliveryStatus, MailboxAddr};
use cohort_core::session::{self, CreateRequest, Report, RouteRequest, SessionStatus};
use cohort_core::store::MemTx;
use cohort_core::{ErrorKind, Limits};
use cohort_crypto::identity::{login_message, IdentityKey, LOGIN_DOMAIN};

const T0: i64 = 1_700_000_000_000;

struct World {
    tx: MemTx,
    limits: Limits,
    coordinator_key: IdentityKey,
    counter: u8,
    /// Join tokens as creation handed them out, by `session id/party id`.
    tokens: HashMap<String, String>,
}

impl World {
    fn new() -> Self {
        World {
            tx: MemTx::new(),
            limits: Limits::default(),
            coordinator_key: IdentityKey::generate(),
            counter: 0,
            tokens: HashMap::new(),
        }
    }

    fn random64(&mut self) -> [u8; 64] {
        self.counter += 1;
        let mut r = [self.counter; 64];
        r[0] = self.counter.wrapping_mul(7);
        r
    }

    fn login(
        &mut self,
        party: &str,
        key: &IdentityKey,
        now: i64,
    ) -> cohort_core::Result<Principal> {
        let r = self.random64();
        let ch =
            identity::issue_challenge(&mut self.tx, party, &key.public(), r, now, &self.limits)?;
        let sig = key.sign(LOGIN_DOMAIN, &login_message(&ch.challenge, party));
        let token = [self.counter; 32];
        let coord = [self.coordinator_key.public()];
        let issued = identity::login(
            &mut self.tx,
            &ch.challenge_id,
            party,
            &key.public(),
            &sig,
            token,
            &coord,
            now,
            &self.limits,
        )?;
        identity::authenticate(&self.tx, &issued.access_token, now)
    }

    /// Enrolls `name` to a fresh key (as the coordinator), logs it in and registers it.
    fn party(&mut self, name: &str) -> Principal {
        let k = IdentityKey::generate();
        let coord = self.coordinator();
        enrollment::enroll(&mut self.tx, &coord, name, &k.public(), "", T0).unwrap();
        let p = self.login(name, &k, T0).unwrap();
        identity::register(&mut self.tx, &p, name, "persistent", "1.0", None, T0).unwrap();
        p
    }

    fn coordinator(&mut self) -> Principal {
        let k = IdentityKey::from_bytes(&self.coordinator_key.to_bytes());
        self.login("coordinator", &k, T0).unwrap()
    }

    fn session(&mut self, coord: &Principal, parties: &[&str], t: i32) -> session::Session {
        let req = CreateRequest {
            session_type: "keygen".into(),
            n: parties.len() as i32,
            t,
            parties: parties.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        };
        let mut n = 0u8;
        let mut entropy = |b: &mut [u8]| {
            n += 1;
            b.fill(n)
        };
        let made =
            session::create(&mut self.tx, coord, req, &mut entropy, T0, &self.limits).unwrap();
        for (party, token) in made.join_tokens {
            self.tokens
                .insert(format!("{}/{party}", made.session.id), token);
        }
        made.session
    }

    /// The join token `party` was given for session `s`.
    fn token(&self, s: &session::Session, party: &str) -> String {
        self.tokens[&format!("{}/{party}", s.id)].clone()
    }
}

fn route(
    w: &mut World,
    who: &Principal,
    sid: &str,
    to: &[&str],
    round: i32,
    payload: &[u8],
) -> cohort_core::Result<[u8; 16]> {
    let req = RouteRequest {
        session_id: sid.into(),
        from_party: who.id.clone(),
        to_parties: to.iter().map(|s| s.to_string()).collect(),
        round,
        message_type: "r".into(),
        payload: payload.to_vec().into(),
    };
    let id = mailbox::new_message_id(T0);
    session::route(&mut w.tx, who, &req, id, T0 + 1, &w.limits).map(|(m, _)| m.id)
}

#[test]
fn party_id_is_bound_to_its_first_key_under_open_enrollment() {
    let mut w = World::new();
    w.limits.open_enrollment = true;
    let k1 = IdentityKey::generate();
    let k2 = IdentityKey::generate();
    w.login("alice", &k1, T0).unwrap();
    let e = w.login("alice", &k2, T0).unwrap_err();
    assert_eq!(e.kind, ErrorKind::PermissionDenied);
    assert!(
        w.login("alice", &k1, T0).is_ok(),
        "the bound key logs in again"
    );
}

#[test]
fn challenge_is_single_use_and_expires() {
    let mut w = World::new();
    // About challenges and tokens, not about who may take an id.
    w.limits.open_enrollment = true;
    let k = IdentityKey::generate();
    let ch =
        identity::issue_challenge(&mut w.tx, "bob", &k.public(), [3; 64], T0, &w.limits).unwrap();
    let sig = k.sign(LOGIN_DOMAIN, &login_message(&ch.challenge, "bob"));
    identity::login(
        &mut w.tx,
        &ch.challenge_id,
        "bob",
        &k.public(),
        &sig,
        [1; 32],
        &[],
        T0,
        &w.limits,
    )
    .unwrap();
    let again = identity::login(
        &mut w.tx,
        &ch.challenge_id,
        "bob",
        &k.public(),
        &sig,
        [2; 32],
        &[],
        T0,
        &w.limits,
    );
    assert_eq!(again.unwrap_err().kind, ErrorKind::Unauthenticated);

    let ch =
        identity::issue_challenge(&mut w.tx, "bob", &k.public(), [4; 64], T0, &w.limits).unwrap();
    let sig = k.sign(LOGIN_DOMAIN, &login_message(&ch.challenge, "bob"));
    let late = identity::login(
        &mut w.tx,
        &ch.challenge_id,
        "bob",
        &k.public(),
        &sig,
        [5; 32],
        &[],
        T0 + 60_001,
        &w.limits,
    );
    assert_eq!(late.unwrap_err().kind, ErrorKind::Unauthenticated);
}

#[test]
fn wrong_signature_is_refused() {
    let mut w = World::new();
    let k = IdentityKey::generate();
    let other = IdentityKey::generate();
    let ch =
        identity::issue_challenge(&mut w.tx, "carol", &k.public(), [9; 64], T0, &w.limits).unwrap();
    let sig = other.sign(LOGIN_DOMAIN, &login_message(&ch.challenge, "carol"));
    let e = identity::login(
        &mut w.tx,
        &ch.challenge_id,
        "carol",
        &k.public(),
        &sig,
        [1; 32],
        &[],
        T0,
        &w.limits,
    )
    .unwrap_err();
    assert_eq!(e.kind, ErrorKind::Unauthenticated);
}

#[test]
fn token_expires_and_unknown_token_is_refused() {
    let mut w = World::new();
    // About challenges and tokens, not about who may take an id.
    w.limits.open_enrollment = true;
    let k = IdentityKey::generate();
    let ch =
        identity::issue_challenge(&mut w.tx, "dan", &k.public(), [7; 64], T0, &w.limits).unwrap();
    let sig = k.sign(LOGIN_DOMAIN, &login_message(&ch.challenge, "dan"));
    let t = identity::login(
        &mut w.tx,
        &ch.challenge_id,
        "dan",
        &k.public(),
        &sig,
        [8; 32],
        &[],
        T0,
        &w.limits,
    )
    .unwrap();
    assert_eq!(t.access_token.len(), 64);
    assert_eq!(
        identity::authenticate(&w.tx, &t.access_token, T0)
            .unwrap()
            .id,
        "dan"
    );
    let expired = identity::authenticate(&w.tx, &t.access_token, T0 + w.limits.token_ttl_ms + 1);
    assert_eq!(expired.unwrap_err().kind, ErrorKind::Unauthenticated);
    let unknown = identity::authenticate(&w.tx, &"ab".repeat(32), T0);
    assert_eq!(unknown.unwrap_err().kind, ErrorKind::Unauthenticated);
    assert_eq!(
        identity::authenticate(&w.tx, "nothex", T0)
            .unwrap_err()
            .kind,
        ErrorKind::Unauthenticated
    );
}

#[test]
fn online_filter_uses_the_heartbeat_window() {
    let mut w = World::new();
    let a = w.party("a");
    w.party("b");
    identity::heartbeat(&mut w.tx, &a, "a", T0 + 40_000).unwrap();
    let online = identity::list_parties(&w.tx, "", true, T0 + 45_000, &w.limits).unwrap();
    assert_eq!(
        online.iter().map(|p| p.id.as_str()).collect::<Vec<_>>(),
        ["a"]
    );
    let all = identity::list_parties(&w.tx, "persistent", false, T0 + 45_000, &w.limits).unwrap();
    assert_eq!(all.len(), 2);
    assert!(
        identity::list_parties(&w.tx, "delegate", false, T0, &w.limits)
            .unwrap()
            .is_empty()
    );
}

#[test]
fn only_coordinators_create_sessions_and_thresholds_are_checked() {
    let mut w = World::new();
    let a = w.party("a");
    w.party("b");
    let req = CreateRequest {
        session_type: "keygen".into(),
        n: 2,
        t: 2,
        parties: vec!["a".into(), "b".into()],
        ..Default::default()
    };
    let mut e = |b: &mut [u8]| b.fill(1);
    let err = session::create(&mut w.tx, &a, req.clone(), &mut e, T0, &w.limits).unwrap_err();
    assert_eq!(err.kind, ErrorKind::PermissionDenied);
    let c = w.coordinator();
    for (n, t) in [(2, 3), (2, 0), (1001, 2)] {
        let bad = CreateRequest {
            n,
            t,
            ..req.clone()
        };
        let err = session::create(&mut w.tx, &c, bad, &mut e, T0, &w.limits).unwrap_err();
        assert_eq!(err.kind, ErrorKind::InvalidArgument, "n={n} t={t}");
        assert!(err.message.contains("threshold"));
    }
    let unknown = CreateRequest {
        parties: vec!["a".into(), "zed".into()],
        ..req
    };
    assert_eq!(
        session::create(&mut w.tx, &c, unknown, &mut e, T0, &w.limits)
            .unwrap_err()
            .kind,
        ErrorKind::NotFound
    );
}

#[test]
fn idempotency_key_returns_the_first_session() {
    let mut w = World::new();
    w.party("a");
    w.party("b");
    let c = w.coordinator();
    let req = CreateRequest {
        session_type: "keygen".into(),
        n: 2,
        t: 1,
        parties: vec!["a".into(), "b".into()],
        idempotency_key: "k1".into(),
        ..Default::default()
    };
    let mut n = 0u8;
    let mut e = |b: &mut [u8]| {
        n += 1;
        b.fill(n)
    };
    let first = session::create(&mut w.tx, &c, req.clone(), &mut e, T0, &w.limits).unwrap();
    let again = session::create(&mut w.tx, &c, req, &mut e, T0, &w.limits).unwrap();
    assert!(first.created && !again.created);
    assert_eq!(first.session.id, again.session.id);
    assert_eq!(first.join_tokens.len(), 2);
    assert!(
        again.join_tokens.is_empty(),
        "tokens are handed out once; the session keeps only their hashes"
    );
    assert!(
        again.wakeups.is_empty(),
        "a replay publishes no second session_created"
    );
}

#[test]
fn full_session_lifecycle_completes_when_reports_agree() {
    let mut w = World::new();
    let (a, b, c3) = (w.party("a"), w.party("b"), w.party("c"));
    let coord = w.coordinator();
    let s = w.session(&coord, &["a", "b", "c"], 2);

    // Each party got a session_created event carrying only its own token.
    let evs = mailbox::pending(&w.tx, &MailboxAddr::events("a"), 0, 10).unwrap();
    let ev: session::SessionEvent = cohort_core::codec::decode(&evs[0].message.payload).unwrap();
    assert_eq!(ev.event_type, "session_created");
    assert_eq!(ev.join_tokens, vec![("a".to_string(), w.token(&s, "a"))]);

    let b_token = w.token(&s, "b");
    let wrong = session::join(&mut w.tx, &a, &s.id, "a", &b_token, None, T0, &w.limits);
    assert_eq!(wrong.unwrap_err().kind, ErrorKind::PermissionDenied);
    for p in [&a, &b, &c3] {
        let tok = w.token(&s, &p.id);
        session::join(&mut w.tx, p, &s.id, &p.id, &tok, None, T0, &w.limits).unwrap();
    }
    assert!(
        !session::mark_ready(&mut w.tx, &a, &s.id, "a", T0, &w.limits)
            .unwrap()
            .0
    );
    assert!(
        !session::mark_ready(&mut w.tx, &b, &s.id, "b", T0, &w.limits)
            .unwrap()
            .0
    );
    assert!(
        session::mark_ready(&mut w.tx, &c3, &s.id, "c", T0, &w.limits)
            .unwrap()
            .0
    );
    assert_eq!(
        session::status(&w.tx, &a, &s.id).unwrap().status,
        SessionStatus::InProgress
    );

    // Broadcast reaches the two others; point-to-point only its recipient.
    route(&mut w, &a, &s.id, &[], 1, b"bcast").unwrap();
    route(&mut w, &a, &s.id, &["c"], 2, b"p2p").unwrap();
    let got_b = mailbox::pending(&w.tx, &MailboxAddr::session("b", &s.id), 0, 10).unwrap();
    let got_c = mailbox::pending(&w.tx, &MailboxAddr::session("c", &s.id), 0, 10).unwrap();
    assert_eq!(
        got_b
            .iter()
            .map(|d| d.message.payload.clone())
            .collect::<Vec<_>>(),
        vec![b"bcast".to_vec()]
    );
    assert_eq!(
        got_c
            .iter()
            .map(|d| d.message.payload.clone())
            .collect::<Vec<_>>(),
        vec![b"bcast".to_vec(), b"p2p".to_vec()]
    );
    assert!(got_b[0].message.is_broadcast && !got_c[1].message.is_broadcast);
    assert_eq!(got_c[0].seq + 1, got_c[1].seq);

    let report = Report {
        public_key: vec![7; 32],
        signature: vec![],
    };
    for p in [&a, &b] {
        let (all, _) =
            session::report_completion(&mut w.tx, p, &s.id, &p.id, report.clone(), T0, &w.limits)
                .unwrap();
        assert!(!all);
    }
    let (all, _) =
        session::report_completion(&mut w.tx, &c3, &s.id, "c", report, T0, &w.limits).unwrap();
    assert!(all);
    let done = session::status(&w.tx, &a, &s.id).unwrap();
    assert_eq!(done.status, SessionStatus::Completed);
    assert_eq!(done.public_key, vec![7; 32]);
    // A closed session takes no new messages.
    assert_eq!(
        route(&mut w, &a, &s.id, &[], 3, b"late").unwrap_err().kind,
        ErrorKind::FailedPrecondition
    );
}

#[test]
fn disagreeing_reports_fail_the_session() {
    let mut w = World::new();
    let (a, b) = (w.party("a"), w.party("b"));
    let coord = w.coordinator();
    let s = w.session(&coord, &["a", "b"], 2);
    for p in [&a, &b] {
        let tok = w.token(&s, &p.id);
        session::join(&mut w.tx, p, &s.id, &p.id, &tok, None, T0, &w.limits).unwrap();
    }
    let r = |k: u8| Report {
        public_key: vec![k; 32],
        signature: vec![],
    };
    session::report_completion(&mut w.tx, &a, &s.id, "a", r(1), T0, &w.limits).unwrap();
    session::report_completion(&mut w.tx, &b, &s.id, "b", r(2), T0, &w.limits).unwrap();
    let st = session::status(&w.tx, &a, &s.id).unwrap();
    assert_eq!(st.status, SessionStatus::Failed);
    assert!(
        st.failure_reason.contains("b disagree"),
        "{}",
        st.failure_reason
    );
}

#[test]
fn non_members_may_not_send_or_receive() {
    let mut w = World::new();
    let (a, _b, outsider) = (w.party("a"), w.party("b"), w.party("x"));
    let coord = w.coordinator();
    let s = w.session(&coord, &["a", "b"], 1);
    assert_eq!(
        route(&mut w, &outsider, &s.id, &[], 1, b"")
            .unwrap_err()
            .kind,
        ErrorKind::PermissionDenied
    );
    assert_eq!(
        route(&mut w, &a, &s.id, &["x"], 1, b"").unwrap_err().kind,
        ErrorKind::PermissionDenied
    );
    assert_eq!(
        session::status(&w.tx, &outsider, &s.id).unwrap_err().kind,
        ErrorKind::PermissionDenied
    );
    // Claiming to be another party is refused.
    let forged = RouteRequest {
        session_id: s.id.clone(),
        from_party: "b".into(),
        to_parties: vec![],
        round: 1,
        message_type: "r".into(),
        payload: Default::default(),
    };
    let e = session::route(&mut w.tx, &a, &forged, [0; 16], T0, &w.limits).unwrap_err();
    assert_eq!(e.kind, ErrorKind::PermissionDenied);
}

#[test]
fn ack_settles_and_status_reports_all_acknowledged() {
    let mut w = World::new();
    let (a, b, c) = (w.party("a"), w.party("b"), w.party("c"));
    let coord = w.coordinator();
    let s = w.session(&coord, &["a", "b", "c"], 2);
    let id = route(&mut w, &a, &s.id, &[], 1, b"m").unwrap();
    let msg = mailbox::get_message(&w.tx, &id).unwrap().unwrap();
    assert_eq!(msg.recipients.len(), 2);
    let (addr_b, seq_b) = msg
        .recipients
        .iter()
        .find(|(m, _)| m.owner == "b")
        .unwrap()
        .clone();
    mailbox::mark_delivered(&mut w.tx, &addr_b, &[seq_b], T0).unwrap();
    mailbox::mark_delivered(&mut w.tx, &addr_b, &[seq_b], T0).unwrap();
    let e = mailbox::entry(&w.tx, &addr_b, seq_b).unwrap().unwrap();
    assert_eq!((e.status, e.retry_count), (DeliveryStatus::Delivered, 1));
    mailbox::settle(&mut w.tx, &addr_b, seq_b, true, "", T0).unwrap();
    assert!(mailbox::pending(&w.tx, &addr_b, 0, 10).unwrap().is_empty());
    let addr_c = MailboxAddr::session("c", &s.id);
    assert_eq!(mailbox::pending_count(&w.tx, &addr_c).unwrap(), 1);
    assert_eq!(mailbox::ack_up_to(&mut w.tx, &addr_c, 100, T0).unwrap(), 1);
    assert_eq!(mailbox::pending_count(&w.tx, &addr_c).unwrap(), 0);
    let _ = (b, c);
}

#[test]
fn ack_up_to_removes_only_up_to_seq() {
    let mut tx = MemTx::new();
    let addr = MailboxAddr::new("q", b"ch".to_vec());
    for i in 0..5u8 {
        let out = mailbox::Outgoing {
            sender: "s".into(),
            session_id: String::new(),
            round: 0,
            message_type: String::new(),
            is_broadcast: false,
            payload: vec![i].into(),
            expires_at: T0 + 1000,
        };
        mailbox::append(&mut tx, out, std::slice::from_ref(&addr), [i; 16], T0, 100).unwrap();
    }
    assert_eq!(mailbox::ack_up_to(&mut tx, &addr, 3, T0).unwrap(), 3);
    let left: Vec<u64> = mailbox::pending(&tx, &addr, 0, 10)
        .unwrap()
        .iter()
        .map(|d| d.seq)
        .collect();
    assert_eq!(left, vec![4, 5]);
    let after4: Vec<u64> = mailbox::pending(&tx, &addr, 4, 10)
        .unwrap()
        .iter()
        .map(|d| d.seq)
        .collect();
    assert_eq!(after4, vec![5]);
}

#[test]
fn mailbox_depth_quota_is_enforced() {
    let mut tx = MemTx::new();
    let addr = MailboxAddr::new("q", vec![]);
    let out = mailbox::Outgoing {
        sender: "s".into(),
        session_id: String::new(),
        round: 0,
        message_type: String::new(),
        is_broadcast: false,
        payload: Default::default(),
        expires_at: 0,
    };
    for i in 0..3u8 {
        mailbox::append(
            &mut tx,
            out.clone(),
            std::slice::from_ref(&addr),
            [i; 16],
            T0,
            3,
        )
        .unwrap();
    }
    let e = mailbox::append(&mut tx, out, std::slice::from_ref(&addr), [9; 16], T0, 3).unwrap_err();
    assert_eq!(e.kind, ErrorKind::ResourceExhausted);
}

#[test]
fn idle_session_expires_and_its_messages_fail() {
    let mut w = World::new();
    let a = w.party("a");
    w.party("b");
    let coord = w.coordinator();
    let s = w.session(&coord, &["a", "b"], 1);
    let id = route(&mut w, &a, &s.id, &["b"], 1, b"undelivered").unwrap();
    let limits = Limits {
        stall_timeout_ms: i64::MAX / 4,
        ..w.limits.clone()
    };
    let out = session::sweep(&mut w.tx, s.expires_at, &limits, 100).unwrap();
    assert_eq!(out.expired, vec![s.id.clone()]);
    assert_eq!(
        session::status(&w.tx, &a, &s.id).unwrap().status,
        SessionStatus::Expired
    );
    let msg = mailbox::get_message(&w.tx, &id).unwrap().unwrap();
    let (addr, seq) = &msg.recipients[0];
    assert_eq!(
        mailbox::entry(&w.tx, addr, *seq).unwrap().unwrap().status,
        DeliveryStatus::Failed
    );
    // After retention the session and its messages are gone.
    let later = session::sweep(
        &mut w.tx,
        s.expires_at + limits.retention_ms + 1,
        &limits,
        100,
    )
    .unwrap();
    assert_eq!(later.purged, vec![s.id.clone()]);
    assert!(mailbox::get_message(&w.tx, &id).unwrap().is_none());
}

#[test]
fn stalled_session_fails_naming_whom_it_waits_for() {
    let mut w = World::new();
    let (a, b) = (w.party("a"), w.party("b"));
    w.party("c");
    let coord = w.coordinator();
    let s = w.session(&coord, &["a", "b", "c"], 2);
    for p in [&a, &b] {
        let tok = w.token(&s, &p.id);
        session::join(&mut w.tx, p, &s.id, &p.id, &tok, None, T0, &w.limits).unwrap();
    }
    let out = session::sweep(&mut w.tx, T0 + 61_000, &w.limits, 100).unwrap();
    assert_eq!(out.stalled, vec![s.id.clone()]);
    let st = session::status(&w.tx, &a, &s.id).unwrap();
    assert_eq!(st.status, SessionStatus::Failed);
    assert_eq!(st.waiting_for, vec!["c".to_string()]);
    assert!(
        st.failure_reason.contains("waiting for c"),
        "{}",
        st.failure_reason
    );
}

#[test]
fn offline_participant_extends_the_stall_timeout() {
    let mut w = World::new();
    let a = w.party("a");
    identity::register(
        &mut w.tx,
        &a,
        "a",
        "persistent",
        "1",
        Some(identity::NotificationChannel {
            email: "a@example.org".into(),
            ..Default::default()
        }),
        T0,
    )
    .unwrap();
    w.party("b");
    let coord = w.coordinator();
    let s = w.session(&coord, &["a", "b"], 1);
    let out = session::sweep(&mut w.tx, T0 + 61_000, &w.limits, 100).unwrap();
    assert!(out.stalled.is_empty());
    assert_eq!(
        session::status(&w.tx, &a, &s.id).unwrap().status,
        SessionStatus::Created
    );
}

#[test]
fn delegate_shares_go_only_to_the_creator() {
    let mut w = World::new();
    let a = w.party("a");
    w.party("b");
    let coord = w.coordinator();
    let s = w.session(&coord, &["a", "b"], 1);
    let share = session::DelegateShare {
        party_id: "a".into(),
        encrypted_share: vec![1, 2, 3],
        public_key: vec![4],
        party_index: 1,
    };
    session::submit_delegate_share_to(&mut w.tx, &a, &s.id, share.clone()).unwrap();
    assert_eq!(
        session::delegate_shares(&w.tx, &coord, &s.id).unwrap(),
        vec![share]
    );
    assert_eq!(
        session::delegate_shares(&w.tx, &a, &s.id).unwrap_err().kind,
        ErrorKind::PermissionDenied
    );
}

#[test]
fn publish_needs_coordinator() {
    let mut w = World::new();
    let a = w.party("a");
    let coord = w.coordinator();
    let ev = session::SessionEvent {
        event_id: "e".into(),
        event_type: "custom".into(),
        session_id: String::new(),
        n: 0,
        t: 0,
        selected_parties: vec!["a".into()],
        join_tokens: vec![],
        message_hash: vec![],
        created_at: T0,
        expires_at: 0,
        delegate_share: None,
    };
    assert_eq!(
        session::publish(&mut w.tx, &a, ev.clone(), T0, &w.limits)
            .unwrap_err()
            .kind,
        ErrorKind::PermissionDenied
    );
    let (rcpt, wake) = session::publish(&mut w.tx, &coord, ev, T0, &w.limits).unwrap();
    assert_eq!(rcpt, vec!["a".to_string()]);
    assert_eq!(wake, vec![MailboxAddr::events("a")]);
}

#[test]
fn credential_sweep_reaches_expired_tokens_behind_live_ones() {
    let mut w = World::new();
    // About challenges and tokens, not about who may take an id.
    w.limits.open_enrollment = true;
    let k = IdentityKey::generate();
    // Ten tokens issued at T0 (expiring at T0 + ttl), ten issued a day later.
    for i in 0..20u8 {
        let now = if i < 10 { T0 } else { T0 + 86_400_000 };
        let ch = identity::issue_challenge(&mut w.tx, "eve", &k.public(), [i; 64], now, &w.limits)
            .unwrap();
        let sig = k.sign(LOGIN_DOMAIN, &login_message(&ch.challenge, "eve"));
        identity::login(
            &mut w.tx,
            &ch.challenge_id,
            "eve",
            &k.public(),
            &sig,
            [i; 32],
            &[],
            now,
            &w.limits,
        )
        .unwrap();
    }
    let tokens = |w: &World| {
        w.tx.tables
            .get(&cohort_core::store::Table::Tokens)
            .map_or(0, |t| t.len())
    };
    assert_eq!(tokens(&w), 20);
    // Sweeps of 3 entries at a time, after the first ten expired: all ten go, none other.
    let later = T0 + w.limits.token_ttl_ms + 1;
    for _ in 0..20 {
        identity::sweep_credentials(&mut w.tx, later, 3).unwrap();
    }
    assert_eq!(tokens(&w), 10);
}

#[test]
fn mailbox_with_a_channel_too_long_for_a_key_is_refused() {
    // Two channels that differ only after byte 65,535 once shared one truncated key.
    let mut tx = MemTx::new();
    let mut long = vec![b'c'; 65_536];
    let a = MailboxAddr::new("q", long.clone());
    long[65_535] = b'd';
    let b = MailboxAddr::new("q", long);
    let out = mailbox::Outgoing {
        sender: "s".into(),
        session_id: String::new(),
        round: 0,
        message_type: String::new(),
        is_broadcast: false,
        payload: vec![1].into(),
        expires_at: T0 + 1000,
    };
    for addr in [&a, &b] {
        let e = mailbox::append(
            &mut tx,
            out.clone(),
            std::slice::from_ref(addr),
            [1; 16],
            T0,
            10,
        )
        .unwrap_err();
        assert_eq!(e.kind, ErrorKind::InvalidArgument);
        assert!(e.message.contains("65535"), "{}", e.message);
    }
    assert!(
        tx.tables.values().all(|t| t.is_empty()),
        "nothing was stored"
    );
    // At the limit the channel is kept whole.
    let ok = MailboxAddr::new("q", vec![b'c'; 65_535]);
    mailbox::append(&mut tx, out, std::slice::from_ref(&ok), [2; 16], T0, 10).unwrap();
    assert_eq!(mailbox::pending_count(&tx, &ok).unwrap(), 1);
}

#[test]
fn an_ack_batch_answers_each_ack_and_counts_each_mailbox_once() {
    use cohort_core::delivery::{self, Ack};
    let mut w = World::new();
    let (a, b) = (w.party("a"), w.party("b"));
    let coord = w.coordinator();
    let s = w.session(&coord, &["a", "b"], 2);
    let ids: Vec<_> = (0..3)
        .map(|i| route(&mut w, &a, &s.id, &["b"], 1, &[i]).unwrap())
        .collect();
    let addr_b = MailboxAddr::session("b", &s.id);
    assert_eq!(mailbox::pending_count(&w.tx, &addr_b).unwrap(), 3);
    let ack = |who: &Principal, id: &[u8; 16], party: &str| Ack {
        who: who.clone(),
        message_id: mailbox::message_id_string(id),
        party_id: party.into(),
        session_id: s.id.clone(),
        ok: true,
        error_message: String::new(),
    };
    let batch = [
        ack(&b, &ids[0], "b"),
        ack(&a, &ids[1], "b"), // a acting as b: refused, changes nothing
        ack(&b, &ids[2], "b"),
        ack(&b, &ids[0], "b"), // again: a no-op that reports the status reached
    ];
    let out = delivery::acknowledge_batch(&mut w.tx, &batch, T0).unwrap();
    assert_eq!(out.len(), 4);
    assert_eq!(
        out[0].as_ref().unwrap().status,
        DeliveryStatus::Acknowledged
    );
    assert_eq!(
        out[1].as_ref().unwrap_err().kind,
        ErrorKind::PermissionDenied
    );
    assert_eq!(out[2].as_ref().unwrap().seq, 3);
    assert_eq!(
        out[3].as_ref().unwrap().status,
        DeliveryStatus::Acknowledged
    );
    assert_eq!(mailbox::pending_count(&w.tx, &addr_b).unwrap(), 1);
    let left = mailbox::pending(&w.tx, &addr_b, 0, 10).unwrap();
    assert_eq!(left.len(), 1);
    assert_eq!(left[0].message.id, ids[1]);
}
