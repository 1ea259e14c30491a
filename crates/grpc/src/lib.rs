//! The gRPC front: `mpc.router.v1.MessageRouter` plus Cohort's `cohort.v1` services.
//! Each file holds one service: decode, authenticate, call the [`Relay`], encode. Streams
//! come from the relay's delivery engine ([`cohort_relay::feed`] for the router's server
//! streams, [`cohort_relay::stream`] for `cohort.v1.Mailbox`); this crate only translates.
#![forbid(unsafe_code)]

mod access;
mod admin;
mod admission;
mod auth;
mod conn;
mod directory;
mod keys;
mod mailbox;
mod router;
mod serve;
mod sessions;

use std::sync::Arc;

use cohort_core::{Error, ErrorKind, Principal};
use cohort_relay::{Action, Relay};
use tonic::{Request, Status};

pub use admin::AdminService;
pub use auth::AuthService;
pub use conn::ConnectionLimits;
pub use directory::DirectoryService;
pub use keys::KeysService;
pub use mailbox::MailboxService;
pub use router::RouterService;
pub use serve::{serve, GrpcOptions};
pub use sessions::SessionsService;

/// Metadata key of a rate limit refusal (RESOURCE_EXHAUSTED): milliseconds to wait before the
/// call can succeed (the message says it too).
pub const RETRY_AFTER_METADATA: &str = "retry-after-ms";

/// Metadata key naming the party to blame when a call or stream ends because its session
/// failed with a culprit (the reason text says it too; this is the field to read).
pub const CULPRIT_METADATA: &str = "cohort-culprit";

/// The core's error in gRPC's form: the one place codes are mapped.
pub fn status(e: Error) -> Status {
    let code = match e.kind {
        ErrorKind::InvalidArgument => tonic::Code::InvalidArgument,
        ErrorKind::Unauthenticated => tonic::Code::Unauthenticated,
        ErrorKind::PermissionDenied => tonic::Code::PermissionDenied,
        ErrorKind::NotFound => tonic::Code::NotFound,
        ErrorKind::AlreadyExists => tonic::Code::AlreadyExists,
        ErrorKind::FailedPrecondition => tonic::Code::FailedPrecondition,
        ErrorKind::ResourceExhausted => tonic::Code::ResourceExhausted,
        ErrorKind::Unavailable => tonic::Code::Unavailable,
        ErrorKind::Internal => tonic::Code::Internal,
    };
    let mut status = Status::new(code, e.message);
    if let Some(culprit) = e.culprit {
        if let Ok(v) = culprit.parse() {
            status.metadata_mut().insert(CULPRIT_METADATA, v);
        }
    }
    if let Some(ms) = e.retry_after_ms {
        status
            .metadata_mut()
            .insert(RETRY_AFTER_METADATA, ms.into());
    }
    status
}

/// Resolves the `authorization: Bearer <token>` metadata of a request to its principal, and
/// records who is calling for the access log.
pub async fn principal<T>(relay: &Relay, req: &Request<T>) -> Result<Principal, Status> {
    let Some(value) = req.metadata().get("authorization") else {
        return Err(Status::unauthenticated(
            "missing authorization metadata; log in with cohort.v1.Auth and send `authorization: Bearer <token>`",
        ));
    };
    let value = value
        .to_str()
        .map_err(|_| Status::unauthenticated("authorization metadata is not ASCII"))?;
    let token = value
        .strip_prefix("Bearer ")
        .or_else(|| value.strip_prefix("bearer "))
        .ok_or_else(|| {
            Status::unauthenticated("authorization metadata must be `Bearer <token>`")
        })?;
    let who = relay.authenticate(token.trim()).await.map_err(status)?;
    access::record_caller(&who.id);
    relay
        .admit(Action::Call, Some(&who), None)
        .map_err(status)?;
    Ok(who)
}

/// Checks the rate limit on `action` for `who` (after [`principal`]) or, when `who` is
/// `None`, for the address the request came from.
pub fn admit<T>(
    relay: &Relay,
    req: &Request<T>,
    action: Action,
    who: Option<&Principal>,
) -> Result<(), Status> {
    let addr = req.remote_addr().map(|a| a.ip());
    relay.admit(action, who, addr).map_err(status)
}

/// Turns an i32 count from the wire into a bounded usize.
fn limit(requested: i32, default: usize, max: usize) -> usize {
    if requested <= 0 {
        default
    } else {
        (requested as usize).min(max)
    }
}

/// Every service of the front, ready to add to a tonic router.
pub struct Services {
    pub router: RouterService,
    pub auth: AuthService,
    pub sessions: SessionsService,
    pub keys: KeysService,
    pub admin: AdminService,
    pub mailbox: MailboxService,
    pub directory: DirectoryService,
}

impl Services {
    pub fn new(relay: Arc<Relay>) -> Self {
        Services {
            router: RouterService {
                relay: relay.clone(),
            },
            auth: AuthService {
                relay: relay.clone(),
            },
            sessions: SessionsService {
                relay: relay.clone(),
            },
            keys: KeysService {
                relay: relay.clone(),
            },
            admin: AdminService {
                relay: relay.clone(),
            },
            mailbox: MailboxService {
                relay: relay.clone(),
            },
            directory: DirectoryService { relay },
        }
    }
}
