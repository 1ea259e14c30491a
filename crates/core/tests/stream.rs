//! The streaming API's rules (`cohort_core::stream`) over the in-memory transaction.

use cohort_core::identity::{self, Party, Principal};
use cohort_core::mailbox::{self, DeliveryStatus, MailboxAddr, MessageId};
use cohort_core::session::{self, CreateRequest, RouteRequest};
use cohort_core::store::{MemTx, Table, View};
use cohort_core::stream::{self, SendItem, Sent};
use cohort_core::{ErrorKind, Limits};

const T0: i64 = 1_700_000_000_000;

fn party(id: &str) -> Principal {
    Principal {
        id: id.into(),
        coordinator: false,
        identity_key: [1; 32],
    }
}

/// A session of `parties` (registered directly in the directory), created by a coordinator.
fn session(tx: &mut MemTx, parties: &[&str], limits: &Limits) -> String {
    for p in parties {
        identity::put_party(
            tx,
            &Party {
                id: p.to_string(),
                identity_key: vec![1; 32],
                role: "persistent".into(),
                version: "1".into(),
                notification: None,
                registered_at: T0,
                last_seen_at: T0,
                encryption_key: None,
            },
        )
        .unwrap();
    }
    let coordinator = Principal {
        id: "coordinator".into(),
        coordinator: true,
        identity_key: [9; 32],
    };
    let req = CreateRequest {
        session_type: "keygen".into(),
        n: parties.len() as i32,
        t: 1,
        parties: parties.iter().map(|s| s.to_string()).collect(),
        ..Default::default()
    };
    // Each session gets its own id.
    static SESSIONS: std::sync::atomic::AtomicU8 = std::sync::atomic::AtomicU8::new(1);
    let seed = SESSIONS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let mut entropy = |b: &mut [u8]| b.fill(seed);
    session::create(tx, &coordinator, req, &mut entropy, T0, limits)
        .unwrap()
        .session
        .id
}

fn item(client_id: &str, sid: &str, from: &str, to: &[&str], payload: &[u8]) -> SendItem {
    SendItem {
        client_id: client_id.into(),
        route: RouteRequest {
            session_id: sid.into(),
            from_party: from.into(),
            to_parties: to.iter().map(|s| s.to_string()).collect(),
            round: 1,
            message_type: "m".into(),
            payload: payload.to_vec().into(),
        },
    }
}

fn ids(n: u8) -> Vec<MessageId> {
    (1..=n).map(|i| [i; 16]).collect()
}

fn pending_seqs(tx: &MemTx, addr: &MailboxAddr) -> Vec<u64> {
    mailbox::pending(tx, addr, 0, 100)
        .unwrap()
        .iter()
        .map(|d| d.seq)
        .collect()
}

#[test]
fn a_send_retried_with_its_client_id_returns_the_first_message_id_and_stores_nothing() {
    let limits = Limits::default();
    let mut tx = MemTx::new();
    let sid = session(&mut tx, &["a", "b"], &limits);
    let a = party("a");
    let first = stream::send_batch(
        &mut tx,
        &a,
        &[item("c1", &sid, "a", &["b"], b"x")],
        &ids(1),
        T0,
        &limits,
    )
    .unwrap();
    let Sent::Stored(m) = &first[0] else {
        panic!("{first:?}")
    };
    assert_eq!(m.id, [1; 16]);

    // The retry, in a later batch and with a fresh id, and once more within one batch.
    let again = stream::send_batch(
        &mut tx,
        &a,
        &[
            item("c1", &sid, "a", &["b"], b"x"),
            item("c2", &sid, "a", &["b"], b"y"),
            item("c2", &sid, "a", &["b"], b"y"),
        ],
        &[[9; 16], [10; 16], [11; 16]],
        T0,
        &limits,
    )
    .unwrap();
    assert_eq!(again[0], Sent::Duplicate([1; 16]));
    assert!(matches!(&again[1], Sent::Stored(m) if m.id == [10; 16]));
    assert_eq!(again[2], Sent::Duplicate([10; 16]));
    let bob = MailboxAddr::session("b", &sid);
    assert_eq!(pending_seqs(&tx, &bob), vec![1, 2], "one copy of each");
    assert!(mailbox::get_message(&tx, &[9; 16]).unwrap().is_none());
    assert_eq!(
        stream::sent_with(&tx, &sid, "a", "c2").unwrap(),
        Some([10; 16])
    );
    assert_eq!(stream::sent_with(&tx, &sid, "b", "c2").unwrap(), None);
}

#[test]
fn client_ids_are_per_sender() {
    let limits = Limits::default();
    let mut tx = MemTx::new();
    let sid = session(&mut tx, &["a", "b"], &limits);
    let from_a = stream::send_batch(
        &mut tx,
        &party("a"),
        &[item("same", &sid, "a", &["b"], b"x")],
        &ids(1),
        T0,
        &limits,
    )
    .unwrap();
    let from_b = stream::send_batch(
        &mut tx,
        &party("b"),
        &[item("same", &sid, "b", &["a"], b"y")],
        &[[2; 16]],
        T0,
        &limits,
    )
    .unwrap();
    assert!(matches!(&from_a[0], Sent::Stored(_)));
    assert!(matches!(&from_b[0], Sent::Stored(m) if m.id == [2; 16]));
}

#[test]
fn a_refused_item_leaves_nothing_and_the_rest_of_the_batch_commits() {
    let limits = Limits {
        max_mailbox_depth: 1,
        ..Limits::default()
    };
    let mut tx = MemTx::new();
    let sid = session(&mut tx, &["a", "b", "c"], &limits);
    let a = party("a");
    // Fill c's mailbox, so a broadcast to b and c is refused after b's copy was placed.
    let out = stream::send_batch(
        &mut tx,
        &a,
        &[
            item("to-c", &sid, "a", &["c"], b"1"),
            item("both", &sid, "a", &[], b"2"),
            item("bad", &sid, "a", &["nobody"], b"3"),
            item("", &sid, "a", &["b"], b"4"),
            item("to-b", &sid, "a", &["b"], b"5"),
        ],
        &ids(5),
        T0,
        &limits,
    )
    .unwrap();
    assert!(matches!(&out[0], Sent::Stored(_)));
    assert!(
        matches!(&out[1], Sent::Refused(e) if e.kind == ErrorKind::ResourceExhausted),
        "{:?}",
        out[1]
    );
    assert!(matches!(&out[2], Sent::Refused(e) if e.kind == ErrorKind::PermissionDenied));
    assert!(
        matches!(&out[3], Sent::Refused(e) if e.kind == ErrorKind::InvalidArgument && e.message.contains("client_id"))
    );
    assert!(matches!(&out[4], Sent::Stored(m) if m.id == [5; 16]));
    let b = MailboxAddr::session("b", &sid);
    let got = mailbox::pending(&tx, &b, 0, 10).unwrap();
    assert_eq!(got.len(), 1, "the refused broadcast left no copy for b");
    assert_eq!(got[0].message.id, [5; 16]);
    assert_eq!(got[0].seq, 1, "and used no seq");
    assert!(mailbox::get_message(&tx, &[2; 16]).unwrap().is_none());
    assert_eq!(stream::sent_with(&tx, &sid, "a", "both").unwrap(), None);
}

#[test]
fn only_the_sender_itself_may_send() {
    let limits = Limits::default();
    let mut tx = MemTx::new();
    let sid = session(&mut tx, &["a", "b"], &limits);
    let out = stream::send_batch(
        &mut tx,
        &party("b"),
        &[item("c", &sid, "a", &["b"], b"x")],
        &ids(1),
        T0,
        &limits,
    )
    .unwrap();
    assert!(matches!(&out[0], Sent::Refused(e) if e.kind == ErrorKind::PermissionDenied));
}

#[test]
fn cumulative_ack_settles_exactly_up_to_the_seq() {
    let limits = Limits::default();
    let mut tx = MemTx::new();
    let sid = session(&mut tx, &["a", "b"], &limits);
    let items: Vec<SendItem> = (0..5)
        .map(|i| item(&format!("c{i}"), &sid, "a", &["b"], &[i]))
        .collect();
    stream::send_batch(&mut tx, &party("a"), &items, &ids(5), T0, &limits).unwrap();
    let bob = MailboxAddr::session("b", &sid);

    let e = stream::ack_up_to(&mut tx, &party("a"), &sid, "b", 5, T0).unwrap_err();
    assert_eq!(e.kind, ErrorKind::PermissionDenied, "only the owner acks");
    assert_eq!(
        stream::ack_up_to(&mut tx, &party("b"), &sid, "b", 3, T0 + 1).unwrap(),
        3
    );
    assert_eq!(pending_seqs(&tx, &bob), vec![4, 5]);
    let third = mailbox::entry(&tx, &bob, 3).unwrap().unwrap();
    assert_eq!(third.status, DeliveryStatus::Acknowledged);
    assert_eq!(third.acknowledged_at, T0 + 1);
    assert_eq!(
        mailbox::entry(&tx, &bob, 4).unwrap().unwrap().status,
        DeliveryStatus::Pending
    );
    assert_eq!(mailbox::pending_count(&tx, &bob).unwrap(), 2);
    assert_eq!(
        stream::ack_up_to(&mut tx, &party("b"), &sid, "b", 3, T0).unwrap(),
        0,
        "acking again settles nothing"
    );
}

#[test]
fn acks_by_id_answer_each_id() {
    let limits = Limits::default();
    let mut tx = MemTx::new();
    let sid = session(&mut tx, &["a", "b", "c"], &limits);
    stream::send_batch(
        &mut tx,
        &party("a"),
        &[
            item("1", &sid, "a", &["b"], b"x"),
            item("2", &sid, "a", &["c"], b"y"),
        ],
        &ids(2),
        T0,
        &limits,
    )
    .unwrap();
    let to_b = mailbox::message_id_string(&[1; 16]);
    let to_c = mailbox::message_id_string(&[2; 16]);
    let out = stream::ack_ids(
        &mut tx,
        &party("b"),
        &[to_b.clone(), to_c, "not-a-uuid".into(), to_b],
        T0,
    )
    .unwrap();
    assert!(out[0].is_ok());
    assert_eq!(
        out[1].as_ref().unwrap_err().kind,
        ErrorKind::PermissionDenied
    );
    assert_eq!(
        out[2].as_ref().unwrap_err().kind,
        ErrorKind::InvalidArgument
    );
    assert!(out[3].is_ok(), "acknowledging twice is not an error");
    assert!(pending_seqs(&tx, &MailboxAddr::session("b", &sid)).is_empty());
    assert_eq!(pending_seqs(&tx, &MailboxAddr::session("c", &sid)), vec![1]);
}

#[test]
fn client_ids_are_purged_with_their_session() {
    let limits = Limits {
        retention_ms: 10,
        ..Limits::default()
    };
    let mut tx = MemTx::new();
    let sid = session(&mut tx, &["a", "b"], &limits);
    stream::send_batch(
        &mut tx,
        &party("a"),
        &[item("c1", &sid, "a", &["b"], b"x")],
        &ids(1),
        T0,
        &limits,
    )
    .unwrap();
    assert_eq!(tx.scan(Table::SendIds, &[], &[], 10).unwrap().len(), 1);
    let expires = session::get(&tx, &sid).unwrap().unwrap().expires_at;
    session::sweep(&mut tx, expires, &limits, 10).unwrap();
    session::sweep(&mut tx, expires + 11, &limits, 10).unwrap();
    assert!(session::get(&tx, &sid).unwrap().is_none(), "purged");
    assert!(tx.scan(Table::SendIds, &[], &[], 10).unwrap().is_empty());
}

#[test]
fn an_ack_batch_answers_each_request_and_a_refusal_leaves_the_others() {
    use cohort_core::stream::{AckRequest, Acked};
    let limits = Limits::default();
    let mut tx = MemTx::new();
    let sid = session(&mut tx, &["a", "b"], &limits);
    let other = session(&mut tx, &["a", "c"], &limits);
    let items: Vec<SendItem> = (0..4)
        .map(|i| item(&format!("c{i}"), &sid, "a", &["b"], &[i]))
        .collect();
    stream::send_batch(&mut tx, &party("a"), &items, &ids(4), T0, &limits).unwrap();
    let fourth = mailbox::message_id_string(&[4; 16]);
    let out = stream::ack_batch(
        &mut tx,
        &party("b"),
        &[
            AckRequest::UpTo {
                session_id: sid.clone(),
                up_to_seq: 2,
            },
            AckRequest::UpTo {
                session_id: other,
                up_to_seq: 9,
            },
            AckRequest::Ids(vec![fourth, "x".into()]),
        ],
        T0,
    )
    .unwrap();
    assert_eq!(
        out[0],
        Ok(Acked {
            settled: 2,
            failures: vec![]
        })
    );
    assert_eq!(
        out[1].as_ref().unwrap_err().kind,
        ErrorKind::PermissionDenied
    );
    let ids_result = out[2].as_ref().unwrap();
    assert_eq!(ids_result.settled, 1);
    assert_eq!(ids_result.failures.len(), 1);
    assert_eq!(ids_result.failures[0].0, "x");
    assert_eq!(pending_seqs(&tx, &MailboxAddr::session("b", &sid)), vec![3]);
}
