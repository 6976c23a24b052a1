//! Real Xen: the same traits over Linux's Xen devices, for a backend in dom0 (or a driver
//! domain) and a frontend in a guest.
//!
//! - [`GrantExport`]: `/dev/xen/gntalloc` allocates zeroed pages, grants them and maps them
//!   here; ending access deallocates the grants. Unlike the emulation, Linux does not report
//!   a page the peer still maps: it defers the revocation and keeps the page out of
//!   circulation until the peer lets go, so [`GrantExport::end_access`] never fails with
//!   [`PlatformError::GrantInUse`] here.
//! - [`GrantImport`]: `/dev/xen/gntdev` maps foreign grants (one `IOCTL_GNTDEV_MAP_GRANT_REF`
//!   and one `mmap` per window, unmapped with the window; [`GrantImport::map_each`]: one
//!   ioctl and one `mmap` of all the pages, again page by page if that `mmap` fails, since
//!   gntdev fails it whole on one bad grant) and performs batched grant copies
//!   (`IOCTL_GNTDEV_GRANT_COPY`, one hypercall batch per call, a `GNTST_*` status per op).
//! - [`EventChannels`]: one `/dev/xen/evtchn` descriptor per port, so that each queue thread
//!   waits on its own; an eventfd beside it carries [`EventPort::wake`].
//! - [`DomainInfo`]: from XenStore: a domain runs while `/local/domain/<id>` exists (or is
//!   there but unreadable, as dom0's is to a guest), and its instance is told apart by its
//!   `vm` path, which the toolstack makes unique per domain.
//! - XenStore itself: [`XsClient::connect_default`] reaches the system xenstored's socket in
//!   dom0, and `/dev/xen/xenbus` in a guest.
//!
//! The request layouts are checked against Linux's headers (`platform/tests/xen_abi.rs`),
//! and the whole runs on Xen 4.17 inside QEMU (`scripts/xen-vm`, `docs/xen.md`). Where
//! there is no Xen, [`XenDomain::open`] says what is missing.

pub mod abi;

use std::collections::hash_map::DefaultHasher;
use std::collections::HashMap;
use std::fs::File;
use std::hash::{Hash, Hasher};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::sim::xenstored::wire::Errno;
use crate::xenstore::{XenStore, XsClient, NO_TX};
use crate::{
    sys, CopyOp, DomId, DomainInfo, EventChannels, EventPort, EventStats, GrantExport, GrantImport,
    GrantRef, GrantStatus, MapHold, MappedPages, PlatformError, Port, Result, SharedPages,
};
use netstage_ring::SharedMem;

/// The device nodes this platform needs.
pub const DEVICES: [&str; 3] = ["/dev/xen/gntalloc", "/dev/xen/gntdev", "/dev/xen/evtchn"];

/// The instance [`domain_instance_in`] gives a domain that exists but whose directory this
/// domain may not read.
pub const UNREADABLE_INSTANCE: u64 = u64::MAX;

/// How long a wait polls before it sleeps, by default.
const SPIN: Duration = Duration::from_micros(20);

struct Devices {
    domid: DomId,
    gntalloc: File,
    gntdev: File,
    xs: XsClient,
    /// Allocations still granted, by their first grant reference: (mmap offset, pages).
    allocs: Mutex<HashMap<GrantRef, (u64, u32)>>,
}

impl Devices {
    /// Deallocates the grants of the allocation that starts with `first`, once.
    fn dealloc(&self, first: GrantRef) -> Result<()> {
        let a = self.allocs.lock().ok().and_then(|mut m| m.remove(&first));
        if let Some((index, n)) = a {
            sys::gntalloc_dealloc(self.gntalloc.as_fd(), index, n)
                .map_err(|e| PlatformError::io("gntalloc: ending access", e))?;
        }
        Ok(())
    }
}

/// This domain on a real Xen host. Cheap to clone.
#[derive(Clone)]
pub struct XenDomain {
    dev: Arc<Devices>,
    spin: Duration,
}

impl std::fmt::Debug for XenDomain {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("XenDomain")
            .field("domid", &self.dev.domid)
            .finish()
    }
}

fn open_device(path: &str) -> Result<File> {
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .map_err(|e| {
            PlatformError::io(
                format!(
                    "cannot open {path}: real Xen needs this to be a Xen domain with Linux's \
                     xen-gntalloc, xen-gntdev and xen-evtchn drivers loaded (the embedded \
                     emulation, `platform::sim`, needs none)"
                ),
                e,
            )
        })
}

impl XenDomain {
    /// Opens the grant devices for domain `domid` (this domain: 0 in dom0), with `xs`
    /// connected to XenStore for [`DomainInfo`]. Fails, naming the device and what it
    /// needs, where there is no Xen.
    pub fn open(domid: DomId, xs: XsClient) -> Result<XenDomain> {
        let gntalloc = open_device(DEVICES[0])?;
        let gntdev = open_device(DEVICES[1])?;
        // Fail now rather than at the first port if event channels are missing.
        open_device(DEVICES[2])?;
        Ok(XenDomain {
            dev: Arc::new(Devices {
                domid,
                gntalloc,
                gntdev,
                xs,
                allocs: Mutex::new(HashMap::new()),
            }),
            spin: SPIN,
        })
    }

    /// The same domain, with event-channel waits that poll for `spin` (yielding the CPU)
    /// before they sleep.
    pub fn with_spin(mut self, spin: Duration) -> XenDomain {
        self.spin = spin;
        self
    }
}

/// Where Linux's gntalloc driver takes its per-process grant limit from.
pub const GNTALLOC_LIMIT: &str = "/sys/module/xen_gntalloc/parameters/limit";

/// The error for a failed gntalloc allocation. `ENOSPC` is the driver's per-process limit
/// on granted pages (its `limit` parameter, 1024 by default), which a frontend with several
/// queues, staging slots or data rings can exceed: the message says how to raise it.
fn gntalloc_error(count: usize, remote: DomId, e: std::io::Error) -> PlatformError {
    let what = format!("gntalloc: {count} pages for domain {remote}");
    if e.raw_os_error() != Some(libc::ENOSPC) {
        return PlatformError::io(what, e);
    }
    let limit = std::fs::read_to_string(GNTALLOC_LIMIT)
        .map(|l| format!("{} pages", l.trim()))
        .unwrap_or_else(|_| "1024 pages by default".into());
    PlatformError::io(
        format!(
            "{what}: over xen-gntalloc's limit of grants per process ({limit}); raise it, \
             e.g. `echo 16384 > {GNTALLOC_LIMIT}` (or load the module with limit=16384), or \
             use fewer queues or smaller staging"
        ),
        e,
    )
}

impl GrantExport for XenDomain {
    fn domid(&self) -> DomId {
        self.dev.domid
    }

    fn share(&self, remote: DomId, count: usize, writable: bool) -> Result<SharedPages> {
        let n = u32::try_from(count)
            .ok()
            .filter(|n| *n > 0)
            .ok_or_else(|| PlatformError::Invalid(format!("cannot share {count} pages")))?;
        let fd = self.dev.gntalloc.as_fd();
        let (index, grefs) = sys::gntalloc_alloc(fd, remote, writable, n)
            .map_err(|e| gntalloc_error(count, remote, e))?;
        // Our own view is always writable; `writable` is what the peer may do.
        let mem = match sys::map_device_window(fd, index, count, true, Box::new(|| {})) {
            Ok(m) => m,
            Err(e) => {
                let _ = sys::gntalloc_dealloc(fd, index, n);
                return Err(PlatformError::io("mmap of gntalloc pages", e));
            }
        };
        let first = grefs[0];
        if let Ok(mut m) = self.dev.allocs.lock() {
            m.insert(first, (index, n));
        }
        let ended = Arc::new(AtomicBool::new(false));
        let release = {
            let (dev, ended) = (Arc::clone(&self.dev), Arc::clone(&ended));
            Box::new(move |_: &[GrantRef]| {
                if !ended.swap(true, Ordering::AcqRel) {
                    let _ = dev.dealloc(first);
                }
            }) as crate::ReleaseFn
        };
        Ok(SharedPages {
            mem,
            grefs,
            ended,
            release: Some(release),
        })
    }

    fn end_access(&self, pages: &SharedPages) -> Result<()> {
        if pages.ended.swap(true, Ordering::AcqRel) {
            return Ok(());
        }
        match pages.grefs.first() {
            Some(first) => self.dev.dealloc(*first),
            None => Ok(()),
        }
    }

    fn grant_page(
        &self,
        _pages: &SharedPages,
        _i: usize,
        _to: DomId,
        _rw: bool,
    ) -> Result<GrantRef> {
        Err(PlatformError::Unsupported(REGRANT.into()))
    }

    fn end_page_access(&self, _pages: &SharedPages, _index: usize) -> Result<()> {
        Err(PlatformError::Unsupported(REGRANT.into()))
    }
}

/// Why a page cannot be granted and revoked one at a time from user space.
const REGRANT: &str = "granting and revoking one page per packet is not possible through \
    /dev/xen/gntalloc, which grants a page when it allocates it and revokes it when it frees \
    it (ALLOC_GREF / DEALLOC_GREF: a system call and a page allocation each, not the entry \
    write of Linux's gnttab_grant_foreign_access_ref); run the `linux` design on the \
    emulated platform, or a pooled-grant design (grant-copy, grant-map) on Xen";

impl GrantImport for XenDomain {
    fn domid(&self) -> DomId {
        self.dev.domid
    }

    fn map(&self, dom: DomId, grefs: &[GrantRef], writable: bool) -> Result<SharedMem> {
        if grefs.is_empty() {
            return Err(PlatformError::Invalid("nothing to map".into()));
        }
        let fd = self.dev.gntdev.as_fd();
        let index = gntdev_map_pages(fd, dom, grefs)?;
        let n = grefs.len() as u32;
        let unmap = {
            let dev = Arc::clone(&self.dev);
            move || {
                let _ = sys::gntdev_unmap(dev.gntdev.as_fd(), index, n);
            }
        };
        // The grants are checked by the hypervisor when the pages are mapped in, at mmap.
        sys::map_device_window(fd, index, grefs.len(), writable, Box::new(unmap)).map_err(|e| {
            let _ = sys::gntdev_unmap(fd, index, n);
            PlatformError::io(format!("gntdev: mmap of {grefs:?} of domain {dom}"), e)
        })
    }

    fn map_each(&self, dom: DomId, refs: &[GrantRef], rw: bool, p: &mut MappedPages) -> Result<()> {
        p.begin(dom, refs, rw)?;
        let hold = crate::hold_as(&mut p.hold, || XenHold::new(&self.dev), |h| h.of(&self.dev))?;
        let n = refs.len();
        let range = match hold.range.take() {
            Some(r) if r.pages() >= n => r,
            _ => sys::PageRange::reserve(n)
                .map_err(|e| PlatformError::io("reserving room for grant maps", e))?,
        };
        let range = hold.range.insert(range);
        let fd = self.dev.gntdev.as_fd();
        // One MAP_GRANT_REF of every page and one mmap: gntdev maps the grants at the mmap
        // and fails it whole if one fails, so then each page is mapped on its own p find
        // which (its status is GNTST_general_error: gntdev does not say which GNTST_*).
        let index = gntdev_map_pages(fd, dom, refs)?;
        if range.map(0, n, fd, index, rw).is_ok() {
            hold.maps.push((index, n as u32));
            p.status.fill(GrantStatus::Okay);
        } else {
            let _ = sys::gntdev_unmap(fd, index, n as u32);
            for (i, g) in refs.iter().enumerate() {
                let index = gntdev_map_pages(fd, dom, std::slice::from_ref(g))?;
                if range.map(i, 1, fd, index, rw).is_ok() {
                    hold.maps.push((index, 1));
                    p.status[i] = GrantStatus::Okay;
                } else {
                    let _ = sys::gntdev_unmap(fd, index, 1);
                }
            }
        }
        for (i, (w, s)) in p.windows.iter_mut().zip(&p.status).enumerate() {
            if *s == GrantStatus::Okay {
                *w = range.window(i);
            }
        }
        Ok(())
    }

    fn copy_ops(&self, ops: &mut [CopyOp<'_>], status: &mut [GrantStatus]) -> Result<()> {
        crate::check_copy_batch(ops, status)?;
        let codes = sys::gntdev_copy(self.dev.gntdev.as_fd(), ops)
            .map_err(|e| PlatformError::io("gntdev: grant copy", e))?;
        for (s, c) in status.iter_mut().zip(codes) {
            *s = GrantStatus::from_code(c).unwrap_or(GrantStatus::GeneralError);
        }
        Ok(())
    }
}

/// `IOCTL_GNTDEV_MAP_GRANT_REF` of `grefs` of `dom`; returns the `mmap` offset.
fn gntdev_map_pages(
    fd: std::os::fd::BorrowedFd<'_>,
    dom: DomId,
    grefs: &[GrantRef],
) -> Result<u64> {
    let refs: Vec<(u32, u32)> = grefs.iter().map(|g| (u32::from(dom), *g)).collect();
    sys::gntdev_map(fd, &refs)
        .map_err(|e| PlatformError::io(format!("gntdev: map {grefs:?} of domain {dom}"), e))
}

/// What a [`MappedPages`] keeps on Xen: the gntdev maps of its last map (offset, pages) and
/// the address range they are mapped into.
struct XenHold {
    dev: Arc<Devices>,
    range: Option<sys::PageRange>,
    maps: Vec<(u64, u32)>,
}

impl XenHold {
    fn new(dev: &Arc<Devices>) -> XenHold {
        XenHold {
            dev: Arc::clone(dev),
            range: None,
            maps: Vec::new(),
        }
    }

    /// Whether it is the hold of the devices `dev`.
    fn of(&self, dev: &Arc<Devices>) -> bool {
        Arc::ptr_eq(&self.dev, dev)
    }
}

impl MapHold for XenHold {
    fn unmap(&mut self, _grefs: &[GrantRef], _status: &[GrantStatus], _writable: bool) {
        // The pages leave the address space first (gntdev unmaps the grants then), and
        // then their gntdev maps are freed.
        if let Some(range) = self.range.as_mut() {
            let _ = range.clear();
        }
        for (index, n) in self.maps.drain(..) {
            let _ = sys::gntdev_unmap(self.dev.gntdev.as_fd(), index, n);
        }
    }

    fn as_any_mut(&mut self) -> &mut dyn std::any::Any {
        self
    }
}

/// One bound event channel: its own `/dev/xen/evtchn` descriptor (closing it unbinds the
/// port) and an eventfd for local wake-ups.
pub struct XenPort {
    evtchn: File,
    wake: OwnedFd,
    port: Port,
    spin: Duration,
    sent: AtomicU64,
    received: AtomicU64,
    blocked: AtomicU64,
}

impl std::fmt::Debug for XenPort {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("XenPort").field("port", &self.port).finish()
    }
}

impl XenPort {
    fn bind(spin: Duration, how: impl FnOnce(&File) -> std::io::Result<u32>) -> Result<XenPort> {
        let evtchn = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(DEVICES[2])
            .map_err(|e| PlatformError::io(format!("cannot open {}", DEVICES[2]), e))?;
        let port = how(&evtchn).map_err(|e| PlatformError::Event(format!("bind: {e}")))?;
        let wake = sys::eventfd().map_err(|e| PlatformError::io("eventfd", e))?;
        Ok(XenPort {
            evtchn,
            wake,
            port,
            spin,
            sent: AtomicU64::new(0),
            received: AtomicU64::new(0),
            blocked: AtomicU64::new(0),
        })
    }

    /// Takes a pending event (unmasking the port again) or local wake-up.
    fn take(&self) -> Result<bool> {
        let woke =
            sys::eventfd_take(self.wake.as_fd()).map_err(|e| PlatformError::io("eventfd", e))?;
        let event = match sys::evtchn_take(self.evtchn.as_fd())
            .map_err(|e| PlatformError::Event(format!("read: {e}")))?
        {
            Some(p) => {
                sys::evtchn_unmask(self.evtchn.as_fd(), p)
                    .map_err(|e| PlatformError::Event(format!("unmask: {e}")))?;
                self.received.fetch_add(1, Ordering::Relaxed);
                true
            }
            None => false,
        };
        Ok(woke || event)
    }
}

impl EventPort for XenPort {
    fn port(&self) -> Port {
        self.port
    }

    fn notify(&self) -> Result<()> {
        self.sent.fetch_add(1, Ordering::Relaxed);
        sys::evtchn_notify(self.evtchn.as_fd(), self.port)
            .map_err(|e| PlatformError::Event(format!("notify port {}: {e}", self.port)))
    }

    fn poll(&self) -> Result<bool> {
        self.take()
    }

    fn wait(&self, timeout: Option<Duration>) -> Result<bool> {
        let start = Instant::now();
        let deadline = timeout.map(|t| start + t);
        let spin_until = deadline.map_or(start + self.spin, |d| d.min(start + self.spin));
        // Poll first, yielding the CPU between looks (a thread sharing the core runs).
        loop {
            if self.take()? {
                return Ok(true);
            }
            if Instant::now() >= spin_until {
                break;
            }
            std::thread::yield_now();
        }
        loop {
            let left = match deadline {
                Some(d) => match d.checked_duration_since(Instant::now()) {
                    Some(l) if !l.is_zero() => Some(l),
                    _ => return Ok(false),
                },
                None => None,
            };
            self.blocked.fetch_add(1, Ordering::Relaxed);
            let _ = sys::poll_readable(&[self.evtchn.as_fd(), self.wake.as_fd()], left)
                .map_err(|e| PlatformError::io("poll on event channel", e))?;
            if self.take()? {
                return Ok(true);
            }
        }
    }

    fn stats(&self) -> EventStats {
        EventStats {
            sent: self.sent.load(Ordering::Relaxed),
            received: self.received.load(Ordering::Relaxed),
            blocked: self.blocked.load(Ordering::Relaxed),
        }
    }

    fn wake(&self) -> Result<()> {
        sys::eventfd_signal(self.wake.as_fd()).map_err(|e| PlatformError::io("eventfd", e))
    }
}

impl EventChannels for XenDomain {
    type Port = XenPort;

    fn alloc_unbound(&self, remote: DomId) -> Result<XenPort> {
        XenPort::bind(self.spin, |f| sys::evtchn_bind_unbound(f.as_fd(), remote))
    }

    fn bind_interdomain(&self, remote: DomId, remote_port: Port) -> Result<XenPort> {
        XenPort::bind(self.spin, |f| {
            sys::evtchn_bind_interdomain(f.as_fd(), remote, remote_port)
        })
    }
}

/// The instance of domain `dom` as XenStore tells it: `None` unless `/local/domain/<dom>`
/// exists (the toolstack removes it when the domain goes), else a hash of the domain's `vm`
/// path, which the toolstack makes unique per domain, so that a domain created again under
/// the same id is another instance.
///
/// A guest may not read another domain's directory (dom0's is `n0`: no access for others):
/// xenstored then answers `EACCES`, which it checks after finding the node, so the domain
/// exists. Its instance is then the one unreadable instance: a guest cannot tell dom0's
/// instances apart, and dom0 is not re-created under a running guest. Any other error
/// (`ENOENT` above all) means the domain is gone.
pub fn domain_instance_in(xs: &impl XenStore, dom: DomId) -> Option<u64> {
    let base = format!("/local/domain/{dom}");
    if let Err(e) = xs.directory(NO_TX, &base) {
        return (e.errno() == Some(Errno::EACCES)).then_some(UNREADABLE_INSTANCE);
    }
    let vm = xs.read(NO_TX, &format!("{base}/vm")).unwrap_or_default();
    let mut h = DefaultHasher::new();
    vm.hash(&mut h);
    Some(h.finish())
}

impl DomainInfo for XenDomain {
    fn domain_instance(&self, dom: DomId) -> Option<u64> {
        domain_instance_in(&self.dev.xs, dom)
    }

    fn forget_domain(&self, _dom: DomId) {
        // Nothing is cached per peer: the kernel's drivers drop what a dead domain held.
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn running_out_of_gntalloc_grants_says_how_to_raise_the_limit() {
        let e = gntalloc_error(512, 0, std::io::Error::from_raw_os_error(libc::ENOSPC));
        let m = e.to_string();
        assert!(m.contains("512 pages for domain 0"), "{m}");
        assert!(m.contains(GNTALLOC_LIMIT) && m.contains("limit="), "{m}");
        let other = gntalloc_error(1, 3, std::io::Error::from_raw_os_error(libc::EINVAL));
        assert!(!other.to_string().contains("limit"), "{other}");
    }
}
