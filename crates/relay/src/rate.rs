//! Rate limits per identity and per source address (GCRA, from `governor`): each a sustained
//! rate per second that also allows a burst of as many calls. A front asks
//! [`Relay::admit`](crate::Relay::admit) before the work it limits; a refusal is
//! RESOURCE_EXHAUSTED naming the limit and how long to wait (`Error::retry_after_ms`).

use std::hash::Hash;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::time::Duration;

use cohort_core::{Error, Limits, Principal, Result};
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota};

use crate::connections::source;

/// What a call is about to do, for the limits that apply to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Any call: limited per source address and, once authenticated, per identity.
    Call,
    /// GetChallenge, per source address.
    Challenge,
    /// Login, per source address.
    Login,
    /// CreateSession, per identity.
    CreateSession,
    /// RouteMessage, per identity.
    Route,
    /// Opening a stream, per identity.
    OpenStream,
}

struct Limiter<K: Hash + Eq + Clone> {
    limiter: DefaultKeyedRateLimiter<K>,
    per_second: u32,
    /// The `Limits` field that sets it, named in refusals.
    setting: &'static str,
    what: &'static str,
}

impl<K: Hash + Eq + Clone> Limiter<K> {
    fn new(per_second: u32, setting: &'static str, what: &'static str) -> Option<Self> {
        let n = NonZeroU32::new(per_second)?;
        Some(Limiter {
            limiter: DefaultKeyedRateLimiter::dashmap(Quota::per_second(n)),
            per_second,
            setting,
            what,
        })
    }

    fn check(&self, key: &K, whose: &str) -> Result<()> {
        match self.limiter.check_key(key) {
            Ok(()) => Ok(()),
            Err(not_until) => {
                let wait = not_until.wait_time_from(DefaultClock::default().now());
                // Round up: retrying after the hint must succeed.
                let ms = u64::try_from(wait.as_millis())
                    .unwrap_or(u64::MAX)
                    .saturating_add(1);
                Err(Error::rate_limited(
                    format!(
                        "rate limit: at most {} {} per second {whose} ({} = {}); retry in {ms} ms",
                        self.per_second, self.what, self.setting, self.per_second
                    ),
                    ms,
                ))
            }
        }
    }

    fn forget_idle(&self) {
        self.limiter.retain_recent();
        self.limiter.shrink_to_fit();
    }
}

/// Every rate limit of a relay; a limit set to 0 is off.
pub(crate) struct RateLimits {
    calls_by_address: Option<Limiter<IpAddr>>,
    calls_by_identity: Option<Limiter<String>>,
    challenges_by_address: Option<Limiter<IpAddr>>,
    logins_by_address: Option<Limiter<IpAddr>>,
    sessions_by_identity: Option<Limiter<String>>,
    routes_by_identity: Option<Limiter<String>>,
    streams_by_identity: Option<Limiter<String>>,
}

impl RateLimits {
    pub(crate) fn new(l: &Limits) -> RateLimits {
        RateLimits {
            calls_by_address: Limiter::new(
                l.calls_per_second_per_address,
                "calls_per_second_per_address",
                "calls",
            ),
            calls_by_identity: Limiter::new(
                l.calls_per_second_per_identity,
                "calls_per_second_per_identity",
                "calls",
            ),
            challenges_by_address: Limiter::new(
                l.challenges_per_second_per_address,
                "challenges_per_second_per_address",
                "challenges",
            ),
            logins_by_address: Limiter::new(
                l.logins_per_second_per_address,
                "logins_per_second_per_address",
                "logins",
            ),
            sessions_by_identity: Limiter::new(
                l.sessions_per_second_per_identity,
                "sessions_per_second_per_identity",
                "sessions created",
            ),
            routes_by_identity: Limiter::new(
                l.routes_per_second_per_identity,
                "routes_per_second_per_identity",
                "messages routed",
            ),
            streams_by_identity: Limiter::new(
                l.streams_per_second_per_identity,
                "streams_per_second_per_identity",
                "streams opened",
            ),
        }
    }

    pub(crate) fn admit(
        &self,
        action: Action,
        who: Option<&Principal>,
        addr: Option<IpAddr>,
    ) -> Result<()> {
        let by_address = match action {
            Action::Call => &self.calls_by_address,
            Action::Challenge => &self.challenges_by_address,
            Action::Login => &self.logins_by_address,
            _ => &None,
        };
        if let (Some(limiter), Some(addr)) = (by_address, addr) {
            limiter.check(&source(addr), "from one address")?;
        }
        let by_identity = match action {
            Action::Call => &self.calls_by_identity,
            Action::CreateSession => &self.sessions_by_identity,
            Action::Route => &self.routes_by_identity,
            Action::OpenStream => &self.streams_by_identity,
            _ => &None,
        };
        if let (Some(limiter), Some(who)) = (by_identity, who) {
            limiter.check(&who.id, "per party")?;
        }
        Ok(())
    }

    /// Drops the state of keys that have been quiet long enough to be back at a full burst,
    /// so the limiters hold only recent callers.
    pub(crate) fn forget_idle(&self) {
        for l in [
            &self.calls_by_address,
            &self.challenges_by_address,
            &self.logins_by_address,
        ]
        .into_iter()
        .flatten()
        {
            l.forget_idle();
        }
        for l in [
            &self.calls_by_identity,
            &self.sessions_by_identity,
            &self.routes_by_identity,
            &self.streams_by_identity,
        ]
        .into_iter()
        .flatten()
        {
            l.forget_idle();
        }
    }
}

/// How often [`RateLimits::forget_idle`] runs.
pub(crate) const FORGET_EVERY: Duration = Duration::from_secs(10);

#[cfg(test)]
mod tests {
    use super::*;

    fn party(id: &str) -> Principal {
        Principal {
            id: id.into(),
            coordinator: false,
            identity_key: [0; 32],
        }
    }

    #[test]
    fn a_burst_past_the_rate_is_refused_with_a_hint_and_others_are_unaffected() {
        let limits = Limits {
            routes_per_second_per_identity: 5,
            ..Limits::default()
        };
        let r = RateLimits::new(&limits);
        let alice = party("alice");
        for _ in 0..5 {
            r.admit(Action::Route, Some(&alice), None).unwrap();
        }
        let e = r.admit(Action::Route, Some(&alice), None).unwrap_err();
        assert_eq!(e.kind, cohort_core::ErrorKind::ResourceExhausted);
        let hint = e.retry_after_ms.unwrap();
        assert!(hint > 0 && hint <= 201, "{hint}");
        assert!(
            e.message.contains("routes_per_second_per_identity = 5"),
            "{e}"
        );
        assert!(e.message.contains(&format!("retry in {hint} ms")), "{e}");
        r.admit(Action::Route, Some(&party("bob")), None).unwrap();
        std::thread::sleep(Duration::from_millis(hint));
        r.admit(Action::Route, Some(&alice), None).unwrap();
    }

    #[test]
    fn zero_turns_a_limit_off() {
        let limits = Limits {
            challenges_per_second_per_address: 0,
            ..Limits::default()
        };
        let r = RateLimits::new(&limits);
        let addr: IpAddr = "10.1.1.1".parse().unwrap();
        for _ in 0..10_000 {
            r.admit(Action::Challenge, None, Some(addr)).unwrap();
        }
    }
}
