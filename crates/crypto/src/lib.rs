//! Cohort's cryptography: thin wrappers over audited crates, never hand-rolled primitives.
#![forbid(unsafe_code)]

#[cfg(feature = "seal")]
pub mod envelope;
pub mod identity;
#[cfg(feature = "keystore")]
pub mod keystore;
#[cfg(feature = "seal")]
pub mod seal;

/// Why a cryptographic check failed. Deliberately coarse: callers report, they don't branch.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CryptoError {
    #[error("malformed key: {0}")]
    MalformedKey(&'static str),
    #[error("malformed signature")]
    MalformedSignature,
    #[error("signature does not verify")]
    BadSignature,
    #[error("decryption failed (wrong key, or tampered ciphertext or context)")]
    OpenFailed,
    #[error("{0}")]
    Other(String),
}
