//! The ioctl interface of Linux's Xen devices, as `include/uapi/xen/{gntalloc,gntdev,evtchn}.h`
//! define it (installed by Debian's `libxen-dev` as `/usr/include/xen/sys/*.h`): request
//! structures byte for byte, and the request numbers, which encode each structure's size.
//! `platform/tests/xen_abi.rs` checks every size, offset and number against those headers.

use std::mem::size_of;

/// `_IOC(_IOC_NONE, ty, nr, size)`: the Xen devices' ioctls carry no direction bits.
pub const fn ioc_none(ty: u8, nr: u8, size: usize) -> u64 {
    ((size as u64) << 16) | ((ty as u64) << 8) | nr as u64
}

/// `struct ioctl_gntalloc_alloc_gref`, with its first grant reference (the C struct's
/// one-element array; `count` references follow in the buffer passed).
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct GntallocAllocGref {
    /// The domain given access.
    pub domid: u16,
    /// `GNTALLOC_FLAG_WRITABLE` or 0.
    pub flags: u16,
    /// Pages to allocate.
    pub count: u32,
    /// Out: the `mmap` offset of the pages.
    pub index: u64,
    /// Out: the grant references, one per page (`count` of them).
    pub gref_ids: [u32; 1],
}

/// `GNTALLOC_FLAG_WRITABLE`.
pub const GNTALLOC_FLAG_WRITABLE: u16 = 1;

/// `struct ioctl_gntalloc_dealloc_gref`.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct GntallocDeallocGref {
    /// The offset `IOCTL_GNTALLOC_ALLOC_GREF` returned.
    pub index: u64,
    /// Pages.
    pub count: u32,
}

/// `IOCTL_GNTALLOC_ALLOC_GREF`.
pub const IOCTL_GNTALLOC_ALLOC_GREF: u64 = ioc_none(b'G', 5, size_of::<GntallocAllocGref>());
/// `IOCTL_GNTALLOC_DEALLOC_GREF`.
pub const IOCTL_GNTALLOC_DEALLOC_GREF: u64 = ioc_none(b'G', 6, size_of::<GntallocDeallocGref>());

/// `struct ioctl_gntdev_grant_ref`.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct GntdevGrantRef {
    /// The granting domain.
    pub domid: u32,
    /// Its grant reference.
    pub r#ref: u32,
}

/// `struct ioctl_gntdev_map_grant_ref`, with its first reference (`count` follow).
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct GntdevMapGrantRef {
    /// References.
    pub count: u32,
    /// Zero.
    pub pad: u32,
    /// Out: the `mmap` offset of the mapping.
    pub index: u64,
    /// The references (`count` of them).
    pub refs: [GntdevGrantRef; 1],
}

/// `struct ioctl_gntdev_unmap_grant_ref`.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct GntdevUnmapGrantRef {
    /// The offset `IOCTL_GNTDEV_MAP_GRANT_REF` returned.
    pub index: u64,
    /// References.
    pub count: u32,
    /// Zero.
    pub pad: u32,
}

/// The foreign side of a grant-copy segment.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct GntdevCopyForeign {
    /// Grant reference.
    pub r#ref: u32,
    /// Offset in the granted page.
    pub offset: u16,
    /// The granting domain.
    pub domid: u16,
}

/// One side of a grant-copy segment: local memory or a foreign grant.
#[repr(C)]
#[derive(Clone, Copy)]
pub union GntdevCopySide {
    /// Local memory (the flag for this side is clear).
    pub virt: *mut core::ffi::c_void,
    /// A foreign grant (`GNTCOPY_source_gref` / `GNTCOPY_dest_gref` set).
    pub foreign: GntdevCopyForeign,
}

impl std::fmt::Debug for GntdevCopySide {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("GntdevCopySide")
    }
}

/// `struct ioctl_gntdev_grant_copy_segment`.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct GntdevGrantCopySegment {
    /// Source.
    pub source: GntdevCopySide,
    /// Destination.
    pub dest: GntdevCopySide,
    /// Bytes.
    pub len: u16,
    /// `GNTCOPY_source_gref` and/or `GNTCOPY_dest_gref`.
    pub flags: u16,
    /// Out: a `GNTST_*` code.
    pub status: i16,
}

/// `GNTCOPY_source_gref`: the source is a foreign grant.
pub const GNTCOPY_SOURCE_GREF: u16 = 1 << 0;
/// `GNTCOPY_dest_gref`: the destination is a foreign grant.
pub const GNTCOPY_DEST_GREF: u16 = 1 << 1;

/// `struct ioctl_gntdev_grant_copy`.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct GntdevGrantCopy {
    /// Segments.
    pub count: u32,
    /// The segments.
    pub segments: *mut GntdevGrantCopySegment,
}

/// `IOCTL_GNTDEV_MAP_GRANT_REF`.
pub const IOCTL_GNTDEV_MAP_GRANT_REF: u64 = ioc_none(b'G', 0, size_of::<GntdevMapGrantRef>());
/// `IOCTL_GNTDEV_UNMAP_GRANT_REF`.
pub const IOCTL_GNTDEV_UNMAP_GRANT_REF: u64 = ioc_none(b'G', 1, size_of::<GntdevUnmapGrantRef>());
/// `IOCTL_GNTDEV_GRANT_COPY`.
pub const IOCTL_GNTDEV_GRANT_COPY: u64 = ioc_none(b'G', 8, size_of::<GntdevGrantCopy>());

/// `struct ioctl_evtchn_bind_interdomain`.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct EvtchnBindInterdomain {
    /// The remote domain.
    pub remote_domain: u32,
    /// Its unbound port.
    pub remote_port: u32,
}

/// `struct ioctl_evtchn_bind_unbound_port`.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct EvtchnBindUnboundPort {
    /// The domain that may bind to it.
    pub remote_domain: u32,
}

/// `struct ioctl_evtchn_notify` (and `ioctl_evtchn_unbind`, the same shape).
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct EvtchnPort {
    /// The local port.
    pub port: u32,
}

/// `IOCTL_EVTCHN_BIND_INTERDOMAIN`: returns the local port.
pub const IOCTL_EVTCHN_BIND_INTERDOMAIN: u64 =
    ioc_none(b'E', 1, size_of::<EvtchnBindInterdomain>());
/// `IOCTL_EVTCHN_BIND_UNBOUND_PORT`: returns the local port.
pub const IOCTL_EVTCHN_BIND_UNBOUND_PORT: u64 =
    ioc_none(b'E', 2, size_of::<EvtchnBindUnboundPort>());
/// `IOCTL_EVTCHN_UNBIND`.
pub const IOCTL_EVTCHN_UNBIND: u64 = ioc_none(b'E', 3, size_of::<EvtchnPort>());
/// `IOCTL_EVTCHN_NOTIFY`.
pub const IOCTL_EVTCHN_NOTIFY: u64 = ioc_none(b'E', 4, size_of::<EvtchnPort>());
