//! The relay's counters, in Prometheus' text form (the composition serves them over HTTP).

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

#[derive(Default, Clone)]
pub(crate) struct Metrics {
    pub(crate) logins: Counter,
    pub(crate) sessions_created: Counter,
    pub(crate) messages_routed: Counter,
    pub(crate) payload_bytes: Counter,
    pub(crate) messages_delivered: Counter,
    pub(crate) messages_acked: Counter,
    /// Streaming sends answered from an earlier send with the same client id.
    pub(crate) sends_repeated: Counter,
    pub(crate) live_subscribers: Gauge,
    /// Refused calls by (method, code).
    pub(crate) refusals: Family<Vec<(String, String)>, Counter>,
    /// Connections open now, over every front.
    pub(crate) connections_open: Gauge,
    /// Connections refused or closed by a limit, by (front, reason).
    pub(crate) connections_ended: Family<Vec<(String, String)>, Counter>,
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
            "Messages accepted by RouteMessage or a streaming send",
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
            "sends_repeated",
            "Streaming sends answered with the message an earlier send with the same client id stored",
            self.sends_repeated.clone(),
        );
        r.register(
            "live_subscribers",
            "Open subscription streams",
            self.live_subscribers.clone(),
        );
        r.register(
            "refusals",
            "Calls refused, by method and status code",
            self.refusals.clone(),
        );
        r.register(
            "connections_open",
            "Connections open, over every front",
            self.connections_open.clone(),
        );
        r.register(
            "connections_limited",
            "Connections refused or closed by a limit, by front and reason",
            self.connections_ended.clone(),
        );
        r
    }

    /// The text exposition of every metric.
    pub(crate) fn render(&self, live_subscribers: usize) -> String {
        self.live_subscribers.set(live_subscribers as i64);
        let mut out = String::new();
        if encode(&mut out, &self.registry()).is_err() {
            out.clear();
        }
        out
    }
}
