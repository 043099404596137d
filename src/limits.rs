//! Admission and rate limits: connection slots per node and per address, and per-socket rates.

use std::collections::HashMap;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::sync::Mutex;

use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};

/// Why a connection was refused before authentication.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("server at capacity")]
    Capacity,
    #[error("server at capacity")]
    PerAddress,
}

#[derive(Default)]
struct Counts {
    total: usize,
    per_ip: HashMap<IpAddr, usize>,
}

/// Counts this node's sockets; a slot is held from admission until the socket is gone.
#[derive(Clone)]
pub struct ConnectionLimiter {
    max: usize,
    max_per_ip: usize,
    counts: Arc<Mutex<Counts>>,
}

impl ConnectionLimiter {
    pub fn new(max: usize, max_per_ip: usize) -> Self {
        Self {
            max,
            max_per_ip,
            counts: Arc::default(),
        }
    }

    pub fn try_acquire(&self, ip: Option<IpAddr>) -> Result<ConnectionSlot, Refusal> {
        let mut counts = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        if counts.total >= self.max {
            return Err(Refusal::Capacity);
        }
        let ip = ip.filter(|_| self.max_per_ip > 0);
        if let Some(ip) = ip {
            let used = counts.per_ip.entry(ip).or_default();
            if *used >= self.max_per_ip {
                return Err(Refusal::PerAddress);
            }
            *used += 1;
        }
        counts.total += 1;
        Ok(ConnectionSlot {
            limiter: self.clone(),
            ip,
        })
    }

    /// Sockets holding a slot on this node.
    pub fn in_use(&self) -> usize {
        self.counts.lock().unwrap_or_else(|p| p.into_inner()).total
    }

    fn release(&self, ip: Option<IpAddr>) {
        let mut counts = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        counts.total = counts.total.saturating_sub(1);
        if let Some(ip) = ip
            && let Some(used) = counts.per_ip.get_mut(&ip)
        {
            *used -= 1;
            if *used == 0 {
                counts.per_ip.remove(&ip);
                crate::memory::shrink_when_sparse(&mut counts.per_ip);
            }
        }
    }
}

/// A held connection slot, released when dropped.
pub struct ConnectionSlot {
    limiter: ConnectionLimiter,
    ip: Option<IpAddr>,
}

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        self.limiter.release(self.ip);
    }
}

/// Bounds the connections waiting on storage between the token check and `session`: past the
/// bound a connection is shed at once (`server busy`) instead of queueing behind a slow database
/// until the client's own timeout fires and it retries into the same queue.
#[derive(Clone)]
pub struct AdmissionGate(Arc<tokio::sync::Semaphore>);

impl AdmissionGate {
    pub fn new(max_pending: usize) -> Self {
        Self(Arc::new(tokio::sync::Semaphore::new(max_pending)))
    }

    /// A place among the pending admissions, or `None` when all are taken.
    pub fn try_enter(&self) -> Option<tokio::sync::OwnedSemaphorePermit> {
        self.0.clone().try_acquire_owned().ok()
    }
}

/// A per-socket token bucket.
pub struct Rate(DefaultDirectRateLimiter);

impl Rate {
    pub fn new(per_second: u32, burst: u32) -> Self {
        let per_second = NonZeroU32::new(per_second).unwrap_or(NonZeroU32::MIN);
        let burst = NonZeroU32::new(burst).unwrap_or(NonZeroU32::MIN);
        Self(RateLimiter::direct(
            Quota::per_second(per_second).allow_burst(burst),
        ))
    }

    /// Takes one token; false when the bucket is empty.
    pub fn allow(&self) -> bool {
        self.0.check().is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_released_when_dropped() {
        let limiter = ConnectionLimiter::new(2, 0);
        let a = limiter.try_acquire(None).unwrap();
        let _b = limiter.try_acquire(None).unwrap();
        assert_eq!(limiter.try_acquire(None).err(), Some(Refusal::Capacity));
        drop(a);
        assert!(limiter.try_acquire(None).is_ok());
    }

    #[test]
    fn the_per_address_limit_counts_each_address_apart() {
        let limiter = ConnectionLimiter::new(10, 1);
        let one: IpAddr = "127.0.0.1".parse().unwrap();
        let two: IpAddr = "127.0.0.2".parse().unwrap();
        let _a = limiter.try_acquire(Some(one)).unwrap();
        assert_eq!(
            limiter.try_acquire(Some(one)).err(),
            Some(Refusal::PerAddress)
        );
        assert!(limiter.try_acquire(Some(two)).is_ok());
        assert_eq!(limiter.in_use(), 1);
    }

    #[test]
    fn the_gate_sheds_past_its_bound_and_reopens_when_one_is_done() {
        let gate = AdmissionGate::new(2);
        let first = gate.try_enter().expect("first place");
        let _second = gate.try_enter().expect("second place");
        assert!(gate.try_enter().is_none());
        drop(first);
        assert!(gate.try_enter().is_some());
    }

    #[test]
    fn a_rate_allows_its_burst_then_refuses() {
        let rate = Rate::new(1, 3);
        assert!((0..3).all(|_| rate.allow()));
        assert!(!rate.allow());
    }
}
