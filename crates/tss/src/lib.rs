//! FROST distributed key generation and signing for Cohort, as sans-IO state machines.
//!
//! One generic implementation over [`frost_core::Ciphersuite`] serves both curves Cohort
//! supports: Ed25519 (`frost-ed25519`, standard Ed25519 signatures) and secp256k1 with
//! Taproot (`frost-secp256k1-tr`, BIP-340 Schnorr signatures). The machines take messages and
//! return messages; the runner (the SDK over the relay, or [`inprocess`] in memory) moves them.
//!
//! # Parties and identifiers
//!
//! Parties are numbered `1..=n` (`u16`). Party `i` is FROST identifier `Identifier::try_from(i)`,
//! the scalar `i`, so index 0 is invalid. A runner whose sessions number parties from 0 adds 1.
//!
//! # Messages
//!
//! Every machine is driven the same way: `start` returns the first [`Outgoing`] messages, and
//! each message that arrives goes to `handle(from, incoming)`, which returns a [`Step`]: more
//! messages to send, or the result (with any last messages to send). An [`Outgoing`] with
//! `to == None` is a broadcast to every other participant of the run.
//!
//! - Messages for a later round than the party is in are buffered and used when it gets
//!   there, so delivery order does not matter.
//! - A message identical to one already received from the same sender for the same round is
//!   ignored (redelivery after a crash is harmless); a different one is
//!   [`TssError::ConflictingMessage`].
//! - Messages a party receives from itself are ignored.
//! - Broadcasts are checked for consistency: after the DKG's round 1, every party echoes a
//!   digest of each round-1 broadcast it received; in signing, every share message carries
//!   the digests of the commitments its sender used. A difference is
//!   [`TssError::InconsistentBroadcast`] naming the party whose broadcast was seen two ways.
//!
//! ```
//! use cohort_tss::{inprocess, Curve};
//!
//! let shares = inprocess::run_dkg(Curve::Ed25519, 3, 2).unwrap();
//! let signature = inprocess::run_sign(&shares[..2], b"hello").unwrap();
//! let group_key = shares[0].group_public_key().unwrap();
//! cohort_tss::verify_signature(Curve::Ed25519, &group_key, b"hello", &signature).unwrap();
//! ```
#![forbid(unsafe_code)]

mod any;
mod curve;
pub mod descriptor;
pub mod dkg;
mod inbox;
pub mod inprocess;
pub mod runner;
mod share;
pub mod sign;

pub use any::{AnyDkg, AnySign};
pub use curve::{bip340_public_key, verify_signature, Curve, CurveSuite, UnknownCurve};
pub use dkg::{Dkg, DkgOutput};
pub use share::{KeyShare, LoadedShare};
pub use sign::Sign;

pub use frost_core;
pub use frost_ed25519::Ed25519Sha512;
pub use frost_secp256k1_tr::Secp256K1Sha256TR;

/// A message a party wants sent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Outgoing {
    /// The recipient's index, or `None` for every other participant of the run.
    pub to: Option<u16>,
    pub round: i32,
    pub message_type: &'static str,
    pub body: Vec<u8>,
}

/// A message that arrived, as the runner received it. The runner has already authenticated
/// the sender (Cohort: by the envelope signature), so `from` in `handle` is trusted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Incoming {
    pub round: i32,
    pub message_type: String,
    pub body: Vec<u8>,
}

impl From<&Outgoing> for Incoming {
    fn from(o: &Outgoing) -> Self {
        Incoming {
            round: o.round,
            message_type: o.message_type.to_string(),
            body: o.body.clone(),
        }
    }
}

impl From<Outgoing> for Incoming {
    fn from(o: Outgoing) -> Self {
        Incoming {
            round: o.round,
            message_type: o.message_type.to_string(),
            body: o.body,
        }
    }
}

/// What a party does after handling a message.
#[derive(Debug, PartialEq, Eq)]
pub enum Step<T> {
    /// Send these (possibly none) and keep going.
    Continue(Vec<Outgoing>),
    /// Finished. `outgoing` holds messages still to send: with out-of-order delivery a party
    /// can complete its last round in the same call that produced its previous round's
    /// messages, and the others still need those.
    Done { output: T, outgoing: Vec<Outgoing> },
}

impl<T> Step<T> {
    pub fn outgoing(&self) -> &[Outgoing] {
        match self {
            Step::Continue(out) => out,
            Step::Done { outgoing, .. } => outgoing,
        }
    }

    pub fn try_map<U, E>(self, f: impl FnOnce(T) -> Result<U, E>) -> Result<Step<U>, E> {
        Ok(match self {
            Step::Continue(out) => Step::Continue(out),
            Step::Done { output, outgoing } => Step::Done {
                output: f(output)?,
                outgoing,
            },
        })
    }
}

/// A participant of a run, as seen by a runner: its index and its message handler.
pub trait Party {
    type Output;
    fn index(&self) -> u16;
    fn handle(&mut self, from: u16, message: Incoming) -> Result<Step<Self::Output>, TssError>;
}

/// Why a run failed. Variants with a `culprit` name the party to blame, so the runner can
/// report it (see [`TssError::culprit`]).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TssError {
    #[error("invalid parameters: {0}")]
    InvalidParameters(String),
    #[error("message from party {from}, who is not a participant of this run")]
    UnknownSender { from: u16 },
    #[error("party {from} sent a round {round} message of type {message_type:?}, which this protocol does not have")]
    UnexpectedMessage {
        from: u16,
        round: i32,
        message_type: String,
    },
    #[error("party {culprit} sent a malformed round {round} message: {reason}")]
    Malformed {
        round: i32,
        culprit: u16,
        reason: String,
    },
    #[error("party {culprit} sent two different round {round} messages")]
    ConflictingMessage { round: i32, culprit: u16 },
    #[error("the round {round} broadcast of party {culprit} was not the same for every party (party {echoed_by} saw another)")]
    InconsistentBroadcast {
        round: i32,
        culprit: u16,
        echoed_by: u16,
    },
    #[error("party {culprit} sent a share that fails verification")]
    BadShare { culprit: u16 },
    #[error("party {culprit} sent a DKG commitment whose proof of knowledge fails")]
    BadProof { culprit: u16 },
    #[error("signature does not verify with the group key")]
    BadSignature,
    #[error("this signer's nonce is already used; a nonce signs at most once, so start a new signing attempt")]
    NonceUsed,
    #[error("this run already finished or failed")]
    Finished,
    #[error("FROST: {0}")]
    Frost(String),
}

impl TssError {
    /// The party to blame, when the failure names one.
    pub fn culprit(&self) -> Option<u16> {
        match self {
            TssError::Malformed { culprit, .. }
            | TssError::ConflictingMessage { culprit, .. }
            | TssError::InconsistentBroadcast { culprit, .. }
            | TssError::BadShare { culprit }
            | TssError::BadProof { culprit } => Some(*culprit),
            _ => None,
        }
    }
}
