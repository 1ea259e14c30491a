//! The SDK against a real relay: login, sessions, sealed messages, and what survives dropped
//! connections and relay restarts.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use cohort_client::{event_type, Client, ClientError, ClientOptions, CreateSession, RejectReason};
use cohort_crypto::envelope::{seal_envelope, Context};
use cohort_crypto::identity::IdentityKey;
use cohort_crypto::seal::EncryptionKeyPair;
use common::*;
use tokio_stream::StreamExt;

#[tokio::test]
async fn login_register_and_heartbeat_mark_the_party_online() {
    let relay = TestRelay::start().await;
    let key = IdentityKey::generate();
    relay.enroll("alice", &key).await;
    let alice = Client::connect(&relay.url(), "alice", key)
        .await
        .expect("alice logs in");
    assert!(!alice.is_coordinator());
    let registered_at = alice
        .register("persistent", "1.2.3", None)
        .await
        .expect("alice registers");
    assert!(registered_at > 0);

    let beat = alice.heartbeat().await.expect("heartbeat");
    assert!(beat.server_timestamp > 0);
    assert_eq!(beat.pending_messages, 0);

    let heartbeat = alice.spawn_heartbeat(Duration::from_millis(50));
    let online = eventually("alice online", || async {
        let parties = alice.parties("persistent", true).await.ok()?;
        parties.into_iter().find(|p| p.party_id == "alice")
    })
    .await;
    assert_eq!(online.role, "persistent");
    assert!(online.online);
    heartbeat.abort();
}

#[tokio::test]
async fn expired_token_is_renewed_by_logging_in_again() {
    let relay = TestRelay::start_with(|c| c.limits.token_ttl_ms = 300).await;
    let key = IdentityKey::generate();
    relay.enroll("alice", &key).await;
    let alice = Client::connect(&relay.url(), "alice", key)
        .await
        .expect("alice logs in");
    alice
        .register("persistent", "1", None)
        .await
        .expect("registers");
    // Let the token expire; the next calls must log in again by themselves.
    tokio::time::sleep(Duration::from_millis(600)).await;
    alice
        .heartbeat()
        .await
        .expect("heartbeat after expiry logs in again");
    tokio::time::sleep(Duration::from_millis(600)).await;
    let (a, b) = tokio::join!(alice.heartbeat(), alice.parties("", false));
    a.expect("concurrent call after expiry");
    b.expect("concurrent call after expiry");
}

#[tokio::test]
async fn relay_errors_name_the_url_the_call_and_the_status() {
    let relay = TestRelay::start().await;
    let key = IdentityKey::generate();
    relay.enroll("alice", &key).await;
    let _alice = Client::connect(&relay.url(), "alice", key)
        .await
        .expect("alice logs in");

    // Another key claiming alice's id is refused by the relay.
    let err = Client::connect(&relay.url(), "alice", IdentityKey::generate())
        .await
        .expect_err("the id is enrolled to another key");
    let text = err.to_string();
    assert_eq!(err.code(), Some(tonic::Code::PermissionDenied), "{text}");
    assert!(text.contains(&relay.url()), "{text}");
    assert!(text.contains("Auth/GetChallenge"), "{text}");
    assert!(text.contains("PERMISSION_DENIED"), "{text}");
    assert!(text.contains("bound to another identity key"), "{text}");

    // Nothing listens here: UNAVAILABLE after the bounded retries, naming the address.
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr")
    };
    let url = format!("http://{closed}");
    let options = ClientOptions {
        call_attempts: 2,
        backoff_initial: Duration::from_millis(1),
        ..ClientOptions::default()
    };
    let err = Client::connect_with(&url, "bob", IdentityKey::generate(), options)
        .await
        .expect_err("no relay there");
    let text = err.to_string();
    assert_eq!(err.code(), Some(tonic::Code::Unavailable), "{text}");
    assert!(text.contains(&url), "{text}");
}

#[tokio::test]
async fn three_parties_exchange_sealed_broadcasts_and_point_to_point_messages() {
    let mut relay = TestRelay::start().await;
    let url = relay.url();
    let coord = coordinator(&relay).await;
    let names = ["alice", "bob", "carol"];
    let mut parties = Vec::new();
    for name in names {
        parties.push(party(&relay, &url, name).await);
    }

    // Each party learns of the session, and its own join token, from its event stream.
    let mut events: Vec<_> = parties
        .iter()
        .map(|p| p.session_events(&[event_type::SESSION_CREATED]))
        .collect();
    let created = coord
        .create_session(CreateSession {
            session_type: "keygen".into(),
            n: 3,
            t: 2,
            parties: names.iter().map(|s| s.to_string()).collect(),
            ..CreateSession::default()
        })
        .await
        .expect("session created");
    assert!(created.created);
    let sid = created.session_id.clone();

    for (p, ev) in parties.iter().zip(events.iter_mut()) {
        let event = within("session_created", ev.next_event())
            .await
            .expect("event");
        assert_eq!(event.session_id, sid);
        assert_eq!(event.event_type, event_type::SESSION_CREATED);
        let token = event.join_token.expect("own join token in the event");
        assert_eq!(token, created.join_tokens[p.party_id()]);
        let info = p.join(&sid, &token).await.expect("join");
        assert_eq!(info.n, 3);
        assert_eq!(info.t, 2);
        assert_eq!(info.session_type, "keygen");
        assert_eq!(
            info.parties,
            vec![
                ("alice".to_string(), 1),
                ("bob".to_string(), 2),
                ("carol".to_string(), 3)
            ]
        );
        assert_eq!(
            info.party_index,
            info.parties
                .iter()
                .find(|(id, _)| id == p.party_id())
                .map(|(_, i)| *i)
                .expect("listed")
        );
    }
    let mut all_ready = Vec::new();
    for p in &parties {
        all_ready.push(p.ready(&sid).await.expect("ready"));
    }
    assert_eq!(all_ready, vec![false, false, true]);
    assert_eq!(
        parties[0].session(&sid).await.expect("summary").status,
        "in_progress"
    );

    // Round 1: everyone broadcasts. Round 2: everyone sends each other a private share.
    let mut sessions: Vec<_> = parties
        .iter()
        .map(|p| p.secure_session(&sid).expect("secure session"))
        .collect();
    for s in sessions.iter_mut() {
        let me = s.client().party_id().to_string();
        s.send_sealed(None, 1, "commit", format!("commitment of {me}").as_bytes())
            .await
            .expect("broadcast");
        for to in names.iter().filter(|n| **n != me) {
            s.send_sealed(
                Some(to),
                2,
                "share",
                format!("secret share {me}->{to}").as_bytes(),
            )
            .await
            .expect("point-to-point");
        }
    }

    for s in sessions.iter_mut() {
        let me = s.client().party_id().to_string();
        let mut got = BTreeMap::new();
        while got.len() < 4 {
            let m = within("opened message", s.recv_opened())
                .await
                .expect("verifies and opens");
            s.ack(&m.message_id).await.expect("ack");
            got.insert((m.round, m.from.clone()), (m.is_broadcast, m.body));
        }
        let mut want = BTreeMap::new();
        for from in names.iter().filter(|n| **n != me) {
            want.insert(
                (1, from.to_string()),
                (true, format!("commitment of {from}").into_bytes()),
            );
            want.insert(
                (2, from.to_string()),
                (false, format!("secret share {from}->{me}").into_bytes()),
            );
        }
        assert_eq!(got, want, "what {me} received");
    }

    let mut completed = Vec::new();
    for p in &parties {
        completed.push(
            p.report_completion(&sid, b"group public key", b"")
                .await
                .expect("report"),
        );
    }
    assert_eq!(completed, vec![false, false, true]);
    let summary = coord.session(&sid).await.expect("summary");
    assert_eq!(summary.status, "completed");
    assert_eq!(summary.public_key, b"group public key");
    let listed = coord
        .list_sessions(Some("completed"), 0)
        .await
        .expect("list");
    assert!(listed.iter().any(|s| s.session_id == sid));

    // The relay stored broadcasts (signed, in the clear) but no private share in clear.
    drop(sessions);
    relay.stop().await;
    let stored = relay.stored_bytes();
    let contains = |needle: &[u8]| stored.windows(needle.len()).any(|w| w == needle);
    assert!(
        contains(b"commitment of alice"),
        "the test looks in the right place"
    );
    for from in names {
        for to in names.iter().filter(|t| **t != from) {
            let secret = format!("secret share {from}->{to}");
            assert!(!contains(secret.as_bytes()), "{secret} stored in clear");
        }
    }
}

#[tokio::test]
async fn redelivery_after_a_dropped_connection_is_yielded_once() {
    let relay = TestRelay::start().await;
    let proxy = Proxy::start(relay.addr).await;
    let coord = coordinator(&relay).await;
    let alice = party(&relay, &relay.url(), "alice").await;
    // Bob reaches the relay through a proxy whose connections the test cuts.
    let bob = party(&relay, &proxy.url(), "bob").await;
    let (sid, _) = started_session(&coord, &[&alice, &bob]).await;

    let mut inbox = bob.messages(&sid);
    let first = alice
        .send(&sid, &["bob"], 1, "m", b"first".to_vec())
        .await
        .expect("send");
    let got = within("first message", inbox.recv()).await.expect("recv");
    assert_eq!(got.message_id, first);
    assert_eq!(got.payload, b"first");
    assert_eq!(got.from, "alice");
    assert!(!got.is_broadcast);

    // Bob has not acknowledged it: after the reconnect, the relay sends it again.
    proxy.cut();
    eventually(
        "the relay redelivers the unacknowledged message",
        || async {
            let st = alice.message_status(&sid, &first).await.ok()?;
            st.deliveries
                .iter()
                .any(|d| d.party_id == "bob" && d.retry_count >= 1)
                .then_some(())
        },
    )
    .await;

    let second = alice
        .send(&sid, &["bob"], 1, "m", b"second".to_vec())
        .await
        .expect("send");
    let got = within("second message", inbox.recv()).await.expect("recv");
    assert_eq!(
        got.message_id, second,
        "the redelivered first is not yielded again"
    );
    assert_eq!(got.payload, b"second");

    inbox.ack(&first).await.expect("ack first");
    inbox.ack(&second).await.expect("ack second");
    for id in [&first, &second] {
        let st = alice.message_status(&sid, id).await.expect("status");
        assert!(st.all_acknowledged, "{st:?}");
    }
}

#[tokio::test]
async fn unacknowledged_message_comes_back_to_a_new_inbox() {
    let relay = TestRelay::start().await;
    let coord = coordinator(&relay).await;
    let alice = party(&relay, &relay.url(), "alice").await;
    let bob = party(&relay, &relay.url(), "bob").await;
    let (sid, _) = started_session(&coord, &[&alice, &bob]).await;

    let acked = alice
        .send(&sid, &["bob"], 1, "m", b"acked".to_vec())
        .await
        .expect("send");
    let kept = alice
        .send(&sid, &["bob"], 1, "m", b"kept".to_vec())
        .await
        .expect("send");
    {
        let mut inbox = bob.messages(&sid);
        let a = within("first", inbox.recv()).await.expect("recv");
        let k = within("second", inbox.recv()).await.expect("recv");
        assert_eq!(
            (a.message_id.as_str(), k.message_id.as_str()),
            (acked.as_str(), kept.as_str())
        );
        inbox.ack(&acked).await.expect("ack");
        // Bob "crashes" before processing the second one.
    }
    let mut inbox = bob.messages(&sid);
    let again = within("redelivered", inbox.recv()).await.expect("recv");
    assert_eq!(again.message_id, kept);
    assert_eq!(again.payload, b"kept");
}

#[tokio::test]
async fn inbox_and_event_stream_resume_after_the_relay_restarts() {
    let mut relay = TestRelay::start().await;
    let url = relay.url();
    let coord = coordinator(&relay).await;
    let alice = party(&relay, &url, "alice").await;
    let bob = party(&relay, &url, "bob").await;
    let (sid, _) = started_session(&coord, &[&alice, &bob]).await;

    let mut inbox = bob.messages(&sid);
    let mut events = bob.session_events(&[event_type::SESSION_CREATED]);
    let first = alice
        .send(&sid, &["bob"], 1, "m", b"before".to_vec())
        .await
        .expect("send");
    let got = within("message before restart", inbox.recv())
        .await
        .expect("recv");
    assert_eq!(got.message_id, first);
    inbox.ack(&first).await.expect("ack");
    let ev = within("first session event", events.next())
        .await
        .expect("event stream open");
    assert_eq!(ev.session_id, sid);

    relay.restart().await;
    assert_eq!(relay.url(), url, "same address after the restart");

    let second = alice
        .send(&sid, &["bob"], 2, "m", b"after".to_vec())
        .await
        .expect("send after restart");
    let got = within("message after restart", inbox.recv())
        .await
        .expect("the same inbox keeps going");
    assert_eq!(got.message_id, second);
    assert_eq!(got.payload, b"after");
    assert_eq!(got.round, 2);
    inbox.ack(&second).await.expect("ack after restart");

    let (sid2, _) = started_session(&coord, &[&alice, &bob]).await;
    let ev = within("event after restart", events.next())
        .await
        .expect("the same event stream keeps going");
    assert_eq!(ev.session_id, sid2);
}

#[tokio::test]
async fn send_waits_out_a_relay_restart() {
    let mut relay = TestRelay::start().await;
    let coord = coordinator(&relay).await;
    let alice = party(&relay, &relay.url(), "alice").await;
    let bob = party(&relay, &relay.url(), "bob").await;
    let (sid, _) = started_session(&coord, &[&alice, &bob]).await;

    relay.stop().await;
    let sender = alice.clone();
    let session = sid.clone();
    let pending = tokio::spawn(async move {
        sender
            .send(&session, &["bob"], 1, "m", b"while down".to_vec())
            .await
    });
    relay.start_again().await;
    let id = within("send across the restart", pending)
        .await
        .expect("task")
        .expect("send retried until the relay was back");

    let mut inbox = bob.messages(&sid);
    let got = within("the message", inbox.recv()).await.expect("recv");
    assert_eq!(got.message_id, id);
    assert_eq!(got.payload, b"while down");
}

#[tokio::test]
async fn tampered_sealed_payloads_are_refused_naming_the_sender() {
    let relay = TestRelay::start().await;
    let coord = coordinator(&relay).await;
    let alice_key = IdentityKey::generate();
    let alice_secret = alice_key.to_bytes();
    relay.enroll("alice", &alice_key).await;
    let alice = Client::connect_with(&relay.url(), "alice", alice_key, fast_options())
        .await
        .expect("alice");
    alice.generate_encryption_key().await.expect("alice key");
    let bob = party(&relay, &relay.url(), "bob").await;
    let (sid, _) = started_session(&coord, &[&alice, &bob]).await;
    let bob_enc = bob.encryption_keys(&["bob"]).await.expect("keys")["bob"];
    assert_eq!(bob_enc, bob.encryption_key().expect("kept").public());
    let alice_identity = IdentityKey::from_bytes(&alice_secret);
    let ctx = |round: i32| Context {
        session_id: sid.clone(),
        sender: "alice".into(),
        recipient: Some("bob".into()),
        round,
        message_type: "share".into(),
    };

    // 1. A valid envelope with one ciphertext byte flipped, sent raw.
    let mut flipped =
        seal_envelope(&alice_identity, &ctx(1), Some(&bob_enc), b"share for bob").expect("seal");
    flipped[10] ^= 0x01;
    alice
        .send(&sid, &["bob"], 1, "share", flipped)
        .await
        .expect("send");
    // 2. Correctly signed by alice, but sealed to a key that is not bob's.
    let stranger = EncryptionKeyPair::generate().public();
    let wrong_key =
        seal_envelope(&alice_identity, &ctx(2), Some(&stranger), b"share for bob").expect("seal");
    alice
        .send(&sid, &["bob"], 2, "share", wrong_key)
        .await
        .expect("send");
    // 3. Not an envelope at all.
    alice
        .send(&sid, &["bob"], 3, "share", b"garbage".to_vec())
        .await
        .expect("send");
    // 4. A good one, which must still get through after the bad ones.
    let mut alice_session = alice.secure_session(&sid).expect("secure");
    alice_session
        .send_sealed(Some("bob"), 4, "share", b"share for bob")
        .await
        .expect("send sealed");

    let mut bob_session = bob.secure_session(&sid).expect("secure");
    let mut reasons = Vec::new();
    for _ in 0..3 {
        let err = within("refusal", bob_session.recv_opened())
            .await
            .expect_err("tampered payload must not open");
        let rejected = err.rejected().expect("a Rejected error").clone();
        assert_eq!(rejected.culprit, "alice", "{err}");
        assert_eq!(rejected.session_id, sid);
        assert!(err.to_string().contains("\"alice\""), "{err}");
        reasons.push((rejected.round, rejected.reason));
    }
    assert_eq!(reasons[0].0, 1);
    assert!(
        matches!(
            reasons[0].1,
            RejectReason::BadSignature | RejectReason::DecryptFailed
        ),
        "{reasons:?}"
    );
    assert_eq!(reasons[1], (2, RejectReason::DecryptFailed));
    assert_eq!(reasons[2].0, 3);
    assert!(
        matches!(reasons[2].1, RejectReason::Malformed(_)),
        "{reasons:?}"
    );

    let ok = within("good message", bob_session.recv_opened())
        .await
        .expect("valid message opens");
    assert_eq!((ok.round, ok.body.as_slice()), (4, &b"share for bob"[..]));
    bob_session.ack(&ok.message_id).await.expect("ack");
}

#[tokio::test]
async fn sealing_needs_published_keys_and_names_the_party_without_one() {
    let relay = TestRelay::start().await;
    let coord = coordinator(&relay).await;
    let alice = party(&relay, &relay.url(), "alice").await;
    let bob_key = IdentityKey::generate();
    relay.enroll("bob", &bob_key).await;
    let bob = Client::connect(&relay.url(), "bob", bob_key)
        .await
        .expect("bob");
    let (sid, _) = started_session(&coord, &[&alice, &bob]).await;

    assert!(matches!(
        bob.secure_session(&sid),
        Err(ClientError::NoOwnEncryptionKey)
    ));
    let mut s = alice.secure_session(&sid).expect("secure");
    let err = s
        .send_sealed(Some("bob"), 1, "share", b"x")
        .await
        .expect_err("bob has no key");
    assert!(
        matches!(&err, ClientError::NoEncryptionKey { party_id, .. } if party_id == "bob"),
        "{err}"
    );
    let keys = alice
        .encryption_keys(&["alice", "bob"])
        .await
        .expect("keys");
    assert_eq!(keys.keys().collect::<Vec<_>>(), vec!["alice"]);
}

#[tokio::test]
async fn an_unenrolled_key_is_told_to_enroll_and_may_log_in_under_its_own_id() {
    let relay = TestRelay::start().await;
    let key = IdentityKey::generate();
    let public = key.public();
    let err = Client::connect(&relay.url(), "treasury-signer-1", key)
        .await
        .expect_err("not enrolled");
    let text = err.to_string();
    assert_eq!(err.code(), Some(tonic::Code::PermissionDenied), "{text}");
    assert!(text.contains("Auth/Login"), "{text}");
    assert!(
        text.contains(&format!(
            "cohort enroll --party-id treasury-signer-1 --key {}",
            hex::encode(public)
        )),
        "names the fix: {text}"
    );

    let key = IdentityKey::generate();
    let own = cohort_crypto::identity::key_party_id(&key.public());
    let me = Client::connect(&relay.url(), &own, key)
        .await
        .expect("a key logs in under its own id without enrollment");
    assert_eq!(me.party_id(), own);

    // Enrolled (by the SDK's coordinator call), the owner logs in.
    let coord = coordinator(&relay).await;
    let owner = IdentityKey::generate();
    let e = coord
        .enroll("treasury-signer-1", &owner.public(), "persistent")
        .await
        .expect("enroll");
    assert_eq!(
        (e.source.as_str(), e.role.as_str()),
        ("enrolled", "persistent")
    );
    let listed = coord
        .enrolled_keys(&["treasury-signer-1"])
        .await
        .expect("enrolled keys");
    assert_eq!(listed, vec![owner.public()]);
    Client::connect(&relay.url(), "treasury-signer-1", owner)
        .await
        .expect("the enrolled owner logs in");
}

#[tokio::test]
async fn a_payload_signed_by_another_key_than_the_session_names_is_refused() {
    // Open enrollment, and a coordinator that names no keys: the relay admits whoever took
    // "bob" first. Alice holds bob's real key from a source she trusts (a signed descriptor).
    let relay = TestRelay::start_with(|c| c.open_enrollment = true).await;
    let coord = coordinator(&relay).await;
    let real_bob = IdentityKey::generate();
    let squatter =
        Client::connect_with(&relay.url(), "bob", IdentityKey::generate(), fast_options())
            .await
            .expect("open enrollment: the first key takes bob");
    squatter
        .generate_encryption_key()
        .await
        .expect("squatter publishes a key");
    let alice = party(&relay, &relay.url(), "alice").await;
    let (sid, _) = started_session(&coord, &[&alice, &squatter]).await;

    let mut squatter_session = squatter.secure_session(&sid).expect("secure");
    squatter_session
        .send_sealed(None, 1, "commitments", b"as bob")
        .await
        .expect("the relay takes it: the session it made names the squatter's key");

    // Trusting the relay's names (the squatter's key), the payload opens: the check below
    // is what refuses it. Not acknowledged, so it comes again to the next inbox.
    {
        let mut trusting = alice.secure_session(&sid).expect("secure");
        let opened = within("relay-named", trusting.recv_opened())
            .await
            .expect("opens under the relay's names");
        assert_eq!(opened.body, b"as bob");
    }

    let named = [
        ("alice".to_string(), alice.identity_public()),
        ("bob".to_string(), real_bob.public()),
    ]
    .into_iter()
    .collect();
    let mut alice_session = alice
        .secure_session_with_identities(&sid, named)
        .expect("secure");
    let err = within("refusal", alice_session.recv_opened())
        .await
        .expect_err("signed by a key the session does not name");
    let rejected = err.rejected().expect("a Rejected error").clone();
    assert_eq!(rejected.culprit, "bob");
    assert_eq!(rejected.reason, RejectReason::BadSignature);

    // Nor does alice seal anything to the squatter's encryption key.
    let err = alice_session
        .send_sealed(Some("bob"), 2, "share", b"secret share")
        .await
        .expect_err("bob's published key is signed by another identity");
    assert!(
        matches!(&err, ClientError::IdentityChanged { party_id, .. } if party_id == "bob"),
        "{err}"
    );
}
