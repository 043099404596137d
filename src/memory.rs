//! Giving memory back after a wave of disconnects.
//!
//! glibc's allocator keeps the pages of freed blocks in its arenas: after 20,000 sockets close,
//! the process would keep their memory until it happened to be reused. When the node's socket
//! count has fallen well below its recent peak, `malloc_trim` returns the free pages to the OS.
//! Other allocators (and other platforms) need nothing here.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::limits::ConnectionLimiter;

/// How often the socket count is looked at.
const EVERY: Duration = Duration::from_secs(5);
/// Sockets that must have gone since the peak before a trim is worth its walk of the heap.
const WAVE: usize = 500;

/// Trims after every wave of at least [`WAVE`] (or a tenth of the peak) closed sockets, until
/// `stop`.
pub async fn trim_after_disconnect_waves(connections: ConnectionLimiter, stop: CancellationToken) {
    let mut peak = connections.in_use();
    let mut tick = tokio::time::interval(EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        let now = connections.in_use();
        if is_wave(peak, now) {
            let trimmed = tokio::task::spawn_blocking(trim).await.unwrap_or(false);
            tracing::debug!(peak, now, trimmed, "memory trimmed after disconnects");
            peak = now;
        } else {
            peak = peak.max(now);
        }
    }
}

fn is_wave(peak: usize, now: usize) -> bool {
    let gone = peak.saturating_sub(now);
    gone >= WAVE || (gone > 0 && gone >= peak / 10)
}

/// Returns free heap pages to the OS; true when some were.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn trim() -> bool {
    // SAFETY: malloc_trim only walks and trims the allocator's own free lists.
    unsafe { libc::malloc_trim(0) == 1 }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn trim() -> bool {
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_wave_is_many_sockets_or_a_tenth_of_a_small_peak() {
        assert!(is_wave(20_000, 0));
        assert!(is_wave(20_000, 19_000));
        assert!(!is_wave(20_000, 19_900));
        assert!(is_wave(100, 80));
        assert!(!is_wave(100, 95));
        assert!(!is_wave(0, 0));
        assert!(!is_wave(10, 12));
    }
}
