//! Shared memory access: the one module of this crate that contains `unsafe`.
//!
//! Memory shared with a peer (a ring page, a data ring, a staging slot) can change under our
//! feet at any moment, and the peer may be hostile. Rust references (`&T`, `&[u8]`) promise
//! that the memory behind them does not change, so this module never creates one into shared
//! memory. It offers instead:
//!
//! - [`SharedMem`]: a bounds-checked window (base pointer + length + keep-alive owner) over
//!   heap memory, an `mmap`ed file or a grant mapping, with volatile copies in and out of
//!   private buffers ([`SharedMem::read_at`], [`SharedMem::write_at`], [`SharedMem::read_obj`])
//!   and checked sub-windows ([`SharedMem::sub`]);
//! - [`SharedU32`] (and [`SharedU16`], [`SharedU64`]): one naturally aligned word, accessed
//!   only atomically (an index, grant-entry flags, a counter). The word is reached through
//!   [`AtomicU32::from_ptr`] (and its siblings), the standard library's sanctioned way to do
//!   atomic operations on memory it did not allocate; the transient `&AtomicU32` it yields is a
//!   reference to an `UnsafeCell`, which permits concurrent modification, and never escapes a
//!   method.
//!
//! Every copy out of shared memory reads each byte exactly once, so a value validated after
//! the copy cannot change afterwards (the XSA-155 "double fetch" defence, like `ring.h`'s
//! `RING_COPY_REQUEST`).

use std::alloc::Layout;
use std::any::Any;
use std::fmt;
use std::ptr::{self, NonNull};
use std::sync::atomic::{AtomicU16, AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;

use zerocopy::{FromBytes, Immutable, IntoBytes};

/// Size of a Xen protocol page. Ring protocols use 4 KiB pages whatever the OS page size
/// (`XEN_PAGE_SHIFT` = 12 in `ring.h`).
pub const XEN_PAGE_SIZE: usize = 4096;

/// An access to shared memory that the window does not allow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum MemError {
    /// The access reaches past the end of the window.
    #[error(
        "shared-memory access out of bounds: offset {offset} + length {len} exceeds the \
         {size}-byte window"
    )]
    OutOfBounds {
        /// Offset of the access within the window.
        offset: usize,
        /// Length of the access.
        len: usize,
        /// Size of the window.
        size: usize,
    },
    /// A 32-bit index word must be 4-byte aligned to be accessed atomically.
    #[error("index word at address offset {offset} is not 4-byte aligned")]
    Misaligned {
        /// Offset of the word within the window.
        offset: usize,
    },
    /// The window is mapped read-only (for example a read-only grant mapping).
    #[error("write to a read-only shared-memory window ({len} bytes at offset {offset})")]
    ReadOnly {
        /// Offset of the attempted write.
        offset: usize,
        /// Length of the attempted write.
        len: usize,
    },
}

/// Heap memory that backs a [`SharedMem`] created by [`SharedMem::new_zeroed`].
struct HeapRegion {
    ptr: NonNull<u8>,
    layout: Layout,
}

// SAFETY: the region is plain memory owned by this struct; it is only freed in `drop`, and all
// access to its bytes goes through `SharedMem`'s atomic or volatile operations.
unsafe impl Send for HeapRegion {}
// SAFETY: as above; `HeapRegion` itself has no interior state besides the allocation.
unsafe impl Sync for HeapRegion {}

impl Drop for HeapRegion {
    fn drop(&mut self) {
        // SAFETY: `ptr` was returned by `alloc_zeroed` with exactly this `layout` (non-zero
        // size), and this is the only place that frees it.
        unsafe { std::alloc::dealloc(self.ptr.as_ptr(), self.layout) }
    }
}

/// A bounds-checked window onto memory that a peer may read and write concurrently.
///
/// Cloning is cheap (it shares the keep-alive owner); the memory stays mapped while any clone
/// or sub-window exists.
#[derive(Clone)]
pub struct SharedMem {
    base: NonNull<u8>,
    len: usize,
    writable: bool,
    owner: Arc<dyn Any + Send + Sync>,
}

// SAFETY: `SharedMem` only ever accesses its memory through volatile copies and atomic
// operations, which are sound to perform from any thread; the owner is `Send + Sync`.
unsafe impl Send for SharedMem {}
// SAFETY: as above: no method hands out a reference into the memory, so sharing a
// `SharedMem` between threads cannot create aliasing `&`/`&mut` references.
unsafe impl Sync for SharedMem {}

impl fmt::Debug for SharedMem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SharedMem")
            .field("base", &self.base)
            .field("len", &self.len)
            .field("writable", &self.writable)
            .finish()
    }
}

impl SharedMem {
    /// Allocates `len` zeroed bytes of private heap memory, aligned to [`XEN_PAGE_SIZE`].
    ///
    /// Useful for tests, benchmarks and threads of one process; separate processes share
    /// memory through [`SharedMem::from_raw_parts`] over an `mmap`ed file instead.
    pub fn new_zeroed(len: usize) -> SharedMem {
        let layout = match Layout::from_size_align(len.max(1), XEN_PAGE_SIZE) {
            Ok(l) => l,
            Err(_) => panic!("cannot allocate {len} bytes of shared memory: size overflows"),
        };
        // SAFETY: `layout` has a non-zero size.
        let raw = unsafe { std::alloc::alloc_zeroed(layout) };
        let Some(ptr) = NonNull::new(raw) else {
            std::alloc::handle_alloc_error(layout)
        };
        SharedMem {
            base: ptr,
            len,
            writable: true,
            owner: Arc::new(HeapRegion { ptr, layout }),
        }
    }

    /// Wraps memory that something else mapped (an `mmap`ed file, a grant mapping).
    ///
    /// `owner` is kept alive as long as the window or any clone of it, so dropping the last
    /// window drops the owner (which should unmap). Requirements on the caller:
    ///
    /// - `base` must be valid for reads of `len` bytes, and for writes too if `writable`, for
    ///   as long as `owner` is alive;
    /// - nothing may free or unmap the memory while `owner` is alive;
    /// - no Rust reference (`&`/`&mut`) to the memory may exist while the window is used
    ///   (other processes and raw-pointer writers are fine).
    ///
    /// # Safety
    /// The caller guarantees the three requirements above.
    pub unsafe fn from_raw_parts(
        base: NonNull<u8>,
        len: usize,
        writable: bool,
        owner: Arc<dyn Any + Send + Sync>,
    ) -> SharedMem {
        SharedMem {
            base,
            len,
            writable,
            owner,
        }
    }

    /// Length of the window in bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the window is empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Whether writes are allowed (false for read-only grant mappings).
    pub fn is_writable(&self) -> bool {
        self.writable
    }

    /// The base address, for passing to system calls (`pwritev`, `process_vm_readv`, ...).
    ///
    /// Dereferencing it is the caller's responsibility; prefer the checked methods.
    pub fn as_ptr(&self) -> *mut u8 {
        self.base.as_ptr()
    }

    /// A read-only view of the same memory (writes through it fail with
    /// [`MemError::ReadOnly`]).
    pub fn read_only(&self) -> SharedMem {
        SharedMem {
            writable: false,
            ..self.clone()
        }
    }

    fn check(&self, offset: usize, len: usize) -> Result<(), MemError> {
        match offset.checked_add(len) {
            Some(end) if end <= self.len => Ok(()),
            _ => Err(MemError::OutOfBounds {
                offset,
                len,
                size: self.len,
            }),
        }
    }

    fn check_write(&self, offset: usize, len: usize) -> Result<(), MemError> {
        self.check(offset, len)?;
        if self.writable {
            Ok(())
        } else {
            Err(MemError::ReadOnly { offset, len })
        }
    }

    /// A sub-window of `len` bytes at `offset`, sharing the owner.
    pub fn sub(&self, offset: usize, len: usize) -> Result<SharedMem, MemError> {
        self.check(offset, len)?;
        // SAFETY: `offset + len <= self.len`, so the result stays inside the allocation.
        let base = unsafe { self.base.add(offset) };
        Ok(SharedMem {
            base,
            len,
            writable: self.writable,
            owner: Arc::clone(&self.owner),
        })
    }

    /// A sub-window like [`SharedMem::sub`] that also keeps `guard` alive: the guard is
    /// dropped when the last clone of the returned window (or of its sub-windows) is. Used to
    /// run clean-up (e.g. releasing a grant mapping) exactly when a window goes away.
    pub fn sub_guarded(
        &self,
        offset: usize,
        len: usize,
        writable: bool,
        guard: Arc<dyn Any + Send + Sync>,
    ) -> Result<SharedMem, MemError> {
        let mut w = self.sub(offset, len)?;
        if writable && !self.writable {
            return Err(MemError::ReadOnly { offset, len });
        }
        w.writable = writable;
        w.owner = Arc::new((Arc::clone(&self.owner), guard));
        Ok(w)
    }

    /// Copies `dst.len()` bytes at `offset` out of shared memory, reading each byte once.
    pub fn read_at(&self, offset: usize, dst: &mut [u8]) -> Result<(), MemError> {
        self.check(offset, dst.len())?;
        // SAFETY: the source range is in bounds and valid for reads (constructor contract);
        // `dst` is private memory that cannot overlap memory we never hand out references to.
        unsafe { volatile_copy_out(self.base.as_ptr().add(offset), dst) };
        Ok(())
    }

    /// Reads the whole 32-byte blocks of the `len` bytes at `offset`, each byte once and in
    /// order, as four little-endian 8-byte words (volatile loads, at any alignment), and
    /// passes each block to `block`; returns the bytes read, `len` rounded down to a multiple
    /// of 32 (the rest is the caller's, e.g. by [`SharedMem::read_at`]).
    ///
    /// For a consumer that folds or scans shared bytes (a checksum, a search) without
    /// copying them into a private buffer first: the words go from the load straight to
    /// `block`, in registers once it is inlined. From [`PREFETCH_MIN`] bytes on, the lines
    /// [`PREFETCH_AHEAD`] bytes ahead are prefetched as it goes, so that the lines another
    /// core just wrote arrive together instead of one miss at a time.
    pub fn read_blocks_le(
        &self,
        offset: usize,
        len: usize,
        mut block: impl FnMut([u64; 4]),
    ) -> Result<usize, MemError> {
        self.check(offset, len)?;
        let whole = len / 32 * 32;
        let base = self.base.as_ptr();
        let mut at = offset;
        let end = offset + len;
        let read_ahead = len >= PREFETCH_MIN;
        if read_ahead {
            self.prefetch(offset, len.min(PREFETCH_AHEAD));
        }
        while at < offset + whole {
            if read_ahead && (at - offset) % 64 == 0 && at + PREFETCH_AHEAD < end {
                // In the checked range: no second bounds check per line.
                prefetch_line(base.wrapping_add(at + PREFETCH_AHEAD));
            }
            // SAFETY: `at + 32 <= offset + whole`, in the checked range and readable; the
            // loads of `Unaligned` (alignment 1) are aligned at any address.
            let w = unsafe {
                let p = base.add(at).cast::<Unaligned>();
                [
                    ptr::read_volatile(p).0,
                    ptr::read_volatile(p.add(1)).0,
                    ptr::read_volatile(p.add(2)).0,
                    ptr::read_volatile(p.add(3)).0,
                ]
            };
            block(w.map(u64::from_le));
            at += 32;
        }
        Ok(whole)
    }

    /// Hints that the `len` bytes at `offset` are about to be read, so that their cache
    /// lines are fetched now, alongside other work, rather than one miss at a time when
    /// they are read (a no-op out of bounds, and on targets other than x86-64). Reads
    /// nothing: no byte of shared memory reaches the program through it.
    pub fn prefetch(&self, offset: usize, len: usize) {
        if len == 0 || self.check(offset, len).is_err() {
            return;
        }
        self.each_line(offset, len, prefetch_line);
    }

    /// Hints that the `len` bytes at `offset` are about to be written, so that their cache
    /// lines are fetched for writing now (PREFETCHW on x86-64: the line arrives owned, and
    /// the stores that follow need not wait in the store buffer for it), rather than one
    /// line at a time as the stores reach them. A no-op out of bounds, on memory mapped
    /// read-only, on CPUs without PREFETCHW and on other targets. Writes nothing.
    pub fn prefetch_write(&self, offset: usize, len: usize) {
        if len == 0 || self.check_write(offset, len).is_err() || !has_prefetchw() {
            return;
        }
        self.each_line(offset, len, prefetch_line_for_write);
    }

    /// Calls `hint` with the start of every 64-byte line the checked, non-empty range
    /// `offset..offset + len` touches.
    #[inline(always)]
    fn each_line(&self, offset: usize, len: usize, hint: impl Fn(*const u8)) {
        let first = self.base.as_ptr().wrapping_add(offset);
        let end = first.wrapping_add(len);
        let mut line = first.wrapping_sub(first as usize % 64);
        while line < end {
            hint(line);
            line = line.wrapping_add(64);
        }
    }

    /// Copies `src` into shared memory at `offset`.
    pub fn write_at(&self, offset: usize, src: &[u8]) -> Result<(), MemError> {
        self.check_write(offset, src.len())?;
        // SAFETY: the destination range is in bounds and writable (checked, constructor
        // contract); `src` is private memory.
        unsafe { volatile_copy_in(self.base.as_ptr().add(offset), src) };
        Ok(())
    }

    /// Sets `len` bytes at `offset` to `byte`.
    pub fn fill(&self, offset: usize, len: usize, byte: u8) -> Result<(), MemError> {
        self.check_write(offset, len)?;
        for i in 0..len {
            // SAFETY: `offset + i < offset + len <= self.len`, and the window is writable.
            unsafe { ptr::write_volatile(self.base.as_ptr().add(offset + i), byte) };
        }
        Ok(())
    }

    /// Copies `len` bytes from `self` at `offset` to `dst` at `dst_offset` (both shared),
    /// without an intermediate buffer. The ranges may overlap only if they are identical.
    pub fn copy_to(
        &self,
        offset: usize,
        dst: &SharedMem,
        dst_offset: usize,
        len: usize,
    ) -> Result<(), MemError> {
        self.check(offset, len)?;
        dst.check_write(dst_offset, len)?;
        let mut buf = [0u8; 512];
        let mut done = 0;
        while done < len {
            let n = (len - done).min(buf.len());
            self.read_at(offset + done, &mut buf[..n])?;
            dst.write_at(dst_offset + done, &buf[..n])?;
            done += n;
        }
        Ok(())
    }

    /// Reads a wire structure at `offset` into a private copy (each byte read once).
    pub fn read_obj<T: FromBytes + IntoBytes + Copy>(&self, offset: usize) -> Result<T, MemError> {
        self.check(offset, std::mem::size_of::<T>())?;
        // SAFETY: in bounds (checked above).
        let p = unsafe { self.base.as_ptr().add(offset) };
        if (p as usize) % std::mem::align_of::<T>() == 0 {
            // One volatile load of the whole structure, like `RING_COPY_REQUEST`.
            // SAFETY: `p` is in bounds, aligned for `T` and valid for reads; any bit pattern
            // is a valid `T` (`FromBytes`).
            return Ok(unsafe { ptr::read_volatile(p.cast::<T>()) });
        }
        let mut v = T::new_zeroed();
        self.read_at(offset, v.as_mut_bytes())?;
        Ok(v)
    }

    /// Writes a wire structure at `offset`, each byte once: where it is aligned, as one
    /// volatile write of the whole structure (which the compiler may issue as a store or
    /// two, as [`SharedMem::read_obj`] loads it), otherwise through
    /// [`SharedMem::write_at`]. Not atomic: a peer learns of it by an index published after.
    pub fn write_obj<T: IntoBytes + Immutable + Copy>(
        &self,
        offset: usize,
        v: &T,
    ) -> Result<(), MemError> {
        self.check_write(offset, std::mem::size_of::<T>())?;
        // SAFETY: in bounds (checked above).
        let p = unsafe { self.base.as_ptr().add(offset) };
        if (p as usize) % std::mem::align_of::<T>() == 0 {
            // No Rust reference to the destination is formed; `T` has no padding
            // (`IntoBytes`), so no uninitialised byte is stored.
            // SAFETY: `p` is in bounds, writable (checked), aligned for `T`.
            unsafe { ptr::write_volatile(p.cast::<T>(), *v) };
            return Ok(());
        }
        self.write_at(offset, v.as_bytes())
    }
}

macro_rules! shared_atomic {
    ($(#[$doc:meta])* $name:ident, $int:ty, $atomic:ty, $ctor:ident) => {
        $(#[$doc])*
        #[derive(Clone)]
        pub struct $name {
            ptr: *mut $int,
            writable: bool,
            _owner: Arc<dyn Any + Send + Sync>,
        }

        // SAFETY: the word is only accessed atomically; the owner keeps the memory mapped and
        // is `Send + Sync`.
        unsafe impl Send for $name {}
        // SAFETY: as above.
        unsafe impl Sync for $name {}

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.debug_struct(stringify!($name)).field("ptr", &self.ptr).finish()
            }
        }

        impl SharedMem {
            #[doc = concat!("The naturally aligned word at `offset`, for atomic access as [`", stringify!($name), "`].")]
            pub fn $ctor(&self, offset: usize) -> Result<$name, MemError> {
                const SIZE: usize = std::mem::size_of::<$int>();
                self.check(offset, SIZE)?;
                // SAFETY: in bounds, checked above.
                let p = unsafe { self.base.as_ptr().add(offset) };
                if (p as usize) % SIZE != 0 {
                    return Err(MemError::Misaligned { offset });
                }
                Ok($name {
                    ptr: p.cast::<$int>(),
                    writable: self.writable,
                    _owner: Arc::clone(&self.owner),
                })
            }
        }

        impl $name {
            fn atomic(&self) -> &$atomic {
                // `ptr` is naturally aligned and in bounds (checked when the word was made), and
                // the memory stays mapped while `_owner` (held by `self`) lives, which outlives
                // the returned reference. This process accesses the word only atomically; an
                // `Atomic*` is an `UnsafeCell`, so the peer changing it concurrently is allowed.
                // SAFETY: as just said.
                unsafe { <$atomic>::from_ptr(self.ptr) }
            }

            fn check_writable(&self) -> Result<(), MemError> {
                if self.writable {
                    Ok(())
                } else {
                    Err(MemError::ReadOnly { offset: 0, len: std::mem::size_of::<$int>() })
                }
            }

            /// Atomic load.
            #[inline]
            pub fn load(&self, order: Ordering) -> $int {
                self.atomic().load(order)
            }

            /// Atomic store. Storing through a read-only window is a programming error of
            /// ours (not peer-controlled), reported as [`MemError::ReadOnly`].
            #[inline]
            pub fn store(&self, val: $int, order: Ordering) -> Result<(), MemError> {
                self.check_writable()?;
                self.atomic().store(val, order);
                Ok(())
            }

            /// Atomic swap; returns the previous value.
            #[inline]
            pub fn swap(&self, val: $int, order: Ordering) -> Result<$int, MemError> {
                self.check_writable()?;
                Ok(self.atomic().swap(val, order))
            }

            /// Atomic compare-and-exchange (strong): `Ok(Ok(previous))` if the word held
            /// `current` and now holds `new`, `Ok(Err(actual))` if it held something else.
            #[inline]
            pub fn compare_exchange(
                &self,
                current: $int,
                new: $int,
                success: Ordering,
                failure: Ordering,
            ) -> Result<Result<$int, $int>, MemError> {
                self.check_writable()?;
                Ok(self.atomic().compare_exchange(current, new, success, failure))
            }

            /// Atomic wrapping add; returns the previous value.
            #[inline]
            pub fn fetch_add(&self, val: $int, order: Ordering) -> Result<$int, MemError> {
                self.check_writable()?;
                Ok(self.atomic().fetch_add(val, order))
            }

            /// Atomic wrapping subtract; returns the previous value.
            #[inline]
            pub fn fetch_sub(&self, val: $int, order: Ordering) -> Result<$int, MemError> {
                self.check_writable()?;
                Ok(self.atomic().fetch_sub(val, order))
            }

            /// Atomic bitwise or; returns the previous value.
            #[inline]
            pub fn fetch_or(&self, val: $int, order: Ordering) -> Result<$int, MemError> {
                self.check_writable()?;
                Ok(self.atomic().fetch_or(val, order))
            }

            /// Atomic bitwise and; returns the previous value.
            #[inline]
            pub fn fetch_and(&self, val: $int, order: Ordering) -> Result<$int, MemError> {
                self.check_writable()?;
                Ok(self.atomic().fetch_and(val, order))
            }

            /// Whether stores are allowed.
            pub fn is_writable(&self) -> bool {
                self.writable
            }

            /// The word's address, for system calls that take one (e.g. `futex`).
            /// Dereferencing it is the caller's responsibility.
            pub fn as_ptr(&self) -> *mut $int {
                self.ptr
            }
        }
    };
}

shared_atomic!(
    /// One 32-bit word of shared memory (a ring index, an event index, an error word),
    /// accessed only with atomic operations.
    SharedU32, u32, AtomicU32, word
);
shared_atomic!(
    /// One 16-bit word of shared memory (e.g. grant-entry flags), accessed only atomically.
    SharedU16, u16, AtomicU16, word16
);
shared_atomic!(
    /// One 64-bit word of shared memory (e.g. a shared counter), accessed only atomically.
    SharedU64, u64, AtomicU64, word64
);

/// How far ahead [`SharedMem::read_blocks_le`] prefetches. In alternating runs of the
/// harness, 1024 and 2048 bytes did about equally well (1024 against none: RX 64 KiB
/// +19 %, TX 1500 B +15 %); 256 helped less, 4096 no more.
pub const PREFETCH_AHEAD: usize = 1024;

/// The shortest range [`SharedMem::read_blocks_le`] prefetches for: a few lines are read
/// sooner than a prefetch would bring them.
pub const PREFETCH_MIN: usize = 256;

/// Hints that the cache line holding `p` is about to be read (PREFETCHT0 on x86-64, nothing
/// elsewhere). Safe for any address: a prefetch reads nothing into the program and never
/// faults.
#[inline(always)]
fn prefetch_line(p: *const u8) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: a prefetch is a hint that does not access memory architecturally.
    unsafe {
        std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(p.cast())
    };
    #[cfg(not(target_arch = "x86_64"))]
    let _ = p;
}

/// Hints that the cache line holding `p` is about to be written (PREFETCHW on x86-64 CPUs
/// that have it, checked once per range by [`SharedMem::prefetch_write`]; nothing
/// elsewhere). Safe for any address: a prefetch reads nothing into the program, writes
/// nothing and never faults.
#[inline(always)]
fn prefetch_line_for_write(p: *const u8) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: PREFETCHW is a hint that neither reads nor writes memory architecturally and
    // cannot fault at any address; it touches no register but its address operand.
    unsafe {
        std::arch::asm!("prefetchw [{0}]", in(reg) p, options(nostack, preserves_flags, readonly));
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = p;
}

/// Whether this CPU has PREFETCHW (CPUID leaf 0x8000_0001, ECX bit 8; asked once, then a
/// load).
#[cfg(target_arch = "x86_64")]
fn has_prefetchw() -> bool {
    use std::arch::x86_64::__cpuid;
    static HAS: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *HAS.get_or_init(|| {
        __cpuid(0x8000_0000).eax >= 0x8000_0001 && __cpuid(0x8000_0001).ecx & (1 << 8) != 0
    })
}

/// Whether this CPU has PREFETCHW: not on other targets.
#[cfg(not(target_arch = "x86_64"))]
fn has_prefetchw() -> bool {
    false
}

/// An 8-byte word at any address (alignment 1): a volatile load of it reads each byte
/// once, in one unaligned load where the target has them (x86-64 does).
#[derive(Clone, Copy)]
#[repr(C, packed)]
struct Unaligned(u64);

/// Bytes one volatile access of the wide copy loops moves: 16 on x86-64 (an SSE2 register,
/// part of the baseline), 8 elsewhere.
#[cfg(target_arch = "x86_64")]
const WIDE: usize = 16;
#[cfg(not(target_arch = "x86_64"))]
const WIDE: usize = 8;

/// The word the wide copy loops move with one volatile access of shared memory.
#[cfg(target_arch = "x86_64")]
type Wide = std::arch::x86_64::__m128i;
#[cfg(not(target_arch = "x86_64"))]
type Wide = u64;

/// Copies from shared memory into a private buffer with volatile loads: single bytes up to
/// the first [`WIDE`]-aligned source address, then aligned words, four at a time (each load
/// one instruction), then single bytes. Each source byte is loaded once.
///
/// # Safety
/// `src` must be valid for reads of `dst.len()` bytes.
unsafe fn volatile_copy_out(src: *const u8, dst: &mut [u8]) {
    let len = dst.len();
    let d = dst.as_mut_ptr();
    // Past `head` the source is WIDE-aligned (or nothing is left).
    let head = src.align_offset(WIDE).min(len);
    for i in 0..head {
        // SAFETY: `i < len`: in bounds of both ranges (caller contract for `src`).
        unsafe { d.add(i).write(ptr::read_volatile(src.add(i))) };
    }
    let mut i = head;
    while i + 4 * WIDE <= len {
        // SAFETY: `src + i` is WIDE-aligned and the four words end at or before `len`; the
        // destination is private and written unaligned.
        unsafe {
            let s = src.add(i).cast::<Wide>();
            let w = [
                ptr::read_volatile(s),
                ptr::read_volatile(s.add(1)),
                ptr::read_volatile(s.add(2)),
                ptr::read_volatile(s.add(3)),
            ];
            ptr::write_unaligned(d.add(i).cast::<[Wide; 4]>(), w);
        }
        i += 4 * WIDE;
    }
    while i + WIDE <= len {
        // SAFETY: as above, for one word.
        unsafe {
            let w = ptr::read_volatile(src.add(i).cast::<Wide>());
            ptr::write_unaligned(d.add(i).cast::<Wide>(), w);
        }
        i += WIDE;
    }
    for j in i..len {
        // SAFETY: `j < len`.
        unsafe { d.add(j).write(ptr::read_volatile(src.add(j))) };
    }
}

/// Copies a private buffer into shared memory with volatile stores: single bytes up to the
/// first [`WIDE`]-aligned destination address, then aligned words, four at a time (each
/// store one instruction), then single bytes.
///
/// # Safety
/// `dst` must be valid for writes of `src.len()` bytes.
unsafe fn volatile_copy_in(dst: *mut u8, src: &[u8]) {
    let len = src.len();
    let s = src.as_ptr();
    // Past `head` the destination is WIDE-aligned (or nothing is left).
    let head = dst.align_offset(WIDE).min(len);
    for i in 0..head {
        // SAFETY: `i < len`: in bounds of both ranges (caller contract for `dst`).
        unsafe { ptr::write_volatile(dst.add(i), s.add(i).read()) };
    }
    let mut i = head;
    while i + 4 * WIDE <= len {
        // SAFETY: `dst + i` is WIDE-aligned and the four words end at or before `len`; the
        // source is private and read unaligned.
        unsafe {
            let w = ptr::read_unaligned(s.add(i).cast::<[Wide; 4]>());
            let d = dst.add(i).cast::<Wide>();
            ptr::write_volatile(d, w[0]);
            ptr::write_volatile(d.add(1), w[1]);
            ptr::write_volatile(d.add(2), w[2]);
            ptr::write_volatile(d.add(3), w[3]);
        }
        i += 4 * WIDE;
    }
    while i + WIDE <= len {
        // SAFETY: as above, for one word.
        unsafe {
            let w = ptr::read_unaligned(s.add(i).cast::<Wide>());
            ptr::write_volatile(dst.add(i).cast::<Wide>(), w);
        }
        i += WIDE;
    }
    for j in i..len {
        // SAFETY: `j < len`.
        unsafe { ptr::write_volatile(dst.add(j), s.add(j).read()) };
    }
}
