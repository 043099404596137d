//! Giving memory back after a wave of disconnects.
//!
//! glibc's allocator keeps the pages of freed blocks in its arenas: after 20,000 sockets close,
//! the process would keep their memory until it happened to be reused. What gives it back:
//!
//! - [`tune_allocator`], first thing in `main`, turns glibc's per-thread cache off and fixes its
//!   mmap threshold (see there).
//! - [`trim_after_disconnect_waves`]: when the node's socket count has fallen well below its
//!   recent peak, the store gives back its caches (SQLite's page cache) and `malloc_trim`
//!   returns the free pages of every arena to the OS.
//! - [`shrink_when_sparse`]: maps keyed by socket or user give back the table of their peak.
//! - `GLIBC_TUNABLES=glibc.malloc.tcache_count=0`. glibc's per-thread cache keeps up to ~7
//!   freed blocks of each small size for its thread, and only that thread can empty it:
//!   `malloc_trim` cannot. After a wave each tokio worker's cache held ~300 KB of blocks
//!   scattered over its arena, and they kept ~2 MB of pages per worker resident. glibc reads this
//!   setting only from the environment, before `main`: the container image sets it, and
//!   [`tune_allocator`] re-executes the binary with it when the environment has none.
//!
//! Other allocators (and other platforms) need nothing here; mimalloc and jemalloc were measured
//! and gave less back (docs/footprint.md).

use std::collections::HashMap;
use std::hash::{BuildHasher, Hash};
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::limits::ConnectionLimiter;
use crate::storage::Store;

/// How often the socket count is looked at.
const EVERY: Duration = Duration::from_secs(5);
/// Sockets that must have gone since the peak before a trim is worth its walk of the heap.
const WAVE: usize = 500;

/// Trims after every wave of at least [`WAVE`] (or a tenth of the peak) closed sockets, until
/// `stop`; the store first gives back its caches, so that their pages are trimmed too.
pub async fn trim_after_disconnect_waves(
    connections: ConnectionLimiter,
    store: Arc<dyn Store>,
    stop: CancellationToken,
) {
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
            store.release_memory().await;
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

/// A map keyed by user or peer grows to its peak and, left alone, keeps the peak's table (about
/// 100 bytes a slot for 10,000 users) after they leave. Call after a removal: once the map is
/// down to a quarter of its capacity it is shrunk to twice its length, so steady churn around
/// one size never reallocates.
pub fn shrink_when_sparse<K: Eq + Hash, V, S: BuildHasher>(map: &mut HashMap<K, V, S>) {
    const SMALL: usize = 64;
    let capacity = map.capacity();
    if capacity > SMALL && map.len() < capacity / 4 {
        map.shrink_to((map.len() * 2).max(SMALL));
    }
}

/// The glibc tunable that turns its per-thread cache off (module docs).
const NO_THREAD_CACHE: &str = "glibc.malloc.tcache_count=0";

/// Sets glibc up to give a wave's memory back; call first thing in `main`, while the process
/// has one thread.
///
/// - When `GLIBC_TUNABLES` is absent, the process executes itself again (same pid, arguments and
///   environment) with it set to turn the per-thread cache off, which glibc reads only at start:
///   a node run by hand keeps what the container image gets. A `GLIBC_TUNABLES` that is set,
///   even empty, is the operator's choice and is left alone; if the executable cannot be run
///   again, the node goes on with glibc's defaults.
/// - It fixes glibc's mmap threshold at its default, 128 KiB. Left alone, glibc raises the
///   threshold to the size of the largest mapped block freed so far (up to 32 MiB), and the trim
///   threshold to twice that: once the tables of a peak of sockets are freed, later large blocks
///   are carved from the arenas instead of mapped, and a thread arena keeps a free top of up to
///   twice the largest table. Fixed, a large block has a mapping of its own that is returned
///   when it is freed (one `mmap` and `munmap` per large block: they are rare here). Measured:
///   about 1 MB less kept after 10,000 sockets closed.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
pub fn tune_allocator() {
    use std::os::unix::process::CommandExt;
    if std::env::var_os("GLIBC_TUNABLES").is_none()
        && let Ok(exe) = std::env::current_exe()
    {
        let mut args = std::env::args_os();
        let mut again = std::process::Command::new(exe);
        if let Some(arg0) = args.next() {
            again.arg0(arg0);
        }
        // Returns only if the exec failed.
        let failed = again
            .args(args)
            .env("GLIBC_TUNABLES", NO_THREAD_CACHE)
            .exec();
        eprintln!("confab: glibc's per-thread cache stays on (cannot re-execute: {failed})");
    }
    const THRESHOLD: libc::c_int = 128 * 1024;
    // SAFETY: mallopt only sets a parameter of the allocator. It refuses only thresholds above
    // 32 MiB, so its result is not looked at.
    unsafe { libc::mallopt(libc::M_MMAP_THRESHOLD, THRESHOLD) };
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
pub fn tune_allocator() {}

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
    fn a_sparse_map_gives_back_its_table_and_a_busy_one_keeps_it() {
        let mut map: HashMap<u32, ()> = (0..10_000).map(|k| (k, ())).collect();
        let peak = map.capacity();
        for k in 0..5_000 {
            map.remove(&k);
            shrink_when_sparse(&mut map);
        }
        // capacity() counts tombstones out, so it wobbles below the peak without a shrink.
        assert!(
            map.capacity() > peak * 3 / 4,
            "a map at half its peak keeps its table"
        );
        for k in 5_000..9_990 {
            map.remove(&k);
            shrink_when_sparse(&mut map);
        }
        assert!(
            map.capacity() <= 128,
            "capacity {} of {peak} after emptying",
            map.capacity()
        );
        assert_eq!(map.len(), 10);
    }

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
