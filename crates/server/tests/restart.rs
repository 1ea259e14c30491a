//! Durability across a clean restart: every message whose RouteMessage returned before the
//! relay stopped is delivered, in order, by the relay started again on the same data dir.

mod common;

use common::*;

use cohort_crypto::identity::IdentityKey;
use cohort_wire::router::GetSessionStatusRequest;

const N: usize = 50;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_routed_before_a_restart_are_all_delivered_after_it() {
    let dir = tempfile::tempdir().expect("temp dir");
    let coordinator = IdentityKey::generate();
    let alice_secret = IdentityKey::generate().to_bytes();
    let bob_secret = IdentityKey::generate().to_bytes();

    // First run: set a session up and route N messages, each acknowledged by RouteMessage.
    let server = cohort_server::start(config(dir.path(), &coordinator))
        .await
        .expect("first start");
    let channel = connect(server.grpc_addr).await;
    let coord = login(
        &channel,
        COORDINATOR,
        IdentityKey::from_bytes(&coordinator.to_bytes()),
    )
    .await;
    enroll(&coord, "alice", &IdentityKey::from_bytes(&alice_secret)).await;
    enroll(&coord, "bob", &IdentityKey::from_bytes(&bob_secret)).await;
    let a = login(&channel, "alice", IdentityKey::from_bytes(&alice_secret)).await;
    let b = login(&channel, "bob", IdentityKey::from_bytes(&bob_secret)).await;
    let s = create_session(&coord, &[&a, &b]).await;
    join_all_ready(&[&a, &b], &s).await;
    let mut sent = Vec::with_capacity(N);
    for i in 0..N {
        let payload = format!("alice|{i}").into_bytes();
        let id = route(&a, &s.session_id, &["bob"], 1 + (i / 10) as i32, &payload).await;
        sent.push((id, payload));
    }
    let old_token = b.token.clone();
    drop((coord, a, b, channel));
    server.shutdown().await.expect("clean shutdown");

    // Second run on the same data directory, on a new port.
    let server = cohort_server::start(config(dir.path(), &coordinator))
        .await
        .expect("second start");
    let channel = connect(server.grpc_addr).await;
    let b = login(&channel, "bob", IdentityKey::from_bytes(&bob_secret)).await;
    assert_ne!(b.token, old_token);
    let status = b
        .router()
        .get_session_status(GetSessionStatusRequest {
            session_id: s.session_id.clone(),
        })
        .await
        .expect("the session survived")
        .into_inner();
    assert_eq!(status.status, "in_progress");

    let mut stream = subscribe_messages(&b, &s.session_id).await;
    let mut received = Vec::with_capacity(N);
    for _ in 0..N {
        let m = next(&mut stream).await;
        assert_eq!(m.from_party, "alice");
        received.push((m.message_id, m.payload));
    }
    assert_eq!(received, sent, "all {N} messages, in order, intact");

    // Tokens are stored (hashed) in the database: one issued before the restart still works.
    let old = Party {
        id: "bob".into(),
        key: IdentityKey::from_bytes(&bob_secret),
        token: old_token,
        coordinator: false,
        token_expires_at: 0,
        channel: channel.clone(),
    };
    let pending = old
        .router()
        .heartbeat(cohort_wire::router::HeartbeatRequest {
            party_id: "bob".into(),
            timestamp: 0,
        })
        .await
        .expect("a token issued before the restart is still valid")
        .into_inner()
        .pending_messages;
    assert_eq!(pending as usize, N, "delivered but not yet acknowledged");
    drop(stream);
    server.shutdown().await.expect("clean shutdown");
}
