//! A session that ends badly leaves nothing behind in the parties' key stores: no join
//! token to resume it on every restart, no DKG seed, no signing nonce, no "signed" marker.
//! Those are secrets (or pointers to them) that no future run can use.

mod common;

use common::*;

use cohort_crypto::keystore::KeyStore;
use cohort_tss::runner::RunError;
use cohort_tss::Curve;

/// Names in `party`'s key store (on disk) that belong to session `sid`.
fn leftovers(party: &Party, sid: &str) -> Vec<String> {
    party
        .stored()
        .names()
        .filter(|n| n.ends_with(&format!("/{sid}")))
        .map(str::to_string)
        .collect()
}

fn flip_first_point_to_point() -> Rewrite {
    let mut done = false;
    Box::new(move |m| {
        if done || m.is_broadcast {
            return Verdict::Pass;
        }
        done = true;
        let middle = m.payload.len() / 2;
        m.payload[middle] ^= 0x01;
        Verdict::Altered
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_session_leaves_no_seed_nonce_or_token_in_the_key_stores() {
    let relay = TestRelay::start().await;
    let proxy = TamperingRelay::start(&relay.url()).await;
    let coordinator = relay.coordinator().await;
    let mut parties = vec![
        relay.party_via("party-1", &proxy.url()).await,
        relay.party("party-2").await,
        relay.party("party-3").await,
    ];
    for p in &mut parties {
        p.serve();
    }
    let everyone = names(&parties.iter().collect::<Vec<_>>());

    // A keygen that fails in round 3 (party-1 detects a tampered share, the others learn
    // the session failed): every party had stored its seed.
    proxy.set(flip_first_point_to_point());
    let keygen = spawn_keygen(&coordinator, everyone.clone(), 2, Curve::Ed25519);
    let sid = open_session(&coordinator).await;
    finished("keygen", keygen)
        .await
        .expect_err("a tampered keygen fails");
    for p in &parties {
        eventually(&format!("{}'s run to end", p.name), || async {
            p.node.unfinished_sessions().is_empty().then_some(())
        })
        .await;
        assert_eq!(leftovers(p, &sid), Vec::<String>::new(), "{}", p.name);
    }

    // A signing that fails when party-2's share to party-1 is tampered: party-1 had made
    // its share (marker), party-2 is done.
    proxy.clear();
    let gpk = finished(
        "keygen",
        spawn_keygen(&coordinator, everyone.clone(), 2, Curve::Ed25519),
    )
    .await
    .expect("untampered keygen")
    .group_public_key;
    proxy.set(flip_first_point_to_point());
    let signing = spawn_sign(
        &coordinator,
        &gpk,
        b"tampered",
        Some(vec!["party-1".into(), "party-2".into()]),
    );
    let sid = open_session(&coordinator).await;
    finished("signing", signing)
        .await
        .expect_err("a tampered signing fails");
    for p in &parties[..2] {
        eventually(&format!("{}'s run to end", p.name), || async {
            p.node.unfinished_sessions().is_empty().then_some(())
        })
        .await;
        assert_eq!(leftovers(p, &sid), Vec::<String>::new(), "{}", p.name);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn party_restarted_after_its_session_failed_forgets_it() {
    let relay = TestRelay::start().await;
    let coordinator = relay.coordinator().await;
    let victim = relay.party("party-1").await;
    let p2 = relay.party("party-2").await;
    let everyone = vec!["party-1".to_string(), "party-2".into()];

    let keygen = spawn_keygen(&coordinator, everyone, 2, Curve::Ed25519);
    let sid = open_session(&coordinator).await;
    let run = victim.join_next();
    relay.wait_routed(1).await;
    run.abort();
    assert!(within("the crash", run)
        .await
        .is_err_and(|e| e.is_cancelled()));
    drop(victim);

    // While party-1 is down, the session fails (party-2 gives up on it).
    p2.node
        .client()
        .report_failure(&sid, "operator cancelled the keygen", None)
        .await
        .expect("party-2 reports a failure");
    finished("keygen", keygen)
        .await
        .expect_err("the keygen failed");

    // Restarted, party-1 resumes the session it had, learns it is over, and forgets it
    // (instead of trying it again at every start, holding its seed forever).
    let victim = relay.reopen_party("party-1").await;
    let unfinished = victim.node.unfinished_sessions();
    assert_eq!(unfinished.len(), 1);
    let (resumed, token) = &unfinished[0];
    assert_eq!(resumed, &sid);
    let r = within("the resumed run", victim.node.run_session(resumed, token)).await;
    match r {
        Err(RunError::Failed { reason, .. }) => {
            assert!(reason.contains("operator cancelled"), "{reason}")
        }
        other => panic!("expected the closed session to be reported failed, got {other:?}"),
    }
    assert!(victim.node.unfinished_sessions().is_empty());
    let stored = KeyStore::open(&victim.key_store, &key_store_secret()).expect("opens");
    let left: Vec<&str> = stored.names().filter(|n| n.ends_with(&sid)).collect();
    assert!(left.is_empty(), "left behind: {left:?}");
}
