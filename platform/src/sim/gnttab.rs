//! Grant tables of the emulated hypervisor: `grant_entry_v1` entries in the granter's
//! shared file, checked on every use as Xen checks them.

use std::os::fd::AsFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use netstage_ring::{SharedMem, SharedU32};

use super::{DomInner, Foreign, SimDomain, Stats, FIRST_FREE_GREF, PAGE_SIZE};
use crate::sim::CostMode;
use crate::{
    sys, CopyOp, DomId, GrantExport, GrantImport, GrantRef, GrantStatus, MapHold, MappedPages,
    PlatformError, Result, SharedPages,
};

/// `GTF_permit_access`.
pub const GTF_PERMIT_ACCESS: u16 = 1;
/// `GTF_type_mask`.
pub const GTF_TYPE_MASK: u16 = 3;
/// `GTF_readonly`.
pub const GTF_READONLY: u16 = 1 << 2;
/// `GTF_reading`: set by the hypervisor while the page is mapped or copied from.
pub const GTF_READING: u16 = 1 << 3;
/// `GTF_writing`: set by the hypervisor while the page is mapped writable or copied to.
pub const GTF_WRITING: u16 = 1 << 4;

/// Offset of the first pin-count record in the `active` file (after the lock's line).
const ACTIVE_HEADER: usize = 64;

pub(super) fn active_len(entries: u32) -> usize {
    ACTIVE_HEADER + entries as usize * 8
}

/// The first 4 bytes of an entry: flags (low half) and domid (high half), updated together
/// with one compare-and-exchange, as Xen does with its `grant_combo`.
fn combo(table: &SharedMem, gref: GrantRef) -> Result<SharedU32> {
    Ok(table.word(gref as usize * 8)?)
}

/// The hypervisor's per-granter lock (held while pinning or unpinning), stored as the
/// holder's process id so a lock left by a dead process can be taken over.
struct GrantLock {
    word: SharedU32,
}

/// Spins on a granter's lock before giving up with `GNTST_general_error`: the word lies in
/// the granter's own file, so a hostile granter can hold it forever (about half a second
/// here; a real holder keeps it for microseconds).
const LOCK_SPINS: u32 = 1 << 24;

/// Times the check-and-set of a grant entry may find it changed before the operation fails
/// with `GNTST_general_error`, as Xen's `_set_status_v1` gives up on an entry "unstable" for
/// four retries.
const ENTRY_RETRIES: u32 = 4;

impl GrantLock {
    fn take(active: &SharedMem) -> Result<GrantLock> {
        let word = active.word(0)?;
        let me = sys::own_pid();
        let mut spins = 0u32;
        loop {
            match word.compare_exchange(0, me, Ordering::Acquire, Ordering::Relaxed)? {
                Ok(_) => return Ok(GrantLock { word }),
                Err(_) if spins >= LOCK_SPINS => {
                    return Err(PlatformError::Invalid(
                        "the granter's grant-table lock stayed held".into(),
                    ))
                }
                Err(holder) => {
                    spins = spins.wrapping_add(1);
                    if spins % 4096 == 0 && holder != me && !sys::process_alive(holder) {
                        // The holder died inside the lock: take it over.
                        if word
                            .compare_exchange(holder, me, Ordering::Acquire, Ordering::Relaxed)?
                            .is_ok()
                        {
                            return Ok(GrantLock { word });
                        }
                    }
                    std::hint::spin_loop();
                }
            }
        }
    }
}

impl Drop for GrantLock {
    fn drop(&mut self) {
        let _ = self.word.store(0, Ordering::Release);
    }
}

/// Maps an internal failure (our own shared-memory bookkeeping) to Xen's generic error.
fn internal<E>(_: E) -> GrantStatus {
    GrantStatus::GeneralError
}

/// A grant entry's word as pinning reads and swaps it: the granter's shared table, or a
/// test's stand-in.
trait EntryWord {
    fn load(&self) -> u32;
    /// Swaps `current` for `new`; whether the word was still `current`.
    fn swap(&self, current: u32, new: u32) -> std::result::Result<bool, GrantStatus>;
}

impl EntryWord for SharedU32 {
    fn load(&self) -> u32 {
        SharedU32::load(self, Ordering::Acquire)
    }

    fn swap(&self, current: u32, new: u32) -> std::result::Result<bool, GrantStatus> {
        Ok(self
            .compare_exchange(current, new, Ordering::AcqRel, Ordering::Acquire)
            .map_err(internal)?
            .is_ok())
    }
}

/// Validates the entry for domain `me` and sets its `GTF_reading` (and `GTF_writing` if
/// `writable`), as Xen does with a compare-and-swap; a granter that keeps changing the
/// entry under it gets `GNTST_general_error` after [`ENTRY_RETRIES`] retries, as from Xen,
/// rather than a backend that spins for ever.
fn pin_entry(
    word: &impl EntryWord,
    me: DomId,
    writable: bool,
) -> std::result::Result<(), GrantStatus> {
    let set = GTF_READING | if writable { GTF_WRITING } else { 0 };
    for _ in 0..=ENTRY_RETRIES {
        let c = word.load();
        let flags = c as u16;
        let domid = (c >> 16) as u16;
        if flags & GTF_TYPE_MASK != GTF_PERMIT_ACCESS {
            return Err(GrantStatus::BadGntref);
        }
        if domid != me || (writable && flags & GTF_READONLY != 0) {
            return Err(GrantStatus::PermissionDenied);
        }
        if word.swap(c, c | u32::from(set))? {
            return Ok(());
        }
    }
    Err(GrantStatus::GeneralError)
}

/// Validates grant `gref` of `f` for domain `me` and pins it (`GTF_reading`, plus
/// `GTF_writing` if `writable`). Returns the granted frame.
pub(super) fn acquire(
    f: &Foreign,
    me: DomId,
    gref: GrantRef,
    writable: bool,
) -> std::result::Result<u32, GrantStatus> {
    if gref >= f.entries {
        return Err(GrantStatus::BadGntref);
    }
    let _lock = GrantLock::take(&f.active).map_err(internal)?;
    let word = combo(&f.gnttab, gref).map_err(internal)?;
    pin_entry(&word, me, writable)?;
    // Pin counts: readers always, writers if writable.
    let rd = f
        .active
        .word(ACTIVE_HEADER + gref as usize * 8)
        .map_err(internal)?;
    let wr = f
        .active
        .word(ACTIVE_HEADER + gref as usize * 8 + 4)
        .map_err(internal)?;
    rd.fetch_add(1, Ordering::Relaxed).map_err(internal)?;
    if writable {
        wr.fetch_add(1, Ordering::Relaxed).map_err(internal)?;
    }
    // The frame is read once, after the entry is pinned, and must be guest memory.
    let frame: u32 = f.gnttab.read_obj(gref as usize * 8 + 4).map_err(internal)?;
    if frame >= f.pages {
        drop(_lock);
        release(f, gref, writable);
        return Err(GrantStatus::BadPage);
    }
    Ok(frame)
}

/// Unpins a grant pinned by [`acquire`], clearing `GTF_reading`/`GTF_writing` when the
/// last pin of each kind goes.
pub(super) fn release(f: &Foreign, gref: GrantRef, writable: bool) {
    let Ok(_lock) = GrantLock::take(&f.active) else {
        return;
    };
    let base = ACTIVE_HEADER + gref as usize * 8;
    let (Ok(rd), Ok(wr), Ok(word)) = (
        f.active.word(base),
        f.active.word(base + 4),
        combo(&f.gnttab, gref),
    ) else {
        return;
    };
    let mut clear = 0u16;
    if rd.fetch_sub(1, Ordering::Relaxed).unwrap_or(0) == 1 {
        clear |= GTF_READING;
    }
    if writable && wr.fetch_sub(1, Ordering::Relaxed).unwrap_or(0) == 1 {
        clear |= GTF_WRITING;
    }
    if clear != 0 {
        let _ = word.fetch_and(!u32::from(clear), Ordering::AcqRel);
    }
}

/// Clears the pins that dead domain `dom` held on our grants (all grants to it), so they
/// can be revoked.
pub(super) fn release_grantee(d: &DomInner, dom: DomId) {
    let Ok(_lock) = GrantLock::take(&d.active) else {
        return;
    };
    let entries = d.cfg.grant_entries;
    for g in FIRST_FREE_GREF..entries {
        let Ok(word) = combo(&d.gnttab, g) else {
            return;
        };
        let c = word.load(Ordering::Acquire);
        if (c >> 16) as DomId != dom || (c as u16) & (GTF_READING | GTF_WRITING) == 0 {
            continue;
        }
        let base = ACTIVE_HEADER + g as usize * 8;
        for off in [base, base + 4] {
            if let Ok(w) = d.active.word(off) {
                let _ = w.store(0, Ordering::Relaxed);
            }
        }
        let _ = word.fetch_and(!u32::from(GTF_READING | GTF_WRITING), Ordering::AcqRel);
    }
}

/// Private bookkeeping of a granting domain: which frames and refs are free.
#[derive(Debug)]
pub(super) struct Allocator {
    used: Vec<bool>,
    cursor: usize,
    free_grefs: Vec<GrantRef>,
    next_gref: GrantRef,
    entries: u32,
    /// Grants whose revocation failed (still in use by the peer): retried later.
    deferred: Vec<(GrantRef, u32)>,
}

impl Allocator {
    pub(super) fn new(pages: u32, entries: u32) -> Allocator {
        Allocator {
            used: vec![false; pages as usize],
            cursor: 0,
            free_grefs: Vec::new(),
            next_gref: FIRST_FREE_GREF,
            entries,
            deferred: Vec::new(),
        }
    }

    fn alloc_frames(&mut self, n: usize) -> Option<u32> {
        let total = self.used.len();
        if n == 0 || n > total {
            return None;
        }
        // First fit, starting at the cursor and wrapping once.
        let mut start = self.cursor;
        let mut scanned = 0;
        while scanned < total + n {
            if start + n > total {
                scanned += total - start;
                start = 0;
                continue;
            }
            match self.used[start..start + n].iter().rposition(|u| *u) {
                None => {
                    self.used[start..start + n]
                        .iter_mut()
                        .for_each(|u| *u = true);
                    self.cursor = (start + n) % total;
                    return Some(start as u32);
                }
                Some(k) => {
                    scanned += k + 1;
                    start += k + 1;
                }
            }
        }
        None
    }

    fn free_frame(&mut self, frame: u32) {
        if let Some(u) = self.used.get_mut(frame as usize) {
            *u = false;
        }
    }

    fn alloc_gref(&mut self) -> Option<GrantRef> {
        if let Some(g) = self.free_grefs.pop() {
            return Some(g);
        }
        if self.next_gref < self.entries {
            self.next_gref += 1;
            return Some(self.next_gref - 1);
        }
        None
    }
}

/// Revokes `gref` of our own table unless the peer has it pinned. Returns whether it was
/// revoked.
fn try_end(table: &SharedMem, gref: GrantRef) -> Result<bool> {
    let word = combo(table, gref)?;
    // An entry that keeps changing under us is treated as in use.
    for _ in 0..=ENTRY_RETRIES {
        let c = word.load(Ordering::Acquire);
        if (c as u16) & (GTF_READING | GTF_WRITING) != 0 {
            return Ok(false);
        }
        if word
            .compare_exchange(c, c & 0xffff_0000, Ordering::AcqRel, Ordering::Acquire)?
            .is_ok()
        {
            return Ok(true);
        }
    }
    Ok(false)
}

fn restore(table: &SharedMem, gref: GrantRef, flags: u16) -> Result<()> {
    let word = combo(table, gref)?;
    let c = word.load(Ordering::Acquire);
    word.store((c & 0xffff_0000) | u32::from(flags), Ordering::Release)?;
    Ok(())
}

impl DomInner {
    fn retry_deferred(&self, alloc: &mut Allocator) {
        let mut keep = Vec::new();
        for (g, frame) in std::mem::take(&mut alloc.deferred) {
            match try_end(&self.gnttab, g) {
                Ok(true) => {
                    alloc.free_grefs.push(g);
                    alloc.free_frame(frame);
                    self.stats.granted_pages.fetch_sub(1, Ordering::Relaxed);
                }
                _ => keep.push((g, frame)),
            }
        }
        alloc.deferred = keep;
    }

    fn lock_alloc(&self) -> Result<std::sync::MutexGuard<'_, Allocator>> {
        self.alloc
            .lock()
            .map_err(|_| PlatformError::Invalid("page allocator poisoned".into()))
    }

    /// Frees (or defers) the grants and frames of a share being dropped.
    fn release_share(&self, grefs: &[GrantRef], first_frame: u32, ended: bool) {
        let Ok(mut alloc) = self.lock_alloc() else {
            return;
        };
        for (i, g) in grefs.iter().enumerate() {
            let frame = first_frame + i as u32;
            let revoked = ended || matches!(try_end(&self.gnttab, *g), Ok(true));
            if revoked {
                alloc.free_grefs.push(*g);
                alloc.free_frame(frame);
                self.stats.granted_pages.fetch_sub(1, Ordering::Relaxed);
            } else {
                // Still mapped or being copied by the peer: keep the page out of
                // circulation until the grant can be revoked.
                alloc.deferred.push((*g, frame));
            }
        }
    }
}

impl GrantExport for SimDomain {
    fn domid(&self) -> DomId {
        self.inner.id
    }

    fn share(&self, remote: DomId, count: usize, writable: bool) -> Result<SharedPages> {
        let d = &self.inner;
        let mut alloc = d.lock_alloc()?;
        d.retry_deferred(&mut alloc);
        let first = alloc
            .alloc_frames(count)
            .ok_or_else(|| PlatformError::Exhausted {
                what: "guest memory",
                dom: d.id,
                detail: format!(
                    "no {count} contiguous free pages out of {} (raise DomainConfig::mem_pages)",
                    d.cfg.mem_pages
                ),
            })?;
        let mut grefs = Vec::with_capacity(count);
        for _ in 0..count {
            match alloc.alloc_gref() {
                Some(g) => grefs.push(g),
                None => {
                    alloc.free_grefs.extend(grefs.iter().copied());
                    (0..count as u32).for_each(|i| alloc.free_frame(first + i));
                    return Err(PlatformError::Exhausted {
                        what: "grant entries",
                        dom: d.id,
                        detail: format!(
                            "all {} entries in use (raise DomainConfig::grant_entries)",
                            d.cfg.grant_entries
                        ),
                    });
                }
            }
        }
        drop(alloc);
        let mem = d.mem.sub(first as usize * PAGE_SIZE, count * PAGE_SIZE)?;
        // Share only zeroed pages (XSA-403: never leak earlier contents to the peer).
        mem.fill(0, mem.len(), 0)?;
        let flags = GTF_PERMIT_ACCESS | if writable { 0 } else { GTF_READONLY };
        for (i, g) in grefs.iter().enumerate() {
            let base = *g as usize * 8;
            d.gnttab.write_obj(base + 4, &(first + i as u32))?;
            // Frame first, then flags+domid in one store: the peer never sees a valid entry
            // with a stale frame.
            combo(&d.gnttab, *g)?.store(
                (u32::from(remote) << 16) | u32::from(flags),
                Ordering::Release,
            )?;
        }
        d.stats
            .granted_pages
            .fetch_add(count as u64, Ordering::Relaxed);
        let ended = Arc::new(AtomicBool::new(false));
        let inner = Arc::clone(&self.inner);
        let ended2 = Arc::clone(&ended);
        Ok(SharedPages {
            mem,
            grefs,
            ended,
            release: Some(Box::new(move |grefs: &[GrantRef]| {
                inner.release_share(grefs, first, ended2.load(Ordering::Acquire));
            })),
        })
    }

    fn end_access(&self, pages: &SharedPages) -> Result<()> {
        if pages.ended.load(Ordering::Acquire) {
            return Ok(());
        }
        let table = &self.inner.gnttab;
        let mut done: Vec<(GrantRef, u16)> = Vec::new();
        for g in &pages.grefs {
            let before = combo(table, *g)?.load(Ordering::Acquire) as u16;
            if try_end(table, *g)? {
                done.push((*g, before & !(GTF_READING | GTF_WRITING)));
            } else {
                for (r, flags) in done {
                    restore(table, r, flags)?;
                }
                let dom = (combo(table, *g)?.load(Ordering::Acquire) >> 16) as DomId;
                return Err(PlatformError::GrantInUse { dom, gref: *g });
            }
        }
        pages.ended.store(true, Ordering::Release);
        Ok(())
    }

    fn grant_page(&self, pages: &SharedPages, i: usize, to: DomId, rw: bool) -> Result<GrantRef> {
        let (gref, frame) = self.inner.page_of(pages, i)?;
        let table = &self.inner.gnttab;
        let flags = GTF_PERMIT_ACCESS | if rw { 0 } else { GTF_READONLY };
        // As gnttab_grant_foreign_access_ref: frame and domid first, then the flags that
        // make the entry valid, so the peer never sees a valid entry with a stale frame.
        // The frame comes from our own bookkeeping, never from the table a peer can write.
        table.write_obj(gref as usize * 8 + 4, &frame)?;
        combo(table, gref)?.store((u32::from(to) << 16) | u32::from(flags), Ordering::Release)?;
        Ok(gref)
    }

    fn end_page_access(&self, pages: &SharedPages, index: usize) -> Result<()> {
        let (gref, _) = self.inner.page_of(pages, index)?;
        let table = &self.inner.gnttab;
        if try_end(table, gref)? {
            return Ok(());
        }
        let dom = (combo(table, gref)?.load(Ordering::Acquire) >> 16) as DomId;
        Err(PlatformError::GrantInUse { dom, gref })
    }
}

impl DomInner {
    /// The reference and frame of page `index` of `pages`, which must be a live share of
    /// this domain's memory.
    fn page_of(&self, pages: &SharedPages, index: usize) -> Result<(GrantRef, u32)> {
        if pages.ended.load(Ordering::Acquire) {
            return Err(PlatformError::Invalid(
                "the share's grants were all revoked (end_access); share new pages".into(),
            ));
        }
        let Some(gref) = pages.grefs.get(index).copied() else {
            return Err(PlatformError::Invalid(format!(
                "page {index} of a share of {} pages",
                pages.grefs.len()
            )));
        };
        let at = (pages.mem.as_ptr() as usize).wrapping_sub(self.mem.as_ptr() as usize);
        let end = at.checked_add(pages.mem.len());
        if gref >= self.cfg.grant_entries || end.is_none_or(|e| e > self.mem.len()) {
            return Err(PlatformError::Invalid(
                "pages not shared by this domain".into(),
            ));
        }
        Ok((gref, (at / PAGE_SIZE + index) as u32))
    }
}

/// Runs `f` when dropped (the unmap of a window that needs no `munmap`).
struct OnDrop(Option<Box<dyn FnOnce() + Send + Sync>>);

impl Drop for OnDrop {
    fn drop(&mut self) {
        if let Some(f) = self.0.take() {
            f();
        }
    }
}

impl GrantImport for SimDomain {
    fn domid(&self) -> DomId {
        self.inner.id
    }

    fn map(&self, dom: DomId, grefs: &[GrantRef], writable: bool) -> Result<SharedMem> {
        if grefs.is_empty() {
            return Err(PlatformError::Invalid("map of zero grants".into()));
        }
        let d = &self.inner;
        let f = d.foreign(dom)?;
        let mut frames = Vec::with_capacity(grefs.len());
        for g in grefs {
            match acquire(&f, d.id, *g, writable) {
                Ok(fr) => frames.push(fr),
                Err(status) => {
                    for done in &grefs[..frames.len()] {
                        release(&f, *done, writable);
                    }
                    return Err(PlatformError::Grant {
                        dom,
                        gref: *g,
                        status,
                    });
                }
            }
        }
        let n = grefs.len() as u64;
        d.charge(|m| m.call_ns + m.map_ns * n);
        Stats::add(&d.stats.maps, n);
        let kernel = d.cfg.cost == CostMode::Kernel;
        let consecutive = frames.windows(2).all(|w| w[1] == w[0].wrapping_add(1));
        let inner = Arc::clone(&self.inner);
        let f2 = Arc::clone(&f);
        let grefs2 = grefs.to_vec();
        let real_mmap = kernel || !consecutive;
        let on_unmap: Box<dyn FnOnce() + Send + Sync> = Box::new(move || {
            inner.charge(|m| m.call_ns + m.unmap_ns * n);
            Stats::add(&inner.stats.unmaps, n);
            if real_mmap {
                Stats::add(&inner.stats.kernel_crossings, 1);
            }
            for g in grefs2 {
                release(&f2, g, writable);
            }
        });
        let release_all = |f: &Foreign| {
            for g in grefs {
                release(f, *g, writable);
            }
        };
        if real_mmap {
            Stats::add(
                &d.stats.kernel_crossings,
                if consecutive { 1 } else { n + 1 },
            );
            sys::map_grant_window(f.mem_file.as_fd(), &frames, writable, on_unmap).map_err(|e| {
                release_all(&f);
                PlatformError::io(format!("mmap of {n} granted pages of domain {dom}"), e)
            })
        } else {
            f.view
                .sub_guarded(
                    frames[0] as usize * PAGE_SIZE,
                    grefs.len() * PAGE_SIZE,
                    writable,
                    Arc::new(OnDrop(Some(on_unmap))),
                )
                .map_err(PlatformError::from)
        }
    }

    fn map_each(&self, dom: DomId, refs: &[GrantRef], rw: bool, p: &mut MappedPages) -> Result<()> {
        p.begin(dom, refs, rw)?;
        let d = &self.inner;
        let kernel = d.cfg.cost == CostMode::Kernel;
        let hold = crate::hold_as(&mut p.hold, || SimHold::new(d), |h| h.of(d))?;
        if kernel && hold.range.as_ref().is_none_or(|r| r.pages() < refs.len()) {
            // Room for as many pages as `p` has room for: it grows as seldom as `p` does.
            let range = sys::PageRange::reserve(p.grefs.capacity())
                .map_err(|e| PlatformError::io("reserving room for grant maps", e))?;
            hold.range = Some(range);
        }
        let f = match d.foreign(dom) {
            Ok(f) => f,
            Err(_) => {
                p.status.fill(GrantStatus::BadDomain);
                d.charge(|m| m.call_ns);
                return Ok(());
            }
        };
        let mut run = MapRun::default();
        for (i, g) in refs.iter().enumerate() {
            let frame = match acquire(&f, d.id, *g, rw) {
                Ok(frame) => frame,
                Err(s) => {
                    p.status[i] = s;
                    continue;
                }
            };
            p.status[i] = GrantStatus::Okay;
            if let Some(range) = hold.range.as_mut().filter(|_| kernel) {
                // Consecutive frames at consecutive p go in with one mmap.
                if !run.extends(i, frame) {
                    run.flush(range, &f, refs, &mut p.status, rw);
                    run.start(i, frame);
                }
                continue;
            }
            let window = f.view.sub(frame as usize * PAGE_SIZE, PAGE_SIZE);
            match window {
                Ok(w) => p.windows[i] = Some(if rw { w } else { w.read_only() }),
                Err(_) => {
                    release(&f, *g, rw);
                    p.status[i] = GrantStatus::GeneralError;
                }
            }
        }
        if let Some(range) = hold.range.as_mut().filter(|_| kernel) {
            run.flush(range, &f, refs, &mut p.status, rw);
            Stats::add(&d.stats.kernel_crossings, run.mmaps);
            for (i, w) in p.windows.iter_mut().enumerate() {
                if p.status[i] == GrantStatus::Okay {
                    *w = range.window(i);
                }
            }
        }
        let ok = p.status.iter().filter(|s| **s == GrantStatus::Okay).count() as u64;
        d.charge(|m| m.call_ns + m.map_ns * ok);
        Stats::add(&d.stats.maps, ok);
        hold.granter = Some(f);
        Ok(())
    }

    fn copy_ops(&self, ops: &mut [CopyOp<'_>], status: &mut [GrantStatus]) -> Result<()> {
        crate::check_copy_batch(ops, status)?;
        status.fill(GrantStatus::Okay);
        COPY_SCRATCH.with(|cell| match cell.try_borrow_mut() {
            Ok(mut scratch) => self.copy_with(&mut scratch, ops, status),
            // Only a copy made from inside a copy (none is) would find it borrowed.
            Err(_) => self.copy_with(&mut CopyScratch::default(), ops, status),
        })
    }
}

/// What the emulation keeps of a [`MappedPages`]: the mapping domain, the granter of its
/// last map, and (`kernel` mode) the address range the pages are mapped into.
struct SimHold {
    dom: Arc<DomInner>,
    granter: Option<Arc<Foreign>>,
    range: Option<sys::PageRange>,
}

impl SimHold {
    fn new(dom: &Arc<DomInner>) -> SimHold {
        SimHold {
            dom: Arc::clone(dom),
            granter: None,
            range: None,
        }
    }

    /// Whether it is the hold of domain `dom`.
    fn of(&self, dom: &Arc<DomInner>) -> bool {
        Arc::ptr_eq(&self.dom, dom)
    }
}

impl MapHold for SimHold {
    fn unmap(&mut self, grefs: &[GrantRef], status: &[GrantStatus], writable: bool) {
        let Some(f) = self.granter.take() else {
            return;
        };
        let ok = status.iter().filter(|s| **s == GrantStatus::Okay).count() as u64;
        if ok == 0 {
            return;
        }
        if let Some(range) = self.range.as_mut() {
            if matches!(range.clear(), Ok(true)) {
                Stats::add(&self.dom.stats.kernel_crossings, 1);
            }
        }
        self.dom.charge(|m| m.call_ns + m.unmap_ns * ok);
        Stats::add(&self.dom.stats.unmaps, ok);
        for (g, _) in grefs
            .iter()
            .zip(status)
            .filter(|(_, s)| **s == GrantStatus::Okay)
        {
            release(&f, *g, writable);
        }
    }

    fn as_any_mut(&mut self) -> &mut dyn std::any::Any {
        self
    }
}

/// Pages of one `map_each` call at consecutive places with consecutive frames (`kernel`
/// mode maps them with one mmap).
#[derive(Default)]
struct MapRun {
    at: usize,
    frame: u32,
    len: usize,
    /// mmap calls made so far.
    mmaps: u64,
}

impl MapRun {
    /// Starts a run at page `at` of `frame` (the last one flushed).
    fn start(&mut self, at: usize, frame: u32) {
        (self.at, self.frame, self.len) = (at, frame, 1);
    }

    /// Takes page `at` of `frame` if it continues the run.
    fn extends(&mut self, at: usize, frame: u32) -> bool {
        let next = self.len > 0
            && at == self.at + self.len
            && Some(frame) == self.frame.checked_add(self.len as u32);
        if next {
            self.len += 1;
        }
        next
    }

    /// Maps the run into `range`; its pages fail (unpinned) if the mmap does.
    fn flush(
        &mut self,
        range: &mut sys::PageRange,
        f: &Foreign,
        grefs: &[GrantRef],
        status: &mut [GrantStatus],
        writable: bool,
    ) {
        if self.len == 0 {
            return;
        }
        let offset = u64::from(self.frame) * PAGE_SIZE as u64;
        self.mmaps += 1;
        let fd = f.mem_file.as_fd();
        if range.map(self.at, self.len, fd, offset, writable).is_err() {
            for i in self.at..self.at + self.len {
                release(f, grefs[i], writable);
                status[i] = GrantStatus::GeneralError;
            }
        }
        self.len = 0;
    }
}

/// What one grant-copy call needs besides its operations, kept per thread so that a call
/// allocates nothing once the vectors have grown to the batch size.
#[derive(Default)]
struct CopyScratch {
    /// Grants acquired by the call, released at its end: (granter, gref, for writing).
    held: Vec<(Arc<Foreign>, GrantRef, bool)>,
    reads: sys::VmCopy,
    writes: sys::VmCopy,
    read_ops: Vec<usize>,
    write_ops: Vec<usize>,
}

impl CopyScratch {
    fn clear(&mut self) {
        self.held.clear();
        self.reads.clear();
        self.writes.clear();
        self.read_ops.clear();
        self.write_ops.clear();
    }
}

thread_local! {
    static COPY_SCRATCH: std::cell::RefCell<CopyScratch> =
        std::cell::RefCell::new(CopyScratch::default());
}

impl SimDomain {
    /// Checks and acquires the grant of every op, queues the copies (kernel mode) or does
    /// them (other modes), runs the queued copies, releases the grants and counts.
    fn copy_with(
        &self,
        sc: &mut CopyScratch,
        ops: &mut [CopyOp<'_>],
        status: &mut [GrantStatus],
    ) -> Result<()> {
        sc.clear();
        let d = &self.inner;
        let n = ops.len();
        let kernel = d.cfg.cost == CostMode::Kernel;
        // The last op's domain, kept for the next, as Xen's batched copy keeps the domains
        // it locked while consecutive ops name the same ones.
        let mut last: Option<Arc<Foreign>> = None;
        // Copies into a granted page, charged apart from copies out of one.
        let mut into_granted = 0u64;
        for (i, op) in ops.iter_mut().enumerate() {
            let fr = op.foreign();
            let len = op.len();
            let to_foreign = matches!(op, CopyOp::ToForeign { .. });
            into_granted += u64::from(to_foreign);
            if len > PAGE_SIZE || usize::from(fr.offset) + len > PAGE_SIZE {
                status[i] = GrantStatus::BadCopyArg;
                continue;
            }
            let f = match last.as_ref().filter(|f| f.id == fr.dom) {
                Some(f) => Arc::clone(f),
                None => match d.foreign(fr.dom) {
                    Ok(f) => {
                        last = Some(Arc::clone(&f));
                        f
                    }
                    Err(_) => {
                        status[i] = GrantStatus::BadDomain;
                        continue;
                    }
                },
            };
            let frame = match acquire(&f, d.id, fr.gref, to_foreign) {
                Ok(frame) => frame,
                Err(s) => {
                    status[i] = s;
                    continue;
                }
            };
            let at = frame as usize * PAGE_SIZE + usize::from(fr.offset);
            if kernel {
                // The view covers the whole memory file and `at + len` is inside frame
                // `frame` < pages, so the remote range lies inside the mapping.
                let remote = f.view.as_ptr().wrapping_add(at);
                match op {
                    CopyOp::FromForeign { dst, .. } => {
                        sc.reads.push(dst.as_mut_ptr(), remote, len);
                        sc.read_ops.push(i);
                    }
                    CopyOp::ToForeign { src, .. } => {
                        sc.writes.push(src.as_ptr().cast_mut(), remote, len);
                        sc.write_ops.push(i);
                    }
                }
            } else {
                let r = match op {
                    CopyOp::FromForeign { dst, .. } => f.view.read_at(at, dst),
                    CopyOp::ToForeign { src, .. } => f.view.write_at(at, src),
                };
                if r.is_err() {
                    status[i] = GrantStatus::GeneralError;
                }
            }
            sc.held.push((f, fr.gref, to_foreign));
        }
        let mut failure = None;
        for (vm, idx, read) in [
            (&mut sc.reads, &sc.read_ops, true),
            (&mut sc.writes, &sc.write_ops, false),
        ] {
            if vm.is_empty() {
                continue;
            }
            Stats::add(&d.stats.kernel_crossings, 1);
            if let Err(e) = vm.run(read) {
                for i in idx {
                    status[*i] = GrantStatus::GeneralError;
                }
                failure = Some(e);
            }
        }
        for (f, g, w) in sc.held.drain(..) {
            release(&f, g, w);
        }
        // No pointer into this call's buffers outlives it.
        sc.clear();
        let out_of_granted = n as u64 - into_granted;
        d.charge(|m| m.call_ns + m.copy_ns * out_of_granted + m.copy_to_ns * into_granted);
        Stats::add(&d.stats.copy_ops, n as u64);
        let mut bytes = 0u64;
        let mut failed = 0u64;
        for (op, s) in ops.iter().zip(status.iter()) {
            if *s == GrantStatus::Okay {
                bytes += op.len() as u64;
            } else {
                failed += 1;
            }
        }
        Stats::add(&d.stats.copy_bytes, bytes);
        Stats::add(&d.stats.copy_failures, failed);
        match failure {
            Some(e) => Err(PlatformError::io("grant copy (process_vm_readv/writev)", e)),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod pin_tests {
    use std::sync::atomic::AtomicU32;
    use std::time::Duration;

    use super::*;

    /// An entry its granter rewrites between every read and swap.
    #[derive(Default)]
    struct Flipping {
        value: AtomicU32,
        swaps: AtomicU32,
    }

    impl EntryWord for Flipping {
        fn load(&self) -> u32 {
            self.value.load(Ordering::Relaxed)
        }

        fn swap(&self, current: u32, _new: u32) -> std::result::Result<bool, GrantStatus> {
            self.swaps.fetch_add(1, Ordering::Relaxed);
            // The granter flips an unused flag bit first: the swap finds the word changed.
            self.value.store(current ^ 0x0080, Ordering::Relaxed);
            Ok(false)
        }
    }

    #[test]
    fn an_entry_that_keeps_changing_gives_a_general_error_after_bounded_retries() {
        let me = 3;
        let word = Arc::new(Flipping::default());
        word.value.store(
            u32::from(me) << 16 | u32::from(GTF_PERMIT_ACCESS),
            Ordering::Relaxed,
        );
        // On a thread: a pinning that spun for ever would fail the test, not hang it.
        let (tx, rx) = std::sync::mpsc::channel();
        let w = Arc::clone(&word);
        std::thread::spawn(move || tx.send(pin_entry(&*w, me, true)));
        let got = rx
            .recv_timeout(Duration::from_secs(10))
            .expect("pinning gave up");
        assert_eq!(got, Err(GrantStatus::GeneralError));
        assert_eq!(word.swaps.load(Ordering::Relaxed), ENTRY_RETRIES + 1);
        // An entry left alone is pinned at the first swap.
        let table = SharedMem::new_zeroed(8);
        let entry = table.word(0).unwrap();
        entry
            .store(
                u32::from(me) << 16 | u32::from(GTF_PERMIT_ACCESS),
                Ordering::Relaxed,
            )
            .unwrap();
        assert_eq!(pin_entry(&entry, me, true), Ok(()));
        let pinned = entry.load(Ordering::Relaxed) as u16;
        assert_eq!(
            pinned & (GTF_READING | GTF_WRITING),
            GTF_READING | GTF_WRITING
        );
    }
}
