//! A party's key share as it is stored (in the key store) and handed between components.

use frost_core::keys::{KeyPackage, PublicKeyPackage};
use frost_core::Ciphersuite;
use frost_ed25519::Ed25519Sha512;
use frost_secp256k1_tr::Secp256K1Sha256TR;
use serde::{Deserialize, Serialize};
use zeroize::{Zeroize, Zeroizing};

use crate::curve::{Curve, CurveSuite};
use crate::dkg::frost;
use crate::TssError;

const FORMAT_VERSION: u8 = 1;

/// One party's share of a group key, with the public data needed to sign with it.
///
/// `key_package` and `public_key_package` are frost's own serializations
/// (`KeyPackage::serialize`, `PublicKeyPackage::serialize`). `key_package` is secret; the
/// bytes are wiped when the value is dropped.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyShare {
    pub curve: Curve,
    /// This party's index (1-based; FROST identifier `index`).
    pub index: u16,
    /// Signers needed (t).
    pub threshold: u16,
    /// Parties holding shares (n).
    pub parties: u16,
    pub key_package: Vec<u8>,
    pub public_key_package: Vec<u8>,
}

impl KeyShare {
    /// `version byte (1) || postcard(KeyShare)`: what goes in the key store.
    pub fn to_bytes(&self) -> Result<Zeroizing<Vec<u8>>, TssError> {
        let mut out = Zeroizing::new(vec![FORMAT_VERSION]);
        let body = Zeroizing::new(
            postcard::to_allocvec(self)
                .map_err(|e| TssError::InvalidParameters(format!("encoding key share: {e}")))?,
        );
        out.extend_from_slice(&body);
        Ok(out)
    }

    pub fn from_bytes(bytes: &[u8]) -> Result<Self, TssError> {
        match bytes.split_first() {
            Some((&FORMAT_VERSION, body)) => {
                let share: KeyShare = postcard::from_bytes(body).map_err(|e| {
                    TssError::InvalidParameters(format!("stored key share is damaged: {e}"))
                })?;
                // Parse the packages now, so a damaged share fails here and not mid-signing.
                drop(share.load()?);
                Ok(share)
            }
            _ => Err(TssError::InvalidParameters(
                "stored key share has an unknown format version".into(),
            )),
        }
    }

    /// The share with its packages parsed, ready to sign with (see [`LoadedShare`]).
    pub fn load(&self) -> Result<LoadedShare, TssError> {
        let packages = match self.curve {
            Curve::Ed25519 => {
                let (k, p) = self.packages::<Ed25519Sha512>()?;
                Packages::Ed25519(k, p)
            }
            Curve::Secp256k1Tr => {
                let (k, p) = self.packages::<Secp256K1Sha256TR>()?;
                Packages::Secp256k1Tr(k, p)
            }
        };
        Ok(LoadedShare {
            index: self.index,
            packages,
        })
    }

    /// The group's public key (`VerifyingKey::serialize()`), equal across all shares of a key.
    pub fn group_public_key(&self) -> Result<Vec<u8>, TssError> {
        match self.curve {
            Curve::Ed25519 => group_key::<frost_ed25519::Ed25519Sha512>(&self.public_key_package),
            Curve::Secp256k1Tr => {
                group_key::<frost_secp256k1_tr::Secp256K1Sha256TR>(&self.public_key_package)
            }
        }
    }

    /// The frost packages, for a ciphersuite that must match `self.curve`.
    pub fn packages<C: CurveSuite>(
        &self,
    ) -> Result<(KeyPackage<C>, PublicKeyPackage<C>), TssError> {
        if C::CURVE != self.curve {
            return Err(TssError::InvalidParameters(format!(
                "key share is for {}, not {}",
                self.curve,
                C::CURVE
            )));
        }
        let key_package = KeyPackage::<C>::deserialize(&self.key_package)
            .map_err(|e| TssError::InvalidParameters(format!("key package: {e}")))?;
        let public_key_package = PublicKeyPackage::<C>::deserialize(&self.public_key_package)
            .map_err(|e| TssError::InvalidParameters(format!("public key package: {e}")))?;
        Ok((key_package, public_key_package))
    }
}

/// A [`KeyShare`] with its frost packages parsed, ready to sign with. Parsing checks every
/// point the packages hold (on Ed25519 a subgroup check, about the cost of a scalar
/// multiplication, for each of the n + 3 points), so a party that signs often loads its share
/// once and starts each signing from this ([`crate::AnySign::start_loaded`]).
#[derive(Clone)]
pub struct LoadedShare {
    index: u16,
    pub(crate) packages: Packages,
}

#[derive(Clone)]
pub(crate) enum Packages {
    Ed25519(KeyPackage<Ed25519Sha512>, PublicKeyPackage<Ed25519Sha512>),
    Secp256k1Tr(
        KeyPackage<Secp256K1Sha256TR>,
        PublicKeyPackage<Secp256K1Sha256TR>,
    ),
}

impl LoadedShare {
    pub fn curve(&self) -> Curve {
        match self.packages {
            Packages::Ed25519(..) => Curve::Ed25519,
            Packages::Secp256k1Tr(..) => Curve::Secp256k1Tr,
        }
    }

    /// This party's index (1-based).
    pub fn index(&self) -> u16 {
        self.index
    }
}

impl std::fmt::Debug for LoadedShare {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoadedShare")
            .field("curve", &self.curve())
            .field("index", &self.index)
            .field("packages", &"<redacted>")
            .finish()
    }
}

fn group_key<C: Ciphersuite>(public_key_package: &[u8]) -> Result<Vec<u8>, TssError> {
    let package = PublicKeyPackage::<C>::deserialize(public_key_package)
        .map_err(|e| TssError::InvalidParameters(format!("public key package: {e}")))?;
    package.verifying_key().serialize().map_err(frost)
}

impl Drop for KeyShare {
    fn drop(&mut self) {
        self.key_package.zeroize();
    }
}

impl std::fmt::Debug for KeyShare {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyShare")
            .field("curve", &self.curve)
            .field("index", &self.index)
            .field("threshold", &self.threshold)
            .field("parties", &self.parties)
            .field("key_package", &"<redacted>")
            .finish()
    }
}
