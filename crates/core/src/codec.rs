//! Encoding of stored values and of keys.
//!
//! Values are postcard-encoded serde structs. Keys are built from length-prefixed parts so
//! that they sort by their first part, then the next, and a prefix scan over one owner can
//! never run into another owner whose id merely starts with the same bytes.

use serde::{de::DeserializeOwned, Serialize};

use crate::error::{Error, Result};

pub fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>> {
    postcard::to_stdvec(value)
        .map_err(|e| Error::internal(format!("cannot encode stored value: {e}")))
}

pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T> {
    postcard::from_bytes(bytes)
        .map_err(|e| Error::internal(format!("stored value is corrupt: {e}")))
}

/// The longest variable-length key part: its length must fit the 2-byte prefix.
pub const MAX_KEY_PART: usize = u16::MAX as usize;

/// A key under construction.
#[derive(Default, Clone)]
pub struct Key(Vec<u8>);

impl Key {
    pub fn new() -> Self {
        Key(Vec::with_capacity(48))
    }
    /// A variable-length part: 2-byte big-endian length, then the bytes. A part longer than
    /// [`MAX_KEY_PART`] is refused: cut short, two different long ids would share one key.
    pub fn part(mut self, bytes: &[u8]) -> Result<Self> {
        let len = u16::try_from(bytes.len()).map_err(|_| {
            Error::invalid(format!(
                "a key part is {} bytes; the limit is {MAX_KEY_PART}",
                bytes.len()
            ))
        })?;
        self.0.extend_from_slice(&len.to_be_bytes());
        self.0.extend_from_slice(bytes);
        Ok(self)
    }
    /// A fixed-width number, big-endian so keys sort numerically.
    pub fn u64(mut self, n: u64) -> Self {
        self.0.extend_from_slice(&n.to_be_bytes());
        self
    }
    pub fn build(self) -> Vec<u8> {
        self.0
    }
}

/// Reads the trailing big-endian u64 of a key (the seq of a mailbox key).
pub fn trailing_u64(key: &[u8]) -> Option<u64> {
    let start = key.len().checked_sub(8)?;
    let bytes: [u8; 8] = key[start..].try_into().ok()?;
    Some(u64::from_be_bytes(bytes))
}

/// The smallest key greater than every key that starts with `prefix`.
pub fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    // A prefix of only 0xff bytes: no finite upper bound; callers pass an empty `to` (unbounded).
    Vec::new()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_sort_by_owner_then_seq() -> Result<()> {
        let a1 = Key::new().part(b"a")?.u64(2).build();
        let a2 = Key::new().part(b"a")?.u64(10).build();
        let ab = Key::new().part(b"ab")?.u64(1).build();
        assert!(a1 < a2);
        assert!(
            a2 < ab,
            "a shorter owner sorts before a longer one that extends it"
        );
        let p = Key::new().part(b"a")?.build();
        assert!(a2 < prefix_end(&p) && ab >= prefix_end(&p));
        assert_eq!(trailing_u64(&a2), Some(10));
        Ok(())
    }

    #[test]
    fn part_at_the_limit_is_kept_whole() -> Result<()> {
        let long = vec![7u8; MAX_KEY_PART];
        let key = Key::new().part(&long)?.u64(1).build();
        assert_eq!(key.len(), 2 + MAX_KEY_PART + 8);
        assert_eq!(key[..2], [0xff, 0xff]);
        assert_eq!(key[2..2 + MAX_KEY_PART], long[..]);
        assert_eq!(trailing_u64(&key), Some(1));
        Ok(())
    }

    #[test]
    fn part_over_the_limit_is_refused_not_truncated() {
        let mut a = vec![1u8; MAX_KEY_PART + 1];
        let b = {
            let mut b = a.clone();
            b[MAX_KEY_PART] = 2;
            b
        };
        for part in [&a, &b] {
            match Key::new().part(part) {
                Ok(key) => panic!(
                    "a {}-byte part became a {}-byte key",
                    part.len(),
                    key.build().len()
                ),
                Err(e) => {
                    assert_eq!(e.kind, crate::ErrorKind::InvalidArgument);
                    assert!(e.message.contains("65536 bytes"), "{}", e.message);
                    assert!(e.message.contains("65535"), "{}", e.message);
                }
            }
        }
        a.truncate(MAX_KEY_PART);
        assert!(Key::new().part(&a).is_ok());
    }
}
