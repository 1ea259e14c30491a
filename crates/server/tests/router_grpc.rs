//! `mpc.router.v1.MessageRouter` and the `cohort.v1` services over real gRPC on 127.0.0.1,
//! against a real SQLite file in a temp dir: sessions from creation to completion, delivery
//! order and status, expiry, stalls, events, health and reflection.

mod common;

use common::*;

use cohort_wire::cohort::{
    GetDelegateSharesRequest, GetEncryptionKeysRequest, ListSessionsRequest,
    PublishEncryptionKeyRequest, ReportFailureRequest, ServerInfoRequest,
};
use cohort_wire::router::{
    AcknowledgeMessageRequest, GetMessageStatusRequest, GetMessageStatusResponse,
    GetPendingMessagesRequest, GetRegisteredPartiesRequest, GetSessionStatusRequest,
    HeartbeatRequest, JoinSessionRequest, MarkPartyReadyRequest, MessageDeliveryStatus, MpcMessage,
    NotificationChannel, PublishSessionEventRequest, RegisterPartyRequest, ReportCompletionRequest,
    RouteMessageRequest, SessionEvent, SubmitDelegateShareRequest,
};
use tonic::Code;

async fn message_status(p: &Party, message_id: &str, session_id: &str) -> GetMessageStatusResponse {
    p.router()
        .get_message_status(GetMessageStatusRequest {
            message_id: message_id.into(),
            session_id: session_id.into(),
        })
        .await
        .expect("GetMessageStatus")
        .into_inner()
}

fn delivery_of<'a>(status: &'a GetMessageStatusResponse, party: &str) -> &'a MessageDeliveryStatus {
    status
        .deliveries
        .iter()
        .find(|d| d.party_id == party)
        .unwrap_or_else(|| panic!("no delivery record for {party} in {status:?}"))
}

async fn ack(p: &Party, session_id: &str, message_id: &str) -> String {
    let r = p
        .router()
        .acknowledge_message(AcknowledgeMessageRequest {
            message_id: message_id.into(),
            party_id: p.id.clone(),
            session_id: session_id.into(),
            success: true,
            error_message: String::new(),
        })
        .await
        .unwrap_or_else(|e| panic!("AcknowledgeMessage by {}: {e}", p.id))
        .into_inner();
    assert!(r.success);
    r.message
}

async fn session_status(p: &Party, session_id: &str) -> String {
    p.router()
        .get_session_status(GetSessionStatusRequest {
            session_id: session_id.into(),
        })
        .await
        .expect("GetSessionStatus")
        .into_inner()
        .status
}

/// What a recipient should get: message id, sender, is_broadcast, round, payload.
type Expected<'a> = (&'a str, &'a str, bool, i32, &'a [u8]);

/// Checks one received message against what was sent.
#[track_caller]
fn assert_message(
    m: &MpcMessage,
    id: &str,
    session_id: &str,
    from: &str,
    broadcast: bool,
    round: i32,
    payload: &[u8],
) {
    assert_eq!(m.message_id, id, "message id of {m:?}");
    assert_eq!(m.session_id, session_id);
    assert_eq!(m.from_party, from);
    assert_eq!(m.is_broadcast, broadcast, "is_broadcast of {m:?}");
    assert_eq!(m.round_number, round);
    assert_eq!(m.message_type, format!("round{round}"));
    assert_eq!(m.payload, payload);
    assert!(m.created_at > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_party_session_runs_from_creation_to_completion() {
    let relay = Relay::start().await;
    let coord = relay.coordinator().await;
    let a = relay.party("alice").await;
    let b = relay.party("bob").await;
    let c = relay.party("carol").await;
    let parties = [&a, &b, &c];

    // Event streams opened before the session exists: session_created arrives live.
    let mut events = Vec::new();
    for p in parties {
        events.push(subscribe_events(p, &[]).await);
    }

    let created = coord
        .sessions()
        .create_session(cohort_wire::cohort::CreateSessionRequest {
            session_type: "keygen".into(),
            threshold_n: 3,
            threshold_t: 2,
            parties: vec!["alice".into(), "bob".into(), "carol".into()],
            ..Default::default()
        })
        .await
        .expect("CreateSession")
        .into_inner();
    assert!(created.created);
    assert_eq!(created.join_tokens.len(), 3);
    assert!(created.expires_at > 0);
    let ids: Vec<&str> = created
        .participants
        .iter()
        .map(|p| p.party_id.as_str())
        .collect();
    assert_eq!(ids, ["alice", "bob", "carol"]);
    let indices: Vec<i32> = created.participants.iter().map(|p| p.party_index).collect();
    assert_eq!(indices, [1, 2, 3]);
    let sid = created.session_id.clone();
    assert_eq!(session_status(&coord, &sid).await, "created");

    // Each party's session_created carries its own join token and nobody else's.
    for (p, stream) in parties.iter().zip(events.iter_mut()) {
        let e = next_event(stream, "session_created", &sid).await;
        assert_eq!(e.threshold_n, 3);
        assert_eq!(e.threshold_t, 2);
        assert_eq!(e.selected_parties, ["alice", "bob", "carol"]);
        assert_eq!(e.join_tokens.len(), 1, "{} sees {:?}", p.id, e.join_tokens);
        assert_eq!(e.join_tokens.get(&p.id), created.join_tokens.get(&p.id));
        assert!(!e.event_id.is_empty());
        assert!(e.expires_at > e.created_at);
    }

    // Join (with device info) and ready; the last ready party starts the session.
    for p in parties {
        let r = p
            .router()
            .join_session(JoinSessionRequest {
                session_id: sid.clone(),
                party_id: p.id.clone(),
                join_token: created.join_tokens[&p.id].clone(),
                device_info: Some(cohort_wire::router::DeviceInfo {
                    device_type: "server".into(),
                    device_id: format!("dev-{}", p.id),
                    platform: "linux".into(),
                    app_version: "1.0".into(),
                }),
            })
            .await
            .expect("JoinSession")
            .into_inner();
        assert!(r.success);
        let info = r.session_info.expect("session_info");
        assert_eq!(info.session_id, sid);
        assert_eq!(info.session_type, "keygen");
        assert_eq!((info.threshold_n, info.threshold_t), (3, 2));
        assert_eq!(info.status, "created");
        assert_eq!(r.other_parties.len(), 3);
        let me = created
            .participants
            .iter()
            .find(|x| x.party_id == p.id)
            .expect("participant");
        assert_eq!(r.party_index, me.party_index);
        let mine = r
            .other_parties
            .iter()
            .find(|x| x.party_id == p.id)
            .expect("self in other_parties");
        assert_eq!(
            mine.device_info.as_ref().map(|d| d.device_id.clone()),
            Some(format!("dev-{}", p.id))
        );
    }
    let mut all_ready = Vec::new();
    for p in parties {
        let r = p
            .router()
            .mark_party_ready(MarkPartyReadyRequest {
                session_id: sid.clone(),
                party_id: p.id.clone(),
            })
            .await
            .expect("MarkPartyReady")
            .into_inner();
        assert!(r.success);
        all_ready.push(r.all_ready);
    }
    assert_eq!(all_ready, [false, false, true]);
    for stream in events.iter_mut() {
        let e = next_event(stream, "session_started", &sid).await;
        assert!(e.join_tokens.is_empty(), "session_started carries no token");
    }
    assert_eq!(session_status(&b, &sid).await, "in_progress");

    let mut inbox = Vec::new();
    for p in parties {
        inbox.push(subscribe_messages(p, &sid).await);
    }

    // Round 1: everyone broadcasts (empty to_parties). Round 2: point to point in a ring.
    let bcast_a = route(&a, &sid, &[], 1, b"bcast-a").await;
    let bcast_b = route(&b, &sid, &[], 1, b"bcast-b").await;
    let bcast_c = route(&c, &sid, &[], 1, b"bcast-c").await;
    let a_to_b = route(&a, &sid, &["bob"], 2, b"a-to-b").await;
    let b_to_c = route(&b, &sid, &["carol"], 2, b"b-to-c").await;
    let c_to_a = route(&c, &sid, &["alice"], 2, b"c-to-a").await;

    // A broadcast reaches the two others and never its sender; each stream is in send order.
    let expected: [[Expected; 3]; 3] = [
        [
            (&bcast_b, "bob", true, 1, b"bcast-b"),
            (&bcast_c, "carol", true, 1, b"bcast-c"),
            (&c_to_a, "carol", false, 2, b"c-to-a"),
        ],
        [
            (&bcast_a, "alice", true, 1, b"bcast-a"),
            (&bcast_c, "carol", true, 1, b"bcast-c"),
            (&a_to_b, "alice", false, 2, b"a-to-b"),
        ],
        [
            (&bcast_a, "alice", true, 1, b"bcast-a"),
            (&bcast_b, "bob", true, 1, b"bcast-b"),
            (&b_to_c, "bob", false, 2, b"b-to-c"),
        ],
    ];
    for ((p, stream), want) in parties.iter().zip(inbox.iter_mut()).zip(expected) {
        for (id, from, broadcast, round, payload) in want {
            let m = next(stream).await;
            assert_message(&m, id, &sid, from, broadcast, round, payload);
            ack(p, &sid, &m.message_id).await;
        }
    }
    let st = message_status(&a, &bcast_a, &sid).await;
    let mut recipients: Vec<&str> = st.deliveries.iter().map(|d| d.party_id.as_str()).collect();
    recipients.sort();
    assert_eq!(recipients, ["bob", "carol"]);
    assert!(st.all_acknowledged);

    // Completion: equal public keys complete the session.
    let group_key = vec![7u8; 32];
    let mut all_completed = Vec::new();
    for p in parties {
        let r = p
            .router()
            .report_completion(ReportCompletionRequest {
                session_id: sid.clone(),
                party_id: p.id.clone(),
                public_key: group_key.clone(),
                signature: Vec::new(),
            })
            .await
            .expect("ReportCompletion")
            .into_inner();
        assert!(r.success);
        all_completed.push(r.all_completed);
    }
    assert_eq!(all_completed, [false, false, true]);
    for stream in events.iter_mut() {
        next_event(stream, "session_completed", &sid).await;
    }

    let status = c
        .router()
        .get_session_status(GetSessionStatusRequest {
            session_id: sid.clone(),
        })
        .await
        .expect("GetSessionStatus")
        .into_inner();
    assert_eq!(status.session_id, sid);
    assert_eq!(status.status, "completed");
    assert_eq!((status.threshold_n, status.threshold_t), (3, 2));
    assert_eq!(status.participants.len(), 3);
    let summary = get_session(&coord, &sid).await;
    assert_eq!(summary.status, "completed");
    assert_eq!(summary.public_key, group_key);
    assert!(summary.waiting_for.is_empty());
    assert!(summary
        .participants
        .iter()
        .all(|p| p.joined && p.ready && p.completed));

    // Open message streams end with the reason once the session is closed.
    for stream in inbox.iter_mut() {
        let end = tokio::time::timeout(STREAM_TIMEOUT, stream.message())
            .await
            .expect("the stream of a completed session ends");
        match end {
            Err(status) => {
                assert_eq!(status.code(), Code::FailedPrecondition);
                assert!(status.message().contains("completed"), "{status}");
            }
            other => panic!("expected FAILED_PRECONDITION, got {other:?}"),
        }
    }

    // A closed session accepts no new messages.
    let refused = a
        .router()
        .route_message(RouteMessageRequest {
            session_id: sid.clone(),
            from_party: "alice".into(),
            to_parties: vec![],
            round_number: 3,
            message_type: "round3".into(),
            payload: b"too late".to_vec(),
        })
        .await;
    assert_refused(refused, Code::FailedPrecondition, "completed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn role_filter_picks_online_parties_of_that_role() {
    let relay = Relay::start().await;
    let coord = relay.coordinator().await;
    let mut persistent = Vec::new();
    for id in ["node-1", "node-2", "node-3"] {
        persistent.push(relay.registered(id, "persistent").await);
    }
    let phone = relay.registered("phone-1", "temporary").await;
    let _unregistered = relay.party("lurker").await;

    let listed = coord
        .router()
        .get_registered_parties(GetRegisteredPartiesRequest {
            role_filter: "persistent".into(),
            only_online: true,
        })
        .await
        .expect("GetRegisteredParties")
        .into_inner();
    assert_eq!(listed.total_count, 3);
    let mut names: Vec<&str> = listed.parties.iter().map(|p| p.party_id.as_str()).collect();
    names.sort();
    assert_eq!(names, ["node-1", "node-2", "node-3"]);
    assert!(listed
        .parties
        .iter()
        .all(|p| p.online && p.role == "persistent" && p.registered_at > 0));

    let mut events = subscribe_events(&persistent[0], &["session_created"]).await;
    let created = coord
        .sessions()
        .create_session(cohort_wire::cohort::CreateSessionRequest {
            session_type: "keygen".into(),
            threshold_n: 3,
            threshold_t: 2,
            role_filter: "persistent".into(),
            ..Default::default()
        })
        .await
        .expect("CreateSession by role filter")
        .into_inner();
    let mut chosen: Vec<&str> = created
        .participants
        .iter()
        .map(|p| p.party_id.as_str())
        .collect();
    chosen.sort();
    assert_eq!(chosen, ["node-1", "node-2", "node-3"]);
    assert!(!created.join_tokens.contains_key(&phone.id));
    let e = next_event(&mut events, "session_created", &created.session_id).await;
    assert_eq!(e.join_tokens.len(), 1);
    assert_eq!(
        e.join_tokens.get("node-1"),
        created.join_tokens.get("node-1")
    );

    // Not enough online parties of that role: refused, nothing created.
    let refused = coord
        .sessions()
        .create_session(cohort_wire::cohort::CreateSessionRequest {
            session_type: "keygen".into(),
            threshold_n: 2,
            threshold_t: 2,
            role_filter: "delegate".into(),
            ..Default::default()
        })
        .await;
    assert_refused(refused, Code::FailedPrecondition, "delegate");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn late_subscriber_gets_pending_first_then_live_in_order_without_duplicates() {
    let relay = Relay::start().await;
    let coord = relay.coordinator().await;
    let a = relay.party("alice").await;
    let b = relay.party("bob").await;
    let s = create_session(&coord, &[&a, &b]).await;
    join_all_ready(&[&a, &b], &s).await;
    let sid = &s.session_id;

    let mut sent = Vec::new();
    for i in 0..5 {
        sent.push(route(&a, sid, &["bob"], 1, format!("early-{i}").as_bytes()).await);
    }
    let mut stream = subscribe_messages(&b, sid).await;
    let mut received = Vec::new();
    for i in 0..5 {
        let m = next(&mut stream).await;
        assert_eq!(m.payload, format!("early-{i}").as_bytes());
        received.push(m.message_id);
    }
    // The stream is live now: these arrive by push.
    for i in 0..5 {
        sent.push(route(&a, sid, &["bob"], 2, format!("live-{i}").as_bytes()).await);
        let m = next(&mut stream).await;
        assert_eq!(m.payload, format!("live-{i}").as_bytes());
        received.push(m.message_id);
    }
    // A last message: anything the stream sent twice would come before it.
    let last = route(&a, sid, &["bob"], 3, b"sentinel").await;
    let m = next(&mut stream).await;
    assert_eq!(m.message_id, last);
    assert_eq!(received, sent, "every message once, in send (seq) order");
    let mut unique = received.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), 10);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delivery_status_tracks_each_recipient_until_all_acknowledged() {
    let relay = Relay::start().await;
    let coord = relay.coordinator().await;
    let a = relay.party("alice").await;
    let b = relay.party("bob").await;
    let c = relay.party("carol").await;
    let s = create_session(&coord, &[&a, &b, &c]).await;
    join_all_ready(&[&a, &b, &c], &s).await;
    let sid = s.session_id.as_str();

    let id = route(&a, sid, &["bob", "carol"], 1, b"to both").await;
    let st = message_status(&a, &id, sid).await;
    assert_eq!(st.message_id, id);
    assert_eq!(st.session_id, sid);
    assert_eq!(st.deliveries.len(), 2);
    for who in ["bob", "carol"] {
        let d = delivery_of(&st, who);
        assert_eq!(d.status, "pending");
        assert_eq!(
            (d.delivered_at, d.acknowledged_at, d.retry_count),
            (0, 0, 0)
        );
    }
    assert!(!st.all_acknowledged);

    // Bob polls: delivered. Then acks: acknowledged. Carol is still pending.
    let polled = b
        .router()
        .get_pending_messages(GetPendingMessagesRequest {
            session_id: sid.into(),
            party_id: "bob".into(),
            after_timestamp: 0,
        })
        .await
        .expect("GetPendingMessages")
        .into_inner();
    assert_eq!(polled.messages.len(), 1);
    assert_eq!(polled.messages[0].message_id, id);
    let st = message_status(&a, &id, sid).await;
    assert_eq!(delivery_of(&st, "bob").status, "delivered");
    assert!(delivery_of(&st, "bob").delivered_at > 0);
    assert_eq!(delivery_of(&st, "carol").status, "pending");

    assert_eq!(ack(&b, sid, &id).await, "acknowledged");
    let st = message_status(&a, &id, sid).await;
    let bob = delivery_of(&st, "bob");
    assert_eq!(bob.status, "acknowledged");
    assert!(bob.acknowledged_at >= bob.delivered_at);
    assert!(!st.all_acknowledged, "carol has not acknowledged");
    // Acknowledging twice reports the status already reached.
    assert_eq!(ack(&b, sid, &id).await, "acknowledged");

    // Carol subscribes, receives, disconnects without acking, reconnects: a retry.
    let mut stream = subscribe_messages(&c, sid).await;
    assert_eq!(next(&mut stream).await.message_id, id);
    eventually("carol's copy marked delivered", || async {
        let st = message_status(&a, &id, sid).await;
        (delivery_of(&st, "carol").status == "delivered").then_some(())
    })
    .await;
    assert_eq!(
        delivery_of(&message_status(&a, &id, sid).await, "carol").retry_count,
        0
    );
    drop(stream);
    let mut stream = subscribe_messages(&c, sid).await;
    let again = next(&mut stream).await;
    assert_eq!(again.message_id, id);
    assert_eq!(again.payload, b"to both");
    eventually("carol's retry counted", || async {
        let st = message_status(&a, &id, sid).await;
        (delivery_of(&st, "carol").retry_count == 1).then_some(())
    })
    .await;
    let st = message_status(&a, &id, sid).await;
    assert_eq!(delivery_of(&st, "carol").status, "delivered");
    assert!(!st.all_acknowledged);

    assert_eq!(ack(&c, sid, &id).await, "acknowledged");
    let st = message_status(&a, &id, sid).await;
    assert!(st.all_acknowledged);
    assert!(st.deliveries.iter().all(|d| d.status == "acknowledged"));
    // The coordinator (the session's creator) may read the status too.
    assert!(message_status(&coord, &id, sid).await.all_acknowledged);

    // A negative acknowledgement settles the copy as failed.
    let bad = route(&a, sid, &["bob"], 2, b"garbled").await;
    let r = b
        .router()
        .acknowledge_message(AcknowledgeMessageRequest {
            message_id: bad.clone(),
            party_id: "bob".into(),
            session_id: sid.into(),
            success: false,
            error_message: "could not decrypt".into(),
        })
        .await
        .expect("negative AcknowledgeMessage")
        .into_inner();
    assert_eq!(r.message, "failed");
    let st = message_status(&a, &bad, sid).await;
    assert_eq!(delivery_of(&st, "bob").status, "failed");
    assert!(!st.all_acknowledged);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_pending_messages_filters_by_timestamp_and_drops_acknowledged() {
    let relay = Relay::start().await;
    let coord = relay.coordinator().await;
    let a = relay.party("alice").await;
    let b = relay.party("bob").await;
    let s = create_session(&coord, &[&a, &b]).await;
    let sid = s.session_id.as_str();
    let first = route(&a, sid, &["bob"], 1, b"one").await;
    let second = route(&a, sid, &[], 1, b"two").await;

    let pending = |after: i64| {
        let mut client = b.router();
        let sid = sid.to_string();
        async move {
            client
                .get_pending_messages(GetPendingMessagesRequest {
                    session_id: sid,
                    party_id: "bob".into(),
                    after_timestamp: after,
                })
                .await
                .expect("GetPendingMessages")
                .into_inner()
                .messages
        }
    };
    let all = pending(0).await;
    let ids: Vec<&str> = all.iter().map(|m| m.message_id.as_str()).collect();
    assert_eq!(ids, [first.as_str(), second.as_str()]);
    assert!(!all[0].is_broadcast);
    assert!(all[1].is_broadcast);
    assert_eq!(all[1].payload, b"two");
    assert!(pending(all[1].created_at).await.is_empty());
    assert_eq!(pending(all[0].created_at - 1).await.len(), 2);

    ack(&b, sid, &first).await;
    let left: Vec<String> = pending(0).await.into_iter().map(|m| m.message_id).collect();
    assert_eq!(left, [second]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_session_expires_and_its_undelivered_messages_fail() {
    let relay = Relay::start_with(|c| c.sweep_interval_ms = 50).await;
    let coord = relay.coordinator().await;
    let a = relay.party("alice").await;
    let b = relay.party("bob").await;
    let mut events = subscribe_events(&b, &["session_expired"]).await;
    let s = create_session_with(&coord, &[&a, &b], |r| r.expires_in_ms = 1000).await;
    let sid = s.session_id.as_str();
    let id = route(&a, sid, &["bob"], 1, b"never read").await;
    assert_eq!(
        delivery_of(&message_status(&a, &id, sid).await, "bob").status,
        "pending"
    );

    eventually("the session to expire", || async {
        (session_status(&a, sid).await == "expired").then_some(())
    })
    .await;
    let e = next_event(&mut events, "session_expired", sid).await;
    assert_eq!(e.selected_parties, ["alice", "bob"]);

    let st = message_status(&a, &id, sid).await;
    assert_eq!(delivery_of(&st, "bob").status, "failed");
    assert!(!st.all_acknowledged);
    let summary = get_session(&coord, sid).await;
    assert_eq!(summary.status, "expired");
    assert!(
        summary.failure_reason.contains("expired"),
        "{}",
        summary.failure_reason
    );
    // Nothing left to poll, and nothing new accepted.
    let pending = b
        .router()
        .get_pending_messages(GetPendingMessagesRequest {
            session_id: sid.into(),
            party_id: "bob".into(),
            after_timestamp: 0,
        })
        .await
        .expect("GetPendingMessages")
        .into_inner();
    assert!(pending.messages.is_empty());
    let refused = a
        .router()
        .route_message(RouteMessageRequest {
            session_id: sid.into(),
            from_party: "alice".into(),
            to_parties: vec!["bob".into()],
            round_number: 1,
            message_type: "round1".into(),
            payload: b"late".to_vec(),
        })
        .await;
    assert_refused(refused, Code::FailedPrecondition, "expired");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_session_fails_naming_the_party_that_did_not_join() {
    let relay = Relay::start_with(|c| {
        c.sweep_interval_ms = 50;
        c.limits.stall_timeout_ms = 1500;
    })
    .await;
    let coord = relay.coordinator().await;
    let a = relay.party("alice").await;
    let b = relay.party("bob").await;
    let c = relay.party("carol").await;
    let mut events = subscribe_events(&a, &["session_failed"]).await;
    let s = create_session(&coord, &[&a, &b, &c]).await;
    join(&a, &s).await;
    join(&b, &s).await;
    let before = get_session(&coord, &s.session_id).await;
    assert_eq!(before.status, "created");
    assert_eq!(before.waiting_for, ["carol"]);

    let failed = eventually("the session to stall", || async {
        let summary = get_session(&coord, &s.session_id).await;
        (summary.status == "failed").then_some(summary)
    })
    .await;
    assert_eq!(failed.waiting_for, ["carol"]);
    assert!(
        failed.failure_reason.contains("stalled"),
        "{}",
        failed.failure_reason
    );
    assert!(
        failed.failure_reason.contains("carol"),
        "{}",
        failed.failure_reason
    );
    assert!(!failed.failure_reason.contains("alice"));
    next_event(&mut events, "session_failed", &s.session_id).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn report_failure_fails_the_session_at_once_naming_the_culprit() {
    let relay = Relay::start().await;
    let coord = relay.coordinator().await;
    let a = relay.party("alice").await;
    let b = relay.party("bob").await;
    let s = create_session(&coord, &[&a, &b]).await;
    join_all_ready(&[&a, &b], &s).await;
    let mut events = subscribe_events(&b, &["session_failed"]).await;
    let id = route(&b, &s.session_id, &["alice"], 1, b"tampered").await;

    a.sessions()
        .report_failure(ReportFailureRequest {
            session_id: s.session_id.clone(),
            party_id: "alice".into(),
            reason: "round 1: bad signature".into(),
            culprit: "bob".into(),
        })
        .await
        .expect("ReportFailure");
    let summary = get_session(&b, &s.session_id).await;
    assert_eq!(summary.status, "failed");
    assert!(
        summary.failure_reason.contains("alice"),
        "{}",
        summary.failure_reason
    );
    assert!(summary.failure_reason.contains("round 1: bad signature"));
    assert!(summary.failure_reason.contains("culprit: bob"));
    assert_eq!(
        summary.failure_culprit, "bob",
        "the culprit is a field, not only text"
    );
    // A call on the failed session names the culprit as a field of the status too.
    let refused = b
        .router()
        .route_message(RouteMessageRequest {
            session_id: s.session_id.clone(),
            from_party: "bob".into(),
            to_parties: vec!["alice".into()],
            round_number: 2,
            message_type: "late".into(),
            payload: b"late".to_vec(),
        })
        .await
        .expect_err("the session is failed");
    assert_eq!(refused.code(), Code::FailedPrecondition);
    assert_eq!(
        refused
            .metadata()
            .get("cohort-culprit")
            .and_then(|v| v.to_str().ok()),
        Some("bob")
    );
    next_event(&mut events, "session_failed", &s.session_id).await;
    assert_eq!(
        delivery_of(&message_status(&b, &id, &s.session_id).await, "alice").status,
        "failed"
    );
    let again = a
        .sessions()
        .report_failure(ReportFailureRequest {
            session_id: s.session_id.clone(),
            party_id: "alice".into(),
            reason: "again".into(),
            culprit: String::new(),
        })
        .await;
    assert_refused(again, Code::FailedPrecondition, "failed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disagreeing_completion_reports_fail_the_session() {
    let relay = Relay::start().await;
    let coord = relay.coordinator().await;
    let a = relay.party("alice").await;
    let b = relay.party("bob").await;
    let s = create_session(&coord, &[&a, &b]).await;
    join_all_ready(&[&a, &b], &s).await;
    for (p, key) in [(&a, [1u8; 32]), (&b, [2u8; 32])] {
        p.router()
            .report_completion(ReportCompletionRequest {
                session_id: s.session_id.clone(),
                party_id: p.id.clone(),
                public_key: key.to_vec(),
                signature: Vec::new(),
            })
            .await
            .expect("ReportCompletion");
    }
    let summary = get_session(&coord, &s.session_id).await;
    assert_eq!(summary.status, "failed");
    assert!(
        summary.failure_reason.contains("bob"),
        "{}",
        summary.failure_reason
    );
    assert!(summary.public_key.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_session_is_idempotent_per_key() {
    let relay = Relay::start().await;
    let coord = relay.coordinator().await;
    let a = relay.party("alice").await;
    let b = relay.party("bob").await;
    let create = |key: &str| {
        let mut sessions = coord.sessions();
        let req = cohort_wire::cohort::CreateSessionRequest {
            session_type: "keygen".into(),
            threshold_n: 2,
            threshold_t: 2,
            parties: vec![a.id.clone(), b.id.clone()],
            idempotency_key: key.into(),
            ..Default::default()
        };
        async move {
            sessions
                .create_session(req)
                .await
                .expect("CreateSession")
                .into_inner()
        }
    };
    let first = create("retry-me").await;
    let retried = create("retry-me").await;
    let other = create("another").await;
    assert!(first.created);
    assert!(!retried.created);
    assert_eq!(retried.session_id, first.session_id);
    assert_eq!(first.join_tokens.len(), 2);
    assert!(
        retried.join_tokens.is_empty(),
        "tokens are handed out once; the relay keeps only their hashes"
    );
    assert!(other.created);
    assert_ne!(other.session_id, first.session_id);

    let listed = coord
        .sessions()
        .list_sessions(ListSessionsRequest {
            status: String::new(),
            limit: 0,
        })
        .await
        .expect("ListSessions")
        .into_inner();
    assert_eq!(
        listed.sessions.len(),
        2,
        "the retry created no second session"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn party_in_two_sessions_gets_each_sessions_messages_on_its_own_stream() {
    let relay = Relay::start().await;
    let coord = relay.coordinator().await;
    let a = relay.party("alice").await;
    let b = relay.party("bob").await;
    let c = relay.party("carol").await;
    let s1 = create_session(&coord, &[&a, &b]).await;
    let s2 = create_session(&coord, &[&c, &b]).await;
    join_all_ready(&[&a, &b], &s1).await;
    join_all_ready(&[&c, &b], &s2).await;
    let mut in_s1 = subscribe_messages(&b, &s1.session_id).await;
    let mut in_s2 = subscribe_messages(&b, &s2.session_id).await;

    let m1 = route(&a, &s1.session_id, &["bob"], 1, b"s1-first").await;
    let m2 = route(&c, &s2.session_id, &[], 1, b"s2-first").await;
    let m3 = route(&a, &s1.session_id, &[], 2, b"s1-second").await;
    let m4 = route(&c, &s2.session_id, &["bob"], 2, b"s2-second").await;

    for (stream, sid, want) in [
        (
            &mut in_s1,
            &s1.session_id,
            [(&m1, &b"s1-first"[..]), (&m3, &b"s1-second"[..])],
        ),
        (
            &mut in_s2,
            &s2.session_id,
            [(&m2, &b"s2-first"[..]), (&m4, &b"s2-second"[..])],
        ),
    ] {
        for (id, payload) in want {
            let m = next(stream).await;
            assert_eq!(&m.message_id, id);
            assert_eq!(&m.session_id, sid);
            assert_eq!(m.payload, payload);
        }
    }
    // Bob's membership in s2 gives alice no way to reach him there.
    let refused = a
        .router()
        .route_message(RouteMessageRequest {
            session_id: s2.session_id.clone(),
            from_party: "alice".into(),
            to_parties: vec!["bob".into()],
            round_number: 1,
            message_type: "round1".into(),
            payload: b"cross".to_vec(),
        })
        .await;
    assert_refused(refused, Code::PermissionDenied, "not a participant");
    // And what goes on in s1 stays out of s2: the next s2 message is the next one sent there.
    route(&a, &s1.session_id, &["bob"], 3, b"s1-third").await;
    let m5 = route(&c, &s2.session_id, &["bob"], 3, b"s2-third").await;
    assert_eq!(next(&mut in_s2).await.message_id, m5);
    assert_eq!(next(&mut in_s1).await.payload, b"s1-third");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_session_event_counts_live_event_streams() {
    let relay = Relay::start().await;
    let coord = relay.coordinator().await;
    let a = relay.party("alice").await;
    let b = relay.party("bob").await;
    let c = relay.party("carol").await;
    let mut ev_a = subscribe_events(&a, &[]).await;
    let mut ev_b = subscribe_events(&b, &["session_created", "round_hint"]).await;
    let s = create_session(&coord, &[&a, &b, &c]).await;
    let sid = s.session_id.clone();
    // Receiving session_created proves both streams are live.
    next_event(&mut ev_a, "session_created", &sid).await;
    next_event(&mut ev_b, "session_created", &sid).await;

    let hint = |id: &str| SessionEvent {
        event_id: id.into(),
        event_type: "round_hint".into(),
        session_id: sid.clone(),
        threshold_n: 3,
        threshold_t: 2,
        selected_parties: vec!["alice".into(), "bob".into(), "carol".into()],
        join_tokens: s.join_tokens.clone(),
        // Tells the two hints apart: event ids are assigned per recipient copy.
        message_hash: id.as_bytes().to_vec(),
        ..Default::default()
    };
    let r = coord
        .router()
        .publish_session_event(PublishSessionEventRequest {
            event: Some(hint("hint-1")),
        })
        .await
        .expect("PublishSessionEvent")
        .into_inner();
    assert!(r.success);
    assert_eq!(
        r.subscriber_count, 2,
        "alice and bob listen, carol does not"
    );

    let got = next_event(&mut ev_a, "round_hint", &sid).await;
    // Each recipient's copy gets its own id (the one it acknowledges), not the publisher's.
    assert_ne!(got.event_id, "hint-1");
    assert!(uuid_like(&got.event_id), "{}", got.event_id);
    assert_eq!(
        got.join_tokens.len(),
        1,
        "published events carry only the recipient's token"
    );
    assert_eq!(got.join_tokens.get("alice"), s.join_tokens.get("alice"));
    // Bob's filter lets round_hint through; participant_joined would not have been.
    let got_b = next(&mut ev_b).await;
    assert_eq!(got_b.event_type, "round_hint");
    assert_ne!(got_b.event_id, got.event_id);

    // Carol connects late: she gets what was waiting, then counts as live.
    let mut ev_c = subscribe_events(&c, &["round_hint"]).await;
    assert_eq!(next(&mut ev_c).await.message_hash, b"hint-1");
    let r = coord
        .router()
        .publish_session_event(PublishSessionEventRequest {
            event: Some(hint("hint-2")),
        })
        .await
        .expect("PublishSessionEvent")
        .into_inner();
    assert_eq!(r.subscriber_count, 3);
    assert_eq!(next(&mut ev_c).await.message_hash, b"hint-2");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn directory_heartbeat_and_encryption_keys() {
    let relay = Relay::start().await;
    let coord = relay.coordinator().await;
    let a = relay.party("alice").await;
    let b = relay.party("bob").await;

    let r = a
        .router()
        .register_party(RegisterPartyRequest {
            party_id: "alice".into(),
            party_role: "persistent".into(),
            version: "2.1.0".into(),
            notification: None,
        })
        .await
        .expect("RegisterParty")
        .into_inner();
    assert!(r.success);
    assert!(r.registered_at > 0);
    assert!(r.message.contains("real-time"), "{}", r.message);
    let r = b
        .router()
        .register_party(RegisterPartyRequest {
            party_id: "bob".into(),
            party_role: "delegate".into(),
            version: "0.9".into(),
            notification: Some(NotificationChannel {
                email: "bob@example.org".into(),
                phone: String::new(),
                push_token: "fcm-token".into(),
            }),
        })
        .await
        .expect("RegisterParty")
        .into_inner();
    assert!(r.message.contains("offline"), "{}", r.message);

    let all = coord
        .router()
        .get_registered_parties(GetRegisteredPartiesRequest::default())
        .await
        .expect("GetRegisteredParties")
        .into_inner();
    assert_eq!(
        all.total_count, 2,
        "the unregistered coordinator is not listed"
    );
    let delegates = a
        .router()
        .get_registered_parties(GetRegisteredPartiesRequest {
            role_filter: "delegate".into(),
            only_online: false,
        })
        .await
        .expect("GetRegisteredParties")
        .into_inner();
    assert_eq!(delegates.parties.len(), 1);
    let bob = &delegates.parties[0];
    assert_eq!(bob.party_id, "bob");
    assert_eq!(bob.role, "delegate");
    assert!(
        bob.notification.is_none(),
        "a party that is not a coordinator sees no contact details"
    );
    assert!(bob.last_seen_at >= bob.registered_at);
    let seen_by_coordinator = coord
        .router()
        .get_registered_parties(GetRegisteredPartiesRequest {
            role_filter: "delegate".into(),
            only_online: false,
        })
        .await
        .expect("GetRegisteredParties")
        .into_inner();
    let n = seen_by_coordinator.parties[0]
        .notification
        .as_ref()
        .expect("a coordinator sees contact details");
    assert_eq!(n.email, "bob@example.org");
    assert_eq!(n.push_token, "fcm-token");

    // Heartbeat: server time and backlog (session messages, not events).
    let s = create_session(&coord, &[&a, &b]).await;
    route(&b, &s.session_id, &["alice"], 1, b"x").await;
    route(&b, &s.session_id, &[], 1, b"y").await;
    let hb = a
        .router()
        .heartbeat(HeartbeatRequest {
            party_id: "alice".into(),
            timestamp: 1,
        })
        .await
        .expect("Heartbeat")
        .into_inner();
    assert!(hb.success);
    assert!(hb.server_timestamp > 0);
    assert_eq!(hb.pending_messages, 2);

    // Encryption keys: published signed, fetched with the signer's identity key.
    let ek = [42u8; 32];
    let published = a
        .keys()
        .publish_encryption_key(PublishEncryptionKeyRequest {
            encryption_key: ek.to_vec(),
            signature: a.sign_encryption_key(&ek),
        })
        .await
        .expect("PublishEncryptionKey")
        .into_inner();
    assert!(published.published_at > 0);
    let forged = b
        .keys()
        .publish_encryption_key(PublishEncryptionKeyRequest {
            encryption_key: ek.to_vec(),
            signature: a.sign_encryption_key(&ek),
        })
        .await;
    assert_refused(forged, Code::InvalidArgument, "signature");
    let keys = b
        .keys()
        .get_encryption_keys(GetEncryptionKeysRequest {
            party_ids: vec!["alice".into(), "bob".into()],
        })
        .await
        .expect("GetEncryptionKeys")
        .into_inner()
        .keys;
    assert_eq!(keys.len(), 1, "bob published no key");
    assert_eq!(keys[0].party_id, "alice");
    assert_eq!(keys[0].encryption_key, ek);
    assert_eq!(keys[0].identity_key, a.key.public());
    assert_eq!(keys[0].signature, a.sign_encryption_key(&ek));
    assert_eq!(keys[0].published_at, published.published_at);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delegate_share_reaches_only_the_session_creator() {
    let relay = Relay::start().await;
    let coord = relay.coordinator().await;
    let user = relay.party("user-phone").await;
    let delegate = relay.registered("delegate-1", "delegate").await;
    let s = create_session(&coord, &[&user, &delegate]).await;
    join_all_ready(&[&user, &delegate], &s).await;

    let r = delegate
        .router()
        .submit_delegate_share(SubmitDelegateShareRequest {
            session_id: s.session_id.clone(),
            party_id: "delegate-1".into(),
            encrypted_share: b"sealed share".to_vec(),
            public_key: vec![9u8; 32],
            party_index: 2,
        })
        .await
        .expect("SubmitDelegateShare")
        .into_inner();
    assert!(r.success);
    let shares = coord
        .sessions()
        .get_delegate_shares(GetDelegateSharesRequest {
            session_id: s.session_id.clone(),
        })
        .await
        .expect("GetDelegateShares")
        .into_inner()
        .shares;
    assert_eq!(shares.len(), 1);
    assert_eq!(shares[0].party_id, "delegate-1");
    assert_eq!(shares[0].encrypted_share, b"sealed share");
    assert_eq!(shares[0].public_key, vec![9u8; 32]);
    assert_eq!(shares[0].party_index, 2);

    let refused = user
        .sessions()
        .get_delegate_shares(GetDelegateSharesRequest {
            session_id: s.session_id.clone(),
        })
        .await;
    assert_refused(refused, Code::PermissionDenied, "creator");
    let wrong_index = delegate
        .router()
        .submit_delegate_share(SubmitDelegateShareRequest {
            session_id: s.session_id.clone(),
            party_id: "delegate-1".into(),
            encrypted_share: b"x".to_vec(),
            public_key: Vec::new(),
            party_index: 1,
        })
        .await;
    assert_refused(wrong_index, Code::InvalidArgument, "party_index");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn coordinator_lists_sessions_and_reads_server_info() {
    let relay = Relay::start().await;
    let coord = relay.coordinator().await;
    let a = relay.party("alice").await;
    let b = relay.party("bob").await;
    let s1 = create_session_with(&coord, &[&a, &b], |r| {
        r.session_type = "sign".into();
        r.message_hash = vec![0xab; 32];
        r.descriptor = b"descriptor bytes".to_vec();
        r.descriptor_signature = vec![1; 64];
    })
    .await;
    let s2 = create_session(&coord, &[&a, &b]).await;
    join_all_ready(&[&a, &b], &s2).await;

    let info = coord
        .admin()
        .server_info(ServerInfoRequest {})
        .await
        .expect("ServerInfo")
        .into_inner();
    assert!(!info.version.is_empty());
    assert!(info.server_time > 0);
    assert_eq!(info.sessions_open, 2);
    let info = a
        .admin()
        .server_info(ServerInfoRequest {})
        .await
        .expect("ServerInfo for a party")
        .into_inner();
    assert_eq!(info.version, env!("CARGO_PKG_VERSION"));

    let list = |status: &str| {
        let mut client = coord.sessions();
        let status = status.to_string();
        async move {
            client
                .list_sessions(ListSessionsRequest { status, limit: 10 })
                .await
                .expect("ListSessions")
                .into_inner()
                .sessions
                .into_iter()
                .map(|s| s.session_id)
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(list("created").await, [s1.session_id.as_str()]);
    assert_eq!(list("in_progress").await, [s2.session_id.as_str()]);
    assert!(list("completed").await.is_empty());
    let mut both = list("").await;
    both.sort();
    let mut want = vec![s1.session_id.clone(), s2.session_id.clone()];
    want.sort();
    assert_eq!(both, want);

    let summary = get_session(&a, &s1.session_id).await;
    assert_eq!(summary.session_type, "sign");
    assert_eq!(summary.creator, COORDINATOR);
    assert_eq!(summary.message_hash, vec![0xab; 32]);
    assert_eq!(summary.descriptor, b"descriptor bytes");
    assert_eq!(summary.descriptor_signature, vec![1; 64]);
    assert_eq!(summary.waiting_for, ["alice", "bob"]);
    assert!(summary.expires_at > summary.created_at);
    assert_eq!(summary.participants.len(), 2);
    assert!(summary.participants.iter().all(|p| !p.joined));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_says_serving_and_reflection_lists_the_services() {
    use tonic_health::pb::health_check_response::ServingStatus;
    use tonic_health::pb::health_client::HealthClient;
    use tonic_health::pb::HealthCheckRequest;
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
    use tonic_reflection::pb::v1::ServerReflectionRequest;

    let relay = Relay::start().await;
    let mut health = HealthClient::new(relay.channel.clone());
    for service in ["", "mpc.router.v1.MessageRouter"] {
        let r = health
            .check(HealthCheckRequest {
                service: service.into(),
            })
            .await
            .unwrap_or_else(|e| panic!("health check of {service:?}: {e}"))
            .into_inner();
        assert_eq!(r.status, ServingStatus::Serving as i32, "{service:?}");
    }

    let mut reflection = ServerReflectionClient::new(relay.channel.clone());
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut answers = reflection
        .server_reflection_info(tokio_stream::iter(vec![request]))
        .await
        .expect("ServerReflectionInfo")
        .into_inner();
    let answer = next(&mut answers).await;
    let Some(MessageResponse::ListServicesResponse(list)) = answer.message_response else {
        panic!("not a list of services: {answer:?}");
    };
    let names: Vec<&str> = list.service.iter().map(|s| s.name.as_str()).collect();
    for want in [
        "mpc.router.v1.MessageRouter",
        "cohort.v1.Auth",
        "cohort.v1.Sessions",
        "cohort.v1.Keys",
        "cohort.v1.Admin",
    ] {
        assert!(names.contains(&want), "{want} missing from {names:?}");
    }
}

fn uuid_like(s: &str) -> bool {
    s.len() == 36 && s.chars().filter(|c| *c == '-').count() == 4
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unacknowledged_events_come_back_on_the_next_subscription_and_acknowledged_ones_do_not() {
    let relay = Relay::start().await;
    let coord = relay.coordinator().await;
    let a = relay.party("alice").await;
    let b = relay.party("bob").await;
    let first = create_session(&coord, &[&a, &b]).await;
    let second = create_session(&coord, &[&a, &b]).await;

    let mut ev = subscribe_events(&a, &["session_created"]).await;
    let e1 = next_event(&mut ev, "session_created", &first.session_id).await;
    let e2 = next_event(&mut ev, "session_created", &second.session_id).await;
    drop(ev);
    // Only the first is acknowledged: the second was lost on the way, as far as the relay knows.
    assert_eq!(
        ack(&a, &first.session_id, &e1.event_id).await,
        "acknowledged"
    );

    let mut again = subscribe_events(&a, &["session_created"]).await;
    let replay = next(&mut again).await;
    assert_eq!(replay.session_id, second.session_id);
    assert_eq!(
        replay.event_id, e2.event_id,
        "the same copy, so clients drop duplicates"
    );
    assert_eq!(
        replay.join_tokens.get("alice"),
        second.join_tokens.get("alice")
    );
    // The acknowledged one is gone: acknowledging it again finds nothing.
    let gone = a
        .router()
        .acknowledge_message(AcknowledgeMessageRequest {
            message_id: e1.event_id.clone(),
            party_id: "alice".into(),
            session_id: first.session_id.clone(),
            success: true,
            error_message: String::new(),
        })
        .await;
    assert_refused(gone, tonic::Code::NotFound, "not found");
}
