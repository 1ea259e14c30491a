//! Keygen and signing through a real relay over gRPC (SQLite file in a temp dir, 127.0.0.1):
//! both curves with independent verifiers, a party that was offline when its session
//! started, sessions whose descriptor no trusted coordinator signed, and sessions that admit
//! another identity key than the descriptor names.

mod common;

use common::*;

use cohort_client::{Client, CreateSession};
use cohort_crypto::identity::IdentityKey;
use cohort_tss::descriptor::{message_hash, Descriptor, Purpose};
use cohort_tss::runner::{Coordinator, RunError};
use cohort_tss::Curve;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keygen_and_sign_over_the_relay_on_both_curves() {
    let relay = TestRelay::start().await;
    let coordinator = relay.coordinator().await;
    let mut parties = Vec::new();
    for i in 1..=5 {
        parties.push(relay.party(&format!("party-{i}")).await);
    }
    for p in &mut parties {
        p.serve();
    }
    let everyone: Vec<String> = parties.iter().map(|p| p.name.clone()).collect();

    for curve in [Curve::Ed25519, Curve::Secp256k1Tr] {
        let key = finished(
            "keygen",
            spawn_keygen(&coordinator, everyone.clone(), 3, curve),
        )
        .await
        .unwrap_or_else(|e| panic!("{curve} keygen: {e}"));
        let gpk = key.group_public_key.clone();
        assert_eq!(gpk.len(), if curve == Curve::Ed25519 { 32 } else { 33 });

        // The relay completes a session only when every party reported the same key.
        let session = coordinator
            .client()
            .session(&key.session_id)
            .await
            .expect("keygen session");
        assert_eq!(session.status, "completed", "{}", session.failure_reason);
        assert_eq!(session.public_key, gpk);
        let mut indices = Vec::new();
        for p in &parties {
            let share = p.share(&gpk);
            assert_eq!(share.group_public_key().expect("group key"), gpk);
            assert_eq!((share.curve, share.threshold, share.parties), (curve, 3, 5));
            let listed = session
                .participants
                .iter()
                .find(|x| x.party_id == p.name)
                .expect("listed in the session");
            assert_eq!(i32::from(share.index), listed.party_index);
            indices.push(share.index);
        }
        indices.sort_unstable();
        assert_eq!(indices, vec![1, 2, 3, 4, 5]);

        let message = format!("pay 1 coin to bob, signed on {curve}");
        let signed = finished(
            "signing",
            spawn_sign(&coordinator, &gpk, message.as_bytes(), None),
        )
        .await
        .unwrap_or_else(|e| panic!("{curve} signing: {e}"));
        assert_eq!(signed.signers.len(), 3, "t signers");
        assert_eq!(signed.message_hash, message_hash(message.as_bytes()));
        let session = coordinator
            .client()
            .session(&signed.session_id)
            .await
            .expect("sign session");
        assert_eq!(session.status, "completed", "{}", session.failure_reason);
        assert_eq!(session.signature, signed.signature);

        verify_independently(curve, &gpk, &signed.message_hash, &signed.signature)
            .unwrap_or_else(|e| panic!("{curve} signature does not verify independently: {e}"));
        cohort_tss::verify_signature(curve, &gpk, &signed.message_hash, &signed.signature)
            .expect("and with FROST's own verifier");
        // The verifier is not a rubber stamp.
        assert!(verify_independently(
            curve,
            &gpk,
            &message_hash(b"pay 1 coin to mallory"),
            &signed.signature
        )
        .is_err());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn party_offline_at_start_catches_up() {
    let relay = TestRelay::start().await;
    let coordinator = relay.coordinator().await;
    let mut online = vec![relay.party("party-1").await, relay.party("party-2").await];
    // Known to the relay (logged in once, keys published), then offline: no process at all.
    drop(relay.party("party-3").await);
    let everyone = vec!["party-1".to_string(), "party-2".into(), "party-3".into()];
    for p in &mut online {
        p.serve();
    }

    let keygen = spawn_keygen(&coordinator, everyone.clone(), 2, Curve::Ed25519);
    let sid = open_session(&coordinator).await;
    // Both online parties sent their round-1 broadcasts; the session waits for party-3.
    relay.wait_routed(2).await;
    let summary = coordinator.client().session(&sid).await.expect("session");
    assert_eq!(summary.waiting_for, vec!["party-3".to_string()]);

    // party-3 comes back: its session_created event and the round-1 broadcasts waited in
    // the relay for it.
    let mut late = relay.reopen_party("party-3").await;
    late.serve();
    let key = finished("keygen", keygen)
        .await
        .unwrap_or_else(|e| panic!("keygen with a late party: {e}"));
    let gpk = key.group_public_key;
    for p in online.iter().chain([&late]) {
        assert_eq!(p.share(&gpk).group_public_key().expect("group key"), gpk);
    }

    // The same for signing: party-3 offline when the session starts.
    drop(late);
    relay.wait_live_streams(2).await;
    let before = relay.routed();
    let sign = spawn_sign(
        &coordinator,
        &gpk,
        b"late signer",
        Some(vec!["party-1".into(), "party-3".into()]),
    );
    relay.wait_routed(before + 1).await;
    let mut late = relay.reopen_party("party-3").await;
    late.serve();
    let signed = finished("signing", sign)
        .await
        .unwrap_or_else(|e| panic!("signing with a late party: {e}"));
    verify_independently(
        Curve::Ed25519,
        &gpk,
        &signed.message_hash,
        &signed.signature,
    )
    .expect("signature verifies");
}

fn expect_refused(err: RunError, creator: &str) {
    match err {
        RunError::Failed {
            reason, culprit, ..
        } => {
            assert!(reason.contains("descriptor"), "{reason}");
            assert!(
                reason.contains("not signed by a trusted coordinator"),
                "{reason}"
            );
            assert_eq!(culprit.as_deref(), Some(creator), "{reason}");
        }
        other => panic!("expected the session to fail, got {other}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_descriptor_signer_is_refused() {
    // The relay lets the rogue key create sessions; the parties trust only the real
    // coordinator.
    let rogue_secret = IdentityKey::generate().to_bytes();
    let rogue_key = || IdentityKey::from_bytes(&rogue_secret);
    let relay = TestRelay::start_accepting(vec![rogue_key().public()]).await;
    let coordinator = relay.coordinator().await;
    let rogue_client = Client::connect_with(
        &relay.url(),
        "rogue-coordinator",
        rogue_key(),
        fast_options(),
    )
    .await
    .expect("rogue coordinator connects");
    assert!(rogue_client.is_coordinator());
    let rogue = Coordinator::new(rogue_client.clone(), rogue_key());
    let mut parties = vec![relay.party("party-1").await, relay.party("party-2").await];
    for p in &mut parties {
        p.serve();
    }
    let everyone = vec!["party-1".to_string(), "party-2".into()];

    let err = within(
        "the rogue keygen",
        rogue.keygen(&everyone, 2, Curve::Ed25519, SAFETY_NET),
    )
    .await
    .expect_err("parties refuse a keygen the rogue key described");
    expect_refused(err, "rogue-coordinator");
    assert_eq!(relay.routed(), 0, "no party sent anything");

    // A signing session for a real key, described and signed by the rogue key.
    let gpk = finished(
        "keygen",
        spawn_keygen(&coordinator, everyone.clone(), 2, Curve::Ed25519),
    )
    .await
    .expect("real keygen");
    let gpk = gpk.group_public_key;
    let before = relay.routed();
    let hash = message_hash(b"pay mallory");
    let d = Descriptor {
        purpose: Purpose::Sign {
            curve: Curve::Ed25519,
            group_public_key: gpk.clone(),
            message_hash: hash,
            description: "pay mallory".into(),
            signers: vec![("party-1".into(), 1), ("party-2".into(), 2)],
        },
        n: 2,
        t: 2,
        parties: everyone.clone(),
        party_keys: rogue_client
            .enrolled_keys(&everyone)
            .await
            .expect("the rogue coordinator reads the enrolled keys"),
        nonce: [7; 16],
    };
    let (descriptor, descriptor_signature) = d.sign(&rogue_key());
    let created = rogue_client
        .create_session(CreateSession {
            session_type: "sign".into(),
            n: 2,
            t: 2,
            parties: everyone.clone(),
            message_hash: hash.to_vec(),
            descriptor,
            descriptor_signature,
            expires_in: Some(SAFETY_NET),
            ..CreateSession::default()
        })
        .await
        .expect("the relay accepts the rogue session");
    let err = within(
        "the rogue signing",
        rogue.wait(&created.session_id, SAFETY_NET),
    )
    .await
    .expect_err("parties refuse to sign what the rogue key described");
    expect_refused(err, "rogue-coordinator");
    assert_eq!(relay.routed(), before, "no party sent a commitment");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_admitting_another_key_than_the_descriptor_names_is_refused() {
    // The trusted coordinator's descriptor names a key for party-2 that is not the one the
    // relay's session admits (the one party-2 is enrolled to): as if the relay had let
    // someone else stand in for party-2. Nobody sends anything.
    let relay = TestRelay::start().await;
    let coordinator = relay.coordinator().await;
    let mut parties = vec![relay.party("party-1").await, relay.party("party-2").await];
    for p in &mut parties {
        p.serve();
    }
    let everyone = vec!["party-1".to_string(), "party-2".into()];
    let mut party_keys = coordinator
        .client()
        .enrolled_keys(&everyone)
        .await
        .expect("enrolled keys");
    party_keys[1] = IdentityKey::generate().public();
    let d = Descriptor {
        purpose: Purpose::Keygen {
            curve: Curve::Ed25519,
        },
        n: 2,
        t: 2,
        parties: everyone.clone(),
        party_keys,
        nonce: [9; 16],
    };
    let (descriptor, descriptor_signature) = d.sign(&relay.coordinator_key());
    let created = coordinator
        .client()
        .create_session(CreateSession {
            session_type: "keygen".into(),
            n: 2,
            t: 2,
            parties: everyone.clone(),
            descriptor,
            descriptor_signature,
            expires_in: Some(SAFETY_NET),
            ..CreateSession::default()
        })
        .await
        .expect("the relay fills in the enrolled keys");
    let err = within(
        "the mismatched keygen",
        coordinator.wait(&created.session_id, SAFETY_NET),
    )
    .await
    .expect_err("parties refuse a session whose keys disagree with the descriptor");
    match err {
        RunError::Failed { reason, .. } => {
            assert!(reason.contains("refusing the session"), "{reason}");
            assert!(
                reason.contains("party-2") && reason.contains("coordinator named"),
                "{reason}"
            );
        }
        other => panic!("expected the session to fail, got {other}"),
    }
    assert_eq!(relay.routed(), 0, "no party sent anything");
}
