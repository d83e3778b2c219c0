//! A global allocator that counts the bytes the process holds and stops it when they pass the
//! cap: an input that makes Eddy allocate without bound is a failure, not a machine out of
//! memory. Nothing can be unwound from inside an allocation, so the allocator prints where the
//! input is (the driver writes every input to a file before running it) and aborts.

use std::alloc::{GlobalAlloc, Layout, System};
use std::io::Write;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

static HELD: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);
/// Zero: no cap.
static CAP: AtomicUsize = AtomicUsize::new(0);
static TRIPPED: AtomicBool = AtomicBool::new(false);
/// The message printed when the cap is passed (set before the first input).
static MESSAGE: OnceLock<String> = OnceLock::new();

/// Counts every allocation of the process.
pub struct CountingAllocator;

/// Sets the cap in bytes and the message printed when it is passed.
pub fn set_cap(bytes: usize, message: String) {
    let _ = MESSAGE.set(message);
    CAP.store(bytes, Ordering::Relaxed);
}

/// The most bytes held at once so far.
pub fn peak() -> usize {
    PEAK.load(Ordering::Relaxed)
}

fn grew(size: usize) {
    let held = HELD.fetch_add(size, Ordering::Relaxed) + size;
    PEAK.fetch_max(held, Ordering::Relaxed);
    let cap = CAP.load(Ordering::Relaxed);
    if cap != 0 && held > cap && !TRIPPED.swap(true, Ordering::SeqCst) {
        // Stderr is unbuffered: these writes do not allocate.
        let mut err = std::io::stderr();
        let _ = err.write_all(b"\neddy-fuzz: FAILED: allocation past the cap: ");
        if let Some(message) = MESSAGE.get() {
            let _ = err.write_all(message.as_bytes());
        }
        let _ = err.write_all(b"\n");
        std::process::abort();
    }
}

// SAFETY: every method forwards to `System` with the same arguments; the counting around it
// touches only atomics.
unsafe impl GlobalAlloc for CountingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        grew(layout.size());
        // SAFETY: forwarded as is.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        grew(layout.size());
        // SAFETY: forwarded as is.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        HELD.fetch_sub(layout.size(), Ordering::Relaxed);
        // SAFETY: forwarded as is.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if new_size > layout.size() {
            grew(new_size - layout.size());
        } else {
            HELD.fetch_sub(layout.size() - new_size, Ordering::Relaxed);
        }
        // SAFETY: forwarded as is.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}
