//! After full keygens and signings through a real relay, the relay's files on disk (SQLite
//! database, its WAL and shared-memory files) hold none of the parties' secrets in clear:
//! not the key shares, not the DKG seeds, not the signing nonces, not the identity or
//! encryption keys. Nor do the parties' own key store files.
//!
//! Seeds and nonces live only while a session runs, so they are read from party-1's key
//! store at that moment: party-1 runs alone until its first message is out.

mod common;

use common::*;

use cohort_tss::runner::Outcome;
use cohort_tss::Curve;

/// A named secret to look for.
struct Secret {
    what: String,
    bytes: Vec<u8>,
}

fn assert_absent(place: &str, haystack: &[u8], secrets: &[Secret]) {
    for s in secrets {
        assert!(
            !contains(haystack, &s.bytes),
            "{place} holds {} in clear",
            s.what
        );
    }
}

/// Searches every file of the relay's data directory.
fn check_relay(relay: &TestRelay, when: &str, public: &[Vec<u8>], secrets: &[Secret]) {
    let files = relay.stored_files();
    let paths: Vec<_> = files.iter().map(|(p, _)| p.clone()).collect();
    assert!(
        paths.iter().any(|p| p.ends_with("cohort.sqlite")),
        "the database file is among {paths:?}"
    );
    let all: Vec<u8> = files.iter().flat_map(|(_, b)| b.iter().copied()).collect();
    // The search works: what the relay may know is found in the same bytes.
    for p in public {
        assert!(
            contains(&all, p),
            "{when}: public value {} not found in {paths:?}",
            hex::encode(p)
        );
    }
    for (path, bytes) in &files {
        assert_absent(&format!("{when}: {}", path.display()), bytes, secrets);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn database_holds_no_secret_in_clear() {
    let mut relay = TestRelay::start().await;
    let coordinator = relay.coordinator().await;
    let parties = vec![
        relay.party("party-1").await,
        relay.party("party-2").await,
        relay.party("party-3").await,
    ];
    let everyone: Vec<String> = parties.iter().map(|p| p.name.clone()).collect();
    let mut secrets = Vec::new();
    let mut public = Vec::new();

    for curve in [Curve::Ed25519, Curve::Secp256k1Tr] {
        // Keygen; party-1's seed is read while the session runs.
        let base = relay.routed();
        let keygen = spawn_keygen(&coordinator, everyone.clone(), 2, curve);
        let sid = open_session(&coordinator).await;
        let first = parties[0].join_next();
        relay.wait_routed(base + 1).await;
        let seed = parties[0]
            .stored()
            .get(&format!("seed/{sid}"))
            .expect("the DKG seed is in the key store while the keygen runs")
            .to_vec();
        secrets.push(Secret {
            what: format!("party-1's {curve} DKG seed"),
            bytes: seed,
        });
        let rest: Vec<_> = parties[1..].iter().map(Party::join_next).collect();
        let gpk = finished("keygen", keygen)
            .await
            .unwrap_or_else(|e| panic!("{curve} keygen: {e}"))
            .group_public_key;
        for run in std::iter::once(first).chain(rest) {
            let (outcome, _) = finished("a party's keygen", run).await.expect("keygen run");
            assert_eq!(
                outcome,
                Outcome::Keygen {
                    group_public_key: gpk.clone()
                }
            );
        }
        public.push(gpk.clone());
        relay.wait_live_streams(0).await;

        // Signing by party-1 and party-2; party-1's nonce is read while the session runs.
        let base = relay.routed();
        let signing = spawn_sign(
            &coordinator,
            &gpk,
            b"secrets at rest",
            Some(vec!["party-1".into(), "party-2".into()]),
        );
        let sid = open_session(&coordinator).await;
        let first = parties[0].join_next();
        relay.wait_routed(base + 1).await;
        let nonce = parties[0]
            .stored()
            .get(&format!("nonce/{sid}"))
            .expect("the nonce is in the key store while the signing runs")
            .to_vec();
        for (i, scalar) in nonce_scalars(curve, &nonce).into_iter().enumerate() {
            secrets.push(Secret {
                what: format!("party-1's {curve} signing nonce (scalar {i})"),
                bytes: scalar,
            });
        }
        secrets.push(Secret {
            what: format!("party-1's {curve} persisted nonce"),
            bytes: nonce,
        });
        let second = parties[1].join_next();
        let signed = finished("signing", signing)
            .await
            .unwrap_or_else(|e| panic!("{curve} signing: {e}"));
        for run in [first, second] {
            finished("a signer's run", run).await.expect("signing run");
        }
        verify_independently(curve, &gpk, &signed.message_hash, &signed.signature)
            .expect("signature verifies");
        public.push(signed.signature);
        relay.wait_live_streams(0).await;

        for p in &parties {
            let share = p.share(&gpk);
            secrets.push(Secret {
                what: format!("{}'s {curve} signing share", p.name),
                bytes: signing_share(&share),
            });
            secrets.push(Secret {
                what: format!("{}'s {curve} key package", p.name),
                bytes: share.key_package.clone(),
            });
            secrets.push(Secret {
                what: format!("{}'s {curve} stored key share", p.name),
                bytes: share.to_bytes().expect("share encodes").to_vec(),
            });
        }
    }
    for p in &parties {
        let stored = p.stored();
        for name in ["identity", "encryption"] {
            secrets.push(Secret {
                what: format!("{}'s {name} secret key", p.name),
                bytes: stored.get(name).expect("key in the store").to_vec(),
            });
        }
        public.push(p.node.client().identity_public().to_vec());
    }

    check_relay(&relay, "relay running", &public, &secrets);
    relay.stop().await; // checkpoints the WAL into the database
    check_relay(&relay, "relay stopped", &public, &secrets);

    for p in &parties {
        let bytes = std::fs::read(&p.key_store).expect("key store file");
        assert_absent(&format!("{}'s key store file", p.name), &bytes, &secrets);
    }
}
