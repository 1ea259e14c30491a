//! Ed25519 identity keys and the domain-separated messages they sign.
//!
//! Every signature Cohort asks for is over `domain || 0x00 || message`, with a distinct domain
//! per purpose, so a signature made for one purpose (a login) can never be replayed as another
//! (a published encryption key, a protocol payload).

use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};

use crate::CryptoError;

/// Domain of the login challenge signature.
pub const LOGIN_DOMAIN: &str = "cohort/login/v1";
/// Domain of an encryption key publication.
pub const ENCRYPTION_KEY_DOMAIN: &str = "cohort/encryption-key/v1";

/// A party's long-term Ed25519 identity key.
pub struct IdentityKey(SigningKey);

impl IdentityKey {
    pub fn generate() -> Self {
        IdentityKey(SigningKey::generate(&mut rand::rngs::OsRng))
    }

    pub fn from_bytes(secret: &[u8; 32]) -> Self {
        IdentityKey(SigningKey::from_bytes(secret))
    }

    pub fn to_bytes(&self) -> [u8; 32] {
        self.0.to_bytes()
    }

    pub fn public(&self) -> [u8; 32] {
        self.0.verifying_key().to_bytes()
    }

    /// Signs `message` under `domain`.
    pub fn sign(&self, domain: &str, message: &[u8]) -> [u8; 64] {
        self.0.sign(&framed(domain, message)).to_bytes()
    }
}

impl std::fmt::Debug for IdentityKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "IdentityKey(public={})", hex_short(&self.public()))
    }
}

/// Verifies a signature made by [`IdentityKey::sign`] under the same domain.
pub fn verify(
    public: &[u8],
    domain: &str,
    message: &[u8],
    signature: &[u8],
) -> Result<(), CryptoError> {
    let public: [u8; 32] = public
        .try_into()
        .map_err(|_| CryptoError::MalformedKey("an Ed25519 public key is 32 bytes"))?;
    let key = VerifyingKey::from_bytes(&public)
        .map_err(|_| CryptoError::MalformedKey("not a valid Ed25519 point"))?;
    let signature: [u8; 64] = signature
        .try_into()
        .map_err(|_| CryptoError::MalformedSignature)?;
    key.verify_strict(&framed(domain, message), &Signature::from_bytes(&signature))
        .map_err(|_| CryptoError::BadSignature)
}

/// The prefix of key-derived party ids; no enrolled id may start with it.
pub const KEY_PARTY_ID_PREFIX: &str = "key-";

/// The party id an identity key owns without enrollment: `key-` and the first 16 hex digits
/// (64 bits) of SHA-256 of the 32-byte public key. A relay that requires enrollment lets an
/// unenrolled key log in under this id only, so nobody can claim an id another key owns.
pub fn key_party_id(public_key: &[u8; 32]) -> String {
    use sha2::{Digest, Sha256};
    let digest = Sha256::digest(public_key);
    let mut id = String::with_capacity(KEY_PARTY_ID_PREFIX.len() + 16);
    id.push_str(KEY_PARTY_ID_PREFIX);
    for b in &digest[..8] {
        id.push_str(&format!("{b:02x}"));
    }
    id
}

/// The bytes a party signs to log in: the challenge bound to the party id it claims.
pub fn login_message(challenge: &[u8], party_id: &str) -> Vec<u8> {
    let mut m = Vec::with_capacity(challenge.len() + party_id.len() + 8);
    m.extend_from_slice(&(challenge.len() as u32).to_be_bytes());
    m.extend_from_slice(challenge);
    m.extend_from_slice(party_id.as_bytes());
    m
}

/// The bytes a party signs to publish its encryption key.
pub fn encryption_key_message(party_id: &str, encryption_key: &[u8]) -> Vec<u8> {
    let mut m = Vec::with_capacity(party_id.len() + encryption_key.len() + 4);
    m.extend_from_slice(&(party_id.len() as u32).to_be_bytes());
    m.extend_from_slice(party_id.as_bytes());
    m.extend_from_slice(encryption_key);
    m
}

fn framed(domain: &str, message: &[u8]) -> Vec<u8> {
    let mut m = Vec::with_capacity(domain.len() + 1 + message.len());
    m.extend_from_slice(domain.as_bytes());
    m.push(0);
    m.extend_from_slice(message);
    m
}

fn hex_short(b: &[u8]) -> String {
    b.iter().take(6).map(|x| format!("{x:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_party_id_is_prefix_and_16_hex_of_the_key_digest() {
        // SHA-256 of 32 zero bytes starts 66687aadf862bd77.
        assert_eq!(key_party_id(&[0u8; 32]), "key-66687aadf862bd77");
        let k = IdentityKey::generate().public();
        assert_eq!(key_party_id(&k), key_party_id(&k));
        assert_ne!(key_party_id(&k), key_party_id(&[0u8; 32]));
    }

    #[test]
    fn signature_verifies_only_under_its_own_domain() {
        let k = IdentityKey::generate();
        let sig = k.sign(LOGIN_DOMAIN, b"abc");
        assert_eq!(verify(&k.public(), LOGIN_DOMAIN, b"abc", &sig), Ok(()));
        assert_eq!(
            verify(&k.public(), ENCRYPTION_KEY_DOMAIN, b"abc", &sig),
            Err(CryptoError::BadSignature)
        );
        assert_eq!(
            verify(&k.public(), LOGIN_DOMAIN, b"abd", &sig),
            Err(CryptoError::BadSignature)
        );
        assert!(matches!(
            verify(&[1, 2], LOGIN_DOMAIN, b"abc", &sig),
            Err(CryptoError::MalformedKey(_))
        ));
    }
}
