//! Serving the front on a bound listener until the relay shuts down.

use std::sync::Arc;

use cohort_relay::Relay;
use cohort_wire::cohort::{
    admin_server::AdminServer, auth_server::AuthServer, directory_server::DirectoryServer,
    keys_server::KeysServer, mailbox_server::MailboxServer, sessions_server::SessionsServer,
};
use cohort_wire::router::message_router_server::MessageRouterServer;
use tokio::net::TcpListener;
use tonic::service::Routes;
use tower_layer::Layer;

use crate::access::AccessLayer;
use crate::admission::{single_message_methods, AdmissionLayer};
use crate::conn::{serve_connections, ConnectionLimits};
use crate::{RouterService, Services};

/// How the front is served.
#[derive(Debug, Clone)]
pub struct GrpcOptions {
    /// Largest request message accepted, in bytes.
    pub max_message_bytes: usize,
    /// Handshake, idle, keepalive, streams per connection and shutdown grace.
    pub connections: ConnectionLimits,
}

impl GrpcOptions {
    /// The payload cap plus room for the rest of the request; the relay's connection limits.
    pub fn for_relay(relay: &Relay) -> Self {
        GrpcOptions {
            max_message_bytes: relay.limits().max_payload_bytes + 64 * 1024,
            connections: ConnectionLimits::from_limits(relay.limits()),
        }
    }
}

/// Serves every service (with health, and reflection in both `v1` and `v1alpha`, which older
/// grpcurl, grpc_cli and Python's grpcio-reflection speak) on `listener` until the relay
/// begins shutdown, then closes its connections within the shutdown grace period. Errors
/// name what could not be built.
pub async fn serve(
    relay: Arc<Relay>,
    listener: TcpListener,
    options: GrpcOptions,
) -> Result<(), String> {
    let (health_reporter, health_service) = tonic_health::server::health_reporter();
    health_reporter
        .set_serving::<MessageRouterServer<RouterService>>()
        .await;
    health_reporter
        .set_serving::<MailboxServer<crate::MailboxService>>()
        .await;
    let reflection_v1 = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(cohort_wire::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()
        .map_err(|e| format!("cannot build gRPC reflection v1: {e}"))?;
    let reflection_v1alpha = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(cohort_wire::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1alpha()
        .map_err(|e| format!("cannot build gRPC reflection v1alpha: {e}"))?;

    let max = options.max_message_bytes;
    let s = Services::new(relay.clone());
    let routes = Routes::new(MessageRouterServer::new(s.router).max_decoding_message_size(max))
        .add_service(AuthServer::new(s.auth).max_decoding_message_size(max))
        .add_service(SessionsServer::new(s.sessions).max_decoding_message_size(max))
        .add_service(KeysServer::new(s.keys).max_decoding_message_size(max))
        .add_service(AdminServer::new(s.admin).max_decoding_message_size(max))
        .add_service(MailboxServer::new(s.mailbox).max_decoding_message_size(max))
        .add_service(DirectoryServer::new(s.directory).max_decoding_message_size(max))
        .add_service(health_service)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .prepare();
    let single_message = single_message_methods(&[
        cohort_wire::FILE_DESCRIPTOR_SET,
        tonic_health::pb::FILE_DESCRIPTOR_SET,
    ]);
    let admission = AdmissionLayer {
        relay: relay.clone(),
        single_message: Arc::new(single_message),
    };
    let access = AccessLayer {
        relay: relay.clone(),
        max_message_bytes: max,
    };
    let service = access.layer(admission.layer(routes));
    serve_connections(relay, listener, service, options.connections).await;
    Ok(())
}
