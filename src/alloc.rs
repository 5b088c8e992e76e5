//! The process allocator: glibc `malloc`, tuned once, in-process, for candle's allocation pattern.
//!
//! candle allocates a fresh buffer for every tensor op and frees it soon after. With glibc's
//! defaults, buffers of a few MiB go through `mmap`/`munmap` and freed heap tops are trimmed back to
//! the kernel, so a training step spends a large share of its time in page faults and zero-filling
//! fresh pages (`../shared/cpu-notes.md`: ≈ 20 % of a training step on these machines). Until
//! now the settings lived in `.cargo/config.toml` as `MALLOC_*` variables, which reach only
//! programs started by `cargo`; a binary started directly ran ≈ 2× slower.
//!
//! With the default feature `tuned-allocator`, linking the crate installs [`TunedMalloc`] as the
//! global allocator: the system allocator, with `mallopt` applied before the first allocation
//! returns:
//! - `M_MMAP_THRESHOLD` = 32 MiB (glibc's maximum on 64-bit; fixing it also stops the dynamic
//!   threshold from moving, so every buffer below 32 MiB is served from the heap);
//! - `M_TRIM_THRESHOLD` = 2 GiB − 1 (the heap top is practically never returned);
//! - `M_TOP_PAD` = 1 GiB (the heap grows in large steps).
//!
//! A variable the user sets (`MALLOC_MMAP_THRESHOLD_`, `MALLOC_TRIM_THRESHOLD_`,
//! `MALLOC_TOP_PAD_`, or `GLIBC_TUNABLES`) wins: the corresponding `mallopt` is skipped.
//! Programs that want their own global allocator build the crate with
//! `default-features = false` (two `#[global_allocator]`s do not link).
//!
//! The cost is address space, not memory: pages the heap keeps are reused by the next op.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicBool, Ordering};

/// The system allocator, with glibc's `mallopt` settings of the module docs applied once.
pub struct TunedMalloc;

static TUNED: AtomicBool = AtomicBool::new(false);

/// `mallopt` parameters (glibc `malloc.h`).
#[cfg(all(target_os = "linux", target_env = "gnu"))]
mod glibc {
    pub const M_TRIM_THRESHOLD: i32 = -1;
    pub const M_TOP_PAD: i32 = -2;
    pub const M_MMAP_THRESHOLD: i32 = -3;
    extern "C" {
        pub fn mallopt(param: i32, value: i32) -> i32;
        pub fn getenv(name: *const std::ffi::c_char) -> *const std::ffi::c_char;
    }
}

/// Applies the settings of the module docs (once per process; later calls return at once).
/// Returns whether this call applied them. Called by [`TunedMalloc`] before its first
/// allocation; callable by programs that install another allocator wrapping glibc's.
pub fn tune() -> bool {
    if TUNED.swap(true, Ordering::AcqRel) {
        return false;
    }
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: `getenv` reads the environment without allocating, with NUL-terminated names;
    // `mallopt` only sets allocator parameters and is safe to call at any time.
    unsafe {
        let set = |name: &[u8]| !glibc::getenv(name.as_ptr().cast()).is_null();
        if set(b"GLIBC_TUNABLES\0") {
            return false;
        }
        if !set(b"MALLOC_MMAP_THRESHOLD_\0") {
            glibc::mallopt(glibc::M_MMAP_THRESHOLD, 32 << 20);
        }
        if !set(b"MALLOC_TRIM_THRESHOLD_\0") {
            glibc::mallopt(glibc::M_TRIM_THRESHOLD, i32::MAX);
        }
        if !set(b"MALLOC_TOP_PAD_\0") {
            glibc::mallopt(glibc::M_TOP_PAD, 1 << 30);
        }
    }
    true
}

// SAFETY: every call is forwarded unchanged to `System`; `tune` only changes glibc parameters.
unsafe impl GlobalAlloc for TunedMalloc {
    #[inline]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if !TUNED.load(Ordering::Relaxed) {
            tune();
        }
        System.alloc(layout)
    }
    #[inline]
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if !TUNED.load(Ordering::Relaxed) {
            tune();
        }
        System.alloc_zeroed(layout)
    }
    #[inline]
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        System.dealloc(ptr, layout)
    }
    #[inline]
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        System.realloc(ptr, layout, new_size)
    }
}

#[cfg(feature = "tuned-allocator")]
#[global_allocator]
static GLOBAL: TunedMalloc = TunedMalloc;

#[cfg(all(test, feature = "tuned-allocator"))]
mod tests {
    #[test]
    fn tuning_happens_once() {
        let _v = vec![0u8; 16];
        assert!(!super::tune(), "the first allocation should already have tuned the allocator");
    }
}
