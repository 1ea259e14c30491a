//! Exponential backoff with jitter, for retrying calls and reopening streams.

use std::time::Duration;

use rand::Rng;

/// Delays that double from `initial` up to `max`, each drawn from [delay/2, delay] so that
/// many clients reconnecting to a restarted relay do not arrive in lockstep.
#[derive(Debug, Clone)]
pub(crate) struct Backoff {
    initial: Duration,
    max: Duration,
    next: Duration,
}

impl Backoff {
    pub(crate) fn new(initial: Duration, max: Duration) -> Self {
        let initial = initial.max(Duration::from_millis(1));
        Backoff {
            initial,
            max: max.max(initial),
            next: initial,
        }
    }

    /// The delay before the next attempt.
    pub(crate) fn next_delay(&mut self) -> Duration {
        let current = self.next;
        self.next = (current * 2).min(self.max);
        let low = current / 2;
        let spread = current.saturating_sub(low);
        low + spread.mul_f64(rand::thread_rng().gen_range(0.0..=1.0))
    }

    /// Back to the initial delay, after a success.
    pub(crate) fn reset(&mut self) {
        self.next = self.initial;
    }

    pub(crate) async fn wait(&mut self) {
        tokio::time::sleep(self.next_delay()).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_grow_to_the_cap_and_reset() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_millis(400));
        let d: Vec<Duration> = (0..5).map(|_| b.next_delay()).collect();
        let bounds = [100, 200, 400, 400, 400];
        for (d, hi) in d.iter().zip(bounds) {
            assert!(
                *d >= Duration::from_millis(hi / 2) && *d <= Duration::from_millis(hi),
                "{d:?} not in [{}, {hi}] ms",
                hi / 2
            );
        }
        b.reset();
        assert!(b.next_delay() <= Duration::from_millis(100));
    }
}
