//! Admission and rate limits: connection slots per node and per address, and per-socket rates.

use std::collections::HashMap;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::sync::Mutex;
use std::time::Duration;

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

/// Bounds the connections reading storage between the token check and `session`, and how long
/// the rest wait their turn: past that wait a connection is shed (`server busy`) instead of
/// queueing behind a slow database until the client's own timeout fires and it retries into the
/// same queue. How many can wait is already bounded by the connection slots they hold.
#[derive(Clone)]
pub struct AdmissionGate {
    turns: Arc<tokio::sync::Semaphore>,
    wait: Duration,
}

impl AdmissionGate {
    pub fn new(at_once: usize, wait: Duration) -> Self {
        Self {
            turns: Arc::new(tokio::sync::Semaphore::new(at_once)),
            wait,
        }
    }

    /// A turn to read storage, or `None` when none came within the wait.
    pub async fn enter(&self) -> Option<tokio::sync::OwnedSemaphorePermit> {
        let turn = self.turns.clone().acquire_owned();
        tokio::time::timeout(self.wait, turn).await.ok()?.ok()
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

    #[tokio::test]
    async fn the_gate_sheds_after_its_wait_and_gives_a_freed_turn_to_a_waiter() {
        let wait = Duration::from_millis(200);
        let gate = AdmissionGate::new(2, wait);
        let first = gate.enter().await.expect("first turn");
        let _second = gate.enter().await.expect("second turn");
        let started = tokio::time::Instant::now();
        assert!(gate.enter().await.is_none(), "no turn frees up");
        assert!(started.elapsed() >= wait, "shed only after the wait");
        let waiter = tokio::spawn({
            let gate = gate.clone();
            async move { gate.enter().await.is_some() }
        });
        tokio::time::sleep(wait / 4).await;
        drop(first);
        assert!(waiter.await.unwrap(), "a freed turn goes to the waiter");
    }

    #[test]
    fn a_rate_allows_its_burst_then_refuses() {
        let rate = Rate::new(1, 3);
        assert!((0..3).all(|_| rate.allow()));
        assert!(!rate.allow());
    }
}
