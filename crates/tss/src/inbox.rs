//! What every machine does with arriving messages before the protocol looks at them:
//! check the sender and round, drop identical duplicates, refuse conflicting ones, and keep
//! the rest until their round comes. Also the broadcast digests used for consistency checks.

use std::collections::BTreeMap;

use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use crate::{Incoming, Step, TssError};

pub(crate) const DIGEST_LEN: usize = 32;

/// Where a machine is, as far as taking a message goes.
pub(crate) enum Gate {
    Running,
    Finished,
    Failed(TssError),
}

/// Turns the result of a machine's `advance` into what `handle` returns; a failure is
/// recorded with `fail` so every later call repeats it.
pub(crate) fn step<T>(
    advanced: Result<Option<T>, TssError>,
    outgoing: Vec<crate::Outgoing>,
    fail: impl FnOnce(TssError),
) -> Result<Step<T>, TssError> {
    match advanced {
        Ok(Some(output)) => Ok(Step::Done { output, outgoing }),
        Ok(None) => Ok(Step::Continue(outgoing)),
        Err(e) => {
            fail(e.clone());
            Err(e)
        }
    }
}

/// Messages received, by (round, sender). Kept after use so a redelivered message can be
/// recognised as a duplicate.
#[derive(Default)]
pub(crate) struct Inbox {
    messages: BTreeMap<(i32, u16), Zeroizing<Vec<u8>>>,
}

/// Whether [`Inbox::accept`] stored something new.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Accepted {
    New,
    Duplicate,
}

impl Inbox {
    /// Files a message for a machine at `gate`. `Ok(true)`: it is new and the machine should
    /// advance; `Ok(false)`: an identical duplicate, nothing to do. A failed machine repeats
    /// its failure; a finished one refuses anything new.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn admit(
        &mut self,
        gate: Gate,
        me: u16,
        others: &[u16],
        rounds: &[(i32, &'static str)],
        from: u16,
        message: Incoming,
    ) -> Result<bool, TssError> {
        match gate {
            Gate::Failed(e) => Err(e),
            Gate::Finished => match self.accept(me, others, rounds, from, message)? {
                Accepted::Duplicate => Ok(false),
                Accepted::New => Err(TssError::Finished),
            },
            Gate::Running => Ok(self.accept(me, others, rounds, from, message)? == Accepted::New),
        }
    }

    /// Files `message` from `from` after checking it against the protocol's participants
    /// (`senders`, excluding `me`) and `rounds` (round number and message type).
    pub(crate) fn accept(
        &mut self,
        me: u16,
        senders: &[u16],
        rounds: &[(i32, &'static str)],
        from: u16,
        message: Incoming,
    ) -> Result<Accepted, TssError> {
        if from == me {
            return Ok(Accepted::Duplicate);
        }
        if !senders.contains(&from) {
            return Err(TssError::UnknownSender { from });
        }
        if !rounds
            .iter()
            .any(|(round, ty)| *round == message.round && *ty == message.message_type)
        {
            return Err(TssError::UnexpectedMessage {
                from,
                round: message.round,
                message_type: message.message_type,
            });
        }
        match self.messages.get(&(message.round, from)) {
            Some(existing) if existing.as_slice() == message.body.as_slice() => {
                Ok(Accepted::Duplicate)
            }
            Some(_) => Err(TssError::ConflictingMessage {
                round: message.round,
                culprit: from,
            }),
            None => {
                self.messages
                    .insert((message.round, from), Zeroizing::new(message.body));
                Ok(Accepted::New)
            }
        }
    }

    pub(crate) fn has_all(&self, round: i32, senders: &[u16]) -> bool {
        senders
            .iter()
            .all(|s| self.messages.contains_key(&(round, *s)))
    }

    pub(crate) fn get(&self, round: i32, from: u16) -> Option<&[u8]> {
        self.messages.get(&(round, from)).map(|b| b.as_slice())
    }
}

/// Digest of one party's broadcast in one round.
pub(crate) fn broadcast_digest(round: i32, sender: u16, body: &[u8]) -> [u8; DIGEST_LEN] {
    let mut h = Sha256::new();
    h.update(b"cohort/tss/broadcast/v1\0");
    h.update(round.to_be_bytes());
    h.update(sender.to_be_bytes());
    h.update((body.len() as u64).to_be_bytes());
    h.update(body);
    h.finalize().into()
}

/// The digests of every participant's broadcast of `round`, in index order: the transcript
/// a party echoes. `bodies` must hold every participant's body, its own included.
pub(crate) fn transcript(round: i32, bodies: &BTreeMap<u16, &[u8]>) -> Vec<u8> {
    let mut out = Vec::with_capacity(bodies.len() * DIGEST_LEN);
    for (sender, body) in bodies {
        out.extend_from_slice(&broadcast_digest(round, *sender, body));
    }
    out
}

/// Compares another party's echoed transcript with ours. On a difference, names the party
/// whose broadcast the two saw differently.
pub(crate) fn check_transcript(
    round: i32,
    participants: &[u16],
    ours: &[u8],
    theirs: &[u8],
    echoed_by: u16,
    message_round: i32,
) -> Result<(), TssError> {
    if theirs.len() != ours.len() {
        return Err(TssError::Malformed {
            round: message_round,
            culprit: echoed_by,
            reason: format!(
                "transcript is {} bytes, expected {}",
                theirs.len(),
                ours.len()
            ),
        });
    }
    for (i, (a, b)) in ours
        .chunks(DIGEST_LEN)
        .zip(theirs.chunks(DIGEST_LEN))
        .enumerate()
    {
        if a != b {
            let culprit = participants.get(i).copied().unwrap_or(echoed_by);
            return Err(TssError::InconsistentBroadcast {
                round,
                culprit,
                echoed_by,
            });
        }
    }
    Ok(())
}
