//! What a session is for, signed by the coordinator that created it.
//!
//! A party checks the descriptor's signature against the coordinator keys it trusts, and that
//! the descriptor matches the session the relay shows it (parties and their identity keys, n,
//! t, message hash), before it sends anything. So a relay cannot make a party sign a message,
//! or join a key, that the coordinator did not ask for, nor slip in a participant under a key
//! the coordinator did not name: every payload is verified against the key named here.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::Curve;

/// Domain of the coordinator's signature over a descriptor.
pub const DESCRIPTOR_DOMAIN: &str = "cohort/session-descriptor/v1";
/// 2: the descriptor names each party's identity key. Version 1 (no keys) is refused.
const FORMAT_VERSION: u8 = 2;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Purpose {
    /// Create a new `t`-of-`n` key among the session's parties (session index = FROST index).
    Keygen { curve: Curve },
    /// Sign `message_hash` with the key whose group public key is given. `signers` maps each
    /// participant to its index in the key (from the keygen), which is its FROST identifier.
    Sign {
        curve: Curve,
        group_public_key: Vec<u8>,
        message_hash: [u8; 32],
        description: String,
        signers: Vec<(String, u16)>,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Descriptor {
    pub purpose: Purpose,
    pub n: u16,
    pub t: u16,
    /// The participants, in session order.
    pub parties: Vec<String>,
    /// Each participant's Ed25519 identity key, in the order of `parties`: the only key the
    /// relay lets join as it, and the only one its payloads may be signed with.
    pub party_keys: Vec<[u8; 32]>,
    /// Unique per request, so a descriptor cannot be replayed into another session.
    pub nonce: [u8; 16],
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DescriptorError {
    #[error("the session has no descriptor")]
    Missing,
    #[error("descriptor is malformed: {0}")]
    Malformed(String),
    #[error("descriptor is not signed by a trusted coordinator key")]
    Untrusted,
    #[error("descriptor disagrees with the session: {0}")]
    Mismatch(String),
}

impl Descriptor {
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = vec![FORMAT_VERSION];
        // Encoding a plain struct of vectors and integers into a Vec cannot fail.
        out.extend(postcard::to_allocvec(self).unwrap_or_default());
        out
    }

    pub fn from_bytes(bytes: &[u8]) -> Result<Self, DescriptorError> {
        match bytes.split_first() {
            None => Err(DescriptorError::Missing),
            Some((&FORMAT_VERSION, body)) => {
                postcard::from_bytes(body).map_err(|e| DescriptorError::Malformed(e.to_string()))
            }
            Some((1, _)) => Err(DescriptorError::Malformed(
                "format version 1 names no identity keys; the coordinator that made it is \
                 older than this party and must be upgraded"
                    .into(),
            )),
            Some((v, _)) => Err(DescriptorError::Malformed(format!(
                "unknown format version {v}"
            ))),
        }
    }

    /// Signs with the coordinator's identity key: returns (bytes, signature).
    pub fn sign(&self, coordinator: &cohort_crypto::identity::IdentityKey) -> (Vec<u8>, Vec<u8>) {
        let bytes = self.to_bytes();
        let sig = coordinator.sign(DESCRIPTOR_DOMAIN, &bytes).to_vec();
        (bytes, sig)
    }

    /// Verifies the signature against `trusted` keys and the descriptor against the session
    /// as the relay presents it.
    pub fn verify(
        bytes: &[u8],
        signature: &[u8],
        trusted: &[[u8; 32]],
        session_parties: &[String],
        n: u16,
        t: u16,
        session_message_hash: &[u8],
    ) -> Result<Descriptor, DescriptorError> {
        if bytes.is_empty() {
            return Err(DescriptorError::Missing);
        }
        let signed = trusted.iter().any(|k| {
            cohort_crypto::identity::verify(k, DESCRIPTOR_DOMAIN, bytes, signature).is_ok()
        });
        if !signed {
            return Err(DescriptorError::Untrusted);
        }
        let d = Descriptor::from_bytes(bytes)?;
        if d.party_keys.len() != d.parties.len() {
            return Err(DescriptorError::Malformed(format!(
                "{} identity keys for {} parties",
                d.party_keys.len(),
                d.parties.len()
            )));
        }
        if d.parties != session_parties {
            return Err(DescriptorError::Mismatch(format!(
                "parties {:?} vs session {:?}",
                d.parties, session_parties
            )));
        }
        if d.n != n || d.t != t {
            return Err(DescriptorError::Mismatch(format!(
                "n/t {}/{} vs session {n}/{t}",
                d.n, d.t
            )));
        }
        if let Purpose::Sign {
            message_hash,
            signers,
            ..
        } = &d.purpose
        {
            if session_message_hash != message_hash {
                return Err(DescriptorError::Mismatch("message hash differs".into()));
            }
            if signers.iter().map(|(p, _)| p).ne(d.parties.iter()) {
                return Err(DescriptorError::Mismatch(
                    "signers differ from parties".into(),
                ));
            }
        }
        Ok(d)
    }

    /// Party id -> identity key, as the coordinator named them.
    pub fn identities(&self) -> HashMap<String, [u8; 32]> {
        self.parties
            .iter()
            .cloned()
            .zip(self.party_keys.iter().copied())
            .collect()
    }

    /// Checks the identity keys the relay's session names (party id, key) against the ones
    /// the coordinator signed: a relay that admits another key as a participant is caught
    /// before anything is sent.
    pub fn check_keys(&self, session_keys: &[(String, Vec<u8>)]) -> Result<(), DescriptorError> {
        let named = self.identities();
        for (party, key) in session_keys {
            match named.get(party) {
                Some(k) if k.as_slice() == key.as_slice() => {}
                Some(k) => {
                    return Err(DescriptorError::Mismatch(format!(
                        "the session admits {} as {party}, the coordinator named {}",
                        hex_short(key),
                        hex_short(k)
                    )))
                }
                None => {
                    return Err(DescriptorError::Mismatch(format!(
                        "the session has participant {party}, the descriptor does not"
                    )))
                }
            }
        }
        Ok(())
    }
}

fn hex_short(key: &[u8]) -> String {
    let mut out: String = key.iter().take(8).map(|b| format!("{b:02x}")).collect();
    out.push_str("..");
    out
}

/// SHA-256 of a message: what sign sessions sign.
pub fn message_hash(message: &[u8]) -> [u8; 32] {
    Sha256::digest(message).into()
}

#[cfg(test)]
mod tests {
    use super::*;
    use cohort_crypto::identity::IdentityKey;

    fn sample() -> Descriptor {
        Descriptor {
            purpose: Purpose::Sign {
                curve: Curve::Ed25519,
                group_public_key: vec![1; 32],
                message_hash: message_hash(b"pay bob"),
                description: "pay bob".into(),
                signers: vec![("a".into(), 1), ("c".into(), 3)],
            },
            n: 2,
            t: 2,
            parties: vec!["a".into(), "c".into()],
            party_keys: vec![[0xa; 32], [0xc; 32]],
            nonce: [7; 16],
        }
    }

    #[test]
    fn descriptor_names_each_party_key_and_catches_a_session_that_admits_another() {
        let coord = IdentityKey::generate();
        let d = sample();
        let (bytes, sig) = d.sign(&coord);
        let hash = message_hash(b"pay bob");
        let ok =
            Descriptor::verify(&bytes, &sig, &[coord.public()], &d.parties, 2, 2, &hash).unwrap();
        assert_eq!(ok.identities()["c"], [0xc; 32]);
        assert_eq!(
            ok.check_keys(&[("a".into(), vec![0xa; 32]), ("c".into(), vec![0xc; 32])]),
            Ok(())
        );
        assert!(matches!(
            ok.check_keys(&[("a".into(), vec![0xa; 32]), ("c".into(), vec![0xd; 32])]),
            Err(DescriptorError::Mismatch(_))
        ));

        let mut short = sample();
        short.party_keys.pop();
        let (bytes, sig) = short.sign(&coord);
        assert!(matches!(
            Descriptor::verify(&bytes, &sig, &[coord.public()], &d.parties, 2, 2, &hash),
            Err(DescriptorError::Malformed(_))
        ));
        // A version-1 descriptor (no keys) is refused, not misread.
        let mut v1 = d.to_bytes();
        v1[0] = 1;
        assert!(matches!(
            Descriptor::from_bytes(&v1),
            Err(DescriptorError::Malformed(m)) if m.contains("version 1")
        ));
    }

    #[test]
    fn descriptor_verifies_only_with_a_trusted_key_and_matching_session() {
        let coord = IdentityKey::generate();
        let other = IdentityKey::generate();
        let d = sample();
        let (bytes, sig) = d.sign(&coord);
        let parties = d.parties.clone();
        let hash = message_hash(b"pay bob");
        let ok = Descriptor::verify(&bytes, &sig, &[coord.public()], &parties, 2, 2, &hash);
        assert_eq!(ok, Ok(d));
        let untrusted = Descriptor::verify(&bytes, &sig, &[other.public()], &parties, 2, 2, &hash);
        assert_eq!(untrusted, Err(DescriptorError::Untrusted));
        let wrong_hash =
            Descriptor::verify(&bytes, &sig, &[coord.public()], &parties, 2, 2, &[0; 32]);
        assert!(matches!(wrong_hash, Err(DescriptorError::Mismatch(_))));
        let wrong_parties = Descriptor::verify(
            &bytes,
            &sig,
            &[coord.public()],
            &["a".into(), "b".into()],
            2,
            2,
            &hash,
        );
        assert!(matches!(wrong_parties, Err(DescriptorError::Mismatch(_))));
    }
}
