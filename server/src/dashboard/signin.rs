//! Failed sign-ins, limited across requests: per client address and in
//! all. A second's sleep per wrong guess slows one client, not forty in
//! parallel; these budgets do. Past either, sign-in is refused for a while
//! (a 429 with `Retry-After`), whatever is sent, so a right guess cannot be
//! told from a wrong one then.
//!
//! Each budget is a leaky bucket: an attempt takes a unit before it is
//! judged (so forty parallel guesses meet the budget, not forty checks of
//! it), and a sign-in that succeeds gives its unit back (so only failures
//! count). Written here rather than with a rate-limiting crate: those take
//! a unit for good, with no way to give it back.

use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use dashmap::DashMap;

/// Failures one address may make at once; one more is allowed each
/// [`PER_ADDRESS_EVERY`].
pub const PER_ADDRESS: f64 = 10.0;
pub const PER_ADDRESS_EVERY: Duration = Duration::from_secs(6);
/// Failures from everyone together (an attack spread over many
/// addresses); one more each [`OVERALL_EVERY`].
pub const OVERALL: f64 = 100.0;
pub const OVERALL_EVERY: Duration = Duration::from_millis(200);
/// Addresses remembered at most; buckets that have drained are forgotten
/// first.
const ADDRESSES: usize = 100_000;

/// How full a bucket is, as of when.
#[derive(Debug, Clone, Copy)]
struct Bucket {
    level: f64,
    at: Instant,
}

impl Bucket {
    fn drained(self, now: Instant, every: Duration) -> f64 {
        let leaked = now.duration_since(self.at).as_secs_f64() / every.as_secs_f64();
        (self.level - leaked).max(0.0)
    }

    /// Takes a unit, or says how long until one is free.
    fn take(&mut self, now: Instant, size: f64, every: Duration) -> Result<(), Duration> {
        let level = self.drained(now, every);
        if level + 1.0 > size {
            let wait = (level + 1.0 - size) * every.as_secs_f64();
            return Err(Duration::from_secs_f64(wait).max(Duration::from_secs(1)));
        }
        *self = Bucket {
            level: level + 1.0,
            at: now,
        };
        Ok(())
    }

    fn give_back(&mut self, now: Instant, every: Duration) {
        *self = Bucket {
            level: (self.drained(now, every) - 1.0).max(0.0),
            at: now,
        };
    }
}

pub struct SignInLimits {
    per_address: DashMap<IpAddr, Bucket>,
    overall: Mutex<Bucket>,
}

impl Default for SignInLimits {
    fn default() -> Self {
        SignInLimits {
            per_address: DashMap::new(),
            overall: Mutex::new(Bucket {
                level: 0.0,
                at: Instant::now(),
            }),
        }
    }
}

/// An attempt under way: it counts as a failure unless it [`succeeded`].
///
/// [`succeeded`]: Attempt::succeeded
pub struct Attempt<'a> {
    limits: &'a SignInLimits,
    from: Option<IpAddr>,
}

impl Attempt<'_> {
    /// The sign-in was right: its units go back.
    pub fn succeeded(self) {
        let now = Instant::now();
        self.limits
            .overall
            .lock()
            .unwrap()
            .give_back(now, OVERALL_EVERY);
        if let Some(ip) = self.from
            && let Some(mut b) = self.limits.per_address.get_mut(&ip)
        {
            b.give_back(now, PER_ADDRESS_EVERY);
        }
    }
}

impl SignInLimits {
    /// For a key sent with each API request (the Stats API's bearer):
    /// how long `from` must wait when it is over its budget of failures,
    /// before its key is judged at all, so a right guess cannot be told
    /// then. Apps send many requests at once with a right key, so unlike a
    /// sign-in nothing is taken before judging, and only the address's
    /// budget counts: everyone's would let one attacker lock every app out.
    pub fn key_refused(&self, from: Option<IpAddr>) -> Option<Duration> {
        let ip = from?;
        let now = Instant::now();
        let level = self.per_address.get(&ip)?.drained(now, PER_ADDRESS_EVERY);
        (level + 1.0 > PER_ADDRESS).then(|| {
            let wait = (level + 1.0 - PER_ADDRESS) * PER_ADDRESS_EVERY.as_secs_f64();
            Duration::from_secs_f64(wait).max(Duration::from_secs(1))
        })
    }

    /// A wrong key from `from`: it counts, past the budget too, so a burst
    /// of parallel guesses waits in proportion.
    pub fn key_failed(&self, from: Option<IpAddr>) {
        let Some(ip) = from else { return };
        let now = Instant::now();
        let mut bucket = self.address(ip, now);
        *bucket = Bucket {
            level: bucket.drained(now, PER_ADDRESS_EVERY) + 1.0,
            at: now,
        };
    }

    /// The address's bucket, made if need be; past [`ADDRESSES`], the
    /// drained ones are forgotten first.
    fn address(
        &self,
        ip: IpAddr,
        now: Instant,
    ) -> dashmap::mapref::one::RefMut<'_, IpAddr, Bucket> {
        if self.per_address.len() >= ADDRESSES {
            self.per_address
                .retain(|_, b| b.drained(now, PER_ADDRESS_EVERY) > 0.0);
        }
        self.per_address.entry(ip).or_insert(Bucket {
            level: 0.0,
            at: now,
        })
    }

    /// Starts an attempt from `from`, or says how long to wait when it (or
    /// everyone) is over budget.
    pub fn attempt(&self, from: Option<IpAddr>) -> Result<Attempt<'_>, Duration> {
        let now = Instant::now();
        if let Some(ip) = from {
            self.address(ip, now)
                .take(now, PER_ADDRESS, PER_ADDRESS_EVERY)?;
        }
        let overall = self
            .overall
            .lock()
            .unwrap()
            .take(now, OVERALL, OVERALL_EVERY);
        if let Err(wait) = overall {
            // Not judged: the address's unit goes back.
            if let Some(ip) = from
                && let Some(mut b) = self.per_address.get_mut(&ip)
            {
                b.give_back(now, PER_ADDRESS_EVERY);
            }
            return Err(wait);
        }
        Ok(Attempt { limits: self, from })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_address_past_its_budget_waits_and_others_do_not() {
        let limits = SignInLimits::default();
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        // Attempts held at once (in flight) count as failures until judged.
        let held: Vec<_> = (0..PER_ADDRESS as usize)
            .map(|_| limits.attempt(Some(a)).unwrap())
            .collect();
        let wait = limits.attempt(Some(a)).err().unwrap();
        assert!(wait >= Duration::from_secs(1), "{wait:?}");
        assert!(limits.attempt(Some(b)).is_ok());
        // Right ones give their units back.
        for attempt in held {
            attempt.succeeded();
        }
        assert!(limits.attempt(Some(a)).is_ok());
    }

    #[test]
    fn failures_spread_over_many_addresses_meet_the_overall_budget() {
        let limits = SignInLimits::default();
        for i in 0..OVERALL as usize {
            let ip: IpAddr = format!("10.1.{}.{}", i / 250, i % 250).parse().unwrap();
            assert!(limits.attempt(Some(ip)).is_ok());
        }
        let fresh: IpAddr = "192.168.9.9".parse().unwrap();
        assert!(limits.attempt(Some(fresh)).is_err());
    }
}
