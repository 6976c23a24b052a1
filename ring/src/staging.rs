//! The slot data list of the staging-grants RFC (revision 1).
//!
//! The frontend grants, once per connection, a set of data pages cut into fixed-size slots,
//! and a *data list* describing them: pages of 8-octet [`StagingEntry`] records, 512 per
//! page. A request's `id` selects its slot, so up to `data-len` bytes of a packet can be
//! memcpy'd instead of grant-copied. Choices the RFC left open (decided in
//! `docs/protocol.md`, "Slot data list"):
//!
//! - **Entry packing**: `{gref: u32 @0, offset: u16 @4, flags: u16 @6}`; `flags` is
//!   reserved and must be 0.
//! - **Termination**: an entry with `gref` 0 ends a list; a list whose last page is
//!   completely full has no terminator.
//! - **`data-len` <= 4096**: one entry per slot, `offset + data-len <= 4096` (slots never cross
//!   a page). **`data-len` > 4096** ("copy-only" when it covers a whole packet): a slot spans
//!   `ceil(data-len / 4096)` whole pages, one entry each, at offset 0; slot `i` owns entries
//!   `[i * k, (i + 1) * k)`.
//! - **Ids**: TX slot ids are `0..tx_slots`; RX slot ids continue globally at `tx_slots`
//!   (the RX request `id` is the local index, `global = tx_slots + id`), which is what
//!   `NETTXF_staging_buffer` names.
//!
//! A backend reads the list once ([`read_list`]), validates every entry, maps the distinct
//! grants and addresses slots through a [`SlotArea`], which bounds every access by the
//! negotiated `data-len`.
//!
//! How a packet's bytes meet its slots comes in two encodings: netstage's `slots` moves the
//! head out of the grants (`NETTXF_staged`, see `netif`), and RFC revision 1's own replicates
//! it ([`ReplicatedHead`]).

use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

use crate::mem::{MemError, SharedMem, XEN_PAGE_SIZE};

/// One data-list entry.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Default, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
#[repr(C)]
pub struct StagingEntry {
    /// Grant of the page holding (this part of) the slot; 0 terminates the list.
    pub gref: u32,
    /// Offset of the slot in that page.
    pub offset: u16,
    /// Reserved, 0.
    pub flags: u16,
}

const _: () = assert!(std::mem::size_of::<StagingEntry>() == 8);

/// Entries per 4 KiB list page.
pub const ENTRIES_PER_PAGE: usize = XEN_PAGE_SIZE / 8;
/// Smallest allowed `data-len`.
pub const MIN_DATA_LEN: u32 = 64;
/// Largest allowed `data-len`.
pub const MAX_DATA_LEN: u32 = 65536;

/// A data-list problem: bad parameters of ours, or a malformed list from the peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum StagingError {
    /// `data-len` out of range.
    #[error("data-len {0} is out of range (64..=65536)")]
    BadDataLen(u32),
    /// No slots.
    #[error("a data list needs at least one slot")]
    NoSlots,
    /// The list ended (gref 0) before every slot was described.
    #[error("data list ends after {found} entries, {expected} expected")]
    ListTooShort {
        /// Entries before the terminator.
        found: usize,
        /// Entries the layout requires.
        expected: usize,
    },
    /// The list goes on past the expected entries (no terminator).
    #[error("data list has no terminator after its {expected} entries")]
    MissingTerminator {
        /// Entries the layout requires.
        expected: usize,
    },
    /// An entry names a range outside its page, or has reserved bits set.
    #[error("data-list entry {index} is invalid (gref {gref}, offset {offset}, flags {flags:#x})")]
    BadEntry {
        /// Entry index.
        index: usize,
        /// Its gref.
        gref: u32,
        /// Its offset.
        offset: u16,
        /// Its flags.
        flags: u16,
    },
    /// Wrong number of list or data pages supplied.
    #[error("{got} pages supplied, {expected} needed")]
    PageCount {
        /// Pages given.
        got: usize,
        /// Pages required.
        expected: usize,
    },
    /// A mapped page for a gref was not supplied.
    #[error("no mapping supplied for gref {0}")]
    Unmapped(u32),
    /// A slot id outside the list (a peer fault when the id came from a request).
    #[error("slot id {id} is out of range (list has {slots} slots)")]
    SlotOutOfRange {
        /// The id.
        id: u32,
        /// Slots in the list.
        slots: u32,
    },
    /// A byte range outside the slot.
    #[error("range {offset}+{len} lies outside a {data_len}-byte slot")]
    RangeOutOfSlot {
        /// Offset in the slot.
        offset: usize,
        /// Length.
        len: usize,
        /// `data-len`.
        data_len: u32,
    },
    /// A shared-memory access failed.
    #[error(transparent)]
    Mem(#[from] MemError),
}

/// Geometry of one direction's slots.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SlotLayout {
    data_len: u32,
    slots: u32,
}

impl SlotLayout {
    /// `slots` slots (normally the ring size) of `data_len` bytes each.
    pub fn new(data_len: u32, slots: u32) -> Result<SlotLayout, StagingError> {
        if !(MIN_DATA_LEN..=MAX_DATA_LEN).contains(&data_len) {
            return Err(StagingError::BadDataLen(data_len));
        }
        if slots == 0 {
            return Err(StagingError::NoSlots);
        }
        Ok(SlotLayout { data_len, slots })
    }

    /// Bytes per slot (`data-len`).
    pub fn data_len(&self) -> u32 {
        self.data_len
    }

    /// Number of slots.
    pub fn slots(&self) -> u32 {
        self.slots
    }

    /// Whether a slot spans several pages (`data-len` > 4096).
    pub fn multi_page(&self) -> bool {
        self.data_len as usize > XEN_PAGE_SIZE
    }

    /// Entries (and pages, when multi-page) per slot.
    pub fn entries_per_slot(&self) -> usize {
        (self.data_len as usize).div_ceil(XEN_PAGE_SIZE)
    }

    /// Entries in the list.
    pub fn entries(&self) -> usize {
        self.slots as usize * self.entries_per_slot()
    }

    /// Pages of the list itself.
    pub fn list_pages(&self) -> usize {
        self.entries().div_ceil(ENTRIES_PER_PAGE)
    }

    /// Slots per data page when slots share pages (1 when multi-page).
    pub fn slots_per_page(&self) -> usize {
        if self.multi_page() {
            1
        } else {
            XEN_PAGE_SIZE / self.data_len as usize
        }
    }

    /// Data pages the frontend needs with the natural packing.
    pub fn data_pages(&self) -> usize {
        if self.multi_page() {
            self.entries()
        } else {
            (self.slots as usize).div_ceil(self.slots_per_page())
        }
    }

    /// Shared memory kept granted for this direction: data pages plus list pages.
    pub fn granted_bytes(&self) -> usize {
        (self.data_pages() + self.list_pages()) * XEN_PAGE_SIZE
    }

    /// The list entries of the natural packing, given the grants of the data pages in order.
    pub fn natural_entries(&self, data_grefs: &[u32]) -> Result<Vec<StagingEntry>, StagingError> {
        if data_grefs.len() != self.data_pages() {
            return Err(StagingError::PageCount {
                got: data_grefs.len(),
                expected: self.data_pages(),
            });
        }
        let mut v = Vec::with_capacity(self.entries());
        if self.multi_page() {
            v.extend(data_grefs.iter().map(|&gref| StagingEntry {
                gref,
                offset: 0,
                flags: 0,
            }));
        } else {
            let per = self.slots_per_page();
            for s in 0..self.slots as usize {
                v.push(StagingEntry {
                    gref: data_grefs[s / per],
                    // < 4096: fits u16.
                    offset: ((s % per) * self.data_len as usize) as u16,
                    flags: 0,
                });
            }
        }
        Ok(v)
    }

    fn check_entry(&self, index: usize, e: &StagingEntry) -> Result<(), StagingError> {
        let span = (self.data_len as usize).min(XEN_PAGE_SIZE);
        let ok = e.gref != 0
            && e.flags == 0
            && if self.multi_page() {
                e.offset == 0
            } else {
                usize::from(e.offset) + span <= XEN_PAGE_SIZE
            };
        if ok {
            Ok(())
        } else {
            Err(StagingError::BadEntry {
                index,
                gref: e.gref,
                offset: e.offset,
                flags: e.flags,
            })
        }
    }
}

/// Frontend: writes `entries` (which must match `layout`) into the list pages, with a
/// terminator unless the last page is full.
pub fn write_list(
    layout: &SlotLayout,
    list: &[SharedMem],
    entries: &[StagingEntry],
) -> Result<(), StagingError> {
    if list.len() != layout.list_pages() {
        return Err(StagingError::PageCount {
            got: list.len(),
            expected: layout.list_pages(),
        });
    }
    if entries.len() != layout.entries() {
        return Err(StagingError::ListTooShort {
            found: entries.len(),
            expected: layout.entries(),
        });
    }
    for (i, e) in entries.iter().enumerate() {
        layout.check_entry(i, e)?;
        list[i / ENTRIES_PER_PAGE].write_obj((i % ENTRIES_PER_PAGE) * 8, e)?;
    }
    let n = entries.len();
    if n % ENTRIES_PER_PAGE != 0 {
        list[n / ENTRIES_PER_PAGE]
            .write_obj((n % ENTRIES_PER_PAGE) * 8, &StagingEntry::default())?;
    }
    Ok(())
}

/// Backend: reads the list once into private memory and validates it against the layout
/// negotiated through XenStore.
pub fn read_list(
    layout: &SlotLayout,
    list: &[SharedMem],
) -> Result<Vec<StagingEntry>, StagingError> {
    if list.len() != layout.list_pages() {
        return Err(StagingError::PageCount {
            got: list.len(),
            expected: layout.list_pages(),
        });
    }
    let n = layout.entries();
    let mut v = Vec::with_capacity(n);
    for i in 0..n {
        let e: StagingEntry = list[i / ENTRIES_PER_PAGE].read_obj((i % ENTRIES_PER_PAGE) * 8)?;
        if e.gref == 0 {
            return Err(StagingError::ListTooShort {
                found: i,
                expected: n,
            });
        }
        layout.check_entry(i, &e)?;
        v.push(e);
    }
    if n % ENTRIES_PER_PAGE != 0 {
        let t: StagingEntry = list[n / ENTRIES_PER_PAGE].read_obj((n % ENTRIES_PER_PAGE) * 8)?;
        if t.gref != 0 {
            return Err(StagingError::MissingTerminator { expected: n });
        }
    }
    Ok(v)
}

/// The grants an entry list refers to, each once, in first-use order (what to map).
pub fn distinct_grefs(entries: &[StagingEntry]) -> Vec<u32> {
    let mut seen = std::collections::HashSet::new();
    entries
        .iter()
        .filter(|e| seen.insert(e.gref))
        .map(|e| e.gref)
        .collect()
}

/// Slots addressed by id over mapped pages; every access is bounded by `data-len`.
#[derive(Debug, Clone)]
pub struct SlotArea {
    layout: SlotLayout,
    /// Per entry: the page window that holds it and the entry's offset in that page.
    loc: Vec<(SharedMem, u16)>,
}

impl SlotArea {
    /// Builds the addressing from validated `entries` and one mapped 4 KiB window per
    /// distinct gref (`pages` as `(gref, window)`).
    pub fn new(
        layout: SlotLayout,
        entries: &[StagingEntry],
        pages: &[(u32, SharedMem)],
    ) -> Result<SlotArea, StagingError> {
        if entries.len() != layout.entries() {
            return Err(StagingError::ListTooShort {
                found: entries.len(),
                expected: layout.entries(),
            });
        }
        let map: std::collections::HashMap<u32, &SharedMem> =
            pages.iter().map(|(g, m)| (*g, m)).collect();
        let mut loc = Vec::with_capacity(entries.len());
        for (i, e) in entries.iter().enumerate() {
            layout.check_entry(i, e)?;
            let page = map.get(&e.gref).ok_or(StagingError::Unmapped(e.gref))?;
            loc.push(((*page).sub(0, XEN_PAGE_SIZE)?, e.offset));
        }
        Ok(SlotArea { layout, loc })
    }

    /// The frontend's own view: `data_pages` in natural packing order.
    pub fn natural(layout: SlotLayout, data_pages: &[SharedMem]) -> Result<SlotArea, StagingError> {
        let fake: Vec<u32> = (1..=data_pages.len() as u32).collect();
        let entries = layout.natural_entries(&fake)?;
        let pages: Vec<(u32, SharedMem)> = fake
            .iter()
            .copied()
            .zip(data_pages.iter().cloned())
            .collect();
        SlotArea::new(layout, &entries, &pages)
    }

    /// The geometry.
    pub fn layout(&self) -> &SlotLayout {
        &self.layout
    }

    fn locate(&self, slot: u32, offset: usize, len: usize) -> Result<(), StagingError> {
        if slot >= self.layout.slots {
            return Err(StagingError::SlotOutOfRange {
                id: slot,
                slots: self.layout.slots,
            });
        }
        match offset.checked_add(len) {
            Some(end) if end <= self.layout.data_len as usize => Ok(()),
            _ => Err(StagingError::RangeOutOfSlot {
                offset,
                len,
                data_len: self.layout.data_len,
            }),
        }
    }

    /// Visits the page pieces of `[offset, offset + len)` of `slot`:
    /// `(window, offset in window, position in the range, piece length)`.
    fn pieces(
        &self,
        slot: u32,
        offset: usize,
        len: usize,
        mut f: impl FnMut(&SharedMem, usize, usize, usize) -> Result<(), StagingError>,
    ) -> Result<(), StagingError> {
        let mut r = Ok(());
        let mut done = 0;
        self.in_place(slot, offset, len, |idx, at, n| {
            if r.is_ok() {
                r = f(&self.loc[idx].0, at, done, n);
            }
            done += n;
        })?;
        r
    }

    /// Says where `len` bytes of `slot` at `offset` lie, to lend them in place: calls `f`
    /// with `(page, offset in it, length)` per page piece, in order, `page` indexing
    /// [`SlotArea::page`]. The peer can still write them: read each byte once, through the
    /// page window's checked methods.
    pub fn in_place(
        &self,
        slot: u32,
        offset: usize,
        len: usize,
        mut f: impl FnMut(usize, usize, usize),
    ) -> Result<(), StagingError> {
        self.locate(slot, offset, len)?;
        let eps = self.layout.entries_per_slot();
        let mut done = 0;
        while done < len {
            let p = offset + done;
            let (k, within) = (p / XEN_PAGE_SIZE, p % XEN_PAGE_SIZE);
            let idx = slot as usize * eps + k;
            let n = (len - done).min(XEN_PAGE_SIZE - within);
            f(idx, usize::from(self.loc[idx].1) + within, n);
            done += n;
        }
        Ok(())
    }

    /// The page window of entry `idx` ([`SlotArea::in_place`]'s `page`).
    pub fn page(&self, idx: usize) -> Option<&SharedMem> {
        self.loc.get(idx).map(|(m, _)| m)
    }

    /// Copies `bytes` into `slot` at `offset`.
    pub fn write(&self, slot: u32, offset: usize, bytes: &[u8]) -> Result<(), StagingError> {
        self.pieces(slot, offset, bytes.len(), |m, at, pos, n| {
            Ok(m.write_at(at, &bytes[pos..pos + n])?)
        })
    }

    /// Copies `dst.len()` bytes of `slot` at `offset` out (each byte read once).
    pub fn read(&self, slot: u32, offset: usize, dst: &mut [u8]) -> Result<(), StagingError> {
        let len = dst.len();
        self.pieces(slot, offset, len, |m, at, pos, n| {
            Ok(m.read_at(at, &mut dst[pos..pos + n])?)
        })
    }
}

/// RFC revision 1's own encoding of a staged head (netstage's `slots-rfc` design): a
/// packet's requests and responses are those of a packet without staging — the first
/// request grants its whole buffer and carries the usual size, no flag, no extra request —
/// and the staging slot selected by a data request's `id` holds a copy of the first bytes of
/// that request's data, which the receiver takes from the slot and skips in the grant.
///
/// - `data-len` <= 4096: slots of `data-len` bytes, and only the packet's first request is
///   replicated: the first `min(data-len, its length)` bytes.
/// - `data-len` > 4096: how much of the whole packet is copied (65536: all of it, the RFC's
///   copy-only interface). The list is the one of `data-len` 4096 (the RFC: "the same data
///   list size"): a page per slot, one entry each. Every data request of the packet has its
///   bytes replicated in the slot of its own id, request after request, until `data-len`
///   bytes are.
///
/// Either way the replicated bytes are a prefix of the packet: a request is replicated only
/// if every request before it was, whole.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReplicatedHead {
    data_len: u32,
}

impl ReplicatedHead {
    /// The encoding for a negotiated `data-len` (64..=65536).
    pub fn new(data_len: u32) -> Result<ReplicatedHead, StagingError> {
        if !(MIN_DATA_LEN..=MAX_DATA_LEN).contains(&data_len) {
            return Err(StagingError::BadDataLen(data_len));
        }
        Ok(ReplicatedHead { data_len })
    }

    /// The negotiated `data-len`.
    pub fn data_len(&self) -> u32 {
        self.data_len
    }

    /// Bytes per slot: `data-len`, at most a page.
    pub fn slot_len(&self) -> u32 {
        self.data_len.min(XEN_PAGE_SIZE as u32)
    }

    /// The geometry of `slots` slots (one per request id).
    pub fn layout(&self, slots: u32) -> Result<SlotLayout, StagingError> {
        SlotLayout::new(self.slot_len(), slots)
    }

    /// A packet's walk over its data requests, in ring order.
    pub fn start(&self) -> ReplicaCursor {
        ReplicaCursor {
            // A packet has at most 65535 bytes (`XEN_NETIF_MAX_TX_SIZE`).
            left: (self.data_len as usize).min(0xFFFF),
            slot_len: self.slot_len() as usize,
            every_request: self.data_len as usize > XEN_PAGE_SIZE,
            more: true,
        }
    }
}

/// Where a packet stands in [`ReplicatedHead`]'s walk: how much of each data request, in
/// order, its slot holds.
#[derive(Debug, Clone)]
pub struct ReplicaCursor {
    left: usize,
    slot_len: usize,
    every_request: bool,
    more: bool,
}

impl ReplicaCursor {
    /// Of the next data request's `len` bytes, how many of the first its slot holds (never
    /// more than `len` or a slot).
    pub fn take(&mut self, len: usize) -> usize {
        if !self.more {
            return 0;
        }
        let n = len.min(self.left).min(self.slot_len);
        self.left -= n;
        // Later requests only after this one whole: the replicated bytes stay a prefix.
        self.more = self.every_request && n == len && self.left > 0;
        n
    }
}
