//! Runs parties entirely in memory: a queue delivering each [`Outgoing`] to the `handle` of
//! its recipients. This is the crypto-only baseline the relay is benchmarked against, and
//! the engine of the tests (which tamper with and reorder deliveries through [`drive`]).

use std::collections::{BTreeMap, VecDeque};

use crate::{
    AnyDkg, AnySign, Curve, Incoming, KeyShare, LoadedShare, Outgoing, Party, Step, TssError,
};

/// One message on its way from one party to another.
#[derive(Clone, Debug)]
pub struct Delivery {
    pub from: u16,
    pub to: u16,
    pub message: Incoming,
}

/// The order in which pending deliveries are handed over.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Schedule {
    /// In the order they were sent.
    Fifo,
    /// Most recently sent first.
    Lifo,
    /// The pending delivery of the highest round first (ties in send order), so parties
    /// routinely get later rounds' messages before earlier ones.
    LatestRoundFirst,
}

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("starting party {party}: {error}")]
    Start { party: u16, error: TssError },
    #[error("party {party} failed: {error}")]
    Party { party: u16, error: TssError },
    #[error("no messages left but parties {unfinished:?} have not finished")]
    Stalled { unfinished: Vec<u16> },
    #[error("parties disagree on the {0}")]
    Disagreement(&'static str),
}

/// Delivers messages among `parties` until every party is done or one fails. `first` holds
/// each party's opening messages (from `start`). `tamper` sees every delivery before it is
/// handed over and may change it: that is how tests play a malicious relay.
pub fn drive<P: Party>(
    parties: &mut [P],
    first: Vec<(u16, Vec<Outgoing>)>,
    schedule: Schedule,
    mut tamper: impl FnMut(&mut Delivery),
) -> Result<BTreeMap<u16, P::Output>, RunError> {
    let indices: Vec<u16> = parties.iter().map(|p| p.index()).collect();
    let mut pending: VecDeque<Delivery> = VecDeque::new();
    for (from, out) in first {
        enqueue(&mut pending, &indices, from, out);
    }
    let mut outputs = BTreeMap::new();
    while let Some(mut delivery) = next(&mut pending, schedule) {
        if outputs.contains_key(&delivery.to) {
            continue;
        }
        tamper(&mut delivery);
        let Some(party) = parties.iter_mut().find(|p| p.index() == delivery.to) else {
            continue;
        };
        let step = party
            .handle(delivery.from, delivery.message)
            .map_err(|error| RunError::Party {
                party: delivery.to,
                error,
            })?;
        match step {
            Step::Continue(out) => enqueue(&mut pending, &indices, delivery.to, out),
            Step::Done { output, outgoing } => {
                enqueue(&mut pending, &indices, delivery.to, outgoing);
                outputs.insert(delivery.to, output);
            }
        }
    }
    let unfinished: Vec<u16> = indices
        .iter()
        .copied()
        .filter(|i| !outputs.contains_key(i))
        .collect();
    if !unfinished.is_empty() {
        return Err(RunError::Stalled { unfinished });
    }
    Ok(outputs)
}

fn enqueue(pending: &mut VecDeque<Delivery>, indices: &[u16], from: u16, out: Vec<Outgoing>) {
    for o in out {
        match o.to {
            Some(to) => pending.push_back(Delivery {
                from,
                to,
                message: o.into(),
            }),
            None => {
                for &to in indices.iter().filter(|&&i| i != from) {
                    pending.push_back(Delivery {
                        from,
                        to,
                        message: (&o).into(),
                    });
                }
            }
        }
    }
}

fn next(pending: &mut VecDeque<Delivery>, schedule: Schedule) -> Option<Delivery> {
    match schedule {
        Schedule::Fifo => pending.pop_front(),
        Schedule::Lifo => pending.pop_back(),
        Schedule::LatestRoundFirst => {
            let top = pending.iter().map(|d| d.message.round).max()?;
            let at = pending.iter().position(|d| d.message.round == top)?;
            pending.remove(at)
        }
    }
}

/// Runs an `n`-party, `threshold`-of-`n` DKG in memory; returns every party's share in index
/// order, after checking they all hold the same group key.
pub fn run_dkg(curve: Curve, n: u16, threshold: u16) -> Result<Vec<KeyShare>, RunError> {
    let mut parties = Vec::with_capacity(n as usize);
    let mut first = Vec::with_capacity(n as usize);
    for i in 1..=n {
        let (party, out) = AnyDkg::start(curve, i, n, threshold)
            .map_err(|error| RunError::Start { party: i, error })?;
        parties.push(party);
        first.push((i, out));
    }
    let shares: Vec<KeyShare> = drive(&mut parties, first, Schedule::Fifo, |_| {})?
        .into_values()
        .collect();
    let mut keys = shares.iter().map(|s| s.group_public_key());
    let first_key = keys
        .next()
        .ok_or(RunError::Disagreement("number of parties"))?;
    if keys.any(|k| k != first_key) {
        return Err(RunError::Disagreement("group public key"));
    }
    Ok(shares)
}

/// Signs `message` in memory with the given shares (their holders are the signers); returns
/// the signature after checking every signer aggregated the same one. Parses the shares
/// first; [`run_sign_loaded`] starts from shares loaded once.
pub fn run_sign(shares: &[KeyShare], message: &[u8]) -> Result<Vec<u8>, RunError> {
    let loaded = shares
        .iter()
        .map(|s| {
            s.load().map_err(|error| RunError::Start {
                party: s.index,
                error,
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    run_sign_loaded(&loaded, message)
}

/// [`run_sign`] with shares already loaded ([`KeyShare::load`]), as a party that keeps its
/// share in memory signs.
pub fn run_sign_loaded(shares: &[LoadedShare], message: &[u8]) -> Result<Vec<u8>, RunError> {
    let signers: Vec<u16> = shares.iter().map(|s| s.index()).collect();
    let mut parties = Vec::with_capacity(shares.len());
    let mut first = Vec::with_capacity(shares.len());
    for share in shares {
        let (party, out) =
            AnySign::start_loaded(share, &signers, message).map_err(|error| RunError::Start {
                party: share.index(),
                error,
            })?;
        parties.push(party);
        first.push((share.index(), out));
    }
    let signatures = drive(&mut parties, first, Schedule::Fifo, |_| {})?;
    let mut all = signatures.into_values();
    let signature = all
        .next()
        .ok_or(RunError::Disagreement("number of signers"))?;
    if all.any(|s| s != signature) {
        return Err(RunError::Disagreement("signature"));
    }
    Ok(signature)
}

/// The result of [`run_dkg_and_sign`].
#[derive(Debug)]
pub struct Baseline {
    pub group_public_key: Vec<u8>,
    pub signature: Vec<u8>,
    pub shares: Vec<KeyShare>,
}

/// A DKG among `n` then a signing by the first `threshold` parties, all in memory, with the
/// signature verified under the group key.
pub fn run_dkg_and_sign(
    curve: Curve,
    n: u16,
    threshold: u16,
    message: &[u8],
) -> Result<Baseline, RunError> {
    let shares = run_dkg(curve, n, threshold)?;
    let signature = run_sign(&shares[..threshold as usize], message)?;
    let group_public_key = shares[0]
        .group_public_key()
        .map_err(|error| RunError::Party { party: 1, error })?;
    crate::verify_signature(curve, &group_public_key, message, &signature)
        .map_err(|error| RunError::Party { party: 1, error })?;
    Ok(Baseline {
        group_public_key,
        signature,
        shares,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    /// CPU time this thread has run, in ns (`/proc/thread-self/schedstat`), if readable.
    fn thread_cpu_ns() -> Option<u64> {
        std::fs::read_to_string("/proc/thread-self/schedstat")
            .ok()?
            .split_whitespace()
            .next()?
            .parse()
            .ok()
    }

    /// Runs `sign` `count` times on this thread; prints CPU and wall time per signing.
    fn measure(label: &str, count: u32, mut sign: impl FnMut(&[u8])) {
        for i in 0..10u32 {
            sign(&i.to_be_bytes()); // warm-up
        }
        let (cpu0, wall0) = (thread_cpu_ns(), Instant::now());
        for i in 0..count {
            sign(format!("bench message {i}").as_bytes());
        }
        let wall = wall0.elapsed();
        let per = |ns: f64| ns / 1000.0 / f64::from(count);
        let cpu = match (cpu0, thread_cpu_ns()) {
            (Some(a), Some(b)) => format!("{:.1} µs CPU", per((b - a) as f64)),
            _ => "CPU time unavailable".into(),
        };
        println!(
            "{label}: {count} signings, {cpu}, {:.1} µs wall per signing",
            per(wall.as_nanos() as f64)
        );
    }

    /// The CPU cost of one in-process 2-of-3 Ed25519 signing (both signers' work), on one
    /// thread: from stored shares (`run_sign`, which parses them) and from shares loaded once
    /// (`run_sign_loaded`). A measurement, not a test: it prints and asserts nothing about
    /// time. Run in release (see "In-process FROST cost" in BENCHMARKS.md):
    /// `cargo test --release -p cohort-tss --lib -- --ignored --nocapture signing_cost`;
    /// `COHORT_SIGNINGS` sets the count (default 2000).
    #[test]
    #[ignore = "measurement; run in release with --ignored --nocapture"]
    fn signing_cost() {
        let count: u32 = std::env::var("COHORT_SIGNINGS")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(2000);
        let shares = run_dkg(Curve::Ed25519, 3, 2).unwrap();
        let signing = &shares[..2];
        let loaded: Vec<LoadedShare> = signing.iter().map(|s| s.load().unwrap()).collect();
        measure("2-of-3 ed25519, run_sign (parses the shares)", count, |m| {
            run_sign(signing, m).unwrap();
        });
        measure("2-of-3 ed25519, run_sign_loaded", count, |m| {
            run_sign_loaded(&loaded, m).unwrap();
        });
    }
}
