//! Prometheus metrics, served as text at `/metrics` on their own port.

use std::net::SocketAddr;
use std::sync::Arc;

use http_body_util::Full;
use hyper::body::Bytes;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;

use crate::relay::Relay;

#[derive(Default, Clone)]
pub struct Metrics {
    pub logins: Counter,
    pub sessions_created: Counter,
    pub messages_routed: Counter,
    pub payload_bytes: Counter,
    pub messages_delivered: Counter,
    pub messages_acked: Counter,
    pub live_subscribers: Gauge,
}

impl Metrics {
    fn registry(&self) -> Registry {
        let mut r = Registry::with_prefix("cohort");
        r.register("logins", "Successful logins", self.logins.clone());
        r.register(
            "sessions_created",
            "Sessions created",
            self.sessions_created.clone(),
        );
        r.register(
            "messages_routed",
            "Messages accepted by RouteMessage",
            self.messages_routed.clone(),
        );
        r.register(
            "payload_bytes",
            "Payload bytes accepted",
            self.payload_bytes.clone(),
        );
        r.register(
            "messages_delivered",
            "Message copies handed to recipients",
            self.messages_delivered.clone(),
        );
        r.register(
            "messages_acked",
            "Message copies acknowledged",
            self.messages_acked.clone(),
        );
        r.register(
            "live_subscribers",
            "Open subscription streams",
            self.live_subscribers.clone(),
        );
        r
    }
}

/// The text exposition of every metric.
pub fn render(relay: &Relay) -> String {
    relay
        .metrics
        .live_subscribers
        .set(relay.wakeups.live_subscribers() as i64);
    let mut out = String::new();
    if encode(&mut out, &relay.metrics.registry()).is_err() {
        out.clear();
    }
    out
}

/// Serves `/metrics` until shutdown. Binding errors are returned so `serve` can name the port.
pub async fn serve(relay: Arc<Relay>, listener: TcpListener) {
    let mut stop = relay.shutdown_signal();
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = stop.changed() => return,
        };
        let Ok((stream, _)) = accepted else { continue };
        let relay = relay.clone();
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                let relay = relay.clone();
                async move {
                    let resp = if req.uri().path() == "/metrics" {
                        Response::builder()
                            .header("content-type", "text/plain; version=0.0.4")
                            .body(Full::new(Bytes::from(render(&relay))))
                    } else {
                        Response::builder()
                            .status(404)
                            .body(Full::new(Bytes::from_static(b"not found: try /metrics\n")))
                    };
                    resp
                }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
    }
}

pub async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr).await
}
