//! DKG and signing on both curves, run in memory through `inprocess::drive`, with
//! independent verifiers and a tampering "relay" in the delivery loop.

use cohort_tss::frost_core::keys::dkg::round2 as dkg_round2;
use cohort_tss::frost_core::keys::SigningShare;
use cohort_tss::frost_core::{Ciphersuite, Field, Group};
use cohort_tss::inprocess::{self, Delivery, RunError, Schedule};
use cohort_tss::{
    bip340_public_key, dkg, sign, verify_signature, AnyDkg, AnySign, Curve, Ed25519Sha512,
    Incoming, KeyShare, Outgoing, Secp256K1Sha256TR, Step, TssError,
};
use sha2::{Digest, Sha256};

const N: u16 = 5;
const T: u16 = 3;

fn start_dkg(curve: Curve, n: u16, t: u16) -> (Vec<AnyDkg>, Vec<(u16, Vec<Outgoing>)>) {
    let mut parties = Vec::new();
    let mut first = Vec::new();
    for i in 1..=n {
        let (p, out) = AnyDkg::start(curve, i, n, t).unwrap();
        parties.push(p);
        first.push((i, out));
    }
    (parties, first)
}

fn start_sign(shares: &[&KeyShare], message: &[u8]) -> (Vec<AnySign>, Vec<(u16, Vec<Outgoing>)>) {
    let signers: Vec<u16> = shares.iter().map(|s| s.index).collect();
    let mut parties = Vec::new();
    let mut first = Vec::new();
    for s in shares {
        let (p, out) = AnySign::start(s, &signers, message).unwrap();
        parties.push(p);
        first.push((s.index, out));
    }
    (parties, first)
}

fn dkg_shares(curve: Curve, schedule: Schedule) -> Vec<KeyShare> {
    let (mut parties, first) = start_dkg(curve, N, T);
    let shares: Vec<KeyShare> = inprocess::drive(&mut parties, first, schedule, |_| {})
        .unwrap()
        .into_values()
        .collect();
    assert_eq!(shares.len(), N as usize);
    let key = shares[0].group_public_key().unwrap();
    for s in &shares {
        assert_eq!(
            s.group_public_key().unwrap(),
            key,
            "party {} has another group key",
            s.index
        );
        assert_eq!((s.curve, s.threshold, s.parties), (curve, T, N));
    }
    shares
}

/// Verifies with a library that knows nothing of FROST.
fn verify_independently(curve: Curve, group_key: &[u8], message: &[u8], signature: &[u8]) {
    match curve {
        Curve::Ed25519 => {
            let key =
                ed25519_dalek::VerifyingKey::from_bytes(group_key.try_into().unwrap()).unwrap();
            let sig = ed25519_dalek::Signature::from_bytes(signature.try_into().unwrap());
            key.verify_strict(message, &sig)
                .expect("ed25519-dalek rejects the FROST signature");
        }
        Curve::Secp256k1Tr => {
            let x_only = bip340_public_key(group_key).unwrap();
            let key = k256::schnorr::VerifyingKey::from_bytes(&x_only).unwrap();
            let sig = k256::schnorr::Signature::try_from(signature).unwrap();
            key.verify_raw(message, &sig)
                .expect("k256 BIP-340 rejects the FROST signature");
        }
    }
}

fn failure<T: std::fmt::Debug>(result: Result<T, RunError>) -> (u16, TssError) {
    match result {
        Err(RunError::Party { party, error }) => (party, error),
        other => panic!("expected a party to fail, got {other:?}"),
    }
}

/// Adds one to a serialized scalar: a well-formed but wrong value.
fn bump_scalar<C: Ciphersuite>(bytes: &[u8]) -> Vec<u8> {
    type F<C> = <<C as Ciphersuite>::Group as Group>::Field;
    let ser = <F<C> as Field>::Serialization::try_from(bytes)
        .map_err(|_| ())
        .unwrap();
    let s = <F<C> as Field>::deserialize(&ser).unwrap() + <F<C> as Field>::one();
    <F<C> as Field>::serialize(&s).as_ref().to_vec()
}

fn bump_dkg_share<C: Ciphersuite>(body: &[u8]) -> Vec<u8> {
    let package = dkg_round2::Package::<C>::deserialize(body).unwrap();
    let share =
        SigningShare::<C>::deserialize(&bump_scalar::<C>(&package.signing_share().serialize()))
            .unwrap();
    dkg_round2::Package::new(share).serialize().unwrap()
}

fn bump_signature_share<C: Ciphersuite>(body: &[u8]) -> Vec<u8> {
    let (digests, share) = body.split_at(body.len() - 32);
    let mut out = digests.to_vec();
    out.extend_from_slice(&bump_scalar::<C>(share));
    out
}

#[test]
fn dkg_5_of_3_then_signing_verifies_with_independent_verifiers_on_both_curves() {
    for curve in Curve::ALL {
        let shares = dkg_shares(curve, Schedule::Fifo);
        let group_key = shares[0].group_public_key().unwrap();
        let message = Sha256::digest(b"pay 1 BTC to bob").to_vec();
        // Two different signer subsets sign; both signatures verify under the one group key.
        for subset in [[0usize, 1, 2], [1, 3, 4]] {
            let chosen: Vec<&KeyShare> = subset.iter().map(|&i| &shares[i]).collect();
            let (mut parties, first) = start_sign(&chosen, &message);
            let sigs = inprocess::drive(&mut parties, first, Schedule::Fifo, |_| {}).unwrap();
            let sig = sigs.values().next().unwrap().clone();
            assert!(
                sigs.values().all(|s| *s == sig),
                "{curve}: signers aggregated different signatures"
            );
            assert_eq!(sig.len(), 64);
            verify_signature(curve, &group_key, &message, &sig).unwrap();
            verify_independently(curve, &group_key, &message, &sig);
            assert_eq!(
                verify_signature(curve, &group_key, b"another message", &sig),
                Err(TssError::BadSignature)
            );
        }
    }
}

#[test]
fn inprocess_baseline_returns_a_verified_signature() {
    for curve in Curve::ALL {
        let b = inprocess::run_dkg_and_sign(curve, 3, 2, b"baseline").unwrap();
        verify_independently(curve, &b.group_public_key, b"baseline", &b.signature);
    }
}

#[test]
fn out_of_order_delivery_still_completes() {
    for curve in Curve::ALL {
        for schedule in [Schedule::Lifo, Schedule::LatestRoundFirst] {
            let shares = dkg_shares(curve, schedule);
            let chosen: Vec<&KeyShare> = shares[2..].iter().collect();
            let (mut parties, first) = start_sign(&chosen, b"msg");
            let sigs = inprocess::drive(&mut parties, first, schedule, |_| {}).unwrap();
            let sig = sigs.values().next().unwrap();
            verify_independently(curve, &shares[0].group_public_key().unwrap(), b"msg", sig);
        }
    }
}

#[test]
fn later_round_message_is_buffered_until_its_round() {
    // Party 3 of a 3-party DKG gets party 1's echo (round 2) before any round-1 package.
    let (mut parties, first) = start_dkg(Curve::Ed25519, 3, 2);
    let round1: Vec<Outgoing> = first.iter().map(|(_, out)| out[0].clone()).collect();
    let mut echoes = Vec::new();
    for (i, p) in parties.iter_mut().enumerate().take(2) {
        for (j, msg) in round1.iter().enumerate() {
            if i != j {
                if let Step::Continue(out) = p.handle(j as u16 + 1, msg.into()).unwrap() {
                    echoes.extend(out.into_iter().map(|o| (i as u16 + 1, o)));
                }
            }
        }
    }
    assert_eq!(
        echoes.len(),
        2,
        "parties 1 and 2 echo once they have all round-1 packages"
    );
    let third = &mut parties[2];
    let step = third.handle(1, (&echoes[0].1).into()).unwrap();
    assert!(
        matches!(step, Step::Continue(ref out) if out.is_empty()),
        "early echo is buffered, nothing sent"
    );
    // A redelivered copy is ignored; a different body for the same round is an error.
    assert!(
        matches!(third.handle(1, (&echoes[0].1).into()).unwrap(), Step::Continue(ref o) if o.is_empty())
    );
    let mut forged: Incoming = (&echoes[0].1).into();
    forged.body[0] ^= 1;
    assert_eq!(
        third.handle(1, forged),
        Err(TssError::ConflictingMessage {
            round: dkg::ECHO,
            culprit: 1
        })
    );
}

#[test]
fn duplicates_are_ignored_and_the_run_completes() {
    let (mut parties, mut first) = start_dkg(Curve::Secp256k1Tr, 3, 2);
    let again = first.clone();
    first.extend(again);
    let shares = inprocess::drive(&mut parties, first, Schedule::Fifo, |_| {}).unwrap();
    assert_eq!(shares.len(), 3);
}

#[test]
fn inconsistent_round1_broadcast_names_its_sender() {
    for curve in Curve::ALL {
        // The relay shows party 4 another (well-formed, properly proven) round-1 package
        // "from" party 2 than everybody else sees.
        let (_, alt) = AnyDkg::start(curve, 2, N, T).unwrap();
        let alt_body = alt[0].body.clone();
        let (mut parties, first) = start_dkg(curve, N, T);
        let result = inprocess::drive(&mut parties, first, Schedule::Fifo, |d: &mut Delivery| {
            if d.from == 2 && d.to == 4 && d.message.round == dkg::ROUND1 {
                d.message.body = alt_body.clone();
            }
        });
        let (_, error) = failure(result);
        assert!(
            matches!(
                error,
                TssError::InconsistentBroadcast {
                    round: 1,
                    culprit: 2,
                    ..
                }
            ),
            "{curve}: got {error:?}"
        );
        assert_eq!(error.culprit(), Some(2));
    }
}

#[test]
fn corrupted_dkg_share_fails_with_bad_share_naming_the_sender() {
    for curve in Curve::ALL {
        let (mut parties, first) = start_dkg(curve, N, T);
        let result = inprocess::drive(&mut parties, first, Schedule::Fifo, |d: &mut Delivery| {
            if d.from == 3 && d.to == 1 && d.message.round == dkg::ROUND2 {
                d.message.body = match curve {
                    Curve::Ed25519 => bump_dkg_share::<Ed25519Sha512>(&d.message.body),
                    Curve::Secp256k1Tr => bump_dkg_share::<Secp256K1Sha256TR>(&d.message.body),
                };
            }
        });
        let (party, error) = failure(result);
        assert_eq!(
            (party, error),
            (1, TssError::BadShare { culprit: 3 }),
            "{curve}"
        );
    }
}

#[test]
fn corrupted_signature_share_fails_with_bad_share_naming_the_signer() {
    for curve in Curve::ALL {
        let shares = dkg_shares(curve, Schedule::Fifo);
        let chosen: Vec<&KeyShare> = shares[..3].iter().collect();
        let (mut parties, first) = start_sign(&chosen, b"msg");
        let result = inprocess::drive(&mut parties, first, Schedule::Fifo, |d: &mut Delivery| {
            if d.from == 2 && d.to == 3 && d.message.round == sign::SHARES {
                d.message.body = match curve {
                    Curve::Ed25519 => bump_signature_share::<Ed25519Sha512>(&d.message.body),
                    Curve::Secp256k1Tr => {
                        bump_signature_share::<Secp256K1Sha256TR>(&d.message.body)
                    }
                };
            }
        });
        let (party, error) = failure(result);
        assert_eq!(
            (party, error),
            (3, TssError::BadShare { culprit: 2 }),
            "{curve}"
        );
    }
}

#[test]
fn inconsistent_commitments_broadcast_names_its_sender() {
    for curve in Curve::ALL {
        let shares = dkg_shares(curve, Schedule::Fifo);
        let chosen: Vec<&KeyShare> = shares[..3].iter().collect();
        let signers = [1, 2, 3];
        let (_, alt) = AnySign::start(&shares[0], &signers, b"msg").unwrap();
        let alt_body = alt[0].body.clone();
        let (mut parties, first) = start_sign(&chosen, b"msg");
        let result = inprocess::drive(&mut parties, first, Schedule::Fifo, |d: &mut Delivery| {
            if d.from == 1 && d.to == 3 && d.message.round == sign::COMMITMENTS {
                d.message.body = alt_body.clone();
            }
        });
        let (_, error) = failure(result);
        assert!(
            matches!(
                error,
                TssError::InconsistentBroadcast {
                    round: 1,
                    culprit: 1,
                    ..
                }
            ),
            "{curve}: {error:?}"
        );
    }
}

#[test]
fn malformed_bodies_name_the_sender_and_never_panic() {
    let (mut parties, first) = start_dkg(Curve::Ed25519, 3, 2);
    let result = inprocess::drive(&mut parties, first, Schedule::Fifo, |d: &mut Delivery| {
        if d.from == 2 && d.to == 1 && d.message.round == dkg::ROUND1 {
            d.message.body.truncate(10);
        }
    });
    let (party, error) = failure(result);
    assert_eq!(party, 1);
    assert!(
        matches!(
            error,
            TssError::Malformed {
                round: 1,
                culprit: 2,
                ..
            }
        ),
        "{error:?}"
    );

    // Junk of every shape in every round is an error, never a panic.
    for curve in Curve::ALL {
        for (round, ty) in [
            (dkg::ROUND1, dkg::ROUND1_TYPE),
            (dkg::ECHO, dkg::ECHO_TYPE),
            (dkg::ROUND2, dkg::ROUND2_TYPE),
        ] {
            for len in [0usize, 1, 31, 32, 33, 64, 96, 200] {
                let (mut parties, _) = start_dkg(curve, 2, 2);
                let junk = Incoming {
                    round,
                    message_type: ty.into(),
                    body: vec![0xa5; len],
                };
                // Party 1 has nothing else, so round 1 junk fails at once; later rounds wait.
                let _ = parties[0].handle(2, junk);
            }
        }
    }
    let (mut parties, _) = start_dkg(Curve::Ed25519, 3, 2);
    let wrong_type = Incoming {
        round: dkg::ROUND1,
        message_type: "frost/sign/share".into(),
        body: vec![],
    };
    assert!(matches!(
        parties[0].handle(2, wrong_type),
        Err(TssError::UnexpectedMessage { .. })
    ));
    let stranger = Incoming {
        round: dkg::ROUND1,
        message_type: dkg::ROUND1_TYPE.into(),
        body: vec![],
    };
    assert_eq!(
        parties[0].handle(9, stranger),
        Err(TssError::UnknownSender { from: 9 })
    );
}

#[test]
fn persisted_nonce_resumes_signing_after_a_crash() {
    for curve in Curve::ALL {
        let shares = dkg_shares(curve, Schedule::Fifo);
        let signers = [1u16, 2, 3];
        let chosen: Vec<&KeyShare> = shares[..3].iter().collect();
        let (mut parties, first) = start_sign(&chosen, b"resume me");

        // Party 2 persists its nonce, sends its commitments, gets one message, and crashes.
        let persisted = parties[1]
            .nonce_bytes()
            .unwrap()
            .expect("a fresh signer holds a nonce");
        let from_1 = first[0].1[0].clone();
        assert!(
            matches!(parties[1].handle(1, (&from_1).into()).unwrap(), Step::Continue(ref o) if o.is_empty())
        );

        let (restarted, again) =
            AnySign::resume(&shares[1], &signers, b"resume me", &persisted).unwrap();
        assert_eq!(again, first[1].1, "resuming re-sends the same commitments");
        parties[1] = restarted;

        // Everything is redelivered (the mailbox kept it); the resent commitments are duplicates.
        let mut replay = first.clone();
        replay.push((2, again));
        let sigs = inprocess::drive(&mut parties, replay, Schedule::Fifo, |_| {}).unwrap();
        let sig = &sigs[&2];
        verify_independently(
            curve,
            &shares[0].group_public_key().unwrap(),
            b"resume me",
            sig,
        );
        for p in &parties {
            assert!(
                p.nonce_bytes().unwrap().is_none(),
                "nonce of party {} not consumed",
                p.index()
            );
        }
    }
}

#[test]
fn key_share_round_trips_through_bytes() {
    let shares = inprocess::run_dkg(Curve::Secp256k1Tr, 3, 2).unwrap();
    let bytes = shares[1].to_bytes().unwrap();
    let back = KeyShare::from_bytes(&bytes).unwrap();
    assert_eq!(back, shares[1]);
    assert!(KeyShare::from_bytes(&bytes[..bytes.len() - 1]).is_err());
    assert!(KeyShare::from_bytes(&[]).is_err());
    assert!(KeyShare::from_bytes(&[2, 0, 0]).is_err());
    // A signature from restored shares still verifies.
    let restored: Vec<KeyShare> = shares[..2]
        .iter()
        .map(|s| KeyShare::from_bytes(&s.to_bytes().unwrap()).unwrap())
        .collect();
    let sig = inprocess::run_sign(&restored, b"x").unwrap();
    verify_independently(
        Curve::Secp256k1Tr,
        &shares[2].group_public_key().unwrap(),
        b"x",
        &sig,
    );
}

#[test]
fn invalid_parameters_are_refused() {
    assert!(AnyDkg::start(Curve::Ed25519, 0, 3, 2).is_err());
    assert!(AnyDkg::start(Curve::Ed25519, 4, 3, 2).is_err());
    assert!(AnyDkg::start(Curve::Ed25519, 1, 3, 1).is_err());
    assert!(AnyDkg::start(Curve::Ed25519, 1, 3, 4).is_err());
    let shares = inprocess::run_dkg(Curve::Ed25519, 3, 2).unwrap();
    assert!(
        AnySign::start(&shares[0], &[1], b"m").is_err(),
        "fewer than t signers"
    );
    assert!(
        AnySign::start(&shares[0], &[2, 3], b"m").is_err(),
        "not among the signers"
    );
    assert!(
        AnySign::start(&shares[0], &[1, 1], b"m").is_err(),
        "listed twice"
    );
    assert!(
        AnySign::start(&shares[0], &[1, 7], b"m").is_err(),
        "holds no share"
    );
}

#[test]
fn signer_that_gets_shares_before_commitments_finishes_and_still_sends_its_share() {
    let shares = inprocess::run_dkg(Curve::Ed25519, 3, 3).unwrap();
    let chosen: Vec<&KeyShare> = shares.iter().collect();
    let (mut parties, first) = start_sign(&chosen, b"m");
    let commitments: Vec<Outgoing> = first.iter().map(|(_, out)| out[0].clone()).collect();
    // Parties 1 and 2 see all commitments and send their shares.
    let mut shares_for_3 = Vec::new();
    for (i, party) in parties.iter_mut().enumerate().take(2) {
        for (j, c) in commitments.iter().enumerate() {
            if i != j {
                for o in party.handle(j as u16 + 1, c.into()).unwrap().outgoing() {
                    if o.to == Some(3) {
                        shares_for_3.push((i as u16 + 1, o.clone()));
                    }
                }
            }
        }
    }
    assert_eq!(shares_for_3.len(), 2);
    // Party 3 gets both shares first (buffered), then the commitments: in one call it signs,
    // aggregates, and hands back the shares it still owes parties 1 and 2.
    for (from, s) in &shares_for_3 {
        assert_eq!(
            parties[2].handle(*from, s.into()).unwrap(),
            Step::Continue(vec![])
        );
    }
    assert_eq!(
        parties[2].handle(1, (&commitments[0]).into()).unwrap(),
        Step::Continue(vec![])
    );
    match parties[2].handle(2, (&commitments[1]).into()).unwrap() {
        Step::Done { output, outgoing } => {
            assert_eq!(
                outgoing.iter().map(|o| o.to).collect::<Vec<_>>(),
                vec![Some(1), Some(2)]
            );
            verify_independently(
                Curve::Ed25519,
                &shares[0].group_public_key().unwrap(),
                b"m",
                &output,
            );
        }
        other => panic!("expected Done, got {other:?}"),
    }
}
