//! The one error type every rule returns. Each front maps [`ErrorKind`] to its own wire form.

use std::fmt;

/// What went wrong, in the categories every front can express.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    InvalidArgument,
    Unauthenticated,
    PermissionDenied,
    NotFound,
    AlreadyExists,
    FailedPrecondition,
    ResourceExhausted,
    Unavailable,
    Internal,
}

/// A rule's refusal: a kind and a message for the caller that names the field or thing involved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error {
    pub kind: ErrorKind,
    pub message: String,
    /// The party to blame, when the refusal is about a failed session that named one.
    pub culprit: Option<String>,
    /// For a rate limit: how long to wait before the call can succeed.
    pub retry_after_ms: Option<u64>,
}

/// Longest message an error carries. Messages quote what the caller sent; a quote of a
/// megabyte would not fit in a status header (gRPC clients refuse metadata past 8-16 KiB).
pub const MAX_MESSAGE_BYTES: usize = 1024;

/// `message` cut to [`MAX_MESSAGE_BYTES`], keeping its start and its end (which usually says
/// what is wrong) and saying how much was left out.
fn bounded(message: String) -> String {
    if message.len() <= MAX_MESSAGE_BYTES {
        return message;
    }
    let head = floor_char_boundary(&message, MAX_MESSAGE_BYTES / 2);
    let tail = ceil_char_boundary(&message, message.len() - MAX_MESSAGE_BYTES / 4);
    format!(
        "{} [{} bytes left out] {}",
        &message[..head],
        tail - head,
        &message[tail..]
    )
}

fn floor_char_boundary(s: &str, mut i: usize) -> usize {
    while !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}

fn ceil_char_boundary(s: &str, mut i: usize) -> usize {
    while !s.is_char_boundary(i) {
        i += 1;
    }
    i
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Error {
            kind,
            message: bounded(message.into()),
            culprit: None,
            retry_after_ms: None,
        }
    }
    /// A rate limit refusal: RESOURCE_EXHAUSTED, saying when to try again.
    pub fn rate_limited(message: impl Into<String>, retry_after_ms: u64) -> Self {
        let mut e = Self::new(ErrorKind::ResourceExhausted, message);
        e.retry_after_ms = Some(retry_after_ms);
        e
    }
    /// The same error, naming the party to blame.
    pub fn with_culprit(mut self, culprit: impl Into<String>) -> Self {
        self.culprit = Some(culprit.into());
        self
    }
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::InvalidArgument, message)
    }
    pub fn unauthenticated(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Unauthenticated, message)
    }
    pub fn denied(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::PermissionDenied, message)
    }
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::NotFound, message)
    }
    pub fn exists(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::AlreadyExists, message)
    }
    pub fn precondition(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::FailedPrecondition, message)
    }
    pub fn exhausted(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::ResourceExhausted, message)
    }
    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Unavailable, message)
    }
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Internal, message)
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}: {}", self.kind, self.message)
    }
}

impl std::error::Error for Error {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_messages_are_cut_keeping_start_and_end() {
        let echoed = "é".repeat(1024 * 1024);
        let e = Error::invalid(format!(
            "session_id {echoed:?} is not a session id (a UUID)"
        ));
        assert!(
            e.message.len() <= MAX_MESSAGE_BYTES + 64,
            "{}",
            e.message.len()
        );
        assert!(e.message.starts_with("session_id \"é"));
        assert!(e.message.ends_with("is not a session id (a UUID)"));
        assert!(e.message.contains("bytes left out"));
        let short = Error::invalid("party_id is empty");
        assert_eq!(short.message, "party_id is empty");
    }
}
