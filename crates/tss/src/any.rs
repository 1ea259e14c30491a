//! The run-time choice of curve: one type per protocol that wraps either ciphersuite, so the
//! SDK and CLI pick the curve from a string and hold no generic parameter.

use frost_ed25519::Ed25519Sha512;
use frost_secp256k1_tr::Secp256K1Sha256TR;
use zeroize::Zeroizing;

use crate::dkg::frost;
use crate::share::Packages;
use crate::{Curve, Dkg, Incoming, KeyShare, LoadedShare, Outgoing, Party, Sign, Step, TssError};

/// A DKG on a curve chosen at run time. Its output is this party's [`KeyShare`].
pub enum AnyDkg {
    Ed25519(Dkg<Ed25519Sha512>),
    Secp256k1Tr(Dkg<Secp256K1Sha256TR>),
}

impl AnyDkg {
    /// See [`Dkg::start`].
    pub fn start(
        curve: Curve,
        me: u16,
        n: u16,
        threshold: u16,
    ) -> Result<(Self, Vec<Outgoing>), TssError> {
        Ok(match curve {
            Curve::Ed25519 => {
                let (d, out) = Dkg::start(me, n, threshold)?;
                (AnyDkg::Ed25519(d), out)
            }
            Curve::Secp256k1Tr => {
                let (d, out) = Dkg::start(me, n, threshold)?;
                (AnyDkg::Secp256k1Tr(d), out)
            }
        })
    }

    /// As [`AnyDkg::start`], deterministic in `seed` (see [`crate::Dkg::start_seeded`]).
    pub fn start_seeded(
        curve: Curve,
        me: u16,
        n: u16,
        threshold: u16,
        seed: [u8; 32],
    ) -> Result<(Self, Vec<Outgoing>), TssError> {
        Ok(match curve {
            Curve::Ed25519 => {
                let (d, out) = Dkg::start_seeded(me, n, threshold, seed)?;
                (AnyDkg::Ed25519(d), out)
            }
            Curve::Secp256k1Tr => {
                let (d, out) = Dkg::start_seeded(me, n, threshold, seed)?;
                (AnyDkg::Secp256k1Tr(d), out)
            }
        })
    }

    pub fn curve(&self) -> Curve {
        match self {
            AnyDkg::Ed25519(_) => Curve::Ed25519,
            AnyDkg::Secp256k1Tr(_) => Curve::Secp256k1Tr,
        }
    }

    pub fn index(&self) -> u16 {
        match self {
            AnyDkg::Ed25519(d) => d.index(),
            AnyDkg::Secp256k1Tr(d) => d.index(),
        }
    }

    /// See [`Dkg::handle`].
    pub fn handle(&mut self, from: u16, message: Incoming) -> Result<Step<KeyShare>, TssError> {
        match self {
            AnyDkg::Ed25519(d) => d.handle(from, message)?.try_map(|o| o.key_share()),
            AnyDkg::Secp256k1Tr(d) => d.handle(from, message)?.try_map(|o| o.key_share()),
        }
    }
}

impl Party for AnyDkg {
    type Output = KeyShare;

    fn index(&self) -> u16 {
        AnyDkg::index(self)
    }

    fn handle(&mut self, from: u16, message: Incoming) -> Result<Step<KeyShare>, TssError> {
        AnyDkg::handle(self, from, message)
    }
}

/// A signing run with a [`KeyShare`] of either curve. Its output is the signature bytes
/// (`Signature::serialize()`: 64 bytes on both curves; BIP-340 format on secp256k1-tr).
pub enum AnySign {
    Ed25519(Sign<Ed25519Sha512>),
    Secp256k1Tr(Sign<Secp256K1Sha256TR>),
}

impl AnySign {
    /// See [`Sign::start`]. Parses the share's packages first; a party that signs often
    /// loads its share once and uses [`AnySign::start_loaded`].
    pub fn start(
        share: &KeyShare,
        signers: &[u16],
        message: &[u8],
    ) -> Result<(Self, Vec<Outgoing>), TssError> {
        Self::start_loaded(&share.load()?, signers, message)
    }

    /// See [`Sign::start`].
    pub fn start_loaded(
        share: &LoadedShare,
        signers: &[u16],
        message: &[u8],
    ) -> Result<(Self, Vec<Outgoing>), TssError> {
        Ok(match &share.packages {
            Packages::Ed25519(kp, pkp) => {
                let (s, out) = Sign::start(kp.clone(), pkp.clone(), signers, message)?;
                (AnySign::Ed25519(s), out)
            }
            Packages::Secp256k1Tr(kp, pkp) => {
                let (s, out) = Sign::start(kp.clone(), pkp.clone(), signers, message)?;
                (AnySign::Secp256k1Tr(s), out)
            }
        })
    }

    /// See [`Sign::resume`] and the nonce rules in [`crate::sign`].
    pub fn resume(
        share: &KeyShare,
        signers: &[u16],
        message: &[u8],
        persisted_nonce: &[u8],
    ) -> Result<(Self, Vec<Outgoing>), TssError> {
        Self::resume_loaded(&share.load()?, signers, message, persisted_nonce)
    }

    /// See [`Sign::resume`] and the nonce rules in [`crate::sign`].
    pub fn resume_loaded(
        share: &LoadedShare,
        signers: &[u16],
        message: &[u8],
        persisted_nonce: &[u8],
    ) -> Result<(Self, Vec<Outgoing>), TssError> {
        Ok(match &share.packages {
            Packages::Ed25519(kp, pkp) => {
                let (s, out) =
                    Sign::resume(kp.clone(), pkp.clone(), signers, message, persisted_nonce)?;
                (AnySign::Ed25519(s), out)
            }
            Packages::Secp256k1Tr(kp, pkp) => {
                let (s, out) =
                    Sign::resume(kp.clone(), pkp.clone(), signers, message, persisted_nonce)?;
                (AnySign::Secp256k1Tr(s), out)
            }
        })
    }

    pub fn curve(&self) -> Curve {
        match self {
            AnySign::Ed25519(_) => Curve::Ed25519,
            AnySign::Secp256k1Tr(_) => Curve::Secp256k1Tr,
        }
    }

    pub fn index(&self) -> u16 {
        match self {
            AnySign::Ed25519(s) => s.index(),
            AnySign::Secp256k1Tr(s) => s.index(),
        }
    }

    /// See [`Sign::holds_nonce`].
    pub fn holds_nonce(&self) -> bool {
        match self {
            AnySign::Ed25519(s) => s.holds_nonce(),
            AnySign::Secp256k1Tr(s) => s.holds_nonce(),
        }
    }

    /// See [`Sign::nonce_bytes`].
    pub fn nonce_bytes(&self) -> Result<Option<Zeroizing<Vec<u8>>>, TssError> {
        match self {
            AnySign::Ed25519(s) => s.nonce_bytes(),
            AnySign::Secp256k1Tr(s) => s.nonce_bytes(),
        }
    }

    /// See [`Sign::handle`].
    pub fn handle(&mut self, from: u16, message: Incoming) -> Result<Step<Vec<u8>>, TssError> {
        match self {
            AnySign::Ed25519(s) => s
                .handle(from, message)?
                .try_map(|sig| sig.serialize().map_err(frost)),
            AnySign::Secp256k1Tr(s) => s
                .handle(from, message)?
                .try_map(|sig| sig.serialize().map_err(frost)),
        }
    }
}

impl Party for AnySign {
    type Output = Vec<u8>;

    fn index(&self) -> u16 {
        AnySign::index(self)
    }

    fn handle(&mut self, from: u16, message: Incoming) -> Result<Step<Vec<u8>>, TssError> {
        AnySign::handle(self, from, message)
    }
}
