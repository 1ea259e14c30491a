//! Crashes and restarts in the middle of a session: a party process killed and started again
//! from its key store (in keygen; in signing before and after its signature share left), and
//! the whole relay stopped and started again on the same data directory and port.
//!
//! A crash is an aborted task: the session's run stops at an await, its client and streams
//! are dropped, and what it persisted is what the key store file holds. The points of crash
//! are made deterministic by letting the crashing party run alone: it sends its first
//! message (observed at the relay) and then can only wait for the others.

mod common;

use common::*;

use cohort_tss::descriptor::message_hash;
use cohort_tss::runner::{Outcome, RunError};
use cohort_tss::{dkg, sign, Curve};

fn entry(party: &Party, name: &str) -> Option<Vec<u8>> {
    party.stored().get(name).map(<[u8]>::to_vec)
}

async fn crash(party: Party, run: SessionRun) {
    run.abort();
    let ended = within("the crashed run to end", run).await;
    assert!(
        ended.as_ref().is_err_and(|e| e.is_cancelled()),
        "{} was still mid-session when it crashed: {ended:?}",
        party.name
    );
    drop(party);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn party_restarted_mid_session_finishes_it() {
    let relay = TestRelay::start().await;
    let coordinator = relay.coordinator().await;
    let victim = relay.party("party-1").await;
    let mut others = vec![relay.party("party-2").await, relay.party("party-3").await];
    let everyone = vec!["party-1".to_string(), "party-2".into(), "party-3".into()];

    let keygen = spawn_keygen(&coordinator, everyone, 2, Curve::Ed25519);
    let sid = open_session(&coordinator).await;
    let run = victim.join_next();
    relay.wait_routed(1).await; // party-1's round-1 broadcast
    crash(victim, run).await;

    // What it needs to resume: the join token and the DKG seed, encrypted at rest.
    let victim_store = relay.key_store_path("party-1");
    let stored = cohort_crypto::keystore::KeyStore::open(&victim_store, &key_store_secret())
        .expect("key store opens");
    assert!(stored.get(&format!("session/{sid}")).is_some());
    assert_eq!(
        stored.get(&format!("seed/{sid}")).map(<[u8]>::len),
        Some(32)
    );
    drop(stored);

    for p in &mut others {
        p.serve();
    }
    let mut victim = relay.reopen_party("party-1").await;
    let resumed: Vec<String> = victim
        .node
        .unfinished_sessions()
        .into_iter()
        .map(|(s, _)| s)
        .collect();
    assert_eq!(resumed, vec![sid.clone()]);
    victim.serve();

    // It replays its round 1 from the same seed (the others drop the identical copy) and
    // the keygen completes with one key.
    let key = finished("keygen", keygen)
        .await
        .unwrap_or_else(|e| panic!("keygen with a restarted party: {e}"));
    let gpk = key.group_public_key;
    for p in others.iter().chain([&victim]) {
        assert_eq!(p.share(&gpk).group_public_key().expect("group key"), gpk);
    }
    eventually("party-1 to finish the session", || async {
        victim.node.unfinished_sessions().is_empty().then_some(())
    })
    .await;
    assert_eq!(entry(&victim, &format!("seed/{sid}")), None, "seed deleted");

    // The restarted party's share signs.
    let signed = finished(
        "signing",
        spawn_sign(
            &coordinator,
            &gpk,
            b"after a restart",
            Some(vec!["party-1".into(), "party-3".into()]),
        ),
    )
    .await
    .expect("signing");
    verify_independently(
        Curve::Ed25519,
        &gpk,
        &signed.message_hash,
        &signed.signature,
    )
    .expect("signature verifies");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn party_restarted_after_sending_its_secret_shares_finishes_the_keygen() {
    let relay = TestRelay::start().await;
    let proxy = TamperingRelay::start(&relay.url()).await;
    let coordinator = relay.coordinator().await;
    // The proxy holds the others' round-3 shares back from party-1: it sends all of its
    // messages, the others finish, and party-1 waits.
    let victim = relay.party_via("party-1", &proxy.url()).await;
    let others = [relay.party("party-2").await, relay.party("party-3").await];
    proxy.set(Box::new(|m| {
        if m.message_type == dkg::ROUND2_TYPE {
            Verdict::Withheld
        } else {
            Verdict::Pass
        }
    }));
    let everyone = vec!["party-1".to_string(), "party-2".into(), "party-3".into()];
    let keygen = spawn_keygen(&coordinator, everyone, 2, Curve::Secp256k1Tr);
    let sid = open_session(&coordinator).await;
    let run = victim.join_next();
    let runs: Vec<_> = others.iter().map(Party::join_next).collect();
    let mut keys = Vec::new();
    for other in runs {
        match finished("another party's keygen", other).await {
            Ok((Outcome::Keygen { group_public_key }, _)) => keys.push(group_public_key),
            other => panic!("the others finish: {other:?}"),
        }
    }
    // 3 round-1 broadcasts, 3 echoes, 6 secret shares.
    assert_eq!(relay.routed(), 12);
    crash(victim, run).await;

    // Restarted (straight to the relay), it replays the whole DKG from its seed: its
    // messages come out the same, and it makes the same key as the others.
    let mut victim = relay.reopen_party("party-1").await;
    victim.serve();
    let key = finished("keygen", keygen)
        .await
        .unwrap_or_else(|e| panic!("keygen with a party restarted after round 3: {e}"));
    assert_eq!(key.session_id, sid);
    assert_eq!(keys, vec![key.group_public_key.clone(); 2]);
    assert_eq!(
        victim
            .share(&key.group_public_key)
            .group_public_key()
            .expect("group key"),
        key.group_public_key
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn party_restarted_mid_signing_finishes_with_its_persisted_nonce() {
    let relay = TestRelay::start().await;
    let coordinator = relay.coordinator().await;
    let mut p1 = relay.party("party-1").await;
    let mut p2 = relay.party("party-2").await;
    let mut p3 = relay.party("party-3").await;
    let gpk = keygen_all_serving(
        &coordinator,
        &mut [&mut p1, &mut p2, &mut p3],
        2,
        Curve::Secp256k1Tr,
    )
    .await;

    // The two signers stop listening; party-3 (not a signer) serves on.
    p1.stop_serving().await;
    p2.stop_serving().await;
    relay.wait_live_streams(1).await;

    let base = relay.routed();
    let signing = spawn_sign(
        &coordinator,
        &gpk,
        b"crash after commit",
        Some(vec!["party-1".into(), "party-2".into()]),
    );
    let sid = open_session(&coordinator).await;
    let run = p1.join_next();
    relay.wait_routed(base + 1).await; // party-1's commitments
    crash(p1, run).await;
    let stored = cohort_crypto::keystore::KeyStore::open(
        relay.key_store_path("party-1"),
        &key_store_secret(),
    )
    .expect("key store opens");
    assert!(
        stored.get(&format!("nonce/{sid}")).is_some(),
        "nonce persisted before the commitments left"
    );
    assert!(stored.get(&format!("signed/{sid}")).is_none());
    drop(stored);

    let mut p1 = relay.reopen_party("party-1").await;
    p1.serve();
    p2.serve();
    // party-1 resumes with the persisted nonce: a fresh one would make commitments that
    // conflict with those party-2 already has, and the session would fail.
    let signed = finished("signing", signing)
        .await
        .unwrap_or_else(|e| panic!("signing with a restarted signer: {e}"));
    verify_independently(
        Curve::Secp256k1Tr,
        &gpk,
        &message_hash(b"crash after commit"),
        &signed.signature,
    )
    .expect("signature verifies");

    eventually("party-1 to finish the session", || async {
        p1.node.unfinished_sessions().is_empty().then_some(())
    })
    .await;
    let stored = p1.stored();
    assert!(
        stored.get(&format!("nonce/{sid}")).is_none(),
        "the used nonce is deleted"
    );
    assert!(stored.get(&format!("signed/{sid}")).is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn party_restarted_after_sending_its_signature_share_aborts_the_attempt() {
    let relay = TestRelay::start().await;
    let proxy = TamperingRelay::start(&relay.url()).await;
    let coordinator = relay.coordinator().await;
    // party-1 goes through the proxy, which will hold party-2's signature share back from
    // it: party-1 sends its own share, then waits.
    let mut p1 = relay.party_via("party-1", &proxy.url()).await;
    let mut p2 = relay.party("party-2").await;
    let mut p3 = relay.party("party-3").await;
    let gpk = keygen_all_serving(
        &coordinator,
        &mut [&mut p1, &mut p2, &mut p3],
        2,
        Curve::Ed25519,
    )
    .await;
    p1.stop_serving().await;
    p2.stop_serving().await;
    relay.wait_live_streams(1).await;

    proxy.set(Box::new(|m| {
        if m.message_type == sign::SHARES_TYPE {
            Verdict::Withheld
        } else {
            Verdict::Pass
        }
    }));
    let base = relay.routed();
    let signing = spawn_sign(
        &coordinator,
        &gpk,
        b"crash after share",
        Some(vec!["party-1".into(), "party-2".into()]),
    );
    let sid = open_session(&coordinator).await;
    let run1 = p1.join_next();
    let run2 = p2.join_next();
    // party-2 gets party-1's share and finishes; so party-1's share has left.
    let (outcome, _) = finished("party-2's signing", run2)
        .await
        .expect("party-2 signs");
    let Outcome::Signed { signature } = outcome else {
        panic!("a sign session signs")
    };
    verify_independently(
        Curve::Ed25519,
        &gpk,
        &message_hash(b"crash after share"),
        &signature,
    )
    .expect("party-2's aggregate verifies");
    assert_eq!(relay.routed(), base + 4, "two commitments, two shares");
    crash(p1, run1).await;
    let stored = cohort_crypto::keystore::KeyStore::open(
        relay.key_store_path("party-1"),
        &key_store_secret(),
    )
    .expect("key store opens");
    assert!(
        stored.get(&format!("signed/{sid}")).is_some(),
        "marked before the share left"
    );
    assert!(
        stored.get(&format!("nonce/{sid}")).is_none(),
        "nonce deleted before the share left"
    );
    drop(stored);

    // Restarted, party-1 must not make a second share: it aborts the attempt.
    relay.wait_live_streams(1).await;
    let mut p1 = relay.reopen_party("party-1").await;
    p1.serve();
    let err = finished("signing", signing)
        .await
        .expect_err("the attempt is aborted");
    match err {
        RunError::Failed {
            reason, culprit, ..
        } => {
            assert!(reason.contains("no nonce signs twice"), "{reason}");
            assert_eq!(culprit.as_deref(), Some("party-1"), "{reason}");
        }
        other => panic!("expected a failed session, got {other}"),
    }
    assert_eq!(
        relay.routed(),
        base + 4,
        "the restarted signer sent nothing"
    );

    // A new attempt, with fresh nonces, signs.
    relay.wait_live_streams(2).await;
    p2.serve();
    let signed = finished(
        "signing again",
        spawn_sign(
            &coordinator,
            &gpk,
            b"crash after share",
            Some(vec!["party-1".into(), "party-2".into()]),
        ),
    )
    .await
    .expect("a new attempt signs");
    verify_independently(
        Curve::Ed25519,
        &gpk,
        &signed.message_hash,
        &signed.signature,
    )
    .expect("signature verifies");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relay_restarted_mid_session_the_session_completes() {
    let mut relay = TestRelay::start().await;
    let coordinator = relay.coordinator().await;
    let mut p1 = relay.party("party-1").await;
    let mut p2 = relay.party("party-2").await;
    drop(relay.party("party-3").await); // offline for now
    let everyone = vec!["party-1".to_string(), "party-2".into(), "party-3".into()];
    p1.serve();
    p2.serve();

    // Keygen: two parties sent round 1 and wait for the third when the relay restarts.
    let keygen = spawn_keygen(&coordinator, everyone, 2, Curve::Secp256k1Tr);
    let sid = open_session(&coordinator).await;
    relay.wait_routed(2).await;
    let url = relay.url();
    relay.stop().await;
    relay.start_again().await;
    assert_eq!(relay.url(), url, "same address after the restart");
    let mut p3 = relay.reopen_party("party-3").await;
    p3.serve();
    let key = finished("keygen", keygen)
        .await
        .unwrap_or_else(|e| panic!("keygen across a relay restart: {e}"));
    assert_eq!(key.session_id, sid);
    let gpk = key.group_public_key;
    for p in [&p1, &p2, &p3] {
        assert_eq!(p.share(&gpk).group_public_key().expect("group key"), gpk);
    }

    // Signing: party-1 sent its commitments, party-3 is offline, the relay restarts.
    drop(p3);
    relay.wait_live_streams(2).await;
    let base = relay.routed();
    let signing = spawn_sign(
        &coordinator,
        &gpk,
        b"across a relay restart",
        Some(vec!["party-1".into(), "party-3".into()]),
    );
    open_session(&coordinator).await;
    relay.wait_routed(base + 1).await;
    relay.stop().await;
    relay.start_again().await;
    let mut p3 = relay.reopen_party("party-3").await;
    p3.serve();
    let signed = finished("signing", signing)
        .await
        .unwrap_or_else(|e| panic!("signing across a relay restart: {e}"));
    verify_independently(
        Curve::Secp256k1Tr,
        &gpk,
        &signed.message_hash,
        &signed.signature,
    )
    .expect("signature verifies");
}
