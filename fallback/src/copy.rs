//! Batched grant copy, as netback batches it: the operations of a whole burst are gathered,
//! then run in calls of at most [`MAX_COPY_OPS`]. The vectors live in a [`GrantCopier`] that
//! a queue keeps for its lifetime, so a burst allocates nothing once they have grown.

use netstage_platform::{CopyOp, DomId, ForeignRef, GrantImport, GrantStatus, PlatformError};

use crate::map::Fragment;

/// Grant-copy operations per call (Linux netback's batch).
pub const MAX_COPY_OPS: usize = 64;

/// The storage of one queue's grant copies, reused from burst to burst.
#[derive(Debug, Default)]
pub struct GrantCopier {
    /// Always empty between bursts; only its room is kept.
    spare_ops: Vec<CopyOp<'static>>,
    spare_owners: Vec<u32>,
    status: Vec<GrantStatus>,
}

/// The operations of one burst, each tagged with the packet (an index the caller chose) it
/// belongs to.
#[derive(Debug)]
pub struct CopyBurst<'a> {
    ops: Vec<CopyOp<'a>>,
    owners: Vec<u32>,
}

/// What a finished burst did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CopyDone {
    /// Calls made (one per [`MAX_COPY_OPS`] operations).
    pub calls: u64,
    /// Operations run.
    pub ops: u64,
}

/// An empty vector of another lifetime with the room of `v`: the elements' layout does not
/// depend on the lifetime, so collecting the (empty) iterator reuses the allocation.
// The filter_map is what changes the element type (its lifetime); `filter` would not.
#[allow(clippy::unnecessary_filter_map)]
fn recycle<'b>(mut v: Vec<CopyOp<'_>>) -> Vec<CopyOp<'b>> {
    v.clear();
    v.into_iter().filter_map(|_| None).collect()
}

impl<'a> CopyBurst<'a> {
    /// Adds one operation of packet `owner`.
    pub fn push(&mut self, owner: usize, op: CopyOp<'a>) {
        self.ops.push(op);
        // Owners index a burst, which holds far fewer than 2^32 packets.
        self.owners.push(owner as u32);
    }

    /// Adds the operations that fetch `frags` of `dom` into `dst`, in order, for packet
    /// `owner`. Fails if the fragments need more room than `dst` has.
    pub fn fetch(
        &mut self,
        owner: usize,
        dom: DomId,
        frags: impl Iterator<Item = Fragment>,
        mut dst: &'a mut [u8],
    ) -> Result<(), PlatformError> {
        for f in frags {
            let len = usize::from(f.len);
            if dst.len() < len {
                return Err(PlatformError::Invalid(format!(
                    "fragment of {len} bytes does not fit the {} left in the buffer",
                    dst.len()
                )));
            }
            let (head, tail) = std::mem::take(&mut dst).split_at_mut(len);
            let src = ForeignRef {
                dom,
                gref: f.gref,
                offset: f.offset,
            };
            self.push(owner, CopyOp::FromForeign { src, dst: head });
            dst = tail;
        }
        Ok(())
    }

    /// Operations gathered so far.
    pub fn len(&self) -> usize {
        self.ops.len()
    }

    /// Whether none were gathered.
    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }
}

impl GrantCopier {
    /// A copier with room for `ops` operations before it first grows.
    pub fn with_capacity(ops: usize) -> GrantCopier {
        GrantCopier {
            spare_ops: Vec::with_capacity(ops),
            spare_owners: Vec::with_capacity(ops),
            status: Vec::with_capacity(ops),
        }
    }

    /// Starts a burst, lending it this copier's room.
    pub fn begin<'a>(&mut self) -> CopyBurst<'a> {
        CopyBurst {
            ops: recycle(std::mem::take(&mut self.spare_ops)),
            owners: std::mem::take(&mut self.spare_owners),
        }
    }

    /// Runs the burst's operations in calls of at most [`MAX_COPY_OPS`] and calls
    /// `failed(owner)` for each operation that did not succeed (a packet may be named more
    /// than once). Errors only if a call itself failed; the room is kept either way.
    pub fn finish<P: GrantImport + ?Sized>(
        &mut self,
        platform: &P,
        mut burst: CopyBurst<'_>,
        mut failed: impl FnMut(usize),
    ) -> Result<CopyDone, PlatformError> {
        let n = burst.ops.len();
        self.status.clear();
        self.status.resize(n, GrantStatus::Okay);
        let mut done = CopyDone {
            calls: 0,
            ops: n as u64,
        };
        let mut result = Ok(());
        for (ops, status) in burst
            .ops
            .chunks_mut(MAX_COPY_OPS)
            .zip(self.status.chunks_mut(MAX_COPY_OPS))
        {
            done.calls += 1;
            if let Err(e) = platform.copy_ops(ops, status) {
                result = Err(e);
                break;
            }
        }
        if result.is_ok() {
            for (s, owner) in self.status.iter().zip(&burst.owners) {
                if *s != GrantStatus::Okay {
                    failed(*owner as usize);
                }
            }
        }
        burst.owners.clear();
        self.spare_owners = burst.owners;
        self.spare_ops = recycle(burst.ops);
        result.map(|()| done)
    }
}
