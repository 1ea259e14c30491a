//! Admission of connections, shared by every front: at most `max_connections` open in all and
//! `max_connections_per_address` from one source. A front asks [`Relay::admit_connection`]
//! for each accepted connection and holds the [`ConnectionPermit`] for as long as it serves
//! it; a refusal is counted and logged here, so every front reports them the same way.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use cohort_core::{Error, Limits};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;

use crate::service::now_ms;

/// The source a limit applies to: the IPv4 address, or the /64 of an IPv6 one (one host
/// usually holds a whole /64, so counting single IPv6 addresses would bound nothing).
pub fn source(addr: IpAddr) -> IpAddr {
    match addr {
        IpAddr::V4(_) => addr,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let s = v6.segments();
                IpAddr::V6(Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
            }
        },
    }
}

/// Why a connection was refused or closed by the relay, as counted in the metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnectionEnd {
    /// Refused at accept: `max_connections` are open.
    TooManyInTotal,
    /// Refused at accept: `max_connections_per_address` are open from its source.
    TooManyFromAddress,
    /// Closed: the handshake did not finish within `handshake_timeout_ms`.
    HandshakeTimeout,
    /// Closed: the handshake was not the protocol's.
    BadHandshake,
    /// Closed: nothing open on it for `idle_timeout_ms`.
    Idle,
    /// Closed: still open when the shutdown deadline (`shutdown_grace_ms`) passed.
    ShutdownDeadline,
}

impl ConnectionEnd {
    pub fn as_str(self) -> &'static str {
        match self {
            ConnectionEnd::TooManyInTotal => "max_connections",
            ConnectionEnd::TooManyFromAddress => "max_connections_per_address",
            ConnectionEnd::HandshakeTimeout => "handshake_timeout",
            ConnectionEnd::BadHandshake => "bad_handshake",
            ConnectionEnd::Idle => "idle_timeout",
            ConnectionEnd::ShutdownDeadline => "shutdown_deadline",
        }
    }
}

#[derive(Default)]
struct Open {
    total: usize,
    by_source: HashMap<IpAddr, usize>,
}

/// The connection counts and what the metrics show of them.
pub(crate) struct Connections {
    max_total: usize,
    max_per_source: usize,
    open: Mutex<Open>,
    open_gauge: Gauge,
    /// By front and reason ([`ConnectionEnd::as_str`]).
    ended: Family<Vec<(String, String)>, Counter>,
    /// When a refusal was last logged, and how many went unlogged since: under a flood one
    /// line a second says how many, instead of one line per connection.
    last_logged_ms: AtomicU64,
    unlogged: AtomicU64,
}

impl Connections {
    pub(crate) fn new(
        limits: &Limits,
        open_gauge: Gauge,
        ended: Family<Vec<(String, String)>, Counter>,
    ) -> Arc<Connections> {
        Arc::new(Connections {
            max_total: limits.max_connections.max(1),
            max_per_source: limits.max_connections_per_address.max(1),
            open: Mutex::new(Open::default()),
            open_gauge,
            ended,
            last_logged_ms: AtomicU64::new(0),
            unlogged: AtomicU64::new(0),
        })
    }

    pub(crate) fn open_count(&self) -> usize {
        self.open.lock().unwrap_or_else(|p| p.into_inner()).total
    }

    pub(crate) fn admit(
        self: &Arc<Self>,
        front: &str,
        peer: SocketAddr,
    ) -> Result<ConnectionPermit, Error> {
        let key = source(peer.ip());
        let refused = {
            let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
            let from_source = open.by_source.get(&key).copied().unwrap_or(0);
            if open.total >= self.max_total {
                Some((ConnectionEnd::TooManyInTotal, self.max_total))
            } else if from_source >= self.max_per_source {
                Some((ConnectionEnd::TooManyFromAddress, self.max_per_source))
            } else {
                open.total += 1;
                *open.by_source.entry(key).or_insert(0) += 1;
                self.open_gauge.set(open.total as i64);
                None
            }
        };
        match refused {
            None => Ok(ConnectionPermit {
                connections: self.clone(),
                source: key,
            }),
            Some((why, limit)) => {
                self.ended_by(front, peer, why);
                Err(Error::exhausted(format!(
                    "connection from {peer} refused: {} open (limit {} = {limit})",
                    if why == ConnectionEnd::TooManyInTotal {
                        "too many connections"
                    } else {
                        "too many connections from this address"
                    },
                    why.as_str()
                )))
            }
        }
    }

    /// Counts a connection the relay refused or closed, and logs it (at most one line a
    /// second; the line says how many were not logged).
    pub(crate) fn ended_by(&self, front: &str, peer: SocketAddr, why: ConnectionEnd) {
        self.ended
            .get_or_create(&vec![
                ("front".to_string(), front.to_string()),
                ("reason".to_string(), why.as_str().to_string()),
            ])
            .inc();
        let now = u64::try_from(now_ms()).unwrap_or(0);
        let last = self.last_logged_ms.load(Ordering::Relaxed);
        if now.saturating_sub(last) >= 1000
            && self
                .last_logged_ms
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            let unlogged = self.unlogged.swap(0, Ordering::Relaxed);
            tracing::info!(
                front,
                %peer,
                reason = why.as_str(),
                also_since_last_line = unlogged,
                "connection refused or closed by a limit"
            );
        } else {
            self.unlogged.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// An admitted connection; dropping it frees its place.
pub struct ConnectionPermit {
    connections: Arc<Connections>,
    source: IpAddr,
}

impl Drop for ConnectionPermit {
    fn drop(&mut self) {
        let mut open = self
            .connections
            .open
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        open.total = open.total.saturating_sub(1);
        if let Some(n) = open.by_source.get_mut(&self.source) {
            *n -= 1;
            if *n == 0 {
                open.by_source.remove(&self.source);
            }
        }
        self.connections.open_gauge.set(open.total as i64);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(total: usize, per: usize) -> Limits {
        Limits {
            max_connections: total,
            max_connections_per_address: per,
            ..Limits::default()
        }
    }

    #[test]
    fn caps_per_source_and_in_total_and_frees_on_drop() {
        let c = Connections::new(&limits(3, 2), Gauge::default(), Family::default());
        let a: SocketAddr = "10.0.0.1:1000".parse().unwrap();
        let b: SocketAddr = "10.0.0.2:1000".parse().unwrap();
        let a1 = c.admit("test", a).unwrap();
        let _a2 = c.admit("test", a).unwrap();
        let e = c.admit("test", a).err().unwrap();
        assert!(e.message.contains("max_connections_per_address"), "{e}");
        let _b1 = c.admit("test", b).unwrap();
        let e = c.admit("test", b).err().unwrap();
        assert!(e.message.contains("max_connections = 3"), "{e}");
        drop(a1);
        assert_eq!(c.open_count(), 2);
        c.admit("test", b).unwrap();
    }

    #[test]
    fn an_ipv6_64_is_one_source_and_mapped_v4_is_v4() {
        let x: IpAddr = "2001:db8:1:2:aaaa::1".parse().unwrap();
        let y: IpAddr = "2001:db8:1:2:bbbb::2".parse().unwrap();
        assert_eq!(source(x), source(y));
        let m: IpAddr = "::ffff:10.0.0.1".parse().unwrap();
        assert_eq!(source(m), "10.0.0.1".parse::<IpAddr>().unwrap());
    }
}
