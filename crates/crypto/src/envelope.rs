//! The envelope every protocol payload travels in: signed by the sender's identity key always,
//! sealed to the recipient's encryption key when it is point-to-point.
//!
//! # Context
//!
//! A [`Context`] names where a payload belongs: session, sender, recipient (none for a
//! broadcast), round and message type. Its canonical bytes ([`Context::to_bytes`]) are
//!
//! ```text
//! u32 len || session_id || u32 len || sender || 0x00                         (broadcast)
//!                                             || 0x01 || u32 len || recipient (point-to-point)
//! || i32 round || u32 len || message_type
//! ```
//!
//! (integers big-endian, strings UTF-8), so two different contexts never share bytes. They are
//! the HPKE AAD of a sealed body and the start of the signed message, so a payload moved to
//! another session, round, sender or recipient fails to verify.
//!
//! # Wire format (version 1)
//!
//! ```text
//! offset 0   version     u8   = 1
//! offset 1   kind        u8   0 = plain (broadcast), 1 = sealed (point-to-point)
//! offset 2   body_len    u32  big-endian
//! offset 6   body        body_len bytes (HPKE `enc || ciphertext` when sealed)
//! then       signature   64 bytes, Ed25519 over
//!            "cohort/envelope/v1" || 0x00 || context bytes || version || kind || body
//! ```
//!
//! The total length must be exactly `6 + body_len + 64`.
//!
//! # Who is the culprit
//!
//! [`open_envelope`] checks the signature before anything else. A [`EnvelopeError::BadSignature`]
//! means the bytes are not what the sender signed for this context (a tampering relay, or a
//! forger). A [`EnvelopeError::DecryptFailed`] after a good signature means the sender itself
//! sealed something this recipient cannot open: the sender is the culprit.

use crate::identity::{self, IdentityKey};
use crate::seal::{self, EncryptionKeyPair};
use crate::CryptoError;

/// Domain of the envelope signature.
pub const ENVELOPE_DOMAIN: &str = "cohort/envelope/v1";
/// HPKE `info` of a sealed envelope body.
pub const ENVELOPE_HPKE_INFO: &[u8] = b"cohort/envelope/v1";
/// The envelope format version this code writes and reads.
pub const ENVELOPE_VERSION: u8 = 1;

const KIND_PLAIN: u8 = 0;
const KIND_SEALED: u8 = 1;
const HEADER_LEN: usize = 6;
const SIGNATURE_LEN: usize = 64;

/// Where a payload belongs. `recipient == None` is a broadcast to the whole session.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Context {
    pub session_id: String,
    pub sender: String,
    pub recipient: Option<String>,
    pub round: i32,
    pub message_type: String,
}

impl Context {
    /// The canonical, unambiguous encoding described in the module docs.
    pub fn to_bytes(&self) -> Vec<u8> {
        let recipient_len = self.recipient.as_ref().map_or(0, |r| 4 + r.len());
        let mut out = Vec::with_capacity(
            4 + self.session_id.len()
                + 4
                + self.sender.len()
                + 1
                + recipient_len
                + 4
                + 4
                + self.message_type.len(),
        );
        put_str(&mut out, &self.session_id);
        put_str(&mut out, &self.sender);
        match &self.recipient {
            None => out.push(0),
            Some(recipient) => {
                out.push(1);
                put_str(&mut out, recipient);
            }
        }
        out.extend_from_slice(&self.round.to_be_bytes());
        put_str(&mut out, &self.message_type);
        out
    }
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as u32).to_be_bytes());
    out.extend_from_slice(s.as_bytes());
}

/// Why an envelope was refused. The first three name what the receiver saw; the others are
/// the caller's mistakes.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum EnvelopeError {
    #[error("envelope signature does not verify for this sender and context (tampered or forged)")]
    BadSignature,
    #[error("envelope is signed by its sender but its sealed body does not open with our key")]
    DecryptFailed,
    #[error("malformed envelope: {0}")]
    Malformed(&'static str),
    #[error("recipient encryption key is not a valid X25519 public key")]
    BadRecipientKey,
    #[error("context and keys disagree: {0}")]
    ContextMismatch(&'static str),
}

/// Signs (and, for point-to-point contexts, first seals) `body` as `identity` for `ctx`.
///
/// `recipient_enc_key` must be given exactly when `ctx.recipient` is `Some`: it is the
/// recipient's published X25519 key, whose signature the caller has already checked.
pub fn seal_envelope(
    identity: &IdentityKey,
    ctx: &Context,
    recipient_enc_key: Option<&[u8]>,
    body: &[u8],
) -> Result<Vec<u8>, EnvelopeError> {
    let ctx_bytes = ctx.to_bytes();
    let (kind, payload) = match (&ctx.recipient, recipient_enc_key) {
        (None, None) => (KIND_PLAIN, body.to_vec()),
        (Some(_), Some(key)) => {
            // The only way sealing fails is a recipient key that is not an X25519 point.
            let sealed = seal::seal(key, &ctx_bytes, ENVELOPE_HPKE_INFO, body)
                .map_err(|_| EnvelopeError::BadRecipientKey)?;
            (KIND_SEALED, sealed)
        }
        (Some(_), None) => {
            return Err(EnvelopeError::ContextMismatch(
                "point-to-point context needs the recipient's key",
            ))
        }
        (None, Some(_)) => {
            return Err(EnvelopeError::ContextMismatch(
                "a broadcast is not sealed to one recipient",
            ))
        }
    };
    let payload_len = u32::try_from(payload.len())
        .map_err(|_| EnvelopeError::Malformed("body longer than 4 GiB"))?;
    let signature = identity.sign(ENVELOPE_DOMAIN, &signed_message(&ctx_bytes, kind, &payload));

    let mut out = Vec::with_capacity(HEADER_LEN + payload.len() + SIGNATURE_LEN);
    out.push(ENVELOPE_VERSION);
    out.push(kind);
    out.extend_from_slice(&payload_len.to_be_bytes());
    out.extend_from_slice(&payload);
    out.extend_from_slice(&signature);
    Ok(out)
}

/// Verifies the sender's signature for `ctx`, then (point-to-point) opens the body with
/// `my_enc_key`. Returns the body the sender passed to [`seal_envelope`].
pub fn open_envelope(
    ctx: &Context,
    sender_identity_pub: &[u8],
    my_enc_key: Option<&EncryptionKeyPair>,
    bytes: &[u8],
) -> Result<Vec<u8>, EnvelopeError> {
    let parsed = parse(bytes)?;
    let ctx_bytes = ctx.to_bytes();
    identity::verify(
        sender_identity_pub,
        ENVELOPE_DOMAIN,
        &signed_message(&ctx_bytes, parsed.kind, parsed.body),
        parsed.signature,
    )
    .map_err(|e| match e {
        CryptoError::MalformedKey(_) => {
            EnvelopeError::Malformed("sender identity key is not an Ed25519 public key")
        }
        _ => EnvelopeError::BadSignature,
    })?;

    match (parsed.kind, &ctx.recipient, my_enc_key) {
        (KIND_PLAIN, None, _) => Ok(parsed.body.to_vec()),
        (KIND_SEALED, Some(_), Some(key)) => {
            seal::open(key, &ctx_bytes, ENVELOPE_HPKE_INFO, parsed.body)
                .map_err(|_| EnvelopeError::DecryptFailed)
        }
        (KIND_SEALED, Some(_), None) => Err(EnvelopeError::ContextMismatch(
            "a sealed envelope needs our encryption key",
        )),
        (KIND_PLAIN, Some(_), _) => Err(EnvelopeError::Malformed(
            "point-to-point payload is not sealed",
        )),
        (_, None, _) => Err(EnvelopeError::Malformed("broadcast payload is sealed")),
        _ => Err(EnvelopeError::Malformed("unknown envelope kind")),
    }
}

struct Parsed<'a> {
    kind: u8,
    body: &'a [u8],
    signature: &'a [u8],
}

/// Splits the wire format without allocating; every length is checked against the input.
fn parse(bytes: &[u8]) -> Result<Parsed<'_>, EnvelopeError> {
    if bytes.len() < HEADER_LEN + SIGNATURE_LEN {
        return Err(EnvelopeError::Malformed(
            "shorter than header and signature",
        ));
    }
    let (header, rest) = bytes.split_at(HEADER_LEN);
    if header[0] != ENVELOPE_VERSION {
        return Err(EnvelopeError::Malformed("unknown envelope version"));
    }
    let kind = header[1];
    if kind != KIND_PLAIN && kind != KIND_SEALED {
        return Err(EnvelopeError::Malformed("unknown envelope kind"));
    }
    let body_len = u32::from_be_bytes([header[2], header[3], header[4], header[5]]) as usize;
    if rest.len() != body_len.saturating_add(SIGNATURE_LEN) {
        return Err(EnvelopeError::Malformed(
            "body length does not match the envelope size",
        ));
    }
    let (body, signature) = rest.split_at(body_len);
    Ok(Parsed {
        kind,
        body,
        signature,
    })
}

fn signed_message(ctx_bytes: &[u8], kind: u8, body: &[u8]) -> Vec<u8> {
    let mut m = Vec::with_capacity(ctx_bytes.len() + 2 + body.len());
    m.extend_from_slice(ctx_bytes);
    m.push(ENVELOPE_VERSION);
    m.push(kind);
    m.extend_from_slice(body);
    m
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, RngCore};

    fn ctx(recipient: Option<&str>) -> Context {
        Context {
            session_id: "s-1".into(),
            sender: "alice".into(),
            recipient: recipient.map(str::to_string),
            round: 2,
            message_type: "frost/dkg/round2".into(),
        }
    }

    #[test]
    fn context_encoding_is_unambiguous() {
        let a = Context {
            session_id: "ab".into(),
            sender: "c".into(),
            ..ctx(None)
        };
        let b = Context {
            session_id: "a".into(),
            sender: "bc".into(),
            ..ctx(None)
        };
        assert_ne!(a.to_bytes(), b.to_bytes());
        assert_ne!(ctx(None).to_bytes(), ctx(Some("")).to_bytes());
        assert_ne!(
            ctx(None).to_bytes(),
            Context {
                round: 3,
                ..ctx(None)
            }
            .to_bytes()
        );
    }

    #[test]
    fn point_to_point_envelope_round_trips_and_hides_the_body() {
        let alice = IdentityKey::generate();
        let bob = EncryptionKeyPair::generate();
        let c = ctx(Some("bob"));
        let env = seal_envelope(&alice, &c, Some(&bob.public()), b"secret share bytes").unwrap();
        assert!(!env
            .windows(b"secret share bytes".len())
            .any(|w| w == b"secret share bytes"));
        assert_eq!(
            open_envelope(&c, &alice.public(), Some(&bob), &env).unwrap(),
            b"secret share bytes"
        );
    }

    #[test]
    fn broadcast_envelope_round_trips_in_the_clear() {
        let alice = IdentityKey::generate();
        let c = ctx(None);
        let env = seal_envelope(&alice, &c, None, b"commitment").unwrap();
        assert_eq!(
            open_envelope(&c, &alice.public(), None, &env).unwrap(),
            b"commitment"
        );
    }

    #[test]
    fn any_flipped_byte_is_a_bad_signature_or_malformed() {
        let alice = IdentityKey::generate();
        let bob = EncryptionKeyPair::generate();
        let c = ctx(Some("bob"));
        let env = seal_envelope(&alice, &c, Some(&bob.public()), b"payload").unwrap();
        for i in 0..env.len() {
            let mut t = env.clone();
            t[i] ^= 0x40;
            let err = open_envelope(&c, &alice.public(), Some(&bob), &t).unwrap_err();
            assert!(
                matches!(
                    err,
                    EnvelopeError::BadSignature | EnvelopeError::Malformed(_)
                ),
                "byte {i}: {err:?}"
            );
        }
    }

    #[test]
    fn envelope_moved_to_another_context_or_sender_is_a_bad_signature() {
        let alice = IdentityKey::generate();
        let mallory = IdentityKey::generate();
        let bob = EncryptionKeyPair::generate();
        let c = ctx(Some("bob"));
        let env = seal_envelope(&alice, &c, Some(&bob.public()), b"payload").unwrap();
        let other_round = Context {
            round: 3,
            ..c.clone()
        };
        assert_eq!(
            open_envelope(&other_round, &alice.public(), Some(&bob), &env),
            Err(EnvelopeError::BadSignature)
        );
        let other_session = Context {
            session_id: "s-2".into(),
            ..c.clone()
        };
        assert_eq!(
            open_envelope(&other_session, &alice.public(), Some(&bob), &env),
            Err(EnvelopeError::BadSignature)
        );
        assert_eq!(
            open_envelope(&c, &mallory.public(), Some(&bob), &env),
            Err(EnvelopeError::BadSignature)
        );
    }

    #[test]
    fn body_sealed_to_someone_else_is_decrypt_failed() {
        let alice = IdentityKey::generate();
        let bob = EncryptionKeyPair::generate();
        let carol = EncryptionKeyPair::generate();
        let c = ctx(Some("bob"));
        // Alice signs a body sealed to Carol's key: the signature holds, the body does not open.
        let env = seal_envelope(&alice, &c, Some(&carol.public()), b"payload").unwrap();
        assert_eq!(
            open_envelope(&c, &alice.public(), Some(&bob), &env),
            Err(EnvelopeError::DecryptFailed)
        );
    }

    #[test]
    fn keys_that_disagree_with_the_context_are_refused() {
        let alice = IdentityKey::generate();
        let bob = EncryptionKeyPair::generate();
        assert!(matches!(
            seal_envelope(&alice, &ctx(Some("bob")), None, b"x"),
            Err(EnvelopeError::ContextMismatch(_))
        ));
        assert!(matches!(
            seal_envelope(&alice, &ctx(None), Some(&bob.public()), b"x"),
            Err(EnvelopeError::ContextMismatch(_))
        ));
        assert_eq!(
            seal_envelope(&alice, &ctx(Some("bob")), Some(&[1, 2]), b"x"),
            Err(EnvelopeError::BadRecipientKey)
        );
        let env = seal_envelope(&alice, &ctx(Some("bob")), Some(&bob.public()), b"x").unwrap();
        assert!(matches!(
            open_envelope(&ctx(Some("bob")), &alice.public(), None, &env),
            Err(EnvelopeError::ContextMismatch(_))
        ));
    }

    #[test]
    fn truncated_and_random_inputs_never_panic() {
        let alice = IdentityKey::generate();
        let bob = EncryptionKeyPair::generate();
        let p2p = ctx(Some("bob"));
        let env = seal_envelope(&alice, &p2p, Some(&bob.public()), b"payload").unwrap();
        for len in 0..env.len() {
            assert!(open_envelope(&p2p, &alice.public(), Some(&bob), &env[..len]).is_err());
        }
        let mut rng = rand::thread_rng();
        for _ in 0..2000 {
            let len = rng.gen_range(0..200);
            let mut junk = vec![0u8; len];
            rng.fill_bytes(&mut junk);
            if len > 0 && rng.gen_bool(0.5) {
                junk[0] = ENVELOPE_VERSION;
            }
            if len > 6 && rng.gen_bool(0.5) {
                // A plausible header with a length claiming more than is there.
                junk[1] = KIND_SEALED;
                junk[2..6].copy_from_slice(&u32::MAX.to_be_bytes());
            }
            assert!(open_envelope(&p2p, &alice.public(), Some(&bob), &junk).is_err());
            assert!(open_envelope(&ctx(None), &alice.public(), None, &junk).is_err());
        }
    }
}
