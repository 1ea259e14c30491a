//! Where login challenges are kept, bounded.
//!
//! Anyone may ask for a challenge, so their number must not grow with the asking. A challenge
//! id starts with its issue time (big-endian ms, then 24 random bytes, in hex), so the table is
//! ordered oldest first: expired ones are cleared from its head as new ones arrive, and past
//! [`Limits::max_challenges`] the oldest is evicted. A count in `Meta` tracks the size (a
//! table scan would cost what it bounds).

use crate::error::Result;
use crate::limits::{Limits, Millis};
use crate::store::{Table, Tx, View};

/// The count of stored challenges, in `Meta`.
const COUNT_KEY: &[u8] = b"count/challenges";
/// Expired challenges removed from the head of the table per challenge issued.
const CLEARED_PER_ISSUE: usize = 2;

/// A new challenge id: issue time, then 24 random bytes, as 64 hex chars.
pub(crate) fn new_id(now: Millis, random: &[u8]) -> String {
    let mut raw = [0u8; 32];
    raw[..8].copy_from_slice(&now.max(0).to_be_bytes());
    let n = random.len().min(24);
    raw[8..8 + n].copy_from_slice(&random[..n]);
    hex::encode(raw)
}

/// When the challenge `id` was issued, read from the id itself.
fn issued_at(id: &[u8]) -> Option<Millis> {
    let mut raw = [0u8; 8];
    hex::decode_to_slice(id.get(..16)?, &mut raw).ok()?;
    Some(Millis::from_be_bytes(raw))
}

/// How many challenges are stored.
pub fn count(view: &dyn View) -> Result<u64> {
    Ok(view
        .get(Table::Meta, COUNT_KEY)?
        .and_then(|b| <[u8; 8]>::try_from(b.as_slice()).ok())
        .map(u64::from_be_bytes)
        .unwrap_or(0))
}

fn set_count(tx: &mut dyn Tx, n: u64) -> Result<()> {
    tx.put(Table::Meta, COUNT_KEY, &n.to_be_bytes())
}

/// Stores a challenge record under `id`: first clears a few expired ones from the head, then
/// evicts the oldest while the table is full.
pub(crate) fn insert(
    tx: &mut dyn Tx,
    id: &str,
    record: &[u8],
    now: Millis,
    limits: &Limits,
) -> Result<()> {
    let mut n = count(tx)?;
    for (key, _) in tx.scan(Table::Challenges, &[], &[], CLEARED_PER_ISSUE)? {
        let expired =
            issued_at(&key).is_some_and(|at| at.saturating_add(limits.challenge_ttl_ms) < now);
        if !expired {
            break;
        }
        tx.delete(Table::Challenges, &key)?;
        n = n.saturating_sub(1);
    }
    let max = limits.max_challenges.max(1);
    while n >= max {
        let Some((oldest, _)) = tx.scan(Table::Challenges, &[], &[], 1)?.pop() else {
            n = 0;
            break;
        };
        tx.delete(Table::Challenges, &oldest)?;
        n -= 1;
    }
    tx.put(Table::Challenges, id.as_bytes(), record)?;
    set_count(tx, n + 1)
}

/// Removes the challenge stored under `key`, if it is there.
pub(crate) fn remove(tx: &mut dyn Tx, key: &[u8]) -> Result<()> {
    if tx.get(Table::Challenges, key)?.is_some() {
        tx.delete(Table::Challenges, key)?;
        let n = count(tx)?;
        set_count(tx, n.saturating_sub(1))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::MemTx;

    fn ids(tx: &MemTx) -> Vec<Vec<u8>> {
        tx.scan(Table::Challenges, &[], &[], usize::MAX)
            .unwrap()
            .into_iter()
            .map(|(k, _)| k)
            .collect()
    }

    #[test]
    fn past_the_cap_the_oldest_go_and_the_count_follows() {
        let limits = Limits {
            max_challenges: 3,
            ..Limits::default()
        };
        let mut tx = MemTx::new();
        let mut issued = Vec::new();
        for i in 0..10i64 {
            let id = new_id(1_000 + i, &[i as u8; 24]);
            insert(&mut tx, &id, b"r", 1_000 + i, &limits).unwrap();
            issued.push(id.into_bytes());
        }
        assert_eq!(ids(&tx), issued[7..].to_vec(), "the three newest are kept");
        assert_eq!(count(&tx).unwrap(), 3);
        remove(&mut tx, &issued[8]).unwrap();
        remove(&mut tx, &issued[8]).unwrap();
        assert_eq!(count(&tx).unwrap(), 2, "removing twice counts once");
    }

    #[test]
    fn expired_challenges_are_cleared_from_the_head_as_new_ones_arrive() {
        let limits = Limits::default();
        let mut tx = MemTx::new();
        for i in 0..4i64 {
            insert(&mut tx, &new_id(i, &[i as u8; 24]), b"r", i, &limits).unwrap();
        }
        let later = limits.challenge_ttl_ms + 10;
        insert(&mut tx, &new_id(later, &[9; 24]), b"r", later, &limits).unwrap();
        assert_eq!(ids(&tx).len(), 3, "two expired ones cleared per issue");
        assert_eq!(count(&tx).unwrap(), 3);
    }
}
