//! What every workload measures the same way: the send time stamped into the payload's first
//! 8 bytes, the end-to-end latency at receipt, acknowledgements over time, the first error.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

/// Width of one throughput-over-time bucket.
pub const TICK: Duration = Duration::from_millis(100);

/// Smallest payload that can carry the send timestamp.
pub const MIN_PAYLOAD: usize = 8;

/// Shared by the senders and receivers of one measured run.
pub struct Probe {
    start: Instant,
    acked: AtomicU64,
    received: AtomicU64,
    /// End-to-end latency in microseconds.
    latency: Mutex<Histogram<u64>>,
    /// Acknowledgements per [`TICK`] since `start`.
    timeline: Mutex<Vec<u64>>,
    error: Mutex<Option<String>>,
}

impl Probe {
    pub fn new() -> Probe {
        Probe {
            start: Instant::now(),
            acked: AtomicU64::new(0),
            received: AtomicU64::new(0),
            latency: Mutex::new(new_histogram()),
            timeline: Mutex::new(Vec::new()),
            error: Mutex::new(None),
        }
    }

    pub fn elapsed(&self) -> Duration {
        self.start.elapsed()
    }

    /// A payload of `size` bytes stamped with the current time (nanoseconds since the start
    /// of the run, little-endian, in the first 8 bytes); the rest is a fixed filler.
    pub fn stamped_payload(&self, size: usize) -> Vec<u8> {
        let mut p = vec![0xA5u8; size.max(MIN_PAYLOAD)];
        let now = self.start.elapsed().as_nanos() as u64;
        p[..8].copy_from_slice(&now.to_le_bytes());
        p
    }

    /// Records the latency of a received payload (now minus its stamp).
    pub fn received(&self, payload: &[u8]) {
        self.received.fetch_add(1, Ordering::Relaxed);
        let Some(stamp) = payload.get(..8) else {
            return;
        };
        let mut b = [0u8; 8];
        b.copy_from_slice(stamp);
        let sent = u64::from_le_bytes(b);
        let now = self.start.elapsed().as_nanos() as u64;
        let micros = now.saturating_sub(sent) / 1000;
        let mut h = self.latency.lock().unwrap_or_else(|p| p.into_inner());
        // `record` grows the histogram; `saturating_record` would clamp to its current top.
        if h.record(micros.max(1)).is_err() {
            h.saturating_record(micros.max(1));
        }
    }

    /// Counts one acknowledged message.
    pub fn acked(&self) {
        self.acked.fetch_add(1, Ordering::Relaxed);
        let bucket = (self.start.elapsed().as_nanos() / TICK.as_nanos()) as usize;
        let mut t = self.timeline.lock().unwrap_or_else(|p| p.into_inner());
        if t.len() <= bucket {
            t.resize(bucket + 1, 0);
        }
        t[bucket] += 1;
    }

    pub fn acked_count(&self) -> u64 {
        self.acked.load(Ordering::Relaxed)
    }

    pub fn received_count(&self) -> u64 {
        self.received.load(Ordering::Relaxed)
    }

    /// Keeps the first error; the run stops at the next check.
    pub fn fail(&self, e: String) {
        let mut slot = self.error.lock().unwrap_or_else(|p| p.into_inner());
        if slot.is_none() {
            *slot = Some(e);
        }
    }

    pub fn error(&self) -> Option<String> {
        self.error.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub fn latency(&self) -> Histogram<u64> {
        self.latency
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Acknowledged messages per second, per [`TICK`]: (seconds since start, rate).
    pub fn throughput_over_time(&self) -> Vec<(f64, f64)> {
        let t = self.timeline.lock().unwrap_or_else(|p| p.into_inner());
        let tick = TICK.as_secs_f64();
        t.iter()
            .enumerate()
            .map(|(i, n)| ((i as f64 + 0.5) * tick, *n as f64 / tick))
            .collect()
    }

    /// Waits until `target` messages are acknowledged, an error is recorded, or `timeout`
    /// passes without progress. Returns the time from start to the last acknowledgement.
    pub async fn wait_for_acks(&self, target: u64, timeout: Duration) -> Result<Duration, String> {
        let mut last = self.acked_count();
        let mut last_progress = Instant::now();
        loop {
            if let Some(e) = self.error() {
                return Err(e);
            }
            let now = self.acked_count();
            if now >= target {
                return Ok(self.elapsed());
            }
            if now != last {
                last = now;
                last_progress = Instant::now();
            } else if last_progress.elapsed() > timeout {
                return Err(format!(
                    "only {now} of {target} messages were acknowledged ({} received); no progress for {} s",
                    self.received_count(),
                    timeout.as_secs()
                ));
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }
}

/// A latency histogram: three significant digits, growing as needed.
pub fn new_histogram() -> Histogram<u64> {
    // Only a precision above 5 is refused, so this cannot fail.
    Histogram::new(3).expect("3 significant digits is a valid precision")
}
