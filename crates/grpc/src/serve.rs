//! Serving the front on a bound listener until the relay shuts down.

use std::sync::Arc;
use std::time::Duration;

use cohort_relay::Relay;
use cohort_wire::cohort::{
    admin_server::AdminServer, auth_server::AuthServer, directory_server::DirectoryServer,
    keys_server::KeysServer, sessions_server::SessionsServer,
};
use cohort_wire::router::message_router_server::MessageRouterServer;
use tokio::net::TcpListener;

use crate::access::AccessLayer;
use crate::{RouterService, Services};

/// How the front is served.
#[derive(Debug, Clone)]
pub struct GrpcOptions {
    /// Largest request message accepted, in bytes.
    pub max_message_bytes: usize,
    pub keepalive_interval: Duration,
}

impl GrpcOptions {
    /// The payload cap plus room for the rest of the request.
    pub fn for_relay(relay: &Relay) -> Self {
        GrpcOptions {
            max_message_bytes: relay.limits().max_payload_bytes + 64 * 1024,
            keepalive_interval: Duration::from_secs(20),
        }
    }
}

/// Serves every service (with health, and reflection in both `v1` and `v1alpha`, which older
/// grpcurl, grpc_cli and Python's grpcio-reflection speak) on `listener` until the relay
/// begins shutdown. Errors name what could not be built.
pub async fn serve(
    relay: Arc<Relay>,
    listener: TcpListener,
    options: GrpcOptions,
) -> Result<(), String> {
    let (health_reporter, health_service) = tonic_health::server::health_reporter();
    health_reporter
        .set_serving::<MessageRouterServer<RouterService>>()
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
    let mut stop = relay.shutdown_signal();
    // Without TCP_NODELAY, Nagle and delayed ACKs hold small responses and stream frames for
    // tens of ms. The builder's `tcp_nodelay` covers only sockets tonic binds itself, so set
    // it on the incoming stream of the listener.
    let incoming = tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
    tonic::transport::Server::builder()
        .http2_keepalive_interval(Some(options.keepalive_interval))
        .layer(AccessLayer {
            relay: relay.clone(),
            max_message_bytes: max,
        })
        .add_service(MessageRouterServer::new(s.router).max_decoding_message_size(max))
        .add_service(AuthServer::new(s.auth).max_decoding_message_size(max))
        .add_service(SessionsServer::new(s.sessions).max_decoding_message_size(max))
        .add_service(KeysServer::new(s.keys).max_decoding_message_size(max))
        .add_service(AdminServer::new(s.admin).max_decoding_message_size(max))
        .add_service(DirectoryServer::new(s.directory).max_decoding_message_size(max))
        .add_service(health_service)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .serve_with_incoming_shutdown(incoming, async move {
            let _ = stop.wait_for(|v| *v).await;
        })
        .await
        .map_err(|e| format!("gRPC server failed: {e}"))
}
