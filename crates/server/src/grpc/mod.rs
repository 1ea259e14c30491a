//! The gRPC front: `mpc.router.v1.MessageRouter` plus Cohort's `cohort.v1` services.
//! Each file holds one service: decode, authenticate, call the [`Relay`], encode.

mod admin;
mod auth;
mod keys;
mod router;
mod sessions;

use std::sync::Arc;

use cohort_core::{Error, ErrorKind, Principal};
use tonic::{Request, Status};

use crate::relay::Relay;

pub use admin::AdminService;
pub use auth::AuthService;
pub use keys::KeysService;
pub use router::RouterService;
pub use sessions::SessionsService;

/// The core's error in gRPC's form.
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
    if e.kind == ErrorKind::Internal {
        tracing::error!(error = %e.message, "internal error");
    }
    Status::new(code, e.message)
}

/// Resolves the `authorization: Bearer <token>` metadata of a request to its principal.
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
    relay.authenticate(token.trim()).await.map_err(status)
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
            admin: AdminService { relay },
        }
    }
}
