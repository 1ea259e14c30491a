//! FROST distributed key generation (RFC 9591's companion DKG, as in `frost_core::keys::dkg`)
//! with an echo round that checks everyone saw the same round-1 broadcasts.
//!
//! | round | message type            | to            | body                                        |
//! |-------|-------------------------|---------------|---------------------------------------------|
//! | 1     | `frost/dkg/round1`      | broadcast     | `round1::Package::serialize()`              |
//! | 2     | `frost/dkg/round1-echo` | broadcast     | SHA-256 digest of each party's round-1 body, in index order (32 bytes × n) |
//! | 3     | `frost/dkg/round2`      | each other party | `round2::Package::serialize()` (a secret share: the runner must seal it) |
//!
//! A party sends its round-3 shares only after every echo matched its own view, so a relay
//! that showed parties different round-1 broadcasts learns nothing and the run fails with
//! [`TssError::InconsistentBroadcast`].

use std::collections::BTreeMap;

use frost_core::keys::dkg::{self, round1, round2};
use frost_core::keys::{KeyPackage, PublicKeyPackage};
use frost_core::{Ciphersuite, Error as FrostError, Identifier};
use rand::rngs::OsRng;

use crate::curve::{identifier, CurveSuite};
use crate::inbox::{self, step, Gate, Inbox};
use crate::{Incoming, KeyShare, Outgoing, Party, Step, TssError};

pub const ROUND1: i32 = 1;
pub const ROUND1_TYPE: &str = "frost/dkg/round1";
pub const ECHO: i32 = 2;
pub const ECHO_TYPE: &str = "frost/dkg/round1-echo";
pub const ROUND2: i32 = 3;
pub const ROUND2_TYPE: &str = "frost/dkg/round2";

const ROUNDS: [(i32, &str); 3] = [
    (ROUND1, ROUND1_TYPE),
    (ECHO, ECHO_TYPE),
    (ROUND2, ROUND2_TYPE),
];

/// One party's run of the DKG.
pub struct Dkg<C: Ciphersuite> {
    me: u16,
    threshold: u16,
    participants: Vec<u16>,
    others: Vec<u16>,
    by_identifier: BTreeMap<Identifier<C>, u16>,
    my_round1: Vec<u8>,
    inbox: Inbox,
    phase: Phase<C>,
}

enum Phase<C: Ciphersuite> {
    AwaitRound1 {
        secret: round1::SecretPackage<C>,
    },
    AwaitEcho {
        secret: round1::SecretPackage<C>,
        packages: BTreeMap<Identifier<C>, round1::Package<C>>,
        transcript: Vec<u8>,
    },
    AwaitRound2 {
        secret: round2::SecretPackage<C>,
        packages: BTreeMap<Identifier<C>, round1::Package<C>>,
    },
    Finished,
    Failed(TssError),
}

/// What a party keeps from a DKG.
#[derive(Clone, Debug)]
pub struct DkgOutput<C: Ciphersuite> {
    pub index: u16,
    pub threshold: u16,
    pub parties: u16,
    pub key_package: KeyPackage<C>,
    pub public_key_package: PublicKeyPackage<C>,
}

impl<C: Ciphersuite> DkgOutput<C> {
    /// The group's public key, `VerifyingKey::serialize()` (Ed25519: 32 bytes; secp256k1-tr:
    /// 33-byte compressed point of the Taproot-tweaked key).
    pub fn group_public_key(&self) -> Result<Vec<u8>, TssError> {
        self.public_key_package
            .verifying_key()
            .serialize()
            .map_err(frost)
    }
}

impl<C: CurveSuite> DkgOutput<C> {
    /// The key share in the form parties store (see [`KeyShare`]).
    pub fn key_share(&self) -> Result<KeyShare, TssError> {
        Ok(KeyShare {
            curve: C::CURVE,
            index: self.index,
            threshold: self.threshold,
            parties: self.parties,
            key_package: self.key_package.serialize().map_err(frost)?,
            public_key_package: self.public_key_package.serialize().map_err(frost)?,
        })
    }
}

impl<C: Ciphersuite> Dkg<C> {
    /// Starts party `me` (1..=n) of an `n`-party DKG for a `threshold`-of-`n` key. Returns
    /// the round-1 broadcast.
    pub fn start(me: u16, n: u16, threshold: u16) -> Result<(Self, Vec<Outgoing>), TssError> {
        Self::start_with_rng(me, n, threshold, OsRng)
    }

    /// As [`Dkg::start`], with the round-1 secret drawn from a 32-byte seed. A runner that
    /// keeps the seed (encrypted, at rest) can restart the party after a crash: replaying the
    /// same inbound messages reproduces the same outbound ones, which peers drop as duplicates.
    /// The seed is as secret as the key share it leads to.
    pub fn start_seeded(
        me: u16,
        n: u16,
        threshold: u16,
        seed: [u8; 32],
    ) -> Result<(Self, Vec<Outgoing>), TssError> {
        use rand::SeedableRng;
        Self::start_with_rng(me, n, threshold, rand_chacha::ChaCha20Rng::from_seed(seed))
    }

    fn start_with_rng<R: rand::RngCore + rand::CryptoRng>(
        me: u16,
        n: u16,
        threshold: u16,
        rng: R,
    ) -> Result<(Self, Vec<Outgoing>), TssError> {
        if me == 0 || me > n {
            return Err(TssError::InvalidParameters(format!(
                "party index {me} is outside 1..={n}"
            )));
        }
        if threshold < 2 || threshold > n {
            return Err(TssError::InvalidParameters(format!(
                "threshold {threshold} must be in 2..={n}"
            )));
        }
        let participants: Vec<u16> = (1..=n).collect();
        let mut by_identifier = BTreeMap::new();
        for &i in &participants {
            by_identifier.insert(identifier::<C>(i)?, i);
        }
        let (secret, package) =
            dkg::part1(identifier::<C>(me)?, n, threshold, rng).map_err(frost)?;
        let my_round1 = package.serialize().map_err(frost)?;
        let others = participants.iter().copied().filter(|&i| i != me).collect();
        let out = vec![Outgoing {
            to: None,
            round: ROUND1,
            message_type: ROUND1_TYPE,
            body: my_round1.clone(),
        }];
        let dkg = Dkg {
            me,
            threshold,
            participants,
            others,
            by_identifier,
            my_round1,
            inbox: Inbox::default(),
            phase: Phase::AwaitRound1 { secret },
        };
        Ok((dkg, out))
    }

    pub fn index(&self) -> u16 {
        self.me
    }

    /// Takes one message from party `from` (already authenticated by the runner).
    pub fn handle(&mut self, from: u16, message: Incoming) -> Result<Step<DkgOutput<C>>, TssError> {
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

    /// Runs every round whose messages have all arrived.
    fn advance(&mut self, outgoing: &mut Vec<Outgoing>) -> Result<Option<DkgOutput<C>>, TssError> {
        loop {
            let ready = match &self.phase {
                Phase::AwaitRound1 { .. } => self.inbox.has_all(ROUND1, &self.others),
                Phase::AwaitEcho { .. } => self.inbox.has_all(ECHO, &self.others),
                Phase::AwaitRound2 { .. } => self.inbox.has_all(ROUND2, &self.others),
                Phase::Finished | Phase::Failed(_) => false,
            };
            if !ready {
                return Ok(None);
            }
            match std::mem::replace(&mut self.phase, Phase::Finished) {
                Phase::AwaitRound1 { secret } => {
                    let (packages, transcript) = self.collect_round1()?;
                    outgoing.push(Outgoing {
                        to: None,
                        round: ECHO,
                        message_type: ECHO_TYPE,
                        body: transcript.clone(),
                    });
                    self.phase = Phase::AwaitEcho {
                        secret,
                        packages,
                        transcript,
                    };
                }
                Phase::AwaitEcho {
                    secret,
                    packages,
                    transcript,
                } => {
                    for &from in &self.others {
                        let echo = self.inbox.get(ECHO, from).unwrap_or_default();
                        inbox::check_transcript(
                            ROUND1,
                            &self.participants,
                            &transcript,
                            echo,
                            from,
                            ECHO,
                        )?;
                    }
                    let (secret, shares) =
                        dkg::part2(secret, &packages).map_err(|e| self.blame(e))?;
                    for (id, share) in shares {
                        let to = self.index_of(&id)?;
                        let body = share.serialize().map_err(frost)?;
                        outgoing.push(Outgoing {
                            to: Some(to),
                            round: ROUND2,
                            message_type: ROUND2_TYPE,
                            body,
                        });
                    }
                    self.phase = Phase::AwaitRound2 { secret, packages };
                }
                Phase::AwaitRound2 { secret, packages } => {
                    let mut shares = BTreeMap::new();
                    for &from in &self.others {
                        let body = self.inbox.get(ROUND2, from).unwrap_or_default();
                        let share = round2::Package::<C>::deserialize(body)
                            .map_err(|e| malformed(ROUND2, from, e))?;
                        shares.insert(identifier::<C>(from)?, share);
                    }
                    let (key_package, public_key_package) =
                        dkg::part3(&secret, &packages, &shares).map_err(|e| self.blame(e))?;
                    self.phase = Phase::Finished;
                    return Ok(Some(DkgOutput {
                        index: self.me,
                        threshold: self.threshold,
                        parties: self.participants.len() as u16,
                        key_package,
                        public_key_package,
                    }));
                }
                Phase::Finished | Phase::Failed(_) => return Ok(None),
            }
        }
    }

    /// Parses every other party's round-1 package and computes the transcript to echo.
    #[allow(clippy::type_complexity)]
    fn collect_round1(
        &self,
    ) -> Result<(BTreeMap<Identifier<C>, round1::Package<C>>, Vec<u8>), TssError> {
        let mut packages = BTreeMap::new();
        let mut bodies = BTreeMap::new();
        bodies.insert(self.me, self.my_round1.as_slice());
        for &from in &self.others {
            let body = self.inbox.get(ROUND1, from).unwrap_or_default();
            let package =
                round1::Package::<C>::deserialize(body).map_err(|e| malformed(ROUND1, from, e))?;
            // frost checks this too but without naming the sender; count the coefficients.
            let coefficients = package
                .commitment()
                .serialize()
                .map_err(|e| malformed(ROUND1, from, e))?
                .len();
            if coefficients != self.threshold as usize {
                return Err(TssError::Malformed {
                    round: ROUND1,
                    culprit: from,
                    reason: format!(
                        "commits to threshold {coefficients}, not {}",
                        self.threshold
                    ),
                });
            }
            packages.insert(identifier::<C>(from)?, package);
            bodies.insert(from, body);
        }
        Ok((packages, inbox::transcript(ROUND1, &bodies)))
    }

    fn index_of(&self, id: &Identifier<C>) -> Result<u16, TssError> {
        self.by_identifier.get(id).copied().ok_or_else(|| {
            TssError::Frost("FROST named an identifier that is not a participant".into())
        })
    }

    /// Maps FROST's culprit-naming errors to ours.
    fn blame(&self, e: FrostError<C>) -> TssError {
        let culprit = |id: &Identifier<C>| self.by_identifier.get(id).copied();
        match &e {
            FrostError::InvalidSecretShare { culprit: Some(id) } => match culprit(id) {
                Some(c) => TssError::BadShare { culprit: c },
                None => frost(e),
            },
            FrostError::InvalidProofOfKnowledge { culprit: id } => match culprit(id) {
                Some(c) => TssError::BadProof { culprit: c },
                None => frost(e),
            },
            _ => frost(e),
        }
    }
}

impl<C: Ciphersuite> Party for Dkg<C> {
    type Output = DkgOutput<C>;

    fn index(&self) -> u16 {
        self.me
    }

    fn handle(&mut self, from: u16, message: Incoming) -> Result<Step<DkgOutput<C>>, TssError> {
        Dkg::handle(self, from, message)
    }
}

pub(crate) fn frost<C: Ciphersuite>(e: FrostError<C>) -> TssError {
    TssError::Frost(e.to_string())
}

pub(crate) fn malformed<C: Ciphersuite>(round: i32, culprit: u16, e: FrostError<C>) -> TssError {
    TssError::Malformed {
        round,
        culprit,
        reason: e.to_string(),
    }
}
