//! The system calls of both platforms: futex, `process_vm_readv`/`writev` and `mmap` of guest
//! memory files for the emulated one, and the ioctls, `mmap`s and reads of Linux's Xen devices
//! for the real one. The only module of this crate with `unsafe`; every block says why it is
//! sound.

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
#[derive(Default)]
pub(crate) struct VmCopy {
    local: Vec<libc::iovec>,
    remote: Vec<libc::iovec>,
}

impl VmCopy {
    pub(crate) fn is_empty(&self) -> bool {
        self.local.is_empty()
    }

    /// Forgets every segment (keeping the vectors' room).
    pub(crate) fn clear(&mut self) {
        self.local.clear();
        self.remote.clear();
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
                let pid = own_pid() as libc::pid_t;
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
        return mmap_shared(
            fd,
            len,
            prot,
            (frames[0] as libc::off_t) * PAGE as libc::off_t,
        );
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

/// A fresh shared mapping of `len` bytes of `fd` at `offset`, at an address the kernel
/// picks.
fn mmap_shared(
    fd: BorrowedFd<'_>,
    len: usize,
    prot: libc::c_int,
    offset: libc::off_t,
) -> io::Result<NonNull<u8>> {
    // SAFETY: a new shared mapping of a file we hold open; the kernel picks the address, so
    // nothing existing is replaced.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            prot,
            libc::MAP_SHARED,
            fd.as_raw_fd(),
            offset,
        )
    };
    if p == libc::MAP_FAILED {
        return Err(io::Error::last_os_error());
    }
    NonNull::new(p.cast()).ok_or_else(|| io::Error::other("mmap returned null"))
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

/// This process's id, read with one `getpid` per process rather than per call (glibc no
/// longer caches it, and the emulated grant lock stamps it on every grant operation: a system
/// call each would dominate a 64-byte copy). A forked child reads its own id afresh: the
/// cache is cleared in the child by a `pthread_atfork` handler installed with the first read.
pub(crate) fn own_pid() -> u32 {
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::sync::Once;
    static PID: AtomicU32 = AtomicU32::new(0);
    static HANDLER: Once = Once::new();
    extern "C" fn forget_in_child() {
        PID.store(0, Ordering::Relaxed);
    }
    HANDLER.call_once(|| {
        // SAFETY: registers a child handler that only stores to an atomic (async-signal
        // safe); no prepare or parent handler.
        unsafe { libc::pthread_atfork(None, None, Some(forget_in_child)) };
    });
    match PID.load(Ordering::Relaxed) {
        0 => {
            let pid = std::process::id();
            PID.store(pid, Ordering::Relaxed);
            pid
        }
        pid => pid,
    }
}

/// Whether process `pid` exists (used to recover a lock whose holder died).
pub(crate) fn process_alive(pid: u32) -> bool {
    // 0 and anything past i32::MAX would address a process group or every process.
    if pid == 0 || pid > i32::MAX as u32 {
        return false;
    }
    // SAFETY: signal 0 only checks for existence and permission; it sends nothing.
    let r = unsafe { libc::kill(pid as libc::pid_t, 0) };
    r == 0 || io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

/// The seals a domain's files carry: they can neither shrink nor grow, and no seal can be
/// added (or, as always, removed) later.
const DOMAIN_FILE_SEALS: libc::c_int = libc::F_SEAL_SHRINK | libc::F_SEAL_GROW | libc::F_SEAL_SEAL;

/// A file of `len` zero bytes in memory (`memfd_create`) named `name`, sealed with
/// [`DOMAIN_FILE_SEALS`]: no process, its creator included, can truncate it under another
/// that mapped it (which would take `SIGBUS` on its next access).
pub(crate) fn sealed_memfd(name: &str, len: u64) -> io::Result<std::fs::File> {
    use std::os::fd::FromRawFd;
    let c = std::ffi::CString::new(name).map_err(io::Error::other)?;
    // SAFETY: `c` is a NUL-terminated string that outlives the call; the flags are valid.
    let fd = unsafe { libc::memfd_create(c.as_ptr(), libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` was just returned by memfd_create; nothing else owns or closes it.
    let f = unsafe { std::fs::File::from_raw_fd(fd) };
    f.set_len(len)?;
    // SAFETY: F_ADD_SEALS takes an int argument; `f` keeps the descriptor open for the call.
    if unsafe { libc::fcntl(f.as_raw_fd(), libc::F_ADD_SEALS, DOMAIN_FILE_SEALS) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(f)
}

/// Whether `file` carries [`DOMAIN_FILE_SEALS`] (a file that is not a memfd carries none
/// that matter: tmpfs files are born with `F_SEAL_SEAL` alone).
pub(crate) fn sealed_as_domain_file(file: &std::fs::File) -> io::Result<bool> {
    // SAFETY: F_GET_SEALS takes no argument; `file` keeps the descriptor open for the call.
    let seals = unsafe { libc::fcntl(file.as_raw_fd(), libc::F_GET_SEALS) };
    if seals < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(seals & DOMAIN_FILE_SEALS == DOMAIN_FILE_SEALS)
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
    // The file may be changed by other processes, which is why the window is only ever
    // accessed through `SharedMem`'s volatile and atomic operations; `MmapRaw` hands out
    // the address without ever making a Rust reference to the bytes.
    let m = if writable {
        opts.map_raw(file)?
    } else {
        opts.map_raw_read_only(file)?
    };
    let base = NonNull::new(m.as_mut_ptr()).ok_or_else(|| io::Error::other("null map"))?;
    let owner = std::sync::Arc::new(m);
    // SAFETY: `m` is a live shared mapping of `len` bytes (read-write only if `writable`),
    // moved into the owner that keeps it mapped for as long as the window exists; the
    // window is marked read-only when the mapping is.
    let window = unsafe { netstage_ring::SharedMem::from_raw_parts(base, len, writable, owner) };
    Ok(window)
}

/// A grant mapping made by [`map_grant_window`] or [`map_device_window`], or the range of a
/// [`PageRange`]: unmapped, then `on_unmap` run, when the last window over it is dropped.
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
        // SAFETY: `base`/`len` came from `map_frames`, `mmap_shared` or `reserve_at` and
        // are this owner's alone, dropped only after the last window over the range.
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

// ----- Linux's Xen devices (`platform::xen`) -----

use crate::xen::abi;

/// The ioctl request type of this libc.
fn req(n: u64) -> libc::Ioctl {
    n as libc::Ioctl
}

/// Issues an ioctl whose argument is the `u32` words of `buf` (the kernel reads and writes
/// within them only); returns the ioctl's result.
fn ioctl_words(fd: BorrowedFd<'_>, request: u64, buf: &mut [u32]) -> io::Result<i32> {
    // The callers pass only requests whose argument is a header and `count` entries, and
    // size `buf` for exactly the header and the `count` they wrote into it.
    // SAFETY: so the kernel reads and writes within `buf`, which is live for the call.
    let r = unsafe { libc::ioctl(fd.as_raw_fd(), req(request), buf.as_mut_ptr()) };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

/// Two native-endian `u32` words as the `u64` they hold.
fn u64_at(w: &[u32]) -> u64 {
    let (a, b) = (w[0].to_ne_bytes(), w[1].to_ne_bytes());
    u64::from_ne_bytes([a[0], a[1], a[2], a[3], b[0], b[1], b[2], b[3]])
}

/// A `u64` as two native-endian `u32` words.
fn u64_words(v: u64) -> [u32; 2] {
    let b = v.to_ne_bytes();
    [
        u32::from_ne_bytes([b[0], b[1], b[2], b[3]]),
        u32::from_ne_bytes([b[4], b[5], b[6], b[7]]),
    ]
}

/// Words of an `IOCTL_GNTALLOC_ALLOC_GREF` request for `count` pages: domid and flags |
/// count | index (2 words) | gref_ids[count]. The kernel copies the whole struct in and out
/// (`sizeof(struct ioctl_gntalloc_alloc_gref)`, 24 bytes with its one-element array and
/// padding) before it writes the ids, so the buffer is never shorter than the struct.
fn gntalloc_alloc_words(count: u32) -> usize {
    let words = 4 + count as usize;
    words.max(std::mem::size_of::<abi::GntallocAllocGref>().div_ceil(4))
}

/// `IOCTL_GNTALLOC_ALLOC_GREF`: `count` zeroed pages granted to `domid`; returns their
/// `mmap` offset and grant references.
pub(crate) fn gntalloc_alloc(
    fd: BorrowedFd<'_>,
    domid: u16,
    writable: bool,
    count: u32,
) -> io::Result<(u64, Vec<u32>)> {
    let flags = if writable {
        abi::GNTALLOC_FLAG_WRITABLE
    } else {
        0
    };
    let (d, f) = (domid.to_ne_bytes(), flags.to_ne_bytes());
    let mut buf = vec![0u32; gntalloc_alloc_words(count)];
    buf[0] = u32::from_ne_bytes([d[0], d[1], f[0], f[1]]);
    buf[1] = count;
    ioctl_words(fd, abi::IOCTL_GNTALLOC_ALLOC_GREF, &mut buf)?;
    Ok((u64_at(&buf[2..4]), buf[4..4 + count as usize].to_vec()))
}

/// `IOCTL_GNTALLOC_DEALLOC_GREF`.
pub(crate) fn gntalloc_dealloc(fd: BorrowedFd<'_>, index: u64, count: u32) -> io::Result<()> {
    let [lo, hi] = u64_words(index);
    let mut buf = [lo, hi, count, 0];
    ioctl_words(fd, abi::IOCTL_GNTALLOC_DEALLOC_GREF, &mut buf).map(|_| ())
}

/// `IOCTL_GNTDEV_MAP_GRANT_REF` of `(domid, ref)` pairs; returns the `mmap` offset.
pub(crate) fn gntdev_map(fd: BorrowedFd<'_>, refs: &[(u32, u32)]) -> io::Result<u64> {
    let count = u32::try_from(refs.len())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "too many grants"))?;
    // count | pad | index (2 words) | refs[count] (domid, ref)
    let mut buf = vec![0u32; 4 + 2 * refs.len().max(1)];
    buf[0] = count;
    for (i, (d, r)) in refs.iter().enumerate() {
        buf[4 + 2 * i] = *d;
        buf[5 + 2 * i] = *r;
    }
    ioctl_words(fd, abi::IOCTL_GNTDEV_MAP_GRANT_REF, &mut buf)?;
    Ok(u64_at(&buf[2..4]))
}

/// `IOCTL_GNTDEV_UNMAP_GRANT_REF`.
pub(crate) fn gntdev_unmap(fd: BorrowedFd<'_>, index: u64, count: u32) -> io::Result<()> {
    let [lo, hi] = u64_words(index);
    let mut buf = [lo, hi, count, 0];
    ioctl_words(fd, abi::IOCTL_GNTDEV_UNMAP_GRANT_REF, &mut buf).map(|_| ())
}

/// `IOCTL_GNTDEV_GRANT_COPY` of `ops`, one segment each; returns each segment's `GNTST_*`
/// status. Ops longer than a page are refused before the call.
pub(crate) fn gntdev_copy(
    fd: BorrowedFd<'_>,
    ops: &mut [crate::CopyOp<'_>],
) -> io::Result<Vec<i16>> {
    let mut segs = Vec::with_capacity(ops.len());
    for op in ops.iter_mut() {
        let len = u16::try_from(op.len())
            .ok()
            .filter(|l| usize::from(*l) <= PAGE)
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "copy op over a page"))?;
        let foreign = |f: crate::ForeignRef| abi::GntdevCopySide {
            foreign: abi::GntdevCopyForeign {
                r#ref: f.gref,
                offset: f.offset,
                domid: f.dom,
            },
        };
        let seg = match op {
            crate::CopyOp::FromForeign { src, dst } => abi::GntdevGrantCopySegment {
                source: foreign(*src),
                dest: abi::GntdevCopySide {
                    virt: dst.as_mut_ptr().cast(),
                },
                len,
                flags: abi::GNTCOPY_SOURCE_GREF,
                status: 0,
            },
            crate::CopyOp::ToForeign { src, dst } => abi::GntdevGrantCopySegment {
                source: abi::GntdevCopySide {
                    virt: src.as_ptr().cast_mut().cast(),
                },
                dest: foreign(*dst),
                len,
                flags: abi::GNTCOPY_DEST_GREF,
                status: 0,
            },
        };
        segs.push(seg);
    }
    let mut arg = abi::GntdevGrantCopy {
        count: u32::try_from(segs.len())
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "too many copy ops"))?,
        segments: segs.as_mut_ptr(),
    };
    // Each local side points into a slice of `ops` of at least `len` bytes, borrowed
    // (mutably for destinations) for the call; `arg` points at the `count` segments.
    // SAFETY: the kernel writes only to destination slices and the statuses, all live.
    let r = unsafe {
        libc::ioctl(
            fd.as_raw_fd(),
            req(abi::IOCTL_GNTDEV_GRANT_COPY),
            &mut arg as *mut abi::GntdevGrantCopy,
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(segs.iter().map(|s| s.status).collect())
}

/// Maps `pages` pages of a Xen device at `mmap` offset `index` (gntalloc's or gntdev's
/// pages), returning a window that unmaps and then runs `on_unmap` when its last clone goes.
pub(crate) fn map_device_window(
    fd: BorrowedFd<'_>,
    index: u64,
    pages: usize,
    writable: bool,
    on_unmap: Box<dyn FnOnce() + Send + Sync>,
) -> io::Result<netstage_ring::SharedMem> {
    let len = pages * PAGE;
    let prot = if writable {
        libc::PROT_READ | libc::PROT_WRITE
    } else {
        libc::PROT_READ
    };
    let off = libc::off_t::try_from(index)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "offset out of range"))?;
    let base = mmap_shared(fd, len, prot, off)?;
    let owner = std::sync::Arc::new(GrantWindow {
        base,
        len,
        on_unmap: Some(on_unmap),
    });
    // SAFETY: `base` is a live mapping of `len` bytes (writable iff `writable`) owned by
    // `owner`, which unmaps it only when the last window is dropped.
    Ok(unsafe { netstage_ring::SharedMem::from_raw_parts(base, len, writable, owner) })
}

/// An address range reserved once (`PROT_NONE`), into which pages of a file are mapped in
/// place (`MAP_FIXED`) and cleared again: a stream of maps (`GrantImport::map_each`) reuses
/// one range, so it makes the system calls of mapping and unmapping and allocates nothing.
pub(crate) struct PageRange {
    /// The reserved range (unmapped when the last window over it goes).
    owner: std::sync::Arc<GrantWindow>,
    /// Per page: 0 not mapped, 1 mapped read-only, 2 mapped writable.
    mapped: Vec<u8>,
}

/// An anonymous `PROT_NONE` mapping of `len` bytes at `at` (`MAP_FIXED`) or anywhere.
fn reserve_at(at: Option<NonNull<u8>>, len: usize) -> io::Result<NonNull<u8>> {
    let (addr, fixed) = match at {
        Some(a) => (a.as_ptr().cast(), libc::MAP_FIXED),
        None => (std::ptr::null_mut(), 0),
    };
    // SAFETY: an anonymous mapping; with MAP_FIXED it replaces only a range of a
    // reservation of ours that no window reaches (`PageRange::clear` checks).
    let p = unsafe {
        libc::mmap(
            addr,
            len,
            libc::PROT_NONE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | fixed,
            -1,
            0,
        )
    };
    if p == libc::MAP_FAILED {
        return Err(io::Error::last_os_error());
    }
    NonNull::new(p.cast()).ok_or_else(|| io::Error::other("mmap returned null"))
}

impl PageRange {
    /// Reserves room for `pages` pages.
    pub(crate) fn reserve(pages: usize) -> io::Result<PageRange> {
        let len = pages.max(1) * PAGE;
        let base = reserve_at(None, len)?;
        Ok(PageRange {
            owner: std::sync::Arc::new(GrantWindow {
                base,
                len,
                on_unmap: None,
            }),
            mapped: vec![0; pages.max(1)],
        })
    }

    /// Pages the range holds.
    pub(crate) fn pages(&self) -> usize {
        self.mapped.len()
    }

    /// Maps `count` pages of `fd` from byte `offset` at pages `at..at + count` of the range
    /// with one `mmap`.
    pub(crate) fn map(
        &mut self,
        at: usize,
        count: usize,
        fd: BorrowedFd<'_>,
        offset: u64,
        writable: bool,
    ) -> io::Result<()> {
        let end = at
            .checked_add(count)
            .filter(|e| *e <= self.mapped.len() && count > 0)
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "outside the range"))?;
        let off = libc::off_t::try_from(offset)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "offset out of range"))?;
        let prot = if writable {
            libc::PROT_READ | libc::PROT_WRITE
        } else {
            libc::PROT_READ
        };
        // SAFETY: `at + count` pages lie inside the reservation (checked above), so
        // MAP_FIXED replaces only pages of it; a window onto one of them sees the new page,
        // which stays valid memory.
        let p = unsafe {
            libc::mmap(
                self.owner.base.as_ptr().add(at * PAGE).cast(),
                count * PAGE,
                prot,
                libc::MAP_SHARED | libc::MAP_FIXED,
                fd.as_raw_fd(),
                off,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        self.mapped[at..end].fill(if writable { 2 } else { 1 });
        Ok(())
    }

    /// A window onto page `at`, if it is mapped. The caller drops it before
    /// [`PageRange::clear`].
    pub(crate) fn window(&self, at: usize) -> Option<netstage_ring::SharedMem> {
        let writable = match self.mapped.get(at)? {
            0 => return None,
            m => *m == 2,
        };
        // SAFETY: page `at` is mapped (readable, writable iff `writable`), and stays so
        // while any window holds `owner`: `clear` leaves a range that windows still reach
        // as it is, and the reservation is unmapped only when its owner goes.
        Some(unsafe {
            netstage_ring::SharedMem::from_raw_parts(
                self.owner.base.add(at * PAGE),
                PAGE,
                writable,
                std::sync::Arc::clone(&self.owner) as _,
            )
        })
    }

    /// Unmaps every mapped page with one `mmap` of `PROT_NONE` over them (the `munmap` and
    /// its TLB shootdown, keeping the range reserved). Returns whether it made that call.
    /// If a window still reaches the range, the range is left to it (unmapped when it
    /// goes) and a new one reserved.
    pub(crate) fn clear(&mut self) -> io::Result<bool> {
        let Some(end) = self.mapped.iter().rposition(|m| *m != 0).map(|e| e + 1) else {
            return Ok(false);
        };
        if std::sync::Arc::strong_count(&self.owner) > 1 {
            *self = PageRange::reserve(self.mapped.len())?;
            return Ok(true);
        }
        reserve_at(Some(self.owner.base), end * PAGE)?;
        self.mapped[..end].fill(0);
        Ok(true)
    }
}

/// An evtchn ioctl with a plain structure argument; returns its result (a port number for
/// the bind requests).
fn evtchn_ioctl<T>(fd: BorrowedFd<'_>, request: u64, arg: &mut T) -> io::Result<u32> {
    // SAFETY: the evtchn requests passed here read exactly `size_of::<T>()` bytes (their
    // numbers encode that size; `platform/tests/xen_abi.rs` checks it), and `arg` is live.
    let r = unsafe { libc::ioctl(fd.as_raw_fd(), req(request), arg as *mut T) };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r as u32)
    }
}

/// `IOCTL_EVTCHN_BIND_UNBOUND_PORT`: the new local port.
pub(crate) fn evtchn_bind_unbound(fd: BorrowedFd<'_>, remote: u16) -> io::Result<u32> {
    let mut a = abi::EvtchnBindUnboundPort {
        remote_domain: remote.into(),
    };
    evtchn_ioctl(fd, abi::IOCTL_EVTCHN_BIND_UNBOUND_PORT, &mut a)
}

/// `IOCTL_EVTCHN_BIND_INTERDOMAIN`: the new local port.
pub(crate) fn evtchn_bind_interdomain(
    fd: BorrowedFd<'_>,
    remote: u16,
    remote_port: u32,
) -> io::Result<u32> {
    let mut a = abi::EvtchnBindInterdomain {
        remote_domain: remote.into(),
        remote_port,
    };
    evtchn_ioctl(fd, abi::IOCTL_EVTCHN_BIND_INTERDOMAIN, &mut a)
}

/// `IOCTL_EVTCHN_NOTIFY`.
pub(crate) fn evtchn_notify(fd: BorrowedFd<'_>, port: u32) -> io::Result<()> {
    let mut a = abi::EvtchnPort { port };
    evtchn_ioctl(fd, abi::IOCTL_EVTCHN_NOTIFY, &mut a).map(|_| ())
}

/// Reads one pending port from a non-blocking `/dev/xen/evtchn` descriptor; `None` if none
/// is pending.
pub(crate) fn evtchn_take(fd: BorrowedFd<'_>) -> io::Result<Option<u32>> {
    let mut v = 0u32;
    // SAFETY: reads at most 4 bytes into `v`, live for the call.
    let n = unsafe { libc::read(fd.as_raw_fd(), (&mut v as *mut u32).cast(), 4) };
    match n {
        4 => Ok(Some(v)),
        n if n < 0 => {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::WouldBlock {
                Ok(None)
            } else {
                Err(e)
            }
        }
        _ => Err(io::Error::other("short read from /dev/xen/evtchn")),
    }
}

/// Unmasks `port` again after its event was taken (a write of the port number).
pub(crate) fn evtchn_unmask(fd: BorrowedFd<'_>, port: u32) -> io::Result<()> {
    // SAFETY: writes the 4 bytes of `port`, live for the call.
    let n = unsafe { libc::write(fd.as_raw_fd(), (&port as *const u32).cast(), 4) };
    if n == 4 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// A new non-blocking, close-on-exec eventfd.
pub(crate) fn eventfd() -> io::Result<std::os::fd::OwnedFd> {
    // SAFETY: eventfd returns a new descriptor or -1.
    let fd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` is a descriptor we just created and own alone.
    Ok(unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) })
}

/// Adds one to an eventfd's counter.
pub(crate) fn eventfd_signal(fd: BorrowedFd<'_>) -> io::Result<()> {
    let one = 1u64;
    // SAFETY: writes the 8 bytes of `one`, live for the call.
    let n = unsafe { libc::write(fd.as_raw_fd(), (&one as *const u64).cast(), 8) };
    if n == 8 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Takes an eventfd's counter; whether it was non-zero.
pub(crate) fn eventfd_take(fd: BorrowedFd<'_>) -> io::Result<bool> {
    let mut v = 0u64;
    // SAFETY: reads at most 8 bytes into `v`, live for the call.
    let n = unsafe { libc::read(fd.as_raw_fd(), (&mut v as *mut u64).cast(), 8) };
    if n == 8 {
        return Ok(v > 0);
    }
    let e = io::Error::last_os_error();
    if e.kind() == io::ErrorKind::WouldBlock {
        Ok(false)
    } else {
        Err(e)
    }
}

/// Waits until one of `fds` is readable or `timeout` passes (forever if `None`); whether one
/// is.
pub(crate) fn poll_readable(fds: &[BorrowedFd<'_>], timeout: Option<Duration>) -> io::Result<bool> {
    let mut p: Vec<libc::pollfd> = fds
        .iter()
        .map(|f| libc::pollfd {
            fd: f.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        })
        .collect();
    let ms = timeout.map_or(-1, |t| t.as_millis().min(i32::MAX as u128) as i32);
    // SAFETY: `p` holds `p.len()` pollfds, live for the call.
    let r = unsafe { libc::poll(p.as_mut_ptr(), p.len() as libc::nfds_t, ms) };
    if r < 0 {
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
    Ok(r > 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_single_positive_pid_can_be_alive() {
        assert!(process_alive(std::process::id()));
        assert!(!process_alive(0));
        assert!(!process_alive(u32::MAX));
        assert!(!process_alive(i32::MAX as u32 + 1));
    }

    #[test]
    fn the_cached_pid_is_this_process_and_a_forked_child_reads_its_own() {
        assert_eq!(own_pid(), std::process::id());
        assert_eq!(own_pid(), std::process::id(), "second read, from the cache");
        // SAFETY: the child only calls getpid, reads an atomic and leaves with _exit.
        let child = unsafe { libc::fork() };
        assert!(child >= 0, "fork: {}", io::Error::last_os_error());
        if child == 0 {
            // SAFETY: getpid is async-signal safe and has no preconditions.
            let ok = own_pid() == unsafe { libc::getpid() } as u32;
            // SAFETY: _exit is async-signal safe; the child leaves without running the test
            // harness's exit handlers.
            unsafe { libc::_exit(if ok { 0 } else { 1 }) };
        }
        let mut status = 0;
        // SAFETY: waits for the child forked above; `status` is a valid out pointer.
        let r = unsafe { libc::waitpid(child, &mut status, 0) };
        assert_eq!(r, child);
        assert!(libc::WIFEXITED(status), "child status {status:#x}");
        assert_eq!(
            libc::WEXITSTATUS(status),
            0,
            "the child read its parent's pid"
        );
    }

    #[test]
    fn a_gntalloc_request_holds_the_whole_struct_and_every_id() {
        let header = std::mem::size_of::<abi::GntallocAllocGref>();
        assert_eq!(header, 24, "struct ioctl_gntalloc_alloc_gref on x86-64");
        for count in 0..=8u32 {
            let bytes = gntalloc_alloc_words(count) * 4;
            assert!(bytes >= header, "{count} pages: {bytes} bytes");
            assert!(
                bytes >= 16 + 4 * count as usize,
                "{count} pages: {bytes} bytes"
            );
        }
    }
}
