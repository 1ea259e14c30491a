//! The curves Cohort signs on, chosen at run time by name.

use std::fmt;
use std::str::FromStr;

use frost_core::{Ciphersuite, Identifier, Signature, VerifyingKey};
use frost_ed25519::Ed25519Sha512;
use frost_secp256k1_tr::Secp256K1Sha256TR;
use serde::{Deserialize, Serialize};

use crate::TssError;

/// A FROST ciphersuite Cohort supports.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Curve {
    /// FROST(Ed25519, SHA-512): signatures are standard Ed25519 (RFC 8032) signatures.
    Ed25519,
    /// FROST(secp256k1, SHA-256) with BIP-340/341 Taproot conventions: signatures are BIP-340
    /// Schnorr signatures under the (Taproot-tweaked) group key.
    Secp256k1Tr,
}

impl Curve {
    pub const ALL: [Curve; 2] = [Curve::Ed25519, Curve::Secp256k1Tr];

    /// The name used on the command line and in configs.
    pub fn as_str(self) -> &'static str {
        match self {
            Curve::Ed25519 => "ed25519",
            Curve::Secp256k1Tr => "secp256k1-tr",
        }
    }
}

impl fmt::Display for Curve {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("unknown curve {0:?}: use \"ed25519\" or \"secp256k1-tr\"")]
pub struct UnknownCurve(pub String);

impl FromStr for Curve {
    type Err = UnknownCurve;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Curve::ALL
            .into_iter()
            .find(|c| c.as_str().eq_ignore_ascii_case(s))
            .ok_or_else(|| UnknownCurve(s.to_string()))
    }
}

/// A ciphersuite with a [`Curve`] name, so generic code can label what it produces.
pub trait CurveSuite: Ciphersuite {
    const CURVE: Curve;
}

impl CurveSuite for Ed25519Sha512 {
    const CURVE: Curve = Curve::Ed25519;
}

impl CurveSuite for Secp256K1Sha256TR {
    const CURVE: Curve = Curve::Secp256k1Tr;
}

/// Verifies `signature` on `message` under a group key, both as this crate serializes them
/// (frost's `VerifyingKey::serialize` / `Signature::serialize`).
pub fn verify_signature(
    curve: Curve,
    group_public_key: &[u8],
    message: &[u8],
    signature: &[u8],
) -> Result<(), TssError> {
    match curve {
        Curve::Ed25519 => verify::<Ed25519Sha512>(group_public_key, message, signature),
        Curve::Secp256k1Tr => verify::<Secp256K1Sha256TR>(group_public_key, message, signature),
    }
}

fn verify<C: Ciphersuite>(
    group_public_key: &[u8],
    message: &[u8],
    signature: &[u8],
) -> Result<(), TssError> {
    let key = VerifyingKey::<C>::deserialize(group_public_key)
        .map_err(|e| TssError::InvalidParameters(format!("group public key: {e}")))?;
    let signature = Signature::<C>::deserialize(signature).map_err(|_| TssError::BadSignature)?;
    key.verify(message, &signature)
        .map_err(|_| TssError::BadSignature)
}

/// The 32-byte x-only public key BIP-340 verifiers (and Taproot outputs) use, from a
/// secp256k1-tr group key (33-byte compressed point). `None` for any other length.
pub fn bip340_public_key(group_public_key: &[u8]) -> Option<[u8; 32]> {
    match group_public_key {
        [0x02 | 0x03, x @ ..] if x.len() == 32 => x.try_into().ok(),
        _ => None,
    }
}

/// Party index `i` (1-based) is FROST identifier `i`.
pub(crate) fn identifier<C: Ciphersuite>(index: u16) -> Result<Identifier<C>, TssError> {
    Identifier::<C>::try_from(index).map_err(|_| {
        TssError::InvalidParameters(format!(
            "party index {index} is not valid (indices start at 1)"
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn curve_names_parse_and_print() {
        for c in Curve::ALL {
            assert_eq!(c.as_str().parse::<Curve>(), Ok(c));
        }
        assert_eq!("ED25519".parse::<Curve>(), Ok(Curve::Ed25519));
        assert_eq!(
            "secp256k1".parse::<Curve>(),
            Err(UnknownCurve("secp256k1".into()))
        );
    }

    #[test]
    fn index_zero_is_not_an_identifier() {
        assert!(identifier::<Ed25519Sha512>(0).is_err());
        assert!(identifier::<Ed25519Sha512>(1).is_ok());
    }
}
