//! The global allocator: mimalloc (the query path allocates and frees many small values;
//! glibc's malloc took a third of its time, and keeps freed arenas), except that single
//! allocations of 1 GiB or more are served by anonymous `mmap` with `MAP_NORESERVE`. Fuzz
//! builds use the system allocator underneath, so AddressSanitizer sees every allocation.
//!
//! Why: `kafka-protocol` reserves `Vec::with_capacity(n)` for arrays with the element count
//! the client wrote (up to 2^32), before reading any element. A 16-byte frame could ask for
//! hundreds of GiB, and a failed allocation aborts the whole server (found by the fuzz target
//! in `fuzz/`). Pages reserved this way cost nothing until touched, and such a decode fails at
//! the end of the (bounded) frame long before it touches them. Real data never gets this
//! large: requests are capped at `socket.request.max.bytes` and queries at their memory limit.

use std::alloc::{GlobalAlloc, Layout};

#[cfg(not(fuzzing))]
use mimalloc::MiMalloc as Inner;
#[cfg(fuzzing)]
use std::alloc::System as Inner;

pub struct EddyAllocator;

const HUGE_BYTES: usize = 1 << 30;
const PAGE_BYTES: usize = 4096;

fn is_huge(layout: &Layout) -> bool {
    layout.size() >= HUGE_BYTES && layout.align() <= PAGE_BYTES
}

unsafe fn map(size: usize) -> *mut u8 {
    // SAFETY: an anonymous private mapping; no file, no aliasing.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            size,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
            -1,
            0,
        )
    };
    if p == libc::MAP_FAILED {
        std::ptr::null_mut()
    } else {
        p as *mut u8
    }
}

// SAFETY: every pointer handed out comes from `Inner` or from `map`, and goes back to the
// same place, decided by the same layout test.
unsafe impl GlobalAlloc for EddyAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if is_huge(&layout) {
            unsafe { map(layout.size()) }
        } else {
            unsafe { Inner.alloc(layout) }
        }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if is_huge(&layout) {
            unsafe { map(layout.size()) } // anonymous mappings are zeroed
        } else {
            unsafe { Inner.alloc_zeroed(layout) }
        }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if is_huge(&layout) {
            unsafe {
                libc::munmap(ptr as *mut libc::c_void, layout.size());
            }
        } else {
            unsafe { Inner.dealloc(ptr, layout) }
        }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let Ok(new_layout) = Layout::from_size_align(new_size, layout.align()) else { return std::ptr::null_mut() };
        if !is_huge(&layout) && !is_huge(&new_layout) {
            return unsafe { Inner.realloc(ptr, layout, new_size) };
        }
        let new = unsafe { self.alloc(new_layout) };
        if !new.is_null() {
            unsafe {
                std::ptr::copy_nonoverlapping(ptr, new, layout.size().min(new_size));
                self.dealloc(ptr, layout);
            }
        }
        new
    }
}

/// When a continuous query last processed a batch: seconds since `EPOCH` (0: never).
static QUERIES_BUSY_AT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
static EPOCH: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();

fn seconds_since_epoch() -> u64 {
    EPOCH.get_or_init(std::time::Instant::now).elapsed().as_secs() + 1
}

/// mimalloc's `mi_option_purge_delay` (its place in `mi_option_e`, the same in v2 and v3).
#[cfg(not(fuzzing))]
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// Allocator settings for a server whose queries free and allocate batches all the time; call
/// first thing in `main`. Each is left alone when the user set it by environment.
/// - mimalloc keeps freed pages for 10 s, not 1 s, before handing them back
///   (`MIMALLOC_PURGE_DELAY`, or its old name `MIMALLOC_RESET_DELAY`); `release_when_idle`
///   still hands them back once queries idle.
/// - glibc's malloc, which RocksDB's C++ allocates with, takes blocks below 64 MiB (32 MiB,
///   glibc's documented maximum, where it refuses more) from its heaps instead of a fresh
///   mapping each (`M_MMAP_THRESHOLD`, which otherwise floats between 128 KiB and 32 MiB), so
///   a checkpoint's write batch does not fault in and zero new pages every time; a heap's free
///   top goes back to the system past 256 MiB (`M_TRIM_THRESHOLD`). Left alone when
///   `GLIBC_TUNABLES`, `MALLOC_MMAP_THRESHOLD_` or `MALLOC_TRIM_THRESHOLD_` is set.
///
/// The kernel zeroing fresh pages had taken 8% of Nexmark q4's time; with both settings (set
/// by environment in an A/B, one run each) q4 and q18 used 6-7% less CPU (`benches/RESULTS.md`,
/// "A cache in front of RocksDB").
pub fn tune() {
    let set = |name: &str| std::env::var_os(name).is_some();
    #[cfg(not(fuzzing))]
    if !set("MIMALLOC_PURGE_DELAY") && !set("MIMALLOC_RESET_DELAY") {
        // SAFETY: sets one of mimalloc's options; any value is valid for it.
        unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, 10_000) };
    }
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    if !set("GLIBC_TUNABLES") && !set("MALLOC_MMAP_THRESHOLD_") && !set("MALLOC_TRIM_THRESHOLD_") {
        // SAFETY: mallopt only changes glibc's thresholds; it is called before other threads
        // run. It returns 0 for a value it refuses.
        unsafe {
            if libc::mallopt(libc::M_MMAP_THRESHOLD, 64 << 20) == 0 {
                libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20);
            }
            libc::mallopt(libc::M_TRIM_THRESHOLD, 256 << 20);
        }
    }
}

/// A continuous query is working: `release_when_idle` leaves the allocator's freed pages
/// alone for the next two seconds. A forced release hands back every free page of every
/// thread, and a query that frees and allocates batches all the time then pays for fresh,
/// zeroed pages on each one: 10-17% of the Nexmark queries' time went to that.
pub fn note_queries_busy() {
    QUERIES_BUSY_AT.store(seconds_since_epoch(), std::sync::atomic::Ordering::Relaxed);
}

/// Hands the memory this thread's allocator holds but no longer uses back to the system, at
/// most once a second per thread, unless a continuous query is busy (`note_queries_busy`;
/// mimalloc then returns free pages after its own delay). The runtime's threads call it as
/// they go idle, so memory a burst of connections took returns once the burst is over
/// (mimalloc otherwise keeps a thread's freed pages until that thread allocates again).
pub fn release_when_idle() {
    use std::cell::Cell;
    use std::time::{Duration, Instant};
    thread_local! {
        static LAST: Cell<Option<Instant>> = const { Cell::new(None) };
    }
    let busy_at = QUERIES_BUSY_AT.load(std::sync::atomic::Ordering::Relaxed);
    if busy_at != 0 && seconds_since_epoch().saturating_sub(busy_at) < 2 {
        return;
    }
    let now = Instant::now();
    let due = LAST.with(|last| match last.get() {
        Some(t) if now.duration_since(t) < Duration::from_secs(1) => false,
        _ => {
            last.set(Some(now));
            true
        }
    });
    if due {
        #[cfg(not(fuzzing))]
        // SAFETY: mi_collect only walks this thread's own heap and the allocator's shared lists.
        unsafe {
            libmimalloc_sys::mi_collect(true)
        };
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn huge_reservations_do_not_abort() {
        // 64 GiB reserved, a few bytes used, then freed: fine with MAP_NORESERVE.
        let mut v: Vec<u64> = Vec::with_capacity(8 << 30);
        v.push(1);
        v.push(2);
        assert_eq!(v.iter().sum::<u64>(), 3);
    }
}
