//! The system calls of the emulated platform: futex, `process_vm_readv`/`writev`, `mmap` of
//! guest memory files. The only module of this crate with `unsafe`; every block says why it
//! is sound.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};
use std::ptr::NonNull;
use std::time::{Duration, Instant};

use netstage_ring::SharedU32;

const PAGE: usize = 4096;

/// Blocks while `word` holds `expected`, at most `timeout`. Spurious returns are allowed;
/// the caller re-checks its condition.
pub(crate) fn futex_wait(word: &SharedU32, expected: u32, timeout: Option<Duration>) {
    let ts = timeout.map(|t| libc::timespec {
        tv_sec: t.as_secs().min(i64::MAX as u64) as libc::time_t,
        tv_nsec: t.subsec_nanos() as libc::c_long,
    });
    let tsp = ts
        .as_ref()
        .map_or(std::ptr::null(), |t| t as *const libc::timespec);
    // Shared (non-private) futexes work across processes mapping the same file. The result
    // is ignored on purpose: EAGAIN, EINTR and ETIMEDOUT all mean "re-check".
    // SAFETY: `word.as_ptr()` is a valid, aligned u32 kept mapped by `word`; FUTEX_WAIT only
    // reads it.
    unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr(),
            libc::FUTEX_WAIT,
            expected,
            tsp,
            std::ptr::null::<u32>(),
            0u32,
        );
    }
}

/// Wakes up to `n` waiters blocked on `word`.
pub(crate) fn futex_wake(word: &SharedU32, n: u32) {
    // SAFETY: as in `futex_wait`; FUTEX_WAKE does not access the word's contents.
    unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr(),
            libc::FUTEX_WAKE,
            n,
            std::ptr::null::<libc::timespec>(),
            std::ptr::null::<u32>(),
            0u32,
        );
    }
}

/// A copy between private buffers and the hypervisor's view of guest memory, performed by
/// the kernel in one `process_vm_readv` / `process_vm_writev` call on this process.
pub(crate) struct VmCopy {
    local: Vec<libc::iovec>,
    remote: Vec<libc::iovec>,
}

impl VmCopy {
    pub(crate) fn new() -> Self {
        VmCopy {
            local: Vec::new(),
            remote: Vec::new(),
        }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.local.is_empty()
    }

    /// Adds one segment: `len` bytes between `local` and `remote`.
    pub(crate) fn push(&mut self, local: *mut u8, remote: *mut u8, len: usize) {
        self.local.push(libc::iovec {
            iov_base: local.cast(),
            iov_len: len,
        });
        self.remote.push(libc::iovec {
            iov_base: remote.cast(),
            iov_len: len,
        });
    }

    /// Runs the copy: `read` copies remote -> local, else local -> remote. The kernel
    /// validates every address (EFAULT) and copies as far as it can.
    pub(crate) fn run(&mut self, read: bool) -> io::Result<()> {
        let total: usize = self.local.iter().map(|v| v.iov_len).sum();
        let mut done = 0usize;
        // IOV_MAX is 1024; batches are far smaller, but loop for partial transfers anyway.
        while done < total {
            // Every iovec describes memory of this process: `local` entries are private
            // buffers the caller holds exclusively for the call, `remote` entries lie inside
            // a live mapping of guest memory that nothing references through a Rust reference.
            // SAFETY: as just said; the kernel checks each range and writes only inside them.
            let n = unsafe {
                let pid = libc::getpid();
                if read {
                    libc::process_vm_readv(
                        pid,
                        self.local.as_ptr(),
                        self.local.len() as libc::c_ulong,
                        self.remote.as_ptr(),
                        self.remote.len() as libc::c_ulong,
                        0,
                    )
                } else {
                    libc::process_vm_writev(
                        pid,
                        self.local.as_ptr(),
                        self.local.len() as libc::c_ulong,
                        self.remote.as_ptr(),
                        self.remote.len() as libc::c_ulong,
                        0,
                    )
                }
            };
            if n < 0 {
                return Err(io::Error::last_os_error());
            }
            if n == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "short vm copy",
                ));
            }
            done += n as usize;
            if done < total {
                // Drop the fully copied prefix and retry the rest.
                let mut skip = n as usize;
                while skip > 0 {
                    let l = self.local[0].iov_len;
                    if skip >= l {
                        self.local.remove(0);
                        self.remote.remove(0);
                        skip -= l;
                    } else {
                        for v in [&mut self.local[0], &mut self.remote[0]] {
                            // SAFETY: `skip < iov_len`, so the new base stays in the range.
                            v.iov_base = unsafe { v.iov_base.cast::<u8>().add(skip) }.cast();
                            v.iov_len -= skip;
                        }
                        skip = 0;
                    }
                }
            }
        }
        self.local.clear();
        self.remote.clear();
        Ok(())
    }
}

/// Maps frames `frames` of the guest memory file `fd` contiguously, with real `mmap` calls
/// (one per page when the frames are not consecutive). Returns the base address.
pub(crate) fn map_frames(
    fd: BorrowedFd<'_>,
    frames: &[u32],
    writable: bool,
) -> io::Result<NonNull<u8>> {
    let len = frames.len() * PAGE;
    let prot = if writable {
        libc::PROT_READ | libc::PROT_WRITE
    } else {
        libc::PROT_READ
    };
    let consecutive = frames.windows(2).all(|w| w[1] == w[0].wrapping_add(1));
    if consecutive {
        // SAFETY: a fresh shared mapping of a file we hold open; the kernel picks the
        // address, so nothing existing is replaced.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                prot,
                libc::MAP_SHARED,
                fd.as_raw_fd(),
                (frames[0] as libc::off_t) * PAGE as libc::off_t,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        return NonNull::new(p.cast()).ok_or_else(|| io::Error::other("mmap returned null"));
    }
    // Reserve the range, then place each page in it.
    // SAFETY: an anonymous PROT_NONE reservation at a kernel-chosen address.
    let base = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_NONE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    if base == libc::MAP_FAILED {
        return Err(io::Error::last_os_error());
    }
    for (i, f) in frames.iter().enumerate() {
        // SAFETY: MAP_FIXED replaces only page `i` of the reservation made above, which
        // nothing else uses.
        let p = unsafe {
            libc::mmap(
                base.cast::<u8>().add(i * PAGE).cast(),
                PAGE,
                prot,
                libc::MAP_SHARED | libc::MAP_FIXED,
                fd.as_raw_fd(),
                (*f as libc::off_t) * PAGE as libc::off_t,
            )
        };
        if p == libc::MAP_FAILED {
            let e = io::Error::last_os_error();
            // SAFETY: undoes the reservation made above; no window refers to it yet.
            unsafe { libc::munmap(base, len) };
            return Err(e);
        }
    }
    NonNull::new(base.cast()).ok_or_else(|| io::Error::other("mmap returned null"))
}

/// Unmaps a range returned by [`map_frames`]; nothing may use the range afterwards.
///
/// # Safety
/// `base`/`len` must be exactly a range returned by `map_frames`, unused from now on.
pub(crate) unsafe fn unmap(base: NonNull<u8>, len: usize) {
    // The range is the caller's to give up.
    // SAFETY: guaranteed by the caller (see `# Safety`).
    unsafe { libc::munmap(base.as_ptr().cast(), len) };
}

/// Busy-waits for `ns` nanoseconds (the `model` cost mode).
pub(crate) fn spin_for(ns: u64) {
    if ns == 0 {
        return;
    }
    let until = Instant::now() + Duration::from_nanos(ns);
    while Instant::now() < until {
        std::hint::spin_loop();
    }
}

/// Whether process `pid` exists (used to recover a lock whose holder died).
pub(crate) fn process_alive(pid: u32) -> bool {
    // SAFETY: signal 0 only checks for existence and permission; it sends nothing.
    let r = unsafe { libc::kill(pid as libc::pid_t, 0) };
    r == 0 || io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

/// Maps `len` bytes of `file` shared (read-write if `writable`) as a [`SharedMem`] window
/// that unmaps when its last clone is dropped.
pub(crate) fn map_file(
    file: &std::fs::File,
    len: usize,
    writable: bool,
) -> io::Result<netstage_ring::SharedMem> {
    let mut opts = memmap2::MmapOptions::new();
    opts.len(len);
    if writable {
        // The file may be changed by other processes, which is why the window is only ever
        // accessed through `SharedMem`'s volatile and atomic operations.
        // SAFETY: a shared mapping of a file, never accessed through a Rust reference.
        let mut m = unsafe { opts.map_mut(file) }?;
        let base = NonNull::new(m.as_mut_ptr()).ok_or_else(|| io::Error::other("null map"))?;
        // SAFETY: `m` is a live read-write mapping of `len` bytes, moved into the owner that
        // keeps it mapped for as long as the window exists.
        Ok(unsafe {
            netstage_ring::SharedMem::from_raw_parts(base, len, true, std::sync::Arc::new(m))
        })
    } else {
        // SAFETY: as above, read-only.
        let m = unsafe { opts.map(file) }?;
        let base =
            NonNull::new(m.as_ptr().cast_mut()).ok_or_else(|| io::Error::other("null map"))?;
        // SAFETY: as above; the window is marked read-only so nothing writes through it.
        Ok(unsafe {
            netstage_ring::SharedMem::from_raw_parts(base, len, false, std::sync::Arc::new(m))
        })
    }
}

/// A grant mapping made by [`map_grant_window`]: unmapped, then `on_unmap` run, when the
/// last window over it is dropped.
struct GrantWindow {
    base: NonNull<u8>,
    len: usize,
    on_unmap: Option<Box<dyn FnOnce() + Send + Sync>>,
}

// SAFETY: the struct only holds the address of a mapping to unmap; no data is accessed
// through it.
unsafe impl Send for GrantWindow {}
// SAFETY: as above.
unsafe impl Sync for GrantWindow {}

impl Drop for GrantWindow {
    fn drop(&mut self) {
        // SAFETY: `base`/`len` came from `map_frames` in `map_grant_window`, and this owner
        // is dropped only after the last window over the range is gone.
        unsafe { unmap(self.base, self.len) };
        if let Some(f) = self.on_unmap.take() {
            f();
        }
    }
}

/// Maps frames of a guest memory file with real `mmap` calls and returns a window that
/// `munmap`s them (a real TLB shootdown) and then runs `on_unmap` when its last clone goes.
pub(crate) fn map_grant_window(
    fd: BorrowedFd<'_>,
    frames: &[u32],
    writable: bool,
    on_unmap: Box<dyn FnOnce() + Send + Sync>,
) -> io::Result<netstage_ring::SharedMem> {
    let base = map_frames(fd, frames, writable)?;
    let len = frames.len() * PAGE;
    let owner = std::sync::Arc::new(GrantWindow {
        base,
        len,
        on_unmap: Some(on_unmap),
    });
    // SAFETY: `base` is a live mapping of `len` bytes (writable iff `writable`) owned by
    // `owner`, which unmaps it only when the last window is dropped.
    Ok(unsafe { netstage_ring::SharedMem::from_raw_parts(base, len, writable, owner) })
}
