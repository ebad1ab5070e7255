//! Failed authentications per source address: after `limit` of them within `window` from
//! one source, the server answers that source's requests `429` (with `Retry-After`) until
//! the window ends, without looking at their credentials.
//!
//! Tokens carry 256 random bits, so guessing one is hopeless whatever the rate; the limit
//! is there so that a client hammering the server with bad credentials (a scanner, or a
//! LiteFS node with a stale token, which retries every second forever) costs it one table
//! look-up per request instead of a token check and a log line, and so that anyone probing
//! gets told to go away.
//!
//! Each source has a fixed window: it starts at the source's first failure and counts
//! failures until it ends; the next failure after that starts a new one. Successful
//! requests from the source do not reset the count: otherwise a client holding one valid
//! token could interleave it with guesses at another cluster's.
//!
//! A source is an IPv4 address, or an IPv6 /64 (one host usually holds a whole /64, and
//! keying by the full address would let it walk through 2^64 keys). IPv4-mapped IPv6
//! addresses count as their IPv4 address.
//!
//! Memory is bounded: the table holds at most `capacity` sources. When a failure from a new
//! source finds it full, the expired windows are swept out, and if none had expired, the
//! source whose window started first is dropped. A client that cycles through many
//! addresses can push others' counts out that way, but gains nothing it would not get from
//! the addresses themselves. Requests that reach no handler (no peer address known, as in
//! tests that drive the router directly) are not limited.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The failure counts of recent sources.
#[derive(Debug)]
pub struct AuthFailures {
    limit: u32,
    window: Duration,
    capacity: usize,
    table: Mutex<HashMap<Source, Window>>,
}

/// Who failed: an IPv4 address or an IPv6 /64.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Source {
    V4(u32),
    V6Prefix(u64),
}

impl From<IpAddr> for Source {
    fn from(ip: IpAddr) -> Source {
        match ip.to_canonical() {
            IpAddr::V4(v4) => Source::V4(u32::from(v4)),
            IpAddr::V6(v6) => Source::V6Prefix((u128::from(v6) >> 64) as u64),
        }
    }
}

#[derive(Clone, Copy, Debug)]
struct Window {
    started: Instant,
    failures: u32,
}

impl AuthFailures {
    /// At most `limit` failures per `window` per source, remembering at most `capacity`
    /// sources. All three must be positive.
    pub fn new(limit: u32, window: Duration, capacity: usize) -> AuthFailures {
        assert!(limit > 0 && !window.is_zero() && capacity > 0, "checked when the configuration is read");
        AuthFailures { limit, window, capacity, table: Mutex::new(HashMap::new()) }
    }

    /// Failures allowed per window.
    pub fn limit(&self) -> u32 {
        self.limit
    }

    /// The window.
    pub fn window(&self) -> Duration {
        self.window
    }

    /// How long `ip` has to wait if it is refused at `now`, `None` if it may try.
    pub fn blocked(&self, ip: IpAddr, now: Instant) -> Option<Duration> {
        let table = self.table.lock().unwrap_or_else(|e| e.into_inner());
        let window = table.get(&Source::from(ip))?;
        let ends = window.started + self.window;
        (window.failures >= self.limit && now < ends).then(|| ends - now)
    }

    /// Counts a failed authentication from `ip` at `now`. Returns true when this failure
    /// reached the limit (the source is refused from now until its window ends).
    pub fn failed(&self, ip: IpAddr, now: Instant) -> bool {
        let source = Source::from(ip);
        let mut table = self.table.lock().unwrap_or_else(|e| e.into_inner());
        if !table.contains_key(&source) && table.len() >= self.capacity {
            let window = self.window;
            table.retain(|_, w| now < w.started + window);
            if table.len() >= self.capacity
                && let Some(oldest) = table.iter().min_by_key(|(_, w)| w.started).map(|(s, _)| *s)
            {
                table.remove(&oldest);
            }
        }
        let entry = table.entry(source).or_insert(Window { started: now, failures: 0 });
        if now >= entry.started + self.window {
            *entry = Window { started: now, failures: 0 };
        }
        entry.failures = entry.failures.saturating_add(1);
        debug_assert!(table.len() <= self.capacity);
        table.get(&source).is_some_and(|w| w.failures == self.limit)
    }

    /// Sources remembered.
    pub fn len(&self) -> usize {
        self.table.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// Whether no source is remembered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn a_source_is_refused_after_the_limit_until_its_window_ends() {
        let limiter = AuthFailures::new(3, Duration::from_secs(60), 100);
        let t0 = Instant::now();
        let a = ip("10.0.0.1");
        assert!(!limiter.failed(a, t0));
        assert!(!limiter.failed(a, t0 + Duration::from_secs(1)));
        assert_eq!(limiter.blocked(a, t0 + Duration::from_secs(2)), None, "two failures of three");
        assert!(limiter.failed(a, t0 + Duration::from_secs(2)), "the third reaches the limit");
        assert_eq!(limiter.blocked(a, t0 + Duration::from_secs(10)), Some(Duration::from_secs(50)));
        assert_eq!(limiter.blocked(ip("10.0.0.2"), t0 + Duration::from_secs(10)), None, "others are not");
        assert_eq!(limiter.blocked(a, t0 + Duration::from_secs(60)), None, "the window ended");
        // A new window starts with the next failure.
        assert!(!limiter.failed(a, t0 + Duration::from_secs(61)));
        assert_eq!(limiter.blocked(a, t0 + Duration::from_secs(62)), None);
    }

    #[test]
    fn ipv6_counts_per_64_and_mapped_ipv4_as_ipv4() {
        let limiter = AuthFailures::new(2, Duration::from_secs(60), 100);
        let t0 = Instant::now();
        limiter.failed(ip("2001:db8:1:2::1"), t0);
        limiter.failed(ip("2001:db8:1:2:ffff::9"), t0);
        assert!(limiter.blocked(ip("2001:db8:1:2::77"), t0).is_some(), "the same /64");
        assert!(limiter.blocked(ip("2001:db8:1:3::1"), t0).is_none(), "another /64");
        limiter.failed(ip("192.0.2.7"), t0);
        limiter.failed(ip("::ffff:192.0.2.7"), t0);
        assert!(limiter.blocked(ip("192.0.2.7"), t0).is_some());
    }

    #[test]
    fn the_table_never_holds_more_than_its_capacity() {
        let limiter = AuthFailures::new(2, Duration::from_secs(60), 8);
        let t0 = Instant::now();
        // A blocked source, then many others: the table stays at 8, the oldest goes first.
        limiter.failed(ip("10.0.0.1"), t0);
        limiter.failed(ip("10.0.0.1"), t0);
        for i in 0..100u32 {
            limiter.failed(IpAddr::from((0x0b00_0000 + i).to_be_bytes()), t0 + Duration::from_millis(u64::from(i) + 1));
            assert!(limiter.len() <= 8);
        }
        assert_eq!(limiter.len(), 8);
        assert!(limiter.blocked(ip("10.0.0.1"), t0 + Duration::from_secs(1)).is_none(), "evicted, oldest first");
        // Expired windows are swept before anything live is evicted.
        let later = t0 + Duration::from_secs(120);
        limiter.failed(ip("10.0.0.9"), later);
        assert_eq!(limiter.len(), 1);
    }
}
