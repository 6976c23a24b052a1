//! Correctness during measurement: every measured frame carries a sequence number and a
//! checksum of its payload, written by the sender and checked by the receiver at full rate,
//! so a run reports what it delivered, lost, corrupted, reordered or cut short, and a run
//! that lost or damaged packets can be told apart from one that did not.
//!
//! The frame after its 14-byte Ethernet header and 2 bytes of padding: the sequence number
//! (8 bytes, little endian, at byte 16), then the checksum (8 bytes) of the sequence number
//! and every byte after the checksum. The padding puts both words on 8-byte boundaries of
//! the frame, so a receiver that copied the frame in 8-byte words reads each back from one
//! store (at an odd offset the load would span two stores and stall). Frames shorter than
//! [`HEADER`] (request/response's 15-byte frames) are not stamped; the echo checks those.
//!
//! Sizes may be mixed ([`SizeSpec`]): frame `seq` has the size the spec's cycle gives it,
//! which the receiver checks against the sequence number it reads.

use std::ops::Range;

use arrayvec::ArrayVec;
use netstage_fallback::{Gso, PacketRef, PacketView, ViewPart};
use netstage_netback_user::BURST;
use netstage_ring::{MemError, SharedMem};
use serde::{Deserialize, Serialize};

pub use crate::sizes::SizeSpec;

/// Where the sequence number starts.
const SEQ_AT: usize = 16;
/// Where the checksum starts.
const SUM_AT: usize = 24;
/// Bytes of header a stamped frame has.
pub const HEADER: usize = 32;

/// A fold of 64-bit words into four lanes: cheap enough to run over every received byte.
/// Bytes that do not fill a word yet wait in a register-sized accumulator (a word built
/// from bytes stored one by one and loaded whole would stall the load).
#[derive(Debug, Clone, Default)]
struct Fold {
    lanes: [u64; 4],
    words: u64,
    /// The waiting bytes, little endian.
    pending: u64,
    npending: usize,
}

impl Fold {
    fn word(&mut self, w: u64) {
        let l = (self.words & 3) as usize;
        self.lanes[l] = self.lanes[l].wrapping_add(w).rotate_left(7);
        self.words += 1;
    }

    /// Adds a byte to the waiting word (fewer than 8 wait).
    fn byte(&mut self, x: u8) {
        self.pending |= u64::from(x) << (8 * self.npending);
        self.npending += 1;
    }

    fn feed(&mut self, mut b: &[u8]) {
        if self.npending > 0 {
            while self.npending < 8 {
                let Some((&x, rest)) = b.split_first() else {
                    return;
                };
                self.byte(x);
                b = rest;
            }
            let w = std::mem::take(&mut self.pending);
            self.npending = 0;
            self.word(w);
        }
        // Word by word up to a lane boundary, then four words (one per lane) at a time: the
        // same fold as word by word, without an index per word.
        while self.words & 3 != 0 && b.len() >= 8 {
            let (w, tail) = b.split_at(8);
            self.word(le_word(w));
            b = tail;
        }
        let rest = self.feed_quads(b);
        let mut words = rest.chunks_exact(8);
        for w in &mut words {
            self.word(le_word(w));
        }
        for &x in words.remainder() {
            self.byte(x);
        }
    }

    /// Folds the whole 32-byte blocks of `b` (the fold at a lane boundary, nothing
    /// waiting, when there is one); returns the bytes after them. The lanes stay in registers through the
    /// loop (kept in `self`, each word cost a store of every lane).
    #[inline(always)]
    fn feed_quads<'b>(&mut self, b: &'b [u8]) -> &'b [u8] {
        debug_assert!(b.len() < 32 || (self.words & 3 == 0 && self.npending == 0));
        let mut lanes = self.lanes;
        let mut quads = b.chunks_exact(32);
        for q in &mut quads {
            let q: [u64; 4] = std::array::from_fn(|i| le_word(&q[8 * i..]));
            fold_block(&mut lanes, q);
        }
        self.lanes = lanes;
        self.words += 4 * (b.len() / 32) as u64;
        quads.remainder()
    }

    /// Feeds `len` bytes of shared memory at `offset`, each read once: whole 32-byte blocks
    /// go from the loads straight into the lanes ([`SharedMem::read_blocks_le`]), and only
    /// the few bytes before the first lane boundary and after the last block through a
    /// small private buffer. Copying everything through a private window first cost a
    /// tenth of a 64 KiB frame's rate, the receiver's whole limit there.
    fn feed_shared(&mut self, mem: &SharedMem, offset: usize, len: usize) -> Result<(), MemError> {
        let mut buf = [0u8; 32];
        let mut at = 0;
        let mut through_buf = |fold: &mut Fold, at: &mut usize, n: usize| {
            let n = n.min(len - *at);
            if n == 0 {
                return Ok(());
            }
            mem.read_at(offset + *at, &mut buf[..n])?;
            fold.feed(&buf[..n]);
            *at += n;
            Ok::<_, MemError>(())
        };
        // The waiting bytes make a word, then words up to a lane boundary.
        through_buf(self, &mut at, (8 - self.npending) % 8)?;
        through_buf(self, &mut at, (4 - (self.words & 3) as usize) % 4 * 8)?;
        if self.npending == 0 && self.words & 3 == 0 {
            let mut lanes = self.lanes;
            let n = mem.read_blocks_le(offset + at, len - at, |q| fold_block(&mut lanes, q))?;
            self.lanes = lanes;
            self.words += (n / 8) as u64;
            at += n;
        }
        while at < len {
            through_buf(self, &mut at, 32)?;
        }
        Ok(())
    }

    fn finish(&mut self) -> u64 {
        let bytes = self.words * 8 + self.npending as u64;
        if self.npending > 0 {
            let w = std::mem::take(&mut self.pending);
            self.npending = 0;
            self.word(w);
        }
        let [a, b, c, d] = self.lanes;
        (a ^ b.rotate_left(16) ^ c.rotate_left(32) ^ d.rotate_left(48) ^ bytes)
            .wrapping_mul(0x9e37_79b9_7f4a_7c15)
    }
}

/// Adds one 32-byte block, a word to each lane, to a fold's lanes.
#[inline(always)]
fn fold_block(lanes: &mut [u64; 4], q: [u64; 4]) {
    for (l, w) in lanes.iter_mut().zip(q) {
        *l = l.wrapping_add(w).rotate_left(7);
    }
}

/// How far apart the payload patterns of a sender's buffers start: [`BURST`] strides stay
/// within the pattern's 64 KiB period, so no two buffers carry the same payload (a test
/// checks it at 64, 1500 and 65535 bytes).
const SALT_STRIDE: usize = 977;
const _: () = assert!(SALT_STRIDE * BURST < 65536);

/// A frame of `len` bytes: `fill` up to [`HEADER`], then a byte pattern that no shift of
/// less than 64 KiB maps onto itself, started `salt` strides along, so that a datapath
/// that delivers bytes out of place within a frame (shifted, repeated, from another
/// offset), or another buffer's bytes, fails the check, where a payload of one fill byte
/// would pass it. Frames sent from the same buffer (every [`BURST`]th small frame) share
/// their payload: only the header tells them apart. Made once per sender buffer: it
/// costs nothing per frame.
fn template(len: usize, fill: u8, salt: usize) -> Vec<u8> {
    (0..len)
        .map(|i| {
            if i < HEADER {
                return fill;
            }
            let p = i + salt * SALT_STRIDE;
            fill ^ (p.wrapping_mul(167) as u8) ^ ((p >> 8).wrapping_mul(13) as u8)
        })
        .collect()
}

/// Where frame `seq` falls in a cycle of `len` sizes. A single size needs no division (a
/// 64-bit division per frame is a measurable part of a 64-byte frame's cost).
#[inline]
fn cycle_index(seq: u64, len: usize) -> usize {
    if len <= 1 {
        0
    } else {
        (seq % len as u64) as usize
    }
}

/// The little-endian word in the first 8 bytes of `w`.
#[inline]
fn le_word(w: &[u8]) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&w[..8]);
    u64::from_le_bytes(a)
}

/// The checksum a frame with payload fold `payload` and sequence number `seq` carries.
fn checksum(seq: u64, payload: u64) -> u64 {
    (payload ^ seq).wrapping_mul(0xff51_afd7_ed55_8ccd)
}

fn fold_of(bytes: &[u8]) -> u64 {
    let mut f = Fold::default();
    f.feed(bytes);
    f.finish()
}

// `Piece::Header` holds the header as whole words.
const _: () = assert!(HEADER == 4 * 8 && SEQ_AT % 8 == 0 && SUM_AT % 8 == 0);

/// Shared bytes after a frame's header, in a part of a frame lent in several, that are
/// folded in place rather than through the checker's window: fewer cost more to set up
/// than they save.
pub const FOLD_IN_PLACE_MIN: usize = 256;

/// A piece of a frame as the checker is fed it.
enum Piece<'a> {
    /// Bytes, in frame order.
    Bytes(&'a [u8]),
    /// The frame's [`HEADER`] bytes as four little-endian words (the frame's first piece).
    Header([u64; 4]),
    /// `len` bytes lent in shared memory at `offset`, all after the header, folded where
    /// they lie ([`Fold::feed_shared`]).
    Shared {
        mem: &'a SharedMem,
        offset: usize,
        len: usize,
    },
}

/// Frames longer than an Ethernet frame carry the sender's GSO metadata.
const GSO_ABOVE: usize = 1514;

/// The most bytes a sender's frames take together (at least one frame): a packet source
/// whose frames stay in the core's cache, as a program's freshly made packets would.
/// Cycling through [`BURST`] frames of 64 KiB (4 MiB) made every packet's copy into shared
/// memory read its source from far memory, a cost of the generator, not of the design.
const FRAMES_BYTES: usize = 256 * 1024;

/// A sender's frames: up to [`BURST`] frames (fewer when large: at most 256 KiB) sized as
/// the spec's cycle says, sent in ring order, each stamped (and sized) for the next
/// sequence number when it goes out again. Each buffer has a payload of its own (the
/// same position pattern, started at a different place), so bytes of a frame
/// sent from another buffer fail the check. The buffers lie one after another in one
/// allocation, each starting on a 64-byte line, so a 64-byte frame is one line to copy.
/// Nothing is allocated after [`Stamper::new`].
#[derive(Debug)]
pub struct Stamper {
    /// The buffers, each of the largest size, `stride` bytes apart from `first` on;
    /// `lens` says how much of each is the frame.
    store: Vec<u8>,
    first: usize,
    stride: usize,
    lens: Vec<usize>,
    head: usize,
    next: u64,
    /// Size of each packet of a cycle, and its index among the spec's sizes.
    cycle: Vec<(usize, usize)>,
    /// Payload fold of buffer `i`'s frame of size index `k`, at `i * sizes + k`.
    folds: Vec<u64>,
    sizes: usize,
    gso: Option<Gso>,
}

/// Where a sender's buffers start: the cache-line size.
const FRAME_ALIGN: usize = 64;

impl Stamper {
    /// Frames of `sizes` whose Ethernet header and padding are `fill` and whose payload is
    /// a pattern of its positions seeded by `fill` and the buffer (stamped if at least
    /// [`HEADER`] long); those longer than 1514 bytes carry `gso`.
    pub fn new(sizes: impl Into<SizeSpec>, fill: u8, gso: Option<Gso>) -> Stamper {
        let spec = sizes.into();
        let count = (FRAMES_BYTES / spec.max().max(1)).clamp(1, BURST);
        let stride = spec.max().max(1).next_multiple_of(FRAME_ALIGN);
        let mut store = vec![0u8; count * stride + FRAME_ALIGN];
        // The allocation never grows, so its buffers stay where they are aligned now.
        let first = store.as_ptr().align_offset(FRAME_ALIGN).min(FRAME_ALIGN);
        let sizes: Vec<usize> = spec.weights().iter().map(|w| w.0).collect();
        let mut folds = Vec::with_capacity(count * sizes.len());
        for (i, buf) in store[first..]
            .chunks_exact_mut(stride)
            .take(count)
            .enumerate()
        {
            let frame = template(spec.max(), fill, i);
            folds.extend(
                sizes
                    .iter()
                    .map(|&n| fold_of(frame.get(HEADER..n).unwrap_or_default())),
            );
            buf[..frame.len()].copy_from_slice(&frame);
        }
        let index = |n: usize| sizes.iter().position(|&m| m == n).unwrap_or(0);
        let mut s = Stamper {
            store,
            first,
            stride,
            lens: vec![0; count],
            head: 0,
            next: 0,
            cycle: spec.cycle().into_iter().map(|n| (n, index(n))).collect(),
            folds,
            sizes: sizes.len(),
            gso,
        };
        s.stamp_range(0..count);
        s
    }

    /// Stamps buffers `range`, in order, with the next sequence numbers and sizes them.
    fn stamp_range(&mut self, range: Range<usize>) {
        for i in range {
            let seq = self.next;
            self.next += 1;
            let (len, k) = self.cycle[cycle_index(seq, self.cycle.len())];
            self.lens[i] = len;
            if len >= HEADER {
                let payload = self.folds[i * self.sizes + k];
                let at = self.first + i * self.stride;
                let (seq_bytes, sum_bytes) =
                    self.store[at + SEQ_AT..at + HEADER].split_at_mut(SUM_AT - SEQ_AT);
                seq_bytes.copy_from_slice(&seq.to_le_bytes());
                sum_bytes.copy_from_slice(&checksum(seq, payload).to_le_bytes());
            }
        }
    }

    /// The next `max` frames to send, in order (fewer if it has fewer: it keeps at most
    /// 256 KiB of them).
    pub fn burst(&self, max: usize) -> ArrayVec<PacketRef<'_>, BURST> {
        let mut out = ArrayVec::new();
        let (to_end, from_start) = self.ring_from_head(max);
        self.push_frames(&mut out, to_end);
        self.push_frames(&mut out, from_start);
        out
    }

    /// Adds buffers `range`'s frames to `out` (which has room: it holds at most all of
    /// them).
    fn push_frames<'s>(&'s self, out: &mut ArrayVec<PacketRef<'s>, BURST>, range: Range<usize>) {
        let lens = &self.lens[range.clone()];
        let bytes = &self.store[self.first + range.start * self.stride..];
        for (buf, &len) in bytes.chunks_exact(self.stride).zip(lens) {
            let mut p = PacketRef::new(&buf[..len]);
            if len > GSO_ABOVE {
                p.gso = self.gso;
            }
            out.push(p);
        }
    }

    /// The first `n` frames of the last burst went out: they get the next numbers.
    pub fn sent(&mut self, n: usize) {
        let (to_end, from_start) = self.ring_from_head(n);
        self.head = if from_start.is_empty() {
            to_end.end % self.lens.len()
        } else {
            from_start.end
        };
        self.stamp_range(to_end);
        self.stamp_range(from_start);
    }

    /// The buffers of the next `n` frames (at most all) in ring order: those from the
    /// head to the end, then those from the start (no division per frame: a 64-bit one
    /// is a measurable part of a 64-byte frame's cost).
    fn ring_from_head(&self, n: usize) -> (Range<usize>, Range<usize>) {
        let count = self.lens.len();
        let n = n.min(count);
        let to_end = (count - self.head).min(n);
        (self.head..self.head + to_end, 0..n - to_end)
    }
}

/// What a receiver found.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Check {
    /// Frames that arrived intact.
    pub delivered: u64,
    /// Frames whose sequence numbers were skipped (never arrived).
    pub lost: u64,
    /// Frames whose checksum did not match.
    pub corrupted: u64,
    /// Intact frames that arrived after a later one.
    pub reordered: u64,
    /// Frames of the wrong length, or that could not be read whole.
    pub errored: u64,
}

impl Check {
    /// Adds another receiver's findings.
    pub fn add(&mut self, o: &Check) {
        self.delivered += o.delivered;
        self.lost += o.lost;
        self.corrupted += o.corrupted;
        self.reordered += o.reordered;
        self.errored += o.errored;
    }

    /// Whether nothing was lost, corrupted or cut short.
    pub fn intact(&self) -> bool {
        self.lost == 0 && self.corrupted == 0 && self.errored == 0
    }
}

/// A receiver of one stream of stamped frames sized by a [`SizeSpec`].
#[derive(Debug, Clone)]
pub struct Checker {
    /// The size of each packet of a cycle.
    cycle: Vec<usize>,
    /// The spec's sizes, each once.
    sizes: Vec<usize>,
    next: u64,
    /// The private window shared bytes are read through, made once (a fresh zeroed array
    /// per frame cost more than reading a 64-byte frame).
    window: Vec<u8>,
    /// What it found so far.
    pub found: Check,
}

impl Checker {
    /// A receiver expecting frames of `sizes` numbered from 0.
    pub fn new(sizes: impl Into<SizeSpec>) -> Checker {
        let spec = sizes.into();
        Checker {
            cycle: spec.cycle(),
            sizes: spec.weights().iter().map(|w| w.0).collect(),
            next: 0,
            window: vec![0; 512],
            found: Check::default(),
        }
    }

    /// Checks a frame held in private memory.
    pub fn bytes(&mut self, b: &[u8]) {
        if !self.admit(b.len()) {
            return;
        }
        let mut fold = Fold::default();
        let rest = fold.feed_quads(&b[HEADER..]);
        if !rest.is_empty() {
            fold.feed(rest);
        }
        let (seq, sum) = (le_word(&b[SEQ_AT..]), le_word(&b[SUM_AT..]));
        self.settle(b.len(), seq, sum, fold.finish());
    }

    /// Checks a frame lent whole in one window of shared memory, each byte read once: the
    /// header block and every whole 32-byte block after it come straight from the loads
    /// (the blocks after the header start on a lane boundary of the fold), only the last
    /// few bytes through a small private buffer.
    fn whole_shared(&mut self, mem: &SharedMem, offset: usize, len: usize) {
        if !self.admit(len) {
            return;
        }
        let mut head = None;
        let mut lanes = [0u64; 4];
        let read = mem.read_blocks_le(offset, len, |q| match head {
            None => head = Some(q),
            Some(_) => fold_block(&mut lanes, q),
        });
        let (Ok(read), Some(h)) = (read, head) else {
            self.found.errored += 1;
            return;
        };
        let mut fold = Fold {
            lanes,
            words: ((read - HEADER) / 8) as u64,
            ..Fold::default()
        };
        if read < len {
            // (A frame of whole blocks, as 64 bytes are, has no tail to read.)
            let mut tail = [0u8; 32];
            let tail = &mut tail[..len - read];
            if mem.read_at(offset + read, tail).is_err() {
                self.found.errored += 1;
                return;
            }
            fold.feed(tail);
        }
        self.settle(len, h[SEQ_AT / 8], h[SUM_AT / 8], fold.finish());
    }

    /// Checks a frame lent in place, reading each shared byte once, never through a
    /// reference into shared memory. A header in shared memory is read as four words
    /// straight into registers (read back from a private copy just after the copy stored
    /// it, the load would wait on the stores); the bytes of a part after the header are
    /// folded where they lie, in words loaded straight into the fold, when there are at
    /// least [`FOLD_IN_PLACE_MIN`] of them (and always in a frame lent whole in one part);
    /// fewer, and the rest of a header cut across parts, go through a small private window.
    /// A frame that cannot be read whole counts as errored, once, and is not judged.
    pub fn view(&mut self, v: &PacketView<'_>) {
        match v.parts() {
            [ViewPart::Private(b)] => self.bytes(b),
            [ViewPart::Shared { mem, offset, len }] => self.whole_shared(mem, *offset, *len),
            _ => self.pieces(v),
        }
    }

    /// [`Checker::view`] for a frame in several parts (out of line: inlined, its register
    /// saves cost every frame, the common one-part frames included).
    #[inline(never)]
    fn pieces(&mut self, v: &PacketView<'_>) {
        let mut chunk = std::mem::take(&mut self.window);
        self.judge(v.len(), |f| {
            // Bytes of the frame before this part.
            let mut seen = 0;
            for (i, part) in v.parts().iter().enumerate() {
                let fed = match part {
                    ViewPart::Private(b) => {
                        f(Piece::Bytes(b));
                        Ok(())
                    }
                    ViewPart::Shared { mem, offset, len } => {
                        feed_shared_part(mem, *offset, *len, i == 0, seen, &mut chunk, f)
                    }
                };
                if fed.is_err() {
                    return false;
                }
                seen += part.len();
            }
            true
        });
        self.window = chunk;
    }

    /// Feeds the frame's bytes (by `feed`, which says whether it could read them all)
    /// through the header and the fold, and judges it; a frame not read whole counts as
    /// errored, once, and is not judged.
    fn judge(&mut self, len: usize, feed: impl FnOnce(&mut dyn FnMut(Piece<'_>)) -> bool) {
        if !self.admit(len) {
            return;
        }
        let mut head = [0u8; HEADER];
        let mut pos = 0usize;
        let (mut seq, mut sum) = (0, 0);
        let mut fold = Fold::default();
        let mut unreadable = false;
        let read = feed(&mut |piece| {
            let mut b = match piece {
                Piece::Header(h) => {
                    // Only ever the frame's first piece.
                    (seq, sum) = (u64::from_le(h[SEQ_AT / 8]), u64::from_le(h[SUM_AT / 8]));
                    pos = HEADER;
                    return;
                }
                Piece::Shared { mem, offset, len } => {
                    // Only ever after the whole header.
                    unreadable |= fold.feed_shared(mem, offset, len).is_err();
                    return;
                }
                Piece::Bytes(b) => b,
            };
            if pos == 0 && b.len() >= HEADER {
                // The usual case: the header is whole in the first piece, read from there
                // (through `head`, its words would be loaded just after their bytes were
                // stored one by one: a stalled load).
                (seq, sum) = (le_word(&b[SEQ_AT..]), le_word(&b[SUM_AT..]));
                pos = HEADER;
                b = &b[HEADER..];
            } else if pos < HEADER {
                let n = (HEADER - pos).min(b.len());
                head[pos..pos + n].copy_from_slice(&b[..n]);
                pos += n;
                b = &b[n..];
                if pos == HEADER {
                    (seq, sum) = (le_word(&head[SEQ_AT..]), le_word(&head[SUM_AT..]));
                }
            }
            fold.feed(b);
        });
        if !read || unreadable {
            self.found.errored += 1;
            return;
        }
        self.settle(len, seq, sum, fold.finish());
    }

    /// Whether a frame of `len` bytes is one to read: a size of the spec, and stamped. A
    /// frame that is not is counted here (errored, or delivered when too short to stamp).
    fn admit(&mut self, len: usize) -> bool {
        // (One size, the common stream, is one comparison, not a search.)
        let known = match self.sizes[..] {
            [only] => len == only,
            _ => self.sizes.contains(&len),
        };
        if !known {
            self.found.errored += 1;
            return false;
        }
        if len < HEADER {
            self.found.delivered += 1;
            return false;
        }
        true
    }

    /// Judges a read frame of `len` bytes by its header's `seq` and `sum` and the fold of
    /// its payload.
    fn settle(&mut self, len: usize, seq: u64, sum: u64, payload: u64) {
        if checksum(seq, payload) != sum {
            self.found.corrupted += 1;
            return;
        }
        if len != self.cycle[cycle_index(seq, self.cycle.len())] {
            // Intact, but another packet's size: cut or padded to it.
            self.found.errored += 1;
            return;
        }
        self.found.delivered += 1;
        if seq < self.next {
            self.found.reordered += 1;
        } else {
            self.found.lost += seq - self.next;
            self.next = seq + 1;
        }
    }
}

/// Feeds `f` one part of a frame lent in shared memory, `seen` bytes of the frame before
/// it, each byte read once: the header as four words when the first part holds it whole,
/// otherwise the header's rest through `window`; then, from the end of the header on, at
/// least [`FOLD_IN_PLACE_MIN`] bytes in place ([`Piece::Shared`]) or fewer through `window`.
fn feed_shared_part(
    mem: &SharedMem,
    offset: usize,
    len: usize,
    first: bool,
    seen: usize,
    window: &mut [u8],
    f: &mut dyn FnMut(Piece<'_>),
) -> Result<(), MemError> {
    let mut at = 0;
    if first && len >= HEADER {
        f(Piece::Header(mem.read_obj::<[u64; 4]>(offset)?));
        at = HEADER;
    } else if seen < HEADER {
        at = (HEADER - seen).min(len);
        mem.read_at(offset, &mut window[..at])?;
        f(Piece::Bytes(&window[..at]));
    }
    if seen + at >= HEADER && len - at >= FOLD_IN_PLACE_MIN {
        f(Piece::Shared {
            mem,
            offset: offset + at,
            len: len - at,
        });
        return Ok(());
    }
    while at < len {
        let n = (len - at).min(window.len());
        mem.read_at(offset + at, &mut window[..n])?;
        f(Piece::Bytes(&window[..n]));
        at += n;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The fold does not depend on how the bytes are split into pieces.
    #[test]
    fn the_fold_is_the_same_however_the_bytes_come() {
        let bytes: Vec<u8> = (0..5000u32).map(|i| (i * 7 + i / 13) as u8).collect();
        let whole = fold_of(&bytes);
        for cut in [1, 3, 7, 8, 9, 31, 32, 33, 100, 511] {
            let mut f = Fold::default();
            for piece in bytes.chunks(cut) {
                f.feed(piece);
            }
            assert_eq!(f.finish(), whole, "pieces of {cut}");
        }
    }

    /// A frame lent in shared memory, its header read as words, checks out as the same
    /// bytes held privately do; a damaged header word or payload byte is found.
    #[test]
    fn frames_lent_in_shared_memory_check_out_and_damage_is_found() {
        use netstage_ring::SharedMem;
        for size in [HEADER, 64, 1500] {
            let mut s = Stamper::new(size, 0x5a, None);
            let mut c = Checker::new(size);
            let mem = SharedMem::new_zeroed(4 * 8192);
            for round in 0..4usize {
                let frame = s.burst(1)[0].data.to_vec();
                s.sent(1);
                let mut sent = frame.clone();
                match round {
                    2 => sent[SEQ_AT] ^= 1,
                    3 => sent[size - 1] ^= 0x80,
                    _ => {}
                }
                // Frames at an 8-byte boundary and off one; the second half privately.
                let at = 8192 * round + 8 * round + round % 2;
                let cut = size / 2;
                mem.write_at(at, &sent[..cut]).unwrap();
                let mut v = PacketView::new(None, false);
                v.push(ViewPart::Shared {
                    mem: &mem,
                    offset: at,
                    len: cut,
                })
                .unwrap();
                v.push(ViewPart::Private(&sent[cut..])).unwrap();
                c.view(&v);
            }
            assert_eq!(
                c.found,
                Check {
                    delivered: 2,
                    corrupted: 2,
                    ..Check::default()
                },
                "{size}"
            );
        }
    }

    /// A frame in two shared parts (a data ring's wrap), cut anywhere: the bytes folded in
    /// place give the same verdict as bytes held privately, whatever the alignment of
    /// either part and whatever the fold was waiting for when the second part began; a
    /// damaged byte anywhere is found.
    #[test]
    fn frames_folded_in_place_check_out_wherever_the_parts_are_cut() {
        use netstage_ring::SharedMem;
        let size = 9000;
        let mem = SharedMem::new_zeroed(4 * 16384);
        // A payload of varied bytes, its own (with one fill byte, a fold that mixed up its
        // lanes would still agree).
        let stamped = |seq: u64| {
            let mut f: Vec<u8> = (0..size).map(|i| (i * 31 + i / 251) as u8).collect();
            let sum = checksum(seq, fold_of(&f[HEADER..]));
            f[SEQ_AT..SUM_AT].copy_from_slice(&seq.to_le_bytes());
            f[SUM_AT..HEADER].copy_from_slice(&sum.to_le_bytes());
            f
        };
        // Every fold state a second part can begin in: waiting bytes 0..7, words 0..3.
        let cuts = [20, HEADER, HEADER + 1, 37, 40, 48, 50, 61, 300, 301, 4095];
        // The first part shared, private, or the whole frame in one shared part (at an
        // alignment that changes with the cut).
        for (cut, first) in cuts
            .into_iter()
            .chain([size - 300, size - 1])
            .flat_map(|cut| [(cut, "shared"), (cut, "private"), (cut, "whole")])
        {
            let mut c = Checker::new(size);
            let damage = [
                None,
                Some(HEADER),
                Some(cut),
                Some((cut + 290) % size),
                Some(size - 1),
            ];
            for (round, hit) in damage.into_iter().enumerate() {
                let mut sent = stamped(round as u64);
                if let Some(i) = hit {
                    sent[i] ^= 0x10;
                }
                // The second part first in memory, as after a wrap; odd offsets in turn.
                let (a, b) = (16384 + round * 9, 2 * 16384 + 3 * round + cut % 8);
                mem.write_at(a, &sent[..cut]).unwrap();
                mem.write_at(b, &sent[cut..]).unwrap();
                let mut v = PacketView::new(None, false);
                let shared = |offset, len| ViewPart::Shared {
                    mem: &mem,
                    offset,
                    len,
                };
                match first {
                    "private" => v.push(ViewPart::Private(&sent[..cut])).unwrap(),
                    "shared" => v.push(shared(a, cut)).unwrap(),
                    _ => mem.write_at(b + 16384, &sent).unwrap(),
                }
                if first == "whole" {
                    v.push(shared(b + 16384, size)).unwrap();
                } else {
                    v.push(shared(b, size - cut)).unwrap();
                }
                c.view(&v);
            }
            assert_eq!(
                c.found,
                Check {
                    delivered: 1,
                    corrupted: 4,
                    ..Check::default()
                },
                "cut at {cut}, first part {first}"
            );
        }
    }

    /// A frame lent where it cannot be read (a window past the end of the memory, in its
    /// header, after it, or lent whole) counts as errored once and is not judged: its
    /// number is not known, so the next good frame finds it lost.
    #[test]
    fn a_frame_that_cannot_be_read_whole_counts_as_errored_once() {
        use netstage_ring::SharedMem;
        let size = 1500;
        let mut s = Stamper::new(size, 0x77, None);
        let mut c = Checker::new(size);
        let mem = SharedMem::new_zeroed(4096);
        let bad: [&[(usize, usize)]; 3] = [
            &[(4090, 100), (0, size - 100)],
            &[(0, 700), (4000, size - 700)],
            &[(3000, size)],
        ];
        for parts in bad.into_iter().chain([&[(100, size)][..]]) {
            let frame = s.burst(1)[0].data.to_vec();
            s.sent(1);
            mem.write_at(100, &frame).unwrap();
            let mut v = PacketView::new(None, false);
            for &(offset, len) in parts {
                v.push(ViewPart::Shared {
                    mem: &mem,
                    offset,
                    len,
                })
                .unwrap();
            }
            c.view(&v);
        }
        assert_eq!(
            c.found,
            Check {
                delivered: 1,
                lost: 3,
                errored: 3,
                ..Check::default()
            }
        );
    }

    #[test]
    fn stamped_frames_check_out_and_damage_is_found() {
        for size in [HEADER, 64, 1500, 9000] {
            let mut s = Stamper::new(size, 0xa5, None);
            let mut c = Checker::new(size);
            for _ in 0..3 {
                let b = s.burst(BURST);
                for p in &b[..10] {
                    c.bytes(p.data);
                }
                drop(b);
                s.sent(10);
            }
            assert_eq!(
                c.found,
                Check {
                    delivered: 30,
                    ..Check::default()
                },
                "{size}"
            );
            // A frame skipped, a frame damaged, a frame again, a frame cut short.
            let b = s.burst(BURST);
            let skipped = b[1].data.to_vec();
            c.bytes(&skipped);
            let mut bad = b[2].data.to_vec();
            let last = bad.len() - 1;
            bad[last] ^= 1;
            c.bytes(&bad);
            c.bytes(&skipped);
            c.bytes(&skipped[..size - 1]);
            assert_eq!(
                c.found,
                Check {
                    delivered: 32,
                    lost: 1,
                    corrupted: 1,
                    reordered: 1,
                    errored: 1,
                },
                "{size}"
            );
        }
    }

    /// A payload delivered out of place (shifted by a byte or a word, a block repeated
    /// over the next) is found: a payload of one repeated byte would hide all three.
    #[test]
    fn a_payload_delivered_out_of_place_is_found() {
        for size in [64, 1500, 65535] {
            let s = Stamper::new(size, 0x5a, None);
            let mut c = Checker::new(size);
            let good = s.burst(1)[0].data.to_vec();
            c.bytes(&good);
            let mut damaged = Vec::new();
            for by in [1, 8] {
                let mut f = good.clone();
                f[HEADER..].rotate_left(by);
                damaged.push(f);
            }
            if size - HEADER >= 64 {
                let mut f = good.clone();
                f.copy_within(HEADER..HEADER + 32, HEADER + 32);
                damaged.push(f);
            }
            for f in &damaged {
                c.bytes(f);
            }
            let want = Check {
                delivered: 1,
                corrupted: damaged.len() as u64,
                ..Check::default()
            };
            assert_eq!(c.found, want, "{size}");
        }
    }

    /// No two of a sender's buffers carry the same payload, so another frame's bytes
    /// delivered under a frame's header fail the check.
    #[test]
    fn frames_from_other_buffers_are_told_apart() {
        for size in [64, 1500, 65535] {
            let s = Stamper::new(size, 0x5a, None);
            let frames: Vec<Vec<u8>> = s.burst(BURST).iter().map(|p| p.data.to_vec()).collect();
            for (a, fa) in frames.iter().enumerate() {
                for fb in &frames[a + 1..] {
                    assert_ne!(fa[HEADER..], fb[HEADER..], "{size}");
                }
            }
            let mut c = Checker::new(size);
            let mut stale = frames[0].clone();
            stale[..HEADER].copy_from_slice(&frames[1][..HEADER]);
            c.bytes(&frames[0]);
            c.bytes(&stale);
            let want = Check {
                delivered: 1,
                corrupted: 1,
                ..Check::default()
            };
            assert_eq!(c.found, want, "{size}");
        }
    }

    /// A sender keeps at most FRAMES_BYTES of frames (at least one), BURST of small ones.
    #[test]
    fn a_sender_s_frames_fit_in_a_core_s_cache() {
        for (size, frames) in [(64, BURST), (1500, BURST), (9000, 29), (65535, 4)] {
            let s = Stamper::new(size, 0, None);
            assert_eq!(s.burst(BURST).len(), frames, "{size}");
        }
        let s = Stamper::new(SizeSpec::from(65535), 0, None);
        assert_eq!(s.burst(1).len(), 1);
    }

    /// Every frame starts on a 64-byte line, and bursts that run past the last buffer go
    /// on from the first, in sequence, each frame its own buffer's payload.
    #[test]
    fn frames_start_on_a_line_and_bursts_wrap_in_order() {
        // (9000 bytes: 29 buffers, fewer than a burst.)
        for size in [64, 100, 1500, 9000] {
            let mut s = Stamper::new(size, 0x3c, None);
            let mut c = Checker::new(size);
            let firsts: Vec<Vec<u8>> = s.burst(BURST).iter().map(|p| p.data.to_vec()).collect();
            let count = firsts.len();
            let mut sent = 0;
            for k in [5, BURST - 3, 9, BURST, 2, count - 1, count] {
                let b = s.burst(k);
                let k = k.min(count);
                assert_eq!(b.len(), k, "{size}");
                for (j, p) in b.iter().enumerate() {
                    assert_eq!(p.data.as_ptr() as usize % FRAME_ALIGN, 0, "{size}");
                    let buf = (sent + j) % count;
                    assert_eq!(
                        p.data[HEADER..],
                        firsts[buf][HEADER..],
                        "{size} #{}",
                        sent + j
                    );
                    c.bytes(p.data);
                }
                drop(b);
                s.sent(k);
                sent += k;
            }
            let want = Check {
                delivered: sent as u64,
                ..Check::default()
            };
            assert_eq!(c.found, want, "{size}");
        }
    }

    #[test]
    fn mixed_sizes_check_out_by_sequence_number() {
        for spec in ["imix", "mix:64+65535", "mix:64x3+9000"] {
            let spec: SizeSpec = spec.parse().unwrap();
            let gso = Some(Gso {
                gso_type: netstage_ring::netif::GsoType::TcpV4,
                mss: 1448,
            });
            let mut s = Stamper::new(&spec, 0x5a, gso);
            let mut c = Checker::new(&spec);
            let cycle = spec.cycle();
            let mut seq = 0;
            for burst in [1, 7, BURST, 13, BURST] {
                // A mix with 64 KiB frames has fewer than BURST of them (FRAMES_BYTES).
                let b = s.burst(burst);
                for p in &b {
                    assert_eq!(p.data.len(), cycle[seq % cycle.len()], "{spec} #{seq}");
                    assert_eq!(p.gso.is_some(), p.data.len() > 1514, "{spec} #{seq}");
                    c.bytes(p.data);
                    seq += 1;
                }
                let n = b.len();
                drop(b);
                s.sent(n);
            }
            assert_eq!(c.found.delivered, seq as u64, "{spec}: {:?}", c.found);
            assert!(c.found.intact() && c.found.reordered == 0, "{spec}");
            // A frame of a size the mix does not have, and one lost.
            let b = s.burst(BURST);
            c.bytes(&b[0].data[..b[0].data.len() - 1]);
            c.bytes(b[2].data);
            assert_eq!((c.found.errored, c.found.lost), (1, 2), "{spec}");
        }
    }
}
