//! A received packet lent to the application in place, for the length of one delivery
//! callback: the pieces that lie in memory the peer shares (staging slots, a data ring,
//! posted pages) are lent as ranges of the windows the queue holds, the rest as private
//! bytes. Both ends' in-place receive calls hand these out by reference; nothing here
//! allocates or touches a reference count.

use arrayvec::ArrayVec;
use netstage_ring::netif::MAX_CHAIN_SLOTS;
use netstage_ring::{MemError, SharedMem};

use crate::packet::Gso;

/// Most pieces one packet is lent in: two windows of a wrapping data ring, then one per
/// slot of its chain.
pub const MAX_VIEW_PARTS: usize = MAX_CHAIN_SLOTS + 2;

/// One piece of a lent packet.
#[derive(Debug, Clone, Copy)]
pub enum ViewPart<'a> {
    /// `len` bytes at `offset` of memory the peer can still write: read them through the
    /// window's checked methods ([`SharedMem::read_at`]), each byte once, and treat what you
    /// read as untrusted.
    Shared {
        /// The window.
        mem: &'a SharedMem,
        /// Where the piece starts in it.
        offset: usize,
        /// Its length.
        len: usize,
    },
    /// Bytes already copied into a private buffer.
    Private(&'a [u8]),
}

impl ViewPart<'_> {
    /// Bytes in this piece.
    #[inline]
    pub fn len(&self) -> usize {
        match self {
            ViewPart::Shared { len, .. } => *len,
            ViewPart::Private(b) => b.len(),
        }
    }

    /// Copies the piece into `dst` (exactly its length), reading each shared byte once.
    pub fn read(&self, dst: &mut [u8]) -> Result<(), MemError> {
        if dst.len() != self.len() {
            return Err(MemError::OutOfBounds {
                offset: 0,
                len: self.len(),
                size: dst.len(),
            });
        }
        match self {
            ViewPart::Shared { mem, offset, .. } => mem.read_at(*offset, dst),
            ViewPart::Private(b) => {
                dst.copy_from_slice(b);
                Ok(())
            }
        }
    }

    /// Whether the piece is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A packet lent in place, its pieces in order.
#[derive(Debug, Clone, Default)]
pub struct PacketView<'a> {
    parts: ArrayVec<ViewPart<'a>, MAX_VIEW_PARTS>,
    /// Segmentation offload.
    pub gso: Option<Gso>,
    /// The protocol checksum is blank and must be filled in.
    pub csum_blank: bool,
}

/// A packet with more pieces than a chain can have.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("a lent packet has at most {MAX_VIEW_PARTS} pieces")]
pub struct TooManyParts;

impl<'a> PacketView<'a> {
    /// An empty view with the packet's metadata (for the ends that build views).
    #[inline]
    pub fn new(gso: Option<Gso>, csum_blank: bool) -> Self {
        PacketView {
            parts: ArrayVec::new(),
            gso,
            csum_blank,
        }
    }

    /// Appends a piece (empty pieces are left out).
    #[inline]
    pub fn push(&mut self, part: ViewPart<'a>) -> Result<(), TooManyParts> {
        if part.is_empty() {
            return Ok(());
        }
        self.parts.try_push(part).map_err(|_| TooManyParts)
    }

    /// The pieces in order.
    #[inline]
    pub fn parts(&self) -> &[ViewPart<'a>] {
        &self.parts
    }

    /// The packet's length.
    pub fn len(&self) -> usize {
        self.parts.iter().map(ViewPart::len).sum()
    }

    /// Whether the packet is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Copies the whole packet to the start of `dst` (reading each shared byte once) and
    /// returns its length; fails if `dst` is shorter.
    pub fn copy_to(&self, dst: &mut [u8]) -> Result<usize, MemError> {
        let mut at = 0;
        for p in &self.parts {
            let n = p.len();
            let Some(d) = dst.get_mut(at..at + n) else {
                return Err(MemError::OutOfBounds {
                    offset: at,
                    len: n,
                    size: dst.len(),
                });
            };
            p.read(d)?;
            at += n;
        }
        Ok(at)
    }
}
