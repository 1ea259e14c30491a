//! A tampering relay: party-1 reaches the real relay through a gRPC proxy (in this test, not
//! in production code) that alters what party-1 receives. Every alteration must make the
//! session fail, with the failure naming the party the altered message claims to be from,
//! instead of hanging or producing a key or signature.

mod common;

use common::*;

use cohort_crypto::envelope::{seal_envelope, Context};
use cohort_crypto::identity::IdentityKey;
use cohort_tss::descriptor::message_hash;
use cohort_tss::runner::{Coordinator, RunError};
use cohort_tss::{dkg, sign, AnyDkg, AnySign, Curve};
use cohort_wire::router::MpcMessage;
use std::sync::Arc;

/// A relay, the proxy, party-1 behind the proxy and party-2, party-3 straight on the relay,
/// all serving.
struct Setup {
    /// Kept running for the test's life.
    _relay: TestRelay,
    proxy: TamperingRelay,
    coordinator: Arc<Coordinator>,
    parties: Vec<Party>,
}

impl Setup {
    async fn new() -> Setup {
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
        Setup {
            _relay: relay,
            proxy,
            coordinator,
            parties,
        }
    }

    fn everyone(&self) -> Vec<String> {
        self.parties.iter().map(|p| p.name.clone()).collect()
    }

    async fn keygen(&self, curve: Curve) -> Result<Vec<u8>, RunError> {
        finished(
            "keygen",
            spawn_keygen(&self.coordinator, self.everyone(), 2, curve),
        )
        .await
        .map(|k| k.group_public_key)
    }

    /// Signs with party-1 and party-2, or with all three.
    async fn sign(&self, gpk: &[u8], message: &[u8], all: bool) -> Result<Vec<u8>, RunError> {
        let mut signers = vec!["party-1".to_string(), "party-2".into()];
        if all {
            signers.push("party-3".into());
        }
        finished(
            "signing",
            spawn_sign(&self.coordinator, gpk, message, Some(signers)),
        )
        .await
        .map(|s| s.signature)
    }

    /// The one alteration the proxy made since it was last armed.
    fn only_alteration(&self, already: usize) -> Alteration {
        let all = self.proxy.alterations();
        assert_eq!(all.len(), already + 1, "one message altered: {all:?}");
        all[already].clone()
    }
}

/// The session failed, blaming `culprit`, as party-1 reported it; returns the reason.
fn assert_failed_blaming<T: std::fmt::Debug>(r: Result<T, RunError>, culprit: &str) -> String {
    match r {
        Err(RunError::Failed {
            reason,
            culprit: named,
            ..
        }) => {
            assert_eq!(named.as_deref(), Some(culprit), "{reason}");
            assert!(
                reason.contains(&format!("(culprit: {culprit})")),
                "the session's failure reason names the culprit: {reason}"
            );
            reason
        }
        other => panic!("expected the session to fail blaming {culprit}, got {other:?}"),
    }
}

fn flip_a_byte_of_the_first_point_to_point_message() -> Rewrite {
    let mut done = false;
    Box::new(move |m: &mut MpcMessage| {
        if done || m.is_broadcast {
            return Verdict::Pass;
        }
        done = true;
        let middle = m.payload.len() / 2;
        m.payload[middle] ^= 0x01;
        Verdict::Altered
    })
}

/// The first broadcast is remembered; the next one of the same round from another sender
/// gets its payload.
fn give_a_broadcast_another_senders_payload() -> Rewrite {
    let mut first: Option<MpcMessage> = None;
    let mut done = false;
    Box::new(move |m: &mut MpcMessage| {
        if done || !m.is_broadcast {
            return Verdict::Pass;
        }
        match &first {
            None => {
                first = Some(m.clone());
                Verdict::Pass
            }
            Some(f)
                if f.from_party != m.from_party
                    && f.round_number == m.round_number
                    && f.message_type == m.message_type =>
            {
                m.payload = f.payload.clone();
                done = true;
                Verdict::Altered
            }
            Some(_) => Verdict::Pass,
        }
    })
}

/// A relay colluding with `sender` (it holds its identity key): party-1 gets `other_body`,
/// validly signed, in place of `sender`'s first broadcast of `message_type`; everyone else
/// gets the real one.
fn equivocate(
    sender: &str,
    identity: IdentityKey,
    message_type: &'static str,
    other_body: Vec<u8>,
) -> Rewrite {
    let sender = sender.to_string();
    let mut done = false;
    Box::new(move |m: &mut MpcMessage| {
        if done || !m.is_broadcast || m.from_party != sender || m.message_type != message_type {
            return Verdict::Pass;
        }
        let ctx = Context {
            session_id: m.session_id.clone(),
            sender: sender.clone(),
            recipient: None,
            round: m.round_number,
            message_type: m.message_type.clone(),
        };
        m.payload = seal_envelope(&identity, &ctx, None, &other_body).expect("re-signed");
        done = true;
        Verdict::Altered
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flipped_byte_in_a_point_to_point_payload_fails_the_session_naming_its_sender() {
    let s = Setup::new().await;

    // Keygen: the first secret share (round 3) party-1 receives is altered.
    s.proxy
        .set(flip_a_byte_of_the_first_point_to_point_message());
    let r = s.keygen(Curve::Ed25519).await;
    let altered = s.only_alteration(0);
    assert!(!altered.is_broadcast);
    assert_eq!(
        (altered.round, altered.message_type.as_str()),
        (dkg::ROUND2, dkg::ROUND2_TYPE)
    );
    let reason = assert_failed_blaming(r, &altered.from);
    assert!(reason.contains("party-1 reported"), "{reason}");
    assert!(reason.contains(dkg::ROUND2_TYPE), "{reason}");

    // The same parties make a key when nothing is altered...
    s.proxy.clear();
    let gpk = s.keygen(Curve::Ed25519).await.expect("untampered keygen");

    // ...and signing fails when party-2's signature share to party-1 is altered.
    s.proxy
        .set(flip_a_byte_of_the_first_point_to_point_message());
    let r = s.sign(&gpk, b"tampered share", false).await;
    let altered = s.only_alteration(1);
    assert_eq!(
        (altered.from.as_str(), altered.message_type.as_str()),
        ("party-2", sign::SHARES_TYPE)
    );
    let reason = assert_failed_blaming(r, "party-2");
    assert!(reason.contains("party-1 reported"), "{reason}");

    s.proxy.clear();
    let signature = s
        .sign(&gpk, b"untampered", false)
        .await
        .expect("untampered signing");
    verify_independently(
        Curve::Ed25519,
        &gpk,
        &message_hash(b"untampered"),
        &signature,
    )
    .expect("signature verifies");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broadcast_replaced_by_another_senders_fails_the_session_naming_its_sender() {
    let s = Setup::new().await;

    s.proxy.set(give_a_broadcast_another_senders_payload());
    let r = s.keygen(Curve::Secp256k1Tr).await;
    let altered = s.only_alteration(0);
    assert!(altered.is_broadcast);
    assert_eq!(
        (altered.round, altered.message_type.as_str()),
        (dkg::ROUND1, dkg::ROUND1_TYPE)
    );
    let reason = assert_failed_blaming(r, &altered.from);
    assert!(reason.contains("bad signature"), "{reason}");

    // Signing with all three: party-1 gets one signer's commitments in place of the
    // other's.
    s.proxy.clear();
    let gpk = s
        .keygen(Curve::Secp256k1Tr)
        .await
        .expect("untampered keygen");
    s.proxy.set(give_a_broadcast_another_senders_payload());
    let r = s.sign(&gpk, b"swapped commitments", true).await;
    let altered = s.only_alteration(1);
    assert_eq!(
        (altered.round, altered.message_type.as_str()),
        (sign::COMMITMENTS, sign::COMMITMENTS_TYPE)
    );
    assert_failed_blaming(r, &altered.from);

    s.proxy.clear();
    let signature = s
        .sign(&gpk, b"untampered", true)
        .await
        .expect("untampered signing by three");
    verify_independently(
        Curve::Secp256k1Tr,
        &gpk,
        &message_hash(b"untampered"),
        &signature,
    )
    .expect("signature verifies");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broadcast_shown_differently_to_one_party_fails_the_session_naming_its_sender() {
    let s = Setup::new().await;
    let party_2 = &s.parties[1];
    let identity_2 = || {
        let secret: [u8; 32] = party_2
            .stored()
            .get("identity")
            .and_then(|b| b.try_into().ok())
            .expect("identity key");
        IdentityKey::from_bytes(&secret)
    };

    // Keygen: party-1 is shown another valid round-1 package from party-2 (index 2 of 3).
    let (_, other) = AnyDkg::start(Curve::Ed25519, 2, 3, 2).expect("another round 1");
    s.proxy.set(equivocate(
        "party-2",
        identity_2(),
        dkg::ROUND1_TYPE,
        other[0].body.clone(),
    ));
    let r = s.keygen(Curve::Ed25519).await;
    assert_eq!(s.only_alteration(0).from, "party-2");
    let reason = assert_failed_blaming(r, "party-2");
    assert!(
        reason.contains("round 1 broadcast of party 2 was not the same for every party"),
        "{reason}"
    );

    // Signing: party-1 is shown other valid commitments from party-2.
    s.proxy.clear();
    let gpk = s.keygen(Curve::Ed25519).await.expect("untampered keygen");
    let share_2 = party_2.share(&gpk);
    let (_, other) = AnySign::start(&share_2, &[1, 2], &message_hash(b"equivocated"))
        .expect("other commitments");
    s.proxy.set(equivocate(
        "party-2",
        identity_2(),
        sign::COMMITMENTS_TYPE,
        other[0].body.clone(),
    ));
    let r = s.sign(&gpk, b"equivocated", false).await;
    assert_eq!(s.only_alteration(1).from, "party-2");
    let reason = assert_failed_blaming(r, "party-2");
    assert!(
        reason.contains("round 1 broadcast of party 2 was not the same for every party"),
        "{reason}"
    );
}
