//! `cohort.v1.Mailbox` against a real relay (SQLite file in a temp dir, gRPC on 127.0.0.1):
//! idempotent sends across a dropped connection and a restart, credit-based flow control,
//! cumulative acks, acks answered after their commit, and the router API on the same
//! mailboxes.

mod common;

use common::*;

use cohort_wire::cohort::client_frame::Frame;
use cohort_wire::cohort::mailbox_client::MailboxClient;
use cohort_wire::cohort::server_frame::Frame as Pushed;
use cohort_wire::cohort::{
    Ack, AckIds, AckResult, ClientFrame, Credit, Delivery, SendBatch, SendItem, SendResult,
    ServerFrame, Subscribe, SubscriptionEnded,
};
use cohort_wire::router::{GetPendingMessagesRequest, HeartbeatRequest};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Code, Streaming};

/// One party's open mailbox stream.
struct Conn {
    party: String,
    tx: mpsc::Sender<ClientFrame>,
    rx: Streaming<ServerFrame>,
    next_request: u64,
}

async fn open(p: &Party) -> Conn {
    let (tx, rx) = mpsc::channel(1024);
    let stream = MailboxClient::with_interceptor(p.channel.clone(), p.bearer())
        .open(ReceiverStream::new(rx))
        .await
        .unwrap_or_else(|e| panic!("Mailbox/Open of {}: {e}", p.id))
        .into_inner();
    Conn {
        party: p.id.clone(),
        tx,
        rx: stream,
        next_request: 1,
    }
}

fn item(client_id: &str, session_id: &str, to: &[&str], payload: &[u8]) -> SendItem {
    SendItem {
        client_id: client_id.into(),
        session_id: session_id.into(),
        to_parties: to.iter().map(|s| s.to_string()).collect(),
        round: 1,
        message_type: "m".into(),
        payload: payload.to_vec(),
    }
}

impl Conn {
    async fn put(&self, frame: Frame) {
        self.tx
            .send(ClientFrame { frame: Some(frame) })
            .await
            .expect("stream open");
    }

    async fn pushed(&mut self) -> Pushed {
        next(&mut self.rx)
            .await
            .frame
            .unwrap_or_else(|| panic!("{}: a frame without content", self.party))
    }

    fn request_id(&mut self) -> u64 {
        self.next_request += 1;
        self.next_request
    }

    /// Sends a batch and waits for its answer (nothing else may arrive meanwhile).
    async fn send(&mut self, items: Vec<SendItem>) -> SendResult {
        let request_id = self.request_id();
        self.put(Frame::Send(SendBatch { request_id, items })).await;
        match self.pushed().await {
            Pushed::SendResult(r) if r.request_id == request_id => r,
            other => panic!("expected the SendResult of request {request_id}, got {other:?}"),
        }
    }

    /// Sends a batch and returns its message ids, each stored now or before.
    async fn send_ok(&mut self, items: Vec<SendItem>) -> Vec<(String, bool)> {
        let r = self.send(items).await;
        r.outcomes
            .into_iter()
            .map(|o| {
                assert!(o.failure.is_none(), "{o:?}");
                assert!(!o.message_id.is_empty());
                (o.message_id, o.duplicate)
            })
            .collect()
    }

    async fn subscribe(&self, session_id: &str, after_seq: u64, credit: u32) {
        self.put(Frame::Subscribe(Subscribe {
            session_id: session_id.into(),
            party_id: self.party.clone(),
            after_seq,
            credit,
            subscription_id: 7,
        }))
        .await;
    }

    async fn delivery(&mut self) -> Delivery {
        match self.pushed().await {
            Pushed::Delivery(d) => d,
            other => panic!("expected a delivery, got {other:?}"),
        }
    }

    /// Reads deliveries until `n` messages came; returns their (seq, message id).
    async fn messages(&mut self, n: usize) -> Vec<(u64, String)> {
        let mut out = Vec::new();
        while out.len() < n {
            let d = self.delivery().await;
            assert_eq!(d.subscription_id, 7);
            out.extend(d.messages.into_iter().map(|m| (m.seq, m.message_id)));
        }
        assert_eq!(out.len(), n, "more than asked for arrived in one delivery");
        out
    }

    async fn ack(&mut self, frame: impl FnOnce(u64) -> Frame) -> AckResult {
        let request_id = self.request_id();
        self.put(frame(request_id)).await;
        loop {
            match self.pushed().await {
                Pushed::AckResult(r) if r.request_id == request_id => return r,
                Pushed::Delivery(_) => continue,
                other => panic!("expected the AckResult of request {request_id}, got {other:?}"),
            }
        }
    }
}

async fn pending(p: &Party) -> i32 {
    p.router()
        .heartbeat(HeartbeatRequest {
            party_id: p.id.clone(),
            timestamp: 0,
        })
        .await
        .expect("Heartbeat")
        .into_inner()
        .pending_messages
}

/// The party, logged in on `relay` with the same key and token (tokens survive a restart).
fn on(relay: &Relay, p: &Party) -> Party {
    Party {
        id: p.id.clone(),
        key: cohort_crypto::identity::IdentityKey::from_bytes(&p.key.to_bytes()),
        token: p.token.clone(),
        coordinator: p.coordinator,
        token_expires_at: p.token_expires_at,
        channel: relay.channel.clone(),
    }
}

/// Stops the relay and starts it again on the same data directory (on a new port).
async fn restart(relay: &mut Relay) {
    relay.shutdown().await;
    let server = cohort_server::start(config(relay.dir.path(), &relay.coordinator_key()))
        .await
        .expect("relay starts again");
    relay.channel = connect(server.grpc_addr).await;
    relay.server = Some(server);
}

async fn two_party_session(relay: &Relay) -> (Party, Party, String) {
    let coord = relay.coordinator().await;
    let a = relay.registered("alice", "persistent").await;
    let b = relay.registered("bob", "persistent").await;
    let s = create_session(&coord, &[&a, &b]).await;
    join_all_ready(&[&a, &b], &s).await;
    (a, b, s.session_id)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_send_retried_with_its_client_id_is_stored_once_across_a_dropped_connection_and_a_restart(
) {
    let mut relay = Relay::start().await;
    let (a, b, sid) = two_party_session(&relay).await;

    let mut conn = open(&a).await;
    let first = conn.send_ok(vec![item("c1", &sid, &["bob"], b"one")]).await;
    assert!(!first[0].1, "stored now");
    let m1 = first[0].0.clone();
    drop(conn);

    // The connection dropped before the sender saw the answer: it sends again.
    let mut conn = open(&a).await;
    let again = conn
        .send_ok(vec![
            item("c1", &sid, &["bob"], b"one"),
            item("c2", &sid, &["bob"], b"two"),
        ])
        .await;
    assert_eq!(again[0], (m1.clone(), true), "the original message id");
    assert!(!again[1].1);
    let m2 = again[1].0.clone();
    drop(conn);

    restart(&mut relay).await;
    let a = on(&relay, &a);
    let b = on(&relay, &b);
    let mut conn = open(&a).await;
    let after = conn
        .send_ok(vec![
            item("c2", &sid, &["bob"], b"two"),
            item("c1", &sid, &["bob"], b"one"),
        ])
        .await;
    assert_eq!(after, vec![(m2.clone(), true), (m1.clone(), true)]);

    assert_eq!(pending(&b).await, 2, "one stored copy of each");
    let mut bob = open(&b).await;
    bob.subscribe(&sid, 0, 100).await;
    let got = bob.messages(2).await;
    assert_eq!(got, vec![(1, m1), (2, m2)]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receiver_that_stops_reading_is_handed_no_more_than_its_credit() {
    const SENT: usize = 10_000;
    let relay = Relay::start().await;
    let (a, b, sid) = two_party_session(&relay).await;
    let engine = relay.server.as_ref().expect("running").relay.clone();

    let mut bob = open(&b).await;
    bob.subscribe(&sid, 0, 10).await;
    let mut alice = open(&a).await;
    let mut sent = Vec::with_capacity(SENT);
    for chunk in 0..SENT / 250 {
        let items = (0..250)
            .map(|i| {
                let n = chunk * 250 + i;
                item(&format!("m{n}"), &sid, &["bob"], n.to_string().as_bytes())
            })
            .collect();
        sent.extend(alice.send_ok(items).await.into_iter().map(|(id, _)| id));
    }
    assert_eq!(sent.len(), SENT);
    assert_eq!(
        pending(&b).await as usize,
        SENT,
        "everything is in the store"
    );
    eventually("the first ten handed out", || async {
        (engine.messages_delivered() >= 10).then_some(())
    })
    .await;
    // Every send is committed and the subscription had its chance at each: still ten.
    assert_eq!(engine.messages_delivered(), 10);

    let first = bob.messages(10).await;
    let expected: Vec<(u64, String)> = (1..=10u64).zip(sent[..10].iter().cloned()).collect();
    assert_eq!(first, expected, "the first ten, in the order sent");

    bob.put(Frame::Credit(Credit {
        session_id: sid.clone(),
        n: 5,
    }))
    .await;
    let more = bob.messages(5).await;
    let expected: Vec<(u64, String)> = (11..=15u64).zip(sent[10..15].iter().cloned()).collect();
    assert_eq!(more, expected);
    assert_eq!(engine.messages_delivered(), 15);
    assert_eq!(pending(&b).await as usize, SENT, "nothing acknowledged");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cumulative_ack_settles_exactly_up_to_its_seq() {
    let relay = Relay::start().await;
    let (a, b, sid) = two_party_session(&relay).await;
    let mut alice = open(&a).await;
    let ids: Vec<String> = alice
        .send_ok(
            (0..5)
                .map(|i| item(&format!("c{i}"), &sid, &["bob"], &[i]))
                .collect(),
        )
        .await
        .into_iter()
        .map(|(id, _)| id)
        .collect();

    let mut bob = open(&b).await;
    bob.subscribe(&sid, 0, 100).await;
    let got = bob.messages(5).await;
    assert_eq!(
        got.iter().map(|(s, _)| *s).collect::<Vec<_>>(),
        [1, 2, 3, 4, 5]
    );
    let r = bob
        .ack(|request_id| {
            Frame::Ack(Ack {
                request_id,
                session_id: sid.clone(),
                up_to_seq: 3,
            })
        })
        .await;
    assert_eq!(r.settled, 3);
    assert!(r.failures.is_empty());

    let waiting: Vec<String> = b
        .router()
        .get_pending_messages(GetPendingMessagesRequest {
            session_id: sid.clone(),
            party_id: "bob".into(),
            after_timestamp: 0,
        })
        .await
        .expect("GetPendingMessages")
        .into_inner()
        .messages
        .into_iter()
        .map(|m| m.message_id)
        .collect();
    assert_eq!(waiting, ids[3..].to_vec(), "seq 4 and 5 are still waiting");

    // A new subscription from the start gets exactly those.
    let mut again = open(&b).await;
    again.subscribe(&sid, 0, 100).await;
    assert_eq!(
        again.messages(2).await,
        vec![(4, ids[3].clone()), (5, ids[4].clone())]
    );
    // Acking again settles nothing more.
    let r = again
        .ack(|request_id| {
            Frame::Ack(Ack {
                request_id,
                session_id: sid.clone(),
                up_to_seq: 3,
            })
        })
        .await;
    assert_eq!(r.settled, 0);
    assert_eq!(pending(&b).await, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acks_are_answered_after_their_commit_so_a_restart_does_not_redeliver() {
    let mut relay = Relay::start().await;
    let (a, b, sid) = two_party_session(&relay).await;
    let mut alice = open(&a).await;
    let ids: Vec<String> = alice
        .send_ok(
            (0..4)
                .map(|i| item(&format!("c{i}"), &sid, &["bob"], &[i]))
                .collect(),
        )
        .await
        .into_iter()
        .map(|(id, _)| id)
        .collect();
    drop(alice);
    let mut bob = open(&b).await;
    bob.subscribe(&sid, 0, 100).await;
    bob.messages(4).await;
    let r = bob
        .ack(|request_id| {
            Frame::Ack(Ack {
                request_id,
                session_id: sid.clone(),
                up_to_seq: 2,
            })
        })
        .await;
    assert_eq!(r.settled, 2);
    let r = bob
        .ack(|request_id| {
            Frame::AckIds(AckIds {
                request_id,
                message_ids: vec![ids[3].clone(), "not-an-id".into()],
            })
        })
        .await;
    assert_eq!(r.settled, 1);
    assert_eq!(r.failures.len(), 1);
    assert_eq!(r.failures[0].message_id, "not-an-id");
    assert_eq!(
        r.failures[0].failure.as_ref().map(|f| f.code),
        Some(Code::InvalidArgument as i32)
    );
    drop(bob);

    restart(&mut relay).await;
    let b = on(&relay, &b);
    assert_eq!(pending(&b).await, 1);
    let mut bob = open(&b).await;
    bob.subscribe(&sid, 0, 100).await;
    assert_eq!(bob.messages(1).await, vec![(3, ids[2].clone())]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_router_api_and_the_stream_share_the_mailboxes() {
    let relay = Relay::start().await;
    let (a, b, sid) = two_party_session(&relay).await;
    let mut bob = open(&b).await;
    bob.subscribe(&sid, 0, 100).await;
    let routed = route(&a, &sid, &["bob"], 1, b"unary").await;
    let d = bob.delivery().await;
    assert_eq!(d.session_id, sid);
    assert_eq!(d.messages.len(), 1);
    let m = &d.messages[0];
    assert_eq!(
        (
            m.seq,
            m.message_id.as_str(),
            m.from_party.as_str(),
            m.payload.as_slice()
        ),
        (1, routed.as_str(), "alice", &b"unary"[..])
    );
    assert!(!m.is_broadcast);

    // Sent on the stream, received on SubscribeMessages, acknowledged with the unary call.
    let mut messages = subscribe_messages(&a, &sid).await;
    let streamed = bob
        .send_ok(vec![item("back", &sid, &[], b"broadcast")])
        .await;
    let got = next(&mut messages).await;
    assert_eq!(got.message_id, streamed[0].0);
    assert!(got.is_broadcast);
    assert_eq!(got.from_party, "bob");
    a.router()
        .acknowledge_message(cohort_wire::router::AcknowledgeMessageRequest {
            message_id: got.message_id,
            party_id: "alice".into(),
            session_id: sid.clone(),
            success: true,
            error_message: String::new(),
        })
        .await
        .expect("AcknowledgeMessage");
    assert_eq!(pending(&a).await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_are_answered_on_the_stream_and_it_goes_on() {
    let relay = Relay::start().await;
    let (a, b, sid) = two_party_session(&relay).await;
    let coord = relay.coordinator().await;
    let c = relay.registered("carol", "persistent").await;
    let other = create_session(&coord, &[&a, &c]).await;

    let mut bob = open(&b).await;
    bob.put(Frame::Subscribe(Subscribe {
        session_id: other.session_id.clone(),
        party_id: "bob".into(),
        after_seq: 0,
        credit: 10,
        subscription_id: 3,
    }))
    .await;
    match bob.pushed().await {
        Pushed::Ended(SubscriptionEnded {
            session_id,
            subscription_id: 3,
            failure: Some(f),
        }) => {
            assert_eq!(session_id, other.session_id);
            assert_eq!(f.code, Code::PermissionDenied as i32, "{f:?}");
        }
        other => panic!("expected the subscription refused, got {other:?}"),
    }
    bob.tx
        .send(ClientFrame { frame: None })
        .await
        .expect("stream open");
    match bob.pushed().await {
        Pushed::Error(e) => {
            assert_eq!(
                e.failure.map(|f| f.code),
                Some(Code::InvalidArgument as i32)
            )
        }
        other => panic!("expected a frame error, got {other:?}"),
    }
    let r = bob
        .send(vec![
            item("x", &sid, &["nobody"], b"?"),
            item("", &sid, &["alice"], b"?"),
            item("ok", &sid, &["alice"], b"!"),
        ])
        .await;
    let codes: Vec<Option<i32>> = r
        .outcomes
        .iter()
        .map(|o| o.failure.as_ref().map(|f| f.code))
        .collect();
    assert_eq!(
        codes,
        vec![
            Some(Code::PermissionDenied as i32),
            Some(Code::InvalidArgument as i32),
            None
        ]
    );
    assert_eq!(pending(&a).await, 1, "only the accepted send is stored");

    // A session that fails ends its subscription with the reason and the culprit.
    bob.subscribe(&sid, 0, 10).await;
    a.sessions()
        .report_failure(cohort_wire::cohort::ReportFailureRequest {
            session_id: sid.clone(),
            party_id: "alice".into(),
            reason: "bad share".into(),
            culprit: "bob".into(),
        })
        .await
        .expect("ReportFailure");
    match bob.pushed().await {
        Pushed::Ended(SubscriptionEnded {
            failure: Some(f), ..
        }) => {
            assert_eq!(f.code, Code::FailedPrecondition as i32);
            assert!(f.message.contains("bad share"), "{f:?}");
            assert_eq!(f.culprit, "bob");
        }
        other => panic!("expected the subscription ended, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_stream_needs_a_valid_token() {
    let relay = Relay::start().await;
    let (_tx, rx) = mpsc::channel::<ClientFrame>(1);
    let r = MailboxClient::with_interceptor(relay.channel.clone(), Bearer::token("nope"))
        .open(ReceiverStream::new(rx))
        .await;
    assert_eq!(r.map(|_| ()).unwrap_err().code(), Code::Unauthenticated);
}
