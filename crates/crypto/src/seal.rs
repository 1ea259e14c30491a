//! Sealing to a party's published encryption key: HPKE (RFC 9180) base mode with
//! DHKEM(X25519, HKDF-SHA256), HKDF-SHA256 and ChaCha20-Poly1305.
//!
//! A sealed message is one byte string, `encapsulated key (32 bytes) || ciphertext`, so it
//! travels as a single opaque payload. Each seal uses a fresh ephemeral key: sealing the same
//! plaintext twice gives unrelated bytes.

use hpke::aead::ChaCha20Poly1305;
use hpke::kdf::HkdfSha256;
use hpke::kem::X25519HkdfSha256;
use hpke::{Deserializable, Kem, OpModeR, OpModeS, Serializable};
use rand::rngs::OsRng;
use zeroize::Zeroizing;

use crate::CryptoError;

type SuiteKem = X25519HkdfSha256;
type PrivateKey = <SuiteKem as Kem>::PrivateKey;
type PublicKey = <SuiteKem as Kem>::PublicKey;
type EncappedKey = <SuiteKem as Kem>::EncappedKey;

/// Length of the encapsulated key that starts every sealed message.
pub const ENCAPSULATED_KEY_LEN: usize = 32;
/// Length of the ChaCha20-Poly1305 tag, the other fixed overhead of a sealed message.
pub const TAG_LEN: usize = 16;
/// Bytes a sealed message adds to its plaintext.
pub const SEAL_OVERHEAD: usize = ENCAPSULATED_KEY_LEN + TAG_LEN;

/// A party's X25519 encryption key pair; the public half is what it publishes.
#[derive(Clone)]
pub struct EncryptionKeyPair {
    secret: PrivateKey,
    public: PublicKey,
}

impl EncryptionKeyPair {
    pub fn generate() -> Self {
        let (secret, public) = SuiteKem::gen_keypair(&mut OsRng);
        EncryptionKeyPair { secret, public }
    }

    /// Restores a key pair from the 32 secret bytes [`EncryptionKeyPair::secret_bytes`] gave.
    pub fn from_secret_bytes(secret: &[u8]) -> Result<Self, CryptoError> {
        let secret = PrivateKey::from_bytes(secret)
            .map_err(|_| CryptoError::MalformedKey("an X25519 secret key is 32 bytes"))?;
        let public = SuiteKem::sk_to_pk(&secret);
        Ok(EncryptionKeyPair { secret, public })
    }

    /// The secret key, for the caller to keep at rest (see [`crate::keystore`]).
    pub fn secret_bytes(&self) -> Zeroizing<[u8; 32]> {
        let mut out = Zeroizing::new([0u8; 32]);
        out.copy_from_slice(&self.secret.to_bytes());
        out
    }

    /// The public key to publish (signed by the identity key, see
    /// [`crate::identity::encryption_key_message`]).
    pub fn public(&self) -> [u8; 32] {
        let mut out = [0u8; 32];
        out.copy_from_slice(&self.public.to_bytes());
        out
    }
}

impl std::fmt::Debug for EncryptionKeyPair {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let public = self.public();
        write!(f, "EncryptionKeyPair(public=")?;
        for b in &public[..6] {
            write!(f, "{b:02x}")?;
        }
        write!(f, ")")
    }
}

/// Seals `plaintext` to `recipient_public`, binding `aad` (authenticated, not encrypted) and
/// `info` (the application's context string, mixed into the key schedule).
pub fn seal(
    recipient_public: &[u8],
    aad: &[u8],
    info: &[u8],
    plaintext: &[u8],
) -> Result<Vec<u8>, CryptoError> {
    let recipient = PublicKey::from_bytes(recipient_public)
        .map_err(|_| CryptoError::MalformedKey("an X25519 public key is 32 bytes"))?;
    let (encapped, ciphertext) =
        hpke::single_shot_seal::<ChaCha20Poly1305, HkdfSha256, SuiteKem, _>(
            &OpModeS::Base,
            &recipient,
            info,
            plaintext,
            aad,
            &mut OsRng,
        )
        .map_err(|e| CryptoError::Other(format!("hpke seal: {e}")))?;
    let mut out = Vec::with_capacity(ENCAPSULATED_KEY_LEN + ciphertext.len());
    out.extend_from_slice(&encapped.to_bytes());
    out.extend_from_slice(&ciphertext);
    Ok(out)
}

/// Opens what [`seal`] produced for `keypair`'s public key with the same `aad` and `info`.
/// Any difference (wrong key, a flipped bit, another AAD or info) gives
/// [`CryptoError::OpenFailed`].
pub fn open(
    keypair: &EncryptionKeyPair,
    aad: &[u8],
    info: &[u8],
    sealed: &[u8],
) -> Result<Vec<u8>, CryptoError> {
    if sealed.len() < SEAL_OVERHEAD {
        return Err(CryptoError::OpenFailed);
    }
    let (encapped, ciphertext) = sealed.split_at(ENCAPSULATED_KEY_LEN);
    let encapped = EncappedKey::from_bytes(encapped).map_err(|_| CryptoError::OpenFailed)?;
    hpke::single_shot_open::<ChaCha20Poly1305, HkdfSha256, SuiteKem>(
        &OpModeR::Base,
        &keypair.secret,
        &encapped,
        info,
        ciphertext,
        aad,
    )
    .map_err(|_| CryptoError::OpenFailed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_message_opens_with_the_same_key_aad_and_info() {
        let bob = EncryptionKeyPair::generate();
        let sealed = seal(&bob.public(), b"aad", b"info", b"hello bob").unwrap();
        assert_eq!(sealed.len(), b"hello bob".len() + SEAL_OVERHEAD);
        assert_eq!(open(&bob, b"aad", b"info", &sealed).unwrap(), b"hello bob");
    }

    #[test]
    fn flipped_ciphertext_byte_fails_to_open() {
        let bob = EncryptionKeyPair::generate();
        let sealed = seal(&bob.public(), b"aad", b"info", b"hello bob").unwrap();
        for i in [0, ENCAPSULATED_KEY_LEN, sealed.len() - 1] {
            let mut tampered = sealed.clone();
            tampered[i] ^= 0x01;
            assert_eq!(
                open(&bob, b"aad", b"info", &tampered),
                Err(CryptoError::OpenFailed),
                "byte {i}"
            );
        }
    }

    #[test]
    fn different_aad_or_info_fails_to_open() {
        let bob = EncryptionKeyPair::generate();
        let sealed = seal(&bob.public(), b"aad", b"info", b"hello bob").unwrap();
        assert_eq!(
            open(&bob, b"aae", b"info", &sealed),
            Err(CryptoError::OpenFailed)
        );
        assert_eq!(
            open(&bob, b"aad", b"infp", &sealed),
            Err(CryptoError::OpenFailed)
        );
    }

    #[test]
    fn wrong_key_fails_to_open() {
        let bob = EncryptionKeyPair::generate();
        let eve = EncryptionKeyPair::generate();
        let sealed = seal(&bob.public(), b"aad", b"info", b"hello bob").unwrap();
        assert_eq!(
            open(&eve, b"aad", b"info", &sealed),
            Err(CryptoError::OpenFailed)
        );
    }

    #[test]
    fn short_input_and_malformed_key_are_errors_not_panics() {
        let bob = EncryptionKeyPair::generate();
        assert_eq!(open(&bob, b"", b"", &[]), Err(CryptoError::OpenFailed));
        assert_eq!(
            open(&bob, b"", b"", &[0u8; SEAL_OVERHEAD - 1]),
            Err(CryptoError::OpenFailed)
        );
        assert!(matches!(
            seal(&[1, 2, 3], b"", b"", b"x"),
            Err(CryptoError::MalformedKey(_))
        ));
    }

    #[test]
    fn key_pair_round_trips_through_secret_bytes() {
        let bob = EncryptionKeyPair::generate();
        let restored = EncryptionKeyPair::from_secret_bytes(&bob.secret_bytes()[..]).unwrap();
        assert_eq!(restored.public(), bob.public());
        let sealed = seal(&bob.public(), b"", b"", b"x").unwrap();
        assert_eq!(open(&restored, b"", b"", &sealed).unwrap(), b"x");
        assert!(EncryptionKeyPair::from_secret_bytes(&[0u8; 31]).is_err());
    }
}
