//! Hypervisor services for netstage, as traits that front- and backend code are written
//! against, with an emulated implementation ([`sim`], the embedded default).
//!
//! | service | trait | Xen counterpart |
//! |---|---|---|
//! | share pages with a peer | [`GrantExport`] | `/dev/xen/gntalloc` (`ALLOC_GREF`, `DEALLOC_GREF`), `gnttab_end_foreign_access` |
//! | map a peer's grants | [`GrantImport::map`] | `/dev/xen/gntdev` `MAP_GRANT_REF` + `mmap`; unmapped on drop |
//! | map a peer's pages each on its own, one call | [`GrantImport::map_each`] into [`MappedPages`] | `GNTTABOP_map_grant_ref` of N ops, a status each |
//! | copy to / from a peer's grants | [`GrantImport::copy`] | `GNTTABOP_copy` / `IOCTL_GNTDEV_GRANT_COPY` |
//! | event channels | [`EventChannels`], [`EventPort`] | `/dev/xen/evtchn` |
//! | XenStore | [`xenstore::XenStore`] ([`xenstore::XsClient`]) | libxenstore over xenstored's socket |
//!
//! Every grant failure carries the Xen status code ([`GrantStatus`], `GNTST_*`).
//!
//! The shapes follow the Linux user-space devices, so a real-Xen implementation fits behind
//! the same traits: pages are shared in gntalloc fashion (allocated already granted),
//! mappings are windows that unmap when the last clone is dropped, copy batches carry a
//! status per operation, and an event port is a bound channel that can notify, poll and
//! block.

#![deny(unsafe_code)]

use std::fmt;
use std::time::{Duration, Instant};

use netstage_ring::SharedMem;

#[cfg(feature = "cli")]
pub mod cli;
pub mod sim;
#[allow(unsafe_code)]
mod sys;
pub mod xen;
pub mod xenbus;
pub mod xenstore;

/// A domain id (`domid_t`).
pub type DomId = u16;
/// A grant reference (`grant_ref_t`).
pub type GrantRef = u32;
/// An event-channel port (`evtchn_port_t`).
pub type Port = u32;

/// The id of the control domain.
pub const DOM0: DomId = 0;

/// Keys of a vif's frontend directory that the toolstack (libxl) writes; any other key there
/// is the frontend's own (or one an earlier frontend left behind).
pub const VIF_TOOLSTACK_FRONTEND_KEYS: [&str; 7] = [
    "backend",
    "backend-id",
    "handle",
    "mac",
    "state",
    "mtu",
    "trusted",
];

/// A grant-table status code (`GNTST_*` in `grant_table.h`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(i16)]
pub enum GrantStatus {
    /// `GNTST_okay`.
    Okay = 0,
    /// `GNTST_general_error`.
    GeneralError = -1,
    /// `GNTST_bad_domain`: unknown domain.
    BadDomain = -2,
    /// `GNTST_bad_gntref`: reference out of range or not a valid grant.
    BadGntref = -3,
    /// `GNTST_bad_handle`.
    BadHandle = -4,
    /// `GNTST_bad_virt_addr`.
    BadVirtAddr = -5,
    /// `GNTST_bad_dev_addr`.
    BadDevAddr = -6,
    /// `GNTST_no_device_space`.
    NoDeviceSpace = -7,
    /// `GNTST_permission_denied`: granted to another domain, or read-only.
    PermissionDenied = -8,
    /// `GNTST_bad_page`: the granted frame is not the domain's memory.
    BadPage = -9,
    /// `GNTST_bad_copy_arg`: copy crosses a page or has a bad length.
    BadCopyArg = -10,
    /// `GNTST_address_too_big`.
    AddressTooBig = -11,
    /// `GNTST_eagain`.
    Eagain = -12,
    /// `GNTST_no_space`.
    NoSpace = -13,
}

impl GrantStatus {
    /// The status as the signed code Xen writes.
    pub fn code(self) -> i16 {
        self as i16
    }

    /// The status for a code, `None` if Xen defines no such code.
    pub fn from_code(code: i16) -> Option<GrantStatus> {
        use GrantStatus::*;
        Some(match code {
            0 => Okay,
            -1 => GeneralError,
            -2 => BadDomain,
            -3 => BadGntref,
            -4 => BadHandle,
            -5 => BadVirtAddr,
            -6 => BadDevAddr,
            -7 => NoDeviceSpace,
            -8 => PermissionDenied,
            -9 => BadPage,
            -10 => BadCopyArg,
            -11 => AddressTooBig,
            -12 => Eagain,
            -13 => NoSpace,
            _ => return None,
        })
    }

    /// Xen's name for the code.
    pub fn name(self) -> &'static str {
        use GrantStatus::*;
        match self {
            Okay => "GNTST_okay",
            GeneralError => "GNTST_general_error",
            BadDomain => "GNTST_bad_domain",
            BadGntref => "GNTST_bad_gntref",
            BadHandle => "GNTST_bad_handle",
            BadVirtAddr => "GNTST_bad_virt_addr",
            BadDevAddr => "GNTST_bad_dev_addr",
            NoDeviceSpace => "GNTST_no_device_space",
            PermissionDenied => "GNTST_permission_denied",
            BadPage => "GNTST_bad_page",
            BadCopyArg => "GNTST_bad_copy_arg",
            AddressTooBig => "GNTST_address_too_big",
            Eagain => "GNTST_eagain",
            NoSpace => "GNTST_no_space",
        }
    }
}

impl fmt::Display for GrantStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.name(), self.code())
    }
}

/// A platform operation that failed.
#[derive(Debug, thiserror::Error)]
pub enum PlatformError {
    /// A grant operation failed with a Xen status.
    #[error("grant operation on domain {dom} gref {gref} failed: {status}")]
    Grant {
        /// The granting domain.
        dom: DomId,
        /// The grant reference.
        gref: GrantRef,
        /// Xen's status.
        status: GrantStatus,
    },
    /// Revoking a grant failed because the peer still maps or copies the page.
    #[error("grant {gref} is still in use by domain {dom} (mapped or being copied); retry later")]
    GrantInUse {
        /// The grantee.
        dom: DomId,
        /// The grant reference.
        gref: GrantRef,
    },
    /// Out of guest memory, grant entries or ports.
    #[error("out of {what} in domain {dom}: {detail}")]
    Exhausted {
        /// What ran out.
        what: &'static str,
        /// The domain.
        dom: DomId,
        /// Sizes involved, and what to change.
        detail: String,
    },
    /// An event-channel operation failed.
    #[error("event channel: {0}")]
    Event(String),
    /// A domain of the emulated platform does not exist or cannot be opened.
    #[error("domain {dom}: {detail}")]
    NoDomain {
        /// The domain.
        dom: DomId,
        /// Why.
        detail: String,
    },
    /// An invalid argument of ours.
    #[error("invalid argument: {0}")]
    Invalid(String),
    /// A system call failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// A shared-memory access failed.
    #[error(transparent)]
    Mem(#[from] netstage_ring::MemError),
    /// The platform cannot do this (the message says why and what to use instead).
    #[error("unsupported: {0}")]
    Unsupported(String),
}

impl PlatformError {
    pub(crate) fn io(what: impl Into<String>, source: std::io::Error) -> PlatformError {
        PlatformError::Io {
            what: what.into(),
            source,
        }
    }
}

/// Result of platform operations.
pub type Result<T, E = PlatformError> = std::result::Result<T, E>;

/// What revokes and frees shared pages when they are dropped.
pub(crate) type ReleaseFn = Box<dyn FnOnce(&[GrantRef]) + Send + Sync>;

/// Pages this domain allocated and granted to a peer (gntalloc-style). The grants are
/// revoked by [`GrantExport::end_access`], or when this value is dropped; a page still in use
/// by the peer is then kept out of circulation until its grant can be revoked, as Linux does.
pub struct SharedPages {
    /// The pages, contiguous in this domain's address space.
    pub mem: SharedMem,
    /// One grant reference per page, in order.
    pub grefs: Vec<GrantRef>,
    pub(crate) ended: std::sync::Arc<std::sync::atomic::AtomicBool>,
    pub(crate) release: Option<ReleaseFn>,
}

impl fmt::Debug for SharedPages {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SharedPages")
            .field("len", &self.mem.len())
            .field("grefs", &self.grefs)
            .finish()
    }
}

impl Drop for SharedPages {
    fn drop(&mut self) {
        if let Some(release) = self.release.take() {
            release(&self.grefs);
        }
    }
}

/// Sharing this domain's pages with another domain.
pub trait GrantExport: Send + Sync {
    /// This domain's id.
    fn domid(&self) -> DomId;

    /// Allocates `count` zeroed, contiguous pages and grants each to `remote`, read-only or
    /// writable.
    fn share(&self, remote: DomId, count: usize, writable: bool) -> Result<SharedPages>;

    /// Revokes the grants of `pages` now. Fails with [`PlatformError::GrantInUse`] (and
    /// revokes none) while the peer maps or copies any of them, as on Xen.
    fn end_access(&self, pages: &SharedPages) -> Result<()>;

    /// Grants page `i` of `pages` (shared by this domain, its access ended by
    /// [`GrantExport::end_page_access`]) to domain `to` again under its reference
    /// `pages.grefs[i]`, writable if `rw`, and returns that reference: Linux's
    /// `gnttab_grant_foreign_access_ref`, one write of the entry (frame, domid, then flags)
    /// in this domain's own table and no hypercall. What a frontend that grants a page per
    /// packet does (Linux netfront without persistent grants).
    fn grant_page(&self, pages: &SharedPages, i: usize, to: DomId, rw: bool) -> Result<GrantRef>;

    /// Ends the access of page `index` of `pages` to its grantee: Linux's
    /// `gnttab_end_foreign_access_ref`, one check-and-clear of the entry. Fails with
    /// [`PlatformError::GrantInUse`] (and leaves the page granted) while the peer maps or
    /// copies it; the caller must not reuse the page until a later call succeeds.
    fn end_page_access(&self, pages: &SharedPages, index: usize) -> Result<()>;
}

/// One side of a grant copy that lives in another domain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ForeignRef {
    /// The granting domain.
    pub dom: DomId,
    /// Its grant reference.
    pub gref: GrantRef,
    /// Offset within the granted page; `offset + len` must stay within the page.
    pub offset: u16,
}

/// One grant-copy operation (`gnttab_copy`), between a foreign grant and local memory.
#[derive(Debug)]
pub enum CopyOp<'a> {
    /// Copy from the foreign page into `dst` (`dst.len()` bytes).
    FromForeign {
        /// Source.
        src: ForeignRef,
        /// Destination.
        dst: &'a mut [u8],
    },
    /// Copy `src` into the foreign page.
    ToForeign {
        /// Source.
        src: &'a [u8],
        /// Destination.
        dst: ForeignRef,
    },
}

impl CopyOp<'_> {
    /// The foreign side.
    pub fn foreign(&self) -> ForeignRef {
        match self {
            CopyOp::FromForeign { src, .. } => *src,
            CopyOp::ToForeign { dst, .. } => *dst,
        }
    }

    /// Bytes to copy.
    pub fn len(&self) -> usize {
        match self {
            CopyOp::FromForeign { dst, .. } => dst.len(),
            CopyOp::ToForeign { src, .. } => src.len(),
        }
    }

    /// Whether the op copies nothing.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A batch of grant copies issued with one call, and their statuses.
#[derive(Debug, Default)]
pub struct GrantCopyBatch<'a> {
    /// The operations.
    pub ops: Vec<CopyOp<'a>>,
    /// One status per operation after [`GrantImport::copy`].
    pub status: Vec<GrantStatus>,
}

impl<'a> GrantCopyBatch<'a> {
    /// An empty batch.
    pub fn new() -> Self {
        GrantCopyBatch {
            ops: Vec::new(),
            status: Vec::new(),
        }
    }

    /// Adds a copy from a foreign grant into `dst`.
    pub fn from_foreign(&mut self, src: ForeignRef, dst: &'a mut [u8]) {
        self.ops.push(CopyOp::FromForeign { src, dst });
    }

    /// Adds a copy of `src` into a foreign grant.
    pub fn to_foreign(&mut self, src: &'a [u8], dst: ForeignRef) {
        self.ops.push(CopyOp::ToForeign { src, dst });
    }

    /// Whether every operation succeeded (after a copy).
    pub fn all_okay(&self) -> bool {
        self.status.len() == self.ops.len() && self.status.iter().all(|s| *s == GrantStatus::Okay)
    }
}

/// Reaching other domains' granted pages.
pub trait GrantImport: Send + Sync {
    /// This domain's id.
    fn domid(&self) -> DomId;

    /// Maps the grants `grefs` of domain `dom` contiguously, read-only (`PROT_READ`) or
    /// writable. Every grant is checked; if any fails, those already mapped are unmapped and
    /// the first failure is returned. The mapping is undone when the last clone of the
    /// returned window is dropped.
    fn map(&self, dom: DomId, grefs: &[GrantRef], writable: bool) -> Result<SharedMem>;

    /// Maps each of the grants `refs` of domain `dom` as a page of its own, read-only or
    /// writable (`rw`), with one call, into `p` (first unmapping what `p` held): Xen's
    /// `GNTTABOP_map_grant_ref` of one operation per page, each with its own status. A grant
    /// that fails fails only its page ([`MappedPages::status`]); the others are mapped.
    /// Charged as one call and a map per page mapped; [`MappedPages::unmap`] (or the next
    /// map into `p`, or dropping it) unmaps them all with one call. Errors only if the
    /// call itself fails. `p` keeps its storage, so that maps into the same `p` allocate
    /// nothing once it has grown to the batch size (on the emulated platform).
    fn map_each(&self, dom: DomId, refs: &[GrantRef], rw: bool, p: &mut MappedPages) -> Result<()>;

    /// Performs every copy of `ops` with one call and writes one status per operation into
    /// `status` (which must be as long as `ops`; a failed operation does not stop the
    /// others). Errors only if the call itself fails. Allocates nothing on the emulated
    /// platform once its per-thread scratch has grown to the batch size.
    fn copy_ops(&self, ops: &mut [CopyOp<'_>], status: &mut [GrantStatus]) -> Result<()>;

    /// Performs every copy of the batch with one call and fills `batch.status`, one status
    /// per operation (a failed operation does not stop the others). Errors only if the call
    /// itself fails.
    fn copy(&self, batch: &mut GrantCopyBatch<'_>) -> Result<()> {
        batch.status.clear();
        batch.status.resize(batch.ops.len(), GrantStatus::Okay);
        self.copy_ops(&mut batch.ops, &mut batch.status)
    }
}

/// What a platform keeps of the pages a [`MappedPages`] holds, to unmap them.
pub(crate) trait MapHold: std::any::Any + Send + Sync {
    /// Unmaps the pages of the last map whose status is okay (their windows are gone),
    /// with one call; does nothing if none is.
    fn unmap(&mut self, grefs: &[GrantRef], status: &[GrantStatus], writable: bool);

    /// Itself, to be told apart from another platform's.
    fn as_any_mut(&mut self) -> &mut dyn std::any::Any;
}

/// Pages of one domain mapped by one [`GrantImport::map_each`] call, each with its own
/// window and status. Unmapped together, with one call, by [`MappedPages::unmap`], by the
/// next map into it or when dropped. Its storage stays from map to map: keep one per queue.
#[derive(Debug, Default)]
pub struct MappedPages {
    pub(crate) dom: DomId,
    pub(crate) writable: bool,
    pub(crate) grefs: Vec<GrantRef>,
    pub(crate) status: Vec<GrantStatus>,
    /// One per page; `None` where the page failed.
    pub(crate) windows: Vec<Option<SharedMem>>,
    pub(crate) hold: Hold,
}

/// The platform's [`MapHold`] of a [`MappedPages`], once it has mapped.
#[derive(Default)]
pub(crate) struct Hold(pub(crate) Option<Box<dyn MapHold>>);

impl fmt::Debug for Hold {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.0.is_some() { "Hold" } else { "None" })
    }
}

impl MappedPages {
    /// Room for maps of `pages` pages before the storage first grows.
    pub fn with_capacity(pages: usize) -> MappedPages {
        MappedPages {
            grefs: Vec::with_capacity(pages),
            status: Vec::with_capacity(pages),
            windows: Vec::with_capacity(pages),
            dom: 0,
            writable: false,
            hold: Hold::default(),
        }
    }

    /// Pages of the last map (mapped or failed); 0 once unmapped.
    pub fn len(&self) -> usize {
        self.grefs.len()
    }

    /// Whether it holds no map.
    pub fn is_empty(&self) -> bool {
        self.grefs.is_empty()
    }

    /// The status of page `i` of the last map (`GNTST_okay`: mapped).
    pub fn status(&self, i: usize) -> Option<GrantStatus> {
        self.status.get(i).copied()
    }

    /// Pages of the last map that are mapped.
    pub fn mapped(&self) -> usize {
        self.status
            .iter()
            .filter(|s| **s == GrantStatus::Okay)
            .count()
    }

    /// Page `i` of the last map, or the reason it is not mapped.
    pub fn page(&self, i: usize) -> Result<MappedPage<'_>> {
        let (Some(gref), Some(status)) = (self.grefs.get(i), self.status.get(i)) else {
            return Err(PlatformError::Invalid(format!(
                "page {i} of a map of {} pages",
                self.grefs.len()
            )));
        };
        match self.windows.get(i).and_then(Option::as_ref) {
            Some(mem) if *status == GrantStatus::Okay => Ok(MappedPage { mem }),
            _ => Err(PlatformError::Grant {
                dom: self.dom,
                gref: *gref,
                status: *status,
            }),
        }
    }

    /// Unmaps every page of the last map with one call (nothing if none is mapped).
    pub fn unmap(&mut self) {
        // The windows go first: nothing may reach a page once it is unmapped.
        self.windows.clear();
        if let Some(hold) = self.hold.0.as_mut() {
            hold.unmap(&self.grefs, &self.status, self.writable);
        }
        self.grefs.clear();
        self.status.clear();
    }

    /// Unmaps what it held and starts a map of `grefs`: every page failed
    /// (`GNTST_general_error`) and without a window until the platform maps it.
    pub(crate) fn begin(&mut self, dom: DomId, grefs: &[GrantRef], writable: bool) -> Result<()> {
        self.unmap();
        if grefs.is_empty() {
            return Err(PlatformError::Invalid("map of zero grants".into()));
        }
        self.dom = dom;
        self.writable = writable;
        self.grefs.extend_from_slice(grefs);
        self.status.resize(grefs.len(), GrantStatus::GeneralError);
        self.windows.resize(grefs.len(), None);
        Ok(())
    }
}

impl Drop for MappedPages {
    fn drop(&mut self) {
        self.unmap();
    }
}

/// The platform's hold of type `H` in `hold` (made by `make` unless it is an `H` that
/// `same` accepts; its pages must be unmapped).
pub(crate) fn hold_as<H: MapHold>(
    hold: &mut Hold,
    make: impl FnOnce() -> H,
    same: impl Fn(&H) -> bool,
) -> Result<&mut H> {
    let reuse = hold
        .0
        .as_mut()
        .and_then(|h| h.as_any_mut().downcast_mut::<H>())
        .is_some_and(|h| same(h));
    if !reuse {
        hold.0 = Some(Box::new(make()));
    }
    hold.0
        .as_mut()
        .and_then(|h| h.as_any_mut().downcast_mut::<H>())
        .ok_or_else(|| PlatformError::Invalid("map hold of another platform".into()))
}

/// One page mapped by [`GrantImport::map_each`], borrowed from its [`MappedPages`] (so
/// that nothing reaches it after the unmap).
#[derive(Debug, Clone, Copy)]
pub struct MappedPage<'a> {
    mem: &'a SharedMem,
}

impl MappedPage<'_> {
    /// Copies `dst.len()` bytes at `offset` of the page out.
    pub fn read_at(&self, offset: usize, dst: &mut [u8]) -> Result<()> {
        Ok(self.mem.read_at(offset, dst)?)
    }

    /// Copies `src` into the page at `offset` (a writable map only).
    pub fn write_at(&self, offset: usize, src: &[u8]) -> Result<()> {
        Ok(self.mem.write_at(offset, src)?)
    }

    /// Whether writes are allowed.
    pub fn is_writable(&self) -> bool {
        self.mem.is_writable()
    }

    /// Bytes of the page.
    pub fn len(&self) -> usize {
        self.mem.len()
    }

    /// Whether the page is empty (never).
    pub fn is_empty(&self) -> bool {
        self.mem.is_empty()
    }
}

/// The check every [`GrantImport::copy_ops`] makes first: one status slot per operation.
pub(crate) fn check_copy_batch(ops: &[CopyOp<'_>], status: &[GrantStatus]) -> Result<()> {
    if status.len() != ops.len() {
        return Err(PlatformError::Invalid(format!(
            "{} copy operations but {} status slots",
            ops.len(),
            status.len()
        )));
    }
    Ok(())
}

/// Counters of one event port.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EventStats {
    /// Notifications sent through this port.
    pub sent: u64,
    /// Events received (consumed by poll or wait).
    pub received: u64,
    /// Waits that had to block (sleep in the kernel) before an event or the timeout.
    pub blocked: u64,
}

/// Calls `look` until it finds something (returns `Ok(true)`) or `until` passes
/// (`Ok(false)`): how a wait spins before it blocks. Reading the clock costs more than a
/// look, so the clock is read every 64th look; the CPU is yielded then too, so that a
/// thread sharing the core (one feeding a queue, or one waiting for what it receives) runs
/// instead of waiting for the spin to end, as Linux's busy polling stops when another task
/// needs the CPU (alone on a core, the yield returns at once).
pub fn spin_until<E>(
    until: Instant,
    mut look: impl FnMut() -> std::result::Result<bool, E>,
) -> std::result::Result<bool, E> {
    let mut looks = 0u32;
    loop {
        if look()? {
            return Ok(true);
        }
        looks = looks.wrapping_add(1);
        if looks % 64 == 0 {
            if Instant::now() >= until {
                return Ok(false);
            }
            std::thread::yield_now();
        }
        std::hint::spin_loop();
    }
}

/// How a queue's blocking wait spins before it arms its rings and blocks: calls `look`
/// (a look at the rings, unarmed, and at the port) through [`spin_until`] for the port's
/// `spin` (at most `timeout`), until it finds something; what it found first, if anything.
pub fn spin_looking<T, E>(
    spin: Duration,
    timeout: Option<Duration>,
    mut look: impl FnMut() -> std::result::Result<Option<T>, E>,
) -> std::result::Result<Option<T>, E> {
    let spin = timeout.map_or(spin, |t| t.min(spin));
    let mut found = None;
    if !spin.is_zero() {
        spin_until(Instant::now() + spin, || {
            found = look()?;
            Ok(found.is_some())
        })?;
    }
    Ok(found)
}

/// One bound event channel. Unbound when dropped.
pub trait EventPort: Send + Sync {
    /// The local port number.
    fn port(&self) -> Port;

    /// Sends an event to the remote end (`EVTCHNOP_send`).
    fn notify(&self) -> Result<()>;

    /// Consumes a pending event without blocking; returns whether there was one.
    fn poll(&self) -> Result<bool>;

    /// Waits for an event, spinning briefly and then blocking, until `timeout` (forever if
    /// `None`). Returns whether an event arrived.
    fn wait(&self, timeout: Option<Duration>) -> Result<bool>;

    /// How long a caller that spins itself, looking at its rings as well as this port,
    /// should spin before it arms its rings and calls [`EventPort::block`]. Zero (the
    /// default) for a port whose [`EventPort::wait`] does its own spinning: the caller then
    /// arms at once and `block` is `wait`, spin included.
    fn spin(&self) -> Duration {
        Duration::ZERO
    }

    /// [`EventPort::wait`] without the spin: for a caller that has just spun itself, so
    /// that it need not arm its rings' event indexes (and have the peer notify it) until it
    /// is about to sleep.
    fn block(&self, timeout: Option<Duration>) -> Result<bool> {
        self.wait(timeout)
    }

    /// This port's counters.
    fn stats(&self) -> EventStats;

    /// Makes a current or the next [`EventPort::wait`] on this port return, without an event
    /// from the peer: how another thread of this domain hands the port's owner new work.
    fn wake(&self) -> Result<()>;

    /// Resolves now what the first [`EventPort::notify`] would otherwise look up (the
    /// peer's end, once it is bound), so that no notify on a datapath allocates. Call it
    /// once the peer has bound; before that it does nothing.
    fn prepare(&self) -> Result<()> {
        Ok(())
    }
}

/// Allocating and binding event channels.
pub trait EventChannels: Send + Sync {
    /// The port type.
    type Port: EventPort;

    /// Allocates a port for `remote` to bind to (`EVTCHNOP_alloc_unbound`).
    fn alloc_unbound(&self, remote: DomId) -> Result<Self::Port>;

    /// Binds to `remote_port`, allocated unbound for us by `remote`
    /// (`EVTCHNOP_bind_interdomain`).
    fn bind_interdomain(&self, remote: DomId, remote_port: Port) -> Result<Self::Port>;
}

/// What the toolstack knows about domains.
pub trait DomainInfo: Send + Sync {
    /// An id of the running instance of domain `dom` (`None` if it does not run): a domain
    /// destroyed and created again with the same id gets a different instance.
    fn domain_instance(&self, dom: DomId) -> Option<u64>;

    /// Whether domain `dom` exists and runs (a destroyed or crashed domain does not).
    fn domain_alive(&self, dom: DomId) -> bool {
        self.domain_instance(dom).is_some()
    }

    /// Drops everything this domain keeps of `dom` (its cached memory and table mappings),
    /// after `dom` was destroyed: a domain created later with the same id is a new one.
    fn forget_domain(&self, dom: DomId);
}
