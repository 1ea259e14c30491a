//! What can go wrong talking to a relay, in words that name the relay, the call and the peer.

use std::fmt;

/// Why a received payload was refused by [`crate::SecureSession::recv_opened`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RejectReason {
    /// The signature does not verify for the claimed sender and this context: the bytes were
    /// altered (by the relay or on the way) or forged.
    BadSignature,
    /// The signature verifies, but the sealed body does not open with our key: the sender
    /// sealed something we cannot read.
    DecryptFailed,
    /// Not an envelope at all, or one whose shape disagrees with how it was delivered.
    Malformed(String),
}

impl fmt::Display for RejectReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RejectReason::BadSignature => f.write_str("bad signature"),
            RejectReason::DecryptFailed => f.write_str("decrypt failed"),
            RejectReason::Malformed(why) => write!(f, "malformed: {why}"),
        }
    }
}

/// A payload that did not verify or open, and who sent it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejected {
    pub session_id: String,
    pub message_id: String,
    /// The party id the relay named as sender: the party to blame.
    pub culprit: String,
    pub round: i32,
    pub message_type: String,
    pub reason: RejectReason,
}

impl fmt::Display for Rejected {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "round {} {:?} message {} from {:?} in session {} refused: {}",
            self.round,
            self.message_type,
            self.message_id,
            self.culprit,
            self.session_id,
            self.reason
        )
    }
}

/// The metadata key under which the relay names a failed session's culprit.
const CULPRIT_METADATA: &str = "cohort-culprit";

/// Every error the SDK returns.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ClientError {
    #[error("relay URL {url:?} is not usable: {reason}")]
    InvalidUrl { url: String, reason: String },

    /// The relay answered a call with a gRPC error (or could not be reached).
    #[error("{rpc} on relay {url} failed with {}: {message}", code_name(*.code))]
    Rpc {
        url: String,
        rpc: &'static str,
        code: tonic::Code,
        message: String,
        /// The party to blame, when the call failed because its session failed naming one.
        culprit: Option<String>,
    },

    /// The relay answered, but with something that cannot be right.
    #[error("relay {url} sent an invalid answer to {rpc}: {reason}")]
    BadResponse {
        url: String,
        rpc: &'static str,
        reason: String,
    },

    /// A published encryption key whose signature does not verify with its party's identity
    /// key. Never used for sealing.
    #[error("the encryption key relay {url} returned for party {party_id:?} is not signed by that party's identity key; refusing to use it")]
    BadKeySignature { url: String, party_id: String },

    /// The relay returned another identity key for a party than the one this client knew.
    #[error("relay {url} returned a different identity key for party {party_id:?} than the one this client trusts ({known} vs {returned}); refusing to use it")]
    IdentityChanged {
        url: String,
        party_id: String,
        known: String,
        returned: String,
    },

    #[error("party {party_id:?} has no published encryption key on relay {url}; it must call publish_encryption_key before sealed messages can be exchanged with it")]
    NoEncryptionKey { url: String, party_id: String },

    #[error("this client has no encryption key; call Client::publish_encryption_key (or generate_encryption_key) first")]
    NoOwnEncryptionKey,

    /// A payload failed verification or decryption; names the culprit.
    #[error("{0}")]
    Rejected(Box<Rejected>),

    /// A stream ended for good: the relay refused to resume it.
    #[error("{what} on relay {url} ended: {reason}")]
    StreamClosed {
        url: String,
        what: String,
        reason: String,
    },

    #[error("invalid argument: {0}")]
    InvalidArgument(String),
}

impl ClientError {
    /// The gRPC code, when the relay answered with an error.
    pub fn code(&self) -> Option<tonic::Code> {
        match self {
            ClientError::Rpc { code, .. } => Some(*code),
            _ => None,
        }
    }

    /// The party the relay names as at fault for the failed session this error is about.
    pub fn culprit(&self) -> Option<&str> {
        match self {
            ClientError::Rpc { culprit, .. } => culprit.as_deref(),
            _ => None,
        }
    }

    /// The relay refused because the session is closed (failed or expired): nothing of it
    /// can be resumed.
    pub fn is_session_closed(&self) -> bool {
        self.code() == Some(tonic::Code::FailedPrecondition)
    }

    /// An error a relay restart or a dropped connection causes (a call in flight when the
    /// relay went away can fail INTERNAL "h2 protocol error", not only UNAVAILABLE): worth
    /// retrying.
    pub fn is_transient(&self) -> bool {
        use tonic::Code;
        matches!(
            self.code(),
            Some(
                Code::Unavailable
                    | Code::Unknown
                    | Code::Internal
                    | Code::Cancelled
                    | Code::DeadlineExceeded
                    | Code::Aborted
            )
        )
    }

    /// The refused payload, when this is a [`ClientError::Rejected`].
    pub fn rejected(&self) -> Option<&Rejected> {
        match self {
            ClientError::Rejected(r) => Some(r),
            _ => None,
        }
    }

    pub(crate) fn rpc(url: &str, rpc: &'static str, status: &tonic::Status) -> Self {
        ClientError::Rpc {
            url: url.to_string(),
            rpc,
            code: status.code(),
            message: status_message(status),
            culprit: status
                .metadata()
                .get(CULPRIT_METADATA)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string),
        }
    }

    pub(crate) fn bad_response(url: &str, rpc: &'static str, reason: impl Into<String>) -> Self {
        ClientError::BadResponse {
            url: url.to_string(),
            rpc,
            reason: reason.into(),
        }
    }
}

/// The status message, followed by the chain of causes tonic keeps for transport errors
/// ("transport error: tcp connect error: Connection refused").
pub(crate) fn status_message(status: &tonic::Status) -> String {
    let mut out = status.message().to_string();
    let mut source = std::error::Error::source(status);
    while let Some(e) = source {
        let s = e.to_string();
        if !out.contains(&s) {
            if !out.is_empty() {
                out.push_str(": ");
            }
            out.push_str(&s);
        }
        source = e.source();
    }
    if out.is_empty() {
        out = status.code().description().to_string();
    }
    out
}

/// The canonical gRPC name of a code (`UNAVAILABLE`), as in grpc-status documentation.
pub fn code_name(code: tonic::Code) -> &'static str {
    use tonic::Code::*;
    match code {
        Ok => "OK",
        Cancelled => "CANCELLED",
        Unknown => "UNKNOWN",
        InvalidArgument => "INVALID_ARGUMENT",
        DeadlineExceeded => "DEADLINE_EXCEEDED",
        NotFound => "NOT_FOUND",
        AlreadyExists => "ALREADY_EXISTS",
        PermissionDenied => "PERMISSION_DENIED",
        ResourceExhausted => "RESOURCE_EXHAUSTED",
        FailedPrecondition => "FAILED_PRECONDITION",
        Aborted => "ABORTED",
        OutOfRange => "OUT_OF_RANGE",
        Unimplemented => "UNIMPLEMENTED",
        Internal => "INTERNAL",
        Unavailable => "UNAVAILABLE",
        DataLoss => "DATA_LOSS",
        Unauthenticated => "UNAUTHENTICATED",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rpc_error_names_relay_call_code_and_message() {
        let e = ClientError::rpc(
            "http://127.0.0.1:9",
            "RouteMessage",
            &tonic::Status::unavailable("relay is restarting"),
        );
        let text = e.to_string();
        assert_eq!(
            text,
            "RouteMessage on relay http://127.0.0.1:9 failed with UNAVAILABLE: relay is restarting"
        );
        assert_eq!(e.code(), Some(tonic::Code::Unavailable));
    }

    #[test]
    fn rejected_error_names_the_culprit_and_reason() {
        let e = ClientError::Rejected(Box::new(Rejected {
            session_id: "s".into(),
            message_id: "m".into(),
            culprit: "alice".into(),
            round: 2,
            message_type: "share".into(),
            reason: RejectReason::DecryptFailed,
        }));
        let text = e.to_string();
        assert!(text.contains("\"alice\""), "{text}");
        assert!(text.contains("decrypt failed"), "{text}");
        assert_eq!(e.rejected().map(|r| r.culprit.as_str()), Some("alice"));
    }
}
