//! Memory returns to the system after a burst.
//!
//! With glibc's allocator, two settings decide that: the mmap threshold,
//! which glibc raises on its own each time a large block is freed (up to
//! 32 MiB), after which large message buffers come from the heap and stay
//! there; and the arenas, one per thread that ever allocated, each keeping
//! its free memory. [`tune`] fixes the threshold at 128 KiB (a freed large
//! buffer goes straight back), caps the arenas at two (as the units'
//! `MALLOC_ARENA_MAX=2` does) and lowers the trim threshold; [`trim`], run
//! every [`TRIM_EVERY`] by the relay, hands back free pages inside the
//! arenas too (`malloc_trim`). The static musl build uses mimalloc, which
//! returns freed memory by itself; both functions do nothing there.

use std::time::Duration;

/// How often the relay trims the allocator's free memory.
pub const TRIM_EVERY: Duration = Duration::from_secs(10);

/// Allocator settings; call before any thread starts.
#[cfg(target_env = "gnu")]
pub fn tune() {
    // SAFETY: mallopt only changes allocator parameters; it is called at
    // start, before other threads allocate.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 2);
        libc::mallopt(libc::M_MMAP_THRESHOLD, 128 * 1024);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 1024 * 1024);
    }
}

/// Gives free allocator memory back to the system.
#[cfg(target_env = "gnu")]
pub fn trim() {
    // SAFETY: malloc_trim may be called at any time from any thread.
    unsafe {
        libc::malloc_trim(0);
    }
}

#[cfg(not(target_env = "gnu"))]
pub fn tune() {}

#[cfg(not(target_env = "gnu"))]
pub fn trim() {}
