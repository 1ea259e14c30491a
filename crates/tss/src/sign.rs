//! FROST signing (RFC 9591) among `t` signers with no trusted coordinator: every signer
//! broadcasts its commitments, sends its signature share to every other signer, and
//! aggregates and verifies the signature itself.
//!
//! | round | message type             | to                | body |
//! |-------|--------------------------|-------------------|------|
//! | 1     | `frost/sign/commitments` | broadcast         | `SigningCommitments::serialize()` |
//! | 2     | `frost/sign/share`       | each other signer | SHA-256 digest of each signer's commitments, in index order (32 bytes × t), then `SignatureShare::serialize()` |
//!
//! The digests in round 2 are the consistency check on round 1: a signer whose digests differ
//! from ours saw other commitments, and the run fails with
//! [`TssError::InconsistentBroadcast`].
//!
//! # Nonces are single-use, also across a crash
//!
//! A signing nonce must never sign twice. A runner that wants to survive a crash:
//!
//! 1. after [`Sign::start`], persists [`Sign::nonce_bytes`] (encrypted, bound to this signing
//!    attempt: same key, signers and message) **before** sending the commitments;
//! 2. when `handle` returns the round-2 shares (after which `nonce_bytes` is `None`), deletes
//!    the persisted nonce **before** sending them;
//! 3. after a crash, calls [`Sign::resume`] with the persisted nonce only if it is still
//!    there; if it is gone, the shares may have left already: abort this attempt and start a
//!    new one with a fresh nonce. Never resume a nonce whose shares were sent.

use std::collections::BTreeMap;

use frost_core::keys::{KeyPackage, PublicKeyPackage};
use frost_core::round1::{self, SigningCommitments, SigningNonces};
use frost_core::round2::{self, SignatureShare};
use frost_core::{Ciphersuite, Error as FrostError, Identifier, Signature, SigningPackage};
use rand::rngs::OsRng;
use zeroize::Zeroizing;

use crate::curve::identifier;
use crate::dkg::{frost, malformed};
use crate::inbox::{self, step, Gate, Inbox};
use crate::{Incoming, Outgoing, Party, Step, TssError};

pub const COMMITMENTS: i32 = 1;
pub const COMMITMENTS_TYPE: &str = "frost/sign/commitments";
pub const SHARES: i32 = 2;
pub const SHARES_TYPE: &str = "frost/sign/share";

const ROUNDS: [(i32, &str); 2] = [(COMMITMENTS, COMMITMENTS_TYPE), (SHARES, SHARES_TYPE)];

/// One signer's run of FROST signing.
pub struct Sign<C: Ciphersuite> {
    me: u16,
    signers: Vec<u16>,
    others: Vec<u16>,
    by_identifier: BTreeMap<Identifier<C>, u16>,
    key_package: KeyPackage<C>,
    public_key_package: PublicKeyPackage<C>,
    message: Vec<u8>,
    /// Kept parsed as well as serialized: parsing a point costs a subgroup check.
    my_commitments: SigningCommitments<C>,
    my_commitments_bytes: Vec<u8>,
    nonces: Option<SigningNonces<C>>,
    inbox: Inbox,
    phase: Phase<C>,
}

enum Phase<C: Ciphersuite> {
    AwaitCommitments,
    AwaitShares {
        signing_package: SigningPackage<C>,
        transcript: Vec<u8>,
        my_share: SignatureShare<C>,
    },
    Finished,
    Failed(TssError),
}

impl<C: Ciphersuite> Sign<C> {
    /// Starts signing `message` with this party's key, among `signers` (party indices, this
    /// party included, at least the key's threshold). Returns the commitments broadcast.
    pub fn start(
        key_package: KeyPackage<C>,
        public_key_package: PublicKeyPackage<C>,
        signers: &[u16],
        message: &[u8],
    ) -> Result<(Self, Vec<Outgoing>), TssError> {
        let (nonces, commitments) = round1::commit(key_package.signing_share(), &mut OsRng);
        Self::with_nonces(
            key_package,
            public_key_package,
            signers,
            message,
            nonces,
            commitments,
        )
    }

    /// Restarts after a crash with the nonce persisted from [`Sign::nonce_bytes`]; the same key,
    /// signers and message as the first start. Returns the same commitments broadcast (the
    /// others ignore it if they already have it). See the module docs for when this is safe.
    pub fn resume(
        key_package: KeyPackage<C>,
        public_key_package: PublicKeyPackage<C>,
        signers: &[u16],
        message: &[u8],
        persisted_nonce: &[u8],
    ) -> Result<(Self, Vec<Outgoing>), TssError> {
        let nonces = SigningNonces::<C>::deserialize(persisted_nonce)
            .map_err(|e| TssError::InvalidParameters(format!("persisted nonce: {e}")))?;
        let commitments = SigningCommitments::from(&nonces);
        Self::with_nonces(
            key_package,
            public_key_package,
            signers,
            message,
            nonces,
            commitments,
        )
    }

    fn with_nonces(
        key_package: KeyPackage<C>,
        public_key_package: PublicKeyPackage<C>,
        signers: &[u16],
        message: &[u8],
        nonces: SigningNonces<C>,
        commitments: SigningCommitments<C>,
    ) -> Result<(Self, Vec<Outgoing>), TssError> {
        let mut sorted = signers.to_vec();
        sorted.sort_unstable();
        sorted.dedup();
        if sorted.len() != signers.len() {
            return Err(TssError::InvalidParameters(
                "a signer is listed twice".into(),
            ));
        }
        if sorted.len() < *key_package.min_signers() as usize {
            return Err(TssError::InvalidParameters(format!(
                "{} signers given, the key needs {}",
                sorted.len(),
                key_package.min_signers()
            )));
        }
        let mut by_identifier = BTreeMap::new();
        for &i in &sorted {
            let id = identifier::<C>(i)?;
            if !public_key_package.verifying_shares().contains_key(&id) {
                return Err(TssError::InvalidParameters(format!(
                    "party {i} holds no share of this key"
                )));
            }
            by_identifier.insert(id, i);
        }
        let me = by_identifier
            .get(key_package.identifier())
            .copied()
            .ok_or_else(|| {
                TssError::InvalidParameters("this party is not among the signers".into())
            })?;
        let my_commitments_bytes = commitments.serialize().map_err(frost)?;
        let others = sorted.iter().copied().filter(|&i| i != me).collect();
        let out = vec![Outgoing {
            to: None,
            round: COMMITMENTS,
            message_type: COMMITMENTS_TYPE,
            body: my_commitments_bytes.clone(),
        }];
        let sign = Sign {
            me,
            signers: sorted,
            others,
            by_identifier,
            key_package,
            public_key_package,
            message: message.to_vec(),
            my_commitments: commitments,
            my_commitments_bytes,
            nonces: Some(nonces),
            inbox: Inbox::default(),
            phase: Phase::AwaitCommitments,
        };
        Ok((sign, out))
    }

    pub fn index(&self) -> u16 {
        self.me
    }

    pub fn signers(&self) -> &[u16] {
        &self.signers
    }

    /// Whether the round-1 nonce is still unused (the shares are not made yet).
    pub fn holds_nonce(&self) -> bool {
        self.nonces.is_some()
    }

    /// The round-1 nonce to persist before sending the commitments, or `None` once it has
    /// been used (the shares are out: delete the persisted copy).
    pub fn nonce_bytes(&self) -> Result<Option<Zeroizing<Vec<u8>>>, TssError> {
        match &self.nonces {
            Some(n) => Ok(Some(Zeroizing::new(n.serialize().map_err(frost)?))),
            None => Ok(None),
        }
    }

    /// Takes one message from signer `from` (already authenticated by the runner). The
    /// output is the aggregate signature, verified under the group key.
    pub fn handle(&mut self, from: u16, message: Incoming) -> Result<Step<Signature<C>>, TssError> {
        let gate = match &self.phase {
            Phase::Failed(e) => Gate::Failed(e.clone()),
            Phase::Finished => Gate::Finished,
            _ => Gate::Running,
        };
        if !self
            .inbox
            .admit(gate, self.me, &self.others, &ROUNDS, from, message)?
        {
            return Ok(Step::Continue(Vec::new()));
        }
        let mut outgoing = Vec::new();
        let advanced = self.advance(&mut outgoing);
        step(advanced, outgoing, |e| self.phase = Phase::Failed(e))
    }

    fn advance(&mut self, outgoing: &mut Vec<Outgoing>) -> Result<Option<Signature<C>>, TssError> {
        loop {
            let ready = match &self.phase {
                Phase::AwaitCommitments => self.inbox.has_all(COMMITMENTS, &self.others),
                Phase::AwaitShares { .. } => self.inbox.has_all(SHARES, &self.others),
                Phase::Finished | Phase::Failed(_) => false,
            };
            if !ready {
                return Ok(None);
            }
            match std::mem::replace(&mut self.phase, Phase::Finished) {
                Phase::AwaitCommitments => {
                    let mut commitments = BTreeMap::new();
                    let mut bodies = BTreeMap::new();
                    commitments.insert(identifier::<C>(self.me)?, self.my_commitments);
                    bodies.insert(self.me, self.my_commitments_bytes.as_slice());
                    for &from in &self.others {
                        let body = self.inbox.get(COMMITMENTS, from).unwrap_or_default();
                        let c = SigningCommitments::<C>::deserialize(body)
                            .map_err(|e| malformed(COMMITMENTS, from, e))?;
                        commitments.insert(identifier::<C>(from)?, c);
                        bodies.insert(from, body);
                    }
                    let transcript = inbox::transcript(COMMITMENTS, &bodies);
                    let signing_package = SigningPackage::new(commitments, &self.message);
                    // Taking the nonce out drops (and zeroizes) it whatever happens next.
                    let nonces = self.nonces.take().ok_or(TssError::NonceUsed)?;
                    let my_share = round2::sign(&signing_package, &nonces, &self.key_package)
                        .map_err(frost)?;
                    drop(nonces);
                    let mut body = transcript.clone();
                    body.extend_from_slice(&my_share.serialize());
                    for &to in &self.others {
                        outgoing.push(Outgoing {
                            to: Some(to),
                            round: SHARES,
                            message_type: SHARES_TYPE,
                            body: body.clone(),
                        });
                    }
                    self.phase = Phase::AwaitShares {
                        signing_package,
                        transcript,
                        my_share,
                    };
                }
                Phase::AwaitShares {
                    signing_package,
                    transcript,
                    my_share,
                } => {
                    let mut shares = BTreeMap::new();
                    shares.insert(identifier::<C>(self.me)?, my_share);
                    for &from in &self.others {
                        let body = self.inbox.get(SHARES, from).unwrap_or_default();
                        if body.len() < transcript.len() {
                            return Err(TssError::Malformed {
                                round: SHARES,
                                culprit: from,
                                reason: "shorter than the commitment digests".into(),
                            });
                        }
                        let (digests, share) = body.split_at(transcript.len());
                        inbox::check_transcript(
                            COMMITMENTS,
                            &self.signers,
                            &transcript,
                            digests,
                            from,
                            SHARES,
                        )?;
                        let share = SignatureShare::<C>::deserialize(share)
                            .map_err(|e| malformed(SHARES, from, e))?;
                        shares.insert(identifier::<C>(from)?, share);
                    }
                    // `aggregate` verifies the signature under the group key before returning
                    // it (and looks for the bad share when it does not verify), so it is not
                    // verified again here: that would cost two more scalar multiplications.
                    let signature =
                        frost_core::aggregate(&signing_package, &shares, &self.public_key_package)
                            .map_err(|e| self.blame(e))?;
                    self.phase = Phase::Finished;
                    return Ok(Some(signature));
                }
                Phase::Finished | Phase::Failed(_) => return Ok(None),
            }
        }
    }

    fn blame(&self, e: FrostError<C>) -> TssError {
        match &e {
            FrostError::InvalidSignatureShare { culprits } => {
                if let Some(c) = culprits.iter().find_map(|id| self.by_identifier.get(id)) {
                    return TssError::BadShare { culprit: *c };
                }
            }
            FrostError::InvalidSignature => return TssError::BadSignature,
            _ => {}
        }
        frost(e)
    }
}

impl<C: Ciphersuite> Party for Sign<C> {
    type Output = Signature<C>;

    fn index(&self) -> u16 {
        self.me
    }

    fn handle(&mut self, from: u16, message: Incoming) -> Result<Step<Signature<C>>, TssError> {
        Sign::handle(self, from, message)
    }
}
