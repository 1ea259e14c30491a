//! The SDK over the mailbox stream: sends that survive a lost answer and a relay restart
//! without a copy, an Inbox that holds no more than its window, sessions sharing one stream.

mod common;

use common::*;

#[tokio::test]
async fn a_send_whose_answer_was_lost_is_repeated_under_its_client_id_and_stored_once() {
    let relay = TestRelay::start().await;
    let proxy = Proxy::start(relay.addr).await;
    let coord = coordinator(&relay).await;
    // Alice reaches the relay through a proxy that loses the relay's answers, then cuts.
    let alice = party(&relay, &proxy.url(), "alice").await;
    let bob = party(&relay, &relay.url(), "bob").await;
    let (sid, _) = started_session(&coord, &[&alice, &bob]).await;
    let first = alice
        .send(&sid, &["bob"], 1, "m", b"first".to_vec())
        .await
        .expect("send");

    proxy.swallow_replies(true);
    let sender = alice.clone();
    let session = sid.clone();
    let pending = tokio::spawn(async move {
        sender
            .send(&session, &["bob"], 1, "m", b"second".to_vec())
            .await
    });
    eventually("the relay stores the second message", || async {
        let h = bob.heartbeat().await.ok()?;
        (h.pending_messages == 2).then_some(())
    })
    .await;
    // The answer never reached alice; her connection dies.
    proxy.cut();
    proxy.swallow_replies(false);
    let second = within("the repeated send", pending)
        .await
        .expect("task")
        .expect("answered on the next stream");

    let engine = relay.engine();
    assert_eq!(engine.messages_routed(), 2, "no copy stored");
    assert_eq!(
        bob.heartbeat().await.expect("heartbeat").pending_messages,
        2
    );
    let mut inbox = bob.messages(&sid);
    let a = within("first", inbox.recv()).await.expect("recv");
    let b = within("second", inbox.recv()).await.expect("recv");
    assert_eq!((a.message_id, b.message_id), (first, second));
    assert_eq!(b.payload, b"second");
}

#[tokio::test]
async fn a_keyed_send_repeated_after_a_relay_restart_returns_the_original_message_id() {
    let mut relay = TestRelay::start().await;
    let coord = coordinator(&relay).await;
    let alice = party(&relay, &relay.url(), "alice").await;
    let bob = party(&relay, &relay.url(), "bob").await;
    let (sid, _) = started_session(&coord, &[&alice, &bob]).await;

    let id = alice
        .send_keyed(&sid, "round-1/to-bob", &["bob"], 1, "r1", b"share".to_vec())
        .await
        .expect("send");
    relay.restart().await;
    let again = alice
        .send_keyed(&sid, "round-1/to-bob", &["bob"], 1, "r1", b"share".to_vec())
        .await
        .expect("the same send after the restart");
    assert_eq!(again, id);
    let other = alice
        .send_keyed(&sid, "round-2/to-bob", &["bob"], 2, "r2", b"next".to_vec())
        .await
        .expect("another send");
    assert_ne!(other, id);

    let mut inbox = bob.messages(&sid);
    let got = within("the first", inbox.recv()).await.expect("recv");
    assert_eq!(got.message_id, id);
    inbox.ack(&got.message_id).await.expect("ack");
    let got = within("the second", inbox.recv()).await.expect("recv");
    assert_eq!(got.message_id, other);
    assert_eq!(
        bob.heartbeat().await.expect("heartbeat").pending_messages,
        1,
        "one copy of the first (acknowledged), one of the second"
    );
}

#[tokio::test]
async fn an_inbox_nobody_reads_holds_no_more_than_its_window() {
    const SENT: usize = 2000;
    let relay = TestRelay::start().await;
    let coord = coordinator(&relay).await;
    let alice = party(&relay, &relay.url(), "alice").await;
    let bob = party(&relay, &relay.url(), "bob").await;
    let (sid, _) = started_session(&coord, &[&alice, &bob]).await;
    let engine = relay.engine();

    let mut inbox = bob.messages(&sid);
    // Concurrent sends go out in batches over alice's one stream.
    let mut sends = tokio::task::JoinSet::new();
    for i in 0..SENT {
        let alice = alice.clone();
        let sid = sid.clone();
        sends.spawn(async move {
            alice
                .send(&sid, &["bob"], 1, "m", i.to_string().into_bytes())
                .await
        });
    }
    while let Some(r) = sends.join_next().await {
        r.expect("task").expect("send");
    }
    eventually("the window handed out", || async {
        (engine.messages_delivered() >= 256).then_some(())
    })
    .await;
    assert_eq!(
        engine.messages_delivered(),
        256,
        "the relay hands out no more than the Inbox has room for"
    );

    // Reading and acknowledging in order: the rest follows as the reader makes room.
    let mut seen = std::collections::HashSet::new();
    for _ in 0..SENT {
        let m = within("the next message", inbox.recv())
            .await
            .expect("recv");
        assert!(seen.insert(m.message_id.clone()), "yielded once");
        inbox.ack(&m.message_id).await.expect("ack");
    }
    assert_eq!(
        bob.heartbeat().await.expect("heartbeat").pending_messages,
        0
    );
    assert_eq!(engine.messages_acked(), SENT as u64);
}

#[tokio::test]
async fn sessions_share_the_client_stream_and_each_inbox_gets_its_own() {
    let relay = TestRelay::start().await;
    let coord = coordinator(&relay).await;
    let alice = party(&relay, &relay.url(), "alice").await;
    let bob = party(&relay, &relay.url(), "bob").await;
    let (s1, _) = started_session(&coord, &[&alice, &bob]).await;
    let (s2, _) = started_session(&coord, &[&alice, &bob]).await;
    let mut in1 = bob.messages(&s1);
    let mut in2 = bob.messages(&s2);
    for i in 0..5u8 {
        alice
            .send(&s2, &["bob"], 1, "m", vec![2, i])
            .await
            .expect("send");
        alice
            .send(&s1, &["bob"], 1, "m", vec![1, i])
            .await
            .expect("send");
    }
    for i in 0..5u8 {
        let a = within("session 1", in1.recv()).await.expect("recv");
        let b = within("session 2", in2.recv()).await.expect("recv");
        assert_eq!(
            (a.session_id.as_str(), a.payload),
            (s1.as_str(), vec![1, i])
        );
        assert_eq!(
            (b.session_id.as_str(), b.payload),
            (s2.as_str(), vec![2, i])
        );
        in2.ack(&b.message_id).await.expect("ack");
    }
    assert_eq!(
        bob.heartbeat().await.expect("heartbeat").pending_messages,
        5,
        "session 1's messages wait; session 2's are acknowledged"
    );
}
