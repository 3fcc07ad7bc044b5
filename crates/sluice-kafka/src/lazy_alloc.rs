//! A global allocator for processes that decode Kafka requests: the system
//! allocator, except that huge requests are reserved lazily.
//!
//! The Kafka codec sizes a vector from the element count a request claims before
//! it reads the elements. A forged count in a tiny frame would then ask for
//! hundreds of gigabytes, the allocation would fail, and Rust aborts the process
//! on allocation failure: one bad frame would take down the broker. Requests of
//! [`LAZY_BYTES_MIN`] or more are therefore mapped with `MAP_NORESERVE`: the
//! address space is reserved, pages are only committed when touched, and decoding
//! stops at the end of the (size-limited) frame long before touching much. The
//! bogus request then fails as a decode error and only its connection is closed.

use std::alloc::{GlobalAlloc, Layout, System};

/// Allocations at least this large are reserved lazily.
pub const LAZY_BYTES_MIN: usize = 1 << 30;
const PAGE_BYTES: usize = 4096;

/// Install with `#[global_allocator]` in every binary that decodes requests
/// (the broker, fuzz targets, tests that send forged frames).
pub struct LazyHugeAllocator;

fn is_lazy(layout: &Layout) -> bool {
    layout.size() >= LAZY_BYTES_MIN && layout.align() <= PAGE_BYTES
}

unsafe fn map(size: usize) -> *mut u8 {
    // SAFETY: an anonymous private mapping with no address hint has no
    // preconditions; failure is reported as MAP_FAILED.
    let ptr = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            size,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
            -1,
            0,
        )
    };
    if ptr == libc::MAP_FAILED {
        std::ptr::null_mut()
    } else {
        ptr.cast()
    }
}

// SAFETY: every block is released by the same mechanism that produced it, decided
// by its layout, which Rust passes unchanged to `dealloc` and `realloc`. Mapped
// blocks are page aligned (>= any alignment accepted for them) and zero-filled.
unsafe impl GlobalAlloc for LazyHugeAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if is_lazy(&layout) {
            unsafe { map(layout.size()) }
        } else {
            unsafe { System.alloc(layout) }
        }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if is_lazy(&layout) {
            unsafe { map(layout.size()) }
        } else {
            unsafe { System.alloc_zeroed(layout) }
        }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if is_lazy(&layout) {
            unsafe { libc::munmap(ptr.cast(), layout.size()) };
        } else {
            unsafe { System.dealloc(ptr, layout) }
        }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let Ok(new_layout) = Layout::from_size_align(new_size, layout.align()) else {
            return std::ptr::null_mut();
        };
        if !is_lazy(&layout) && !is_lazy(&new_layout) {
            return unsafe { System.realloc(ptr, layout, new_size) };
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_forged_huge_request_is_reserved_not_committed() {
        // 64 GiB: more than the machine has; only the first page is touched.
        let layout = Layout::from_size_align(64 << 30, 8).unwrap();
        unsafe {
            let p = LazyHugeAllocator.alloc(layout);
            assert!(!p.is_null());
            *p = 7;
            let q = LazyHugeAllocator.realloc(p, layout, 16);
            assert_eq!(*q, 7);
            LazyHugeAllocator.dealloc(q, Layout::from_size_align(16, 8).unwrap());
        }
    }

    #[test]
    fn small_requests_use_the_system_allocator() {
        let layout = Layout::from_size_align(64, 8).unwrap();
        unsafe {
            let p = LazyHugeAllocator.alloc_zeroed(layout);
            assert_eq!(*p, 0);
            LazyHugeAllocator.dealloc(p, layout);
        }
    }
}
