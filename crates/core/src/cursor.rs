//! Bounded walks over a whole table, spread over many calls.
//!
//! A sweeper may look at only `limit` entries per transaction, yet must reach every entry
//! eventually: scanning from the start each time would look at the same first `limit`
//! entries forever. A cursor kept in [`Table::Meta`] remembers where the last call stopped;
//! the next call goes on from there and wraps around to the start of the table.

use crate::error::Result;
use crate::store::{Pair, Table, Tx};

/// The next `limit` entries of `table` after the cursor stored under `cursor` in `Meta`. When
/// the end of the table comes first, the rest of the budget goes to the start of the table, up
/// to where this call began, so no entry is visited twice in one call. The cursor is left on
/// the last entry returned.
pub(crate) fn next_page(
    tx: &mut dyn Tx,
    table: Table,
    cursor: &[u8],
    limit: usize,
) -> Result<Vec<Pair>> {
    // Just after the last key visited: the key followed by a zero byte is its successor.
    let start = match tx.get(Table::Meta, cursor)? {
        Some(mut last) => {
            last.push(0);
            last
        }
        None => Vec::new(),
    };
    let mut page = tx.scan(table, &start, &[], limit)?;
    if page.len() < limit && !start.is_empty() {
        page.extend(tx.scan(table, &[], &start, limit - page.len())?);
    }
    match page.last() {
        Some((last, _)) => tx.put(Table::Meta, cursor, last)?,
        None => tx.delete(Table::Meta, cursor)?,
    }
    Ok(page)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{MemTx, View};

    fn keys(page: &[Pair]) -> Vec<u8> {
        page.iter().map(|(k, _)| k[0]).collect()
    }

    #[test]
    fn pages_wrap_around_and_cover_every_entry() -> Result<()> {
        let mut tx = MemTx::new();
        for k in 0..5u8 {
            tx.put(Table::Tokens, &[k], b"")?;
        }
        let mut seen = Vec::new();
        for _ in 0..3 {
            seen.push(keys(&next_page(&mut tx, Table::Tokens, b"c", 2)?));
        }
        assert_eq!(seen, vec![vec![0, 1], vec![2, 3], vec![4, 0]]);
        // A budget larger than the table visits each entry once, starting after the cursor.
        assert_eq!(
            keys(&next_page(&mut tx, Table::Tokens, b"c", 10)?),
            vec![1, 2, 3, 4, 0]
        );
        Ok(())
    }

    #[test]
    fn a_deleted_cursor_entry_does_not_stop_the_walk() -> Result<()> {
        let mut tx = MemTx::new();
        for k in 0..4u8 {
            tx.put(Table::Tokens, &[k], b"")?;
        }
        assert_eq!(
            keys(&next_page(&mut tx, Table::Tokens, b"c", 2)?),
            vec![0, 1]
        );
        tx.delete(Table::Tokens, &[1])?;
        assert_eq!(
            keys(&next_page(&mut tx, Table::Tokens, b"c", 2)?),
            vec![2, 3]
        );
        tx.delete(Table::Tokens, &[0])?;
        tx.delete(Table::Tokens, &[2])?;
        tx.delete(Table::Tokens, &[3])?;
        assert!(next_page(&mut tx, Table::Tokens, b"c", 2)?.is_empty());
        assert_eq!(
            tx.get(Table::Meta, b"c")?,
            None,
            "an empty table clears the cursor"
        );
        Ok(())
    }
}
