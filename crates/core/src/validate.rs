//! Checks on caller-supplied strings and sizes, run before anything touches the store.
//! Each failure names the field, so the caller knows what to fix.

use crate::error::{Error, Result};

const MAX_ID_LEN: usize = 128;
const MAX_TYPE_LEN: usize = 64;
/// Most characters of a caller's value an error message quotes.
const MAX_QUOTED_CHARS: usize = 80;

/// `value` quoted for an error message: whole if short, otherwise its start and its length,
/// so a huge value is never echoed back whole.
pub fn quoted(value: &str) -> String {
    match value.char_indices().nth(MAX_QUOTED_CHARS) {
        None => format!("{value:?}"),
        Some((cut, _)) => format!("{:?}... ({} bytes)", &value[..cut], value.len()),
    }
}

/// A party id: 1..=128 chars of `[A-Za-z0-9._@-]`. No `:`, which the other fronts use to
/// namespace their principals (`qpq:<hex>`, `mm:<hex>`), so ids can never collide.
pub fn party_id(field: &str, id: &str) -> Result<()> {
    if id.is_empty() {
        return Err(Error::invalid(format!("{field} is empty")));
    }
    if id.len() > MAX_ID_LEN {
        return Err(Error::invalid(format!(
            "{field} is {} bytes; at most {MAX_ID_LEN}",
            id.len()
        )));
    }
    if let Some(c) = id
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '@')))
    {
        return Err(Error::invalid(format!(
            "{field} contains {c:?}; allowed are letters, digits and . _ - @"
        )));
    }
    Ok(())
}

/// A session id as Cohort issues them (a UUID); any other string cannot name a session.
pub fn session_id(field: &str, id: &str) -> Result<()> {
    if id.is_empty() {
        return Err(Error::invalid(format!("{field} is empty")));
    }
    if uuid::Uuid::try_parse(id).is_err() {
        return Err(Error::invalid(format!(
            "{field} {} is not a session id (a UUID)",
            quoted(id)
        )));
    }
    Ok(())
}

/// A short enum-like label (`message_type`, `session_type`): 0..=64 printable ASCII chars.
pub fn label(field: &str, value: &str, allow_empty: bool) -> Result<()> {
    if value.is_empty() && !allow_empty {
        return Err(Error::invalid(format!("{field} is empty")));
    }
    if value.len() > MAX_TYPE_LEN {
        return Err(Error::invalid(format!(
            "{field} is {} bytes; at most {MAX_TYPE_LEN}",
            value.len()
        )));
    }
    if value.chars().any(|c| !c.is_ascii_graphic()) {
        return Err(Error::invalid(format!(
            "{field} must be printable ASCII without spaces"
        )));
    }
    Ok(())
}

/// A free-text field bounded in size (versions, error messages, device info).
pub fn text(field: &str, value: &str, max: usize) -> Result<()> {
    if value.len() > max {
        return Err(Error::invalid(format!(
            "{field} is {} bytes; at most {max}",
            value.len()
        )));
    }
    Ok(())
}

/// A message id as Cohort issues them (a UUIDv7), returned as its 16 bytes.
pub fn message_id(field: &str, id: &str) -> Result<[u8; 16]> {
    uuid::Uuid::try_parse(id)
        .map(|u| *u.as_bytes())
        .map_err(|_| {
            Error::invalid(format!(
                "{field} {} is not a message id (a UUID)",
                quoted(id)
            ))
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ErrorKind;

    #[test]
    fn party_id_refuses_empty_long_and_namespaced() {
        assert!(party_id("party_id", "alice-1").is_ok());
        for bad in ["", "a:b", "with space", &"x".repeat(129)] {
            let e = party_id("party_id", bad).unwrap_err();
            assert_eq!(e.kind, ErrorKind::InvalidArgument);
            assert!(e.message.contains("party_id"), "{}", e.message);
        }
    }

    #[test]
    fn echoed_values_are_cut() {
        let huge = "x".repeat(1024 * 1024);
        let e = session_id("session_id", &huge).unwrap_err();
        assert!(e.message.len() < 200, "{}", e.message);
        assert!(e.message.contains("1048576 bytes"), "{}", e.message);
        assert_eq!(quoted("abc"), "\"abc\"");
    }

    #[test]
    fn label_bounds_length_and_charset() {
        assert!(label("message_type", "round1", false).is_ok());
        assert!(label("message_type", "", true).is_ok());
        assert!(label("message_type", "", false).is_err());
        assert!(label("message_type", &"r".repeat(65), false).is_err());
        assert!(label("message_type", "a b", false).is_err());
    }
}
