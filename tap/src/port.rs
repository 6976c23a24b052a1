//! The adapter between a TAP and one netif end: frames read from the TAP are handed to a
//! callback as netif packets, netif packets are written out to the TAP, and each is counted
//! passed on or dropped with its reason.

use std::io;
use std::sync::atomic::{AtomicBool, Ordering};

use bytes::{Bytes, BytesMut};
use netstage_fallback::Packet;

use crate::counters::{DropReason, TapCounters, TapCountersSnapshot};
use crate::device::Tap;
use crate::frame::{split_tap_frame, to_tap_header, FrameError, READ_BUF_LEN};

/// How long a read waits for a frame before the pump looks at its stop flag again, ms.
const POLL_MS: u32 = 100;
/// Size of each block frames read from the TAP are copied into: one allocation per block,
/// not per frame (a block is freed once the peer has let go of all its frames).
const ARENA_BLOCK: usize = 1 << 20;

/// Why the peer did not take a frame read from the TAP.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Nobody to hand it to yet (no guest connected): counted, the pump goes on.
    NoPeer,
    /// The peer's queue is full: counted, the pump goes on.
    Full,
    /// The peer refused this packet: counted, the pump goes on.
    Refused,
    /// The peer is gone for good: counted as refused, and the pump stops.
    Closed,
}

/// How a pump ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PumpEnd {
    /// The stop flag was raised.
    Stopped,
    /// The peer refused a frame with [`Refusal::Closed`].
    PeerClosed,
}

/// A TAP device as one side of a netif end, with the counters of what crossed.
#[derive(Debug)]
pub struct TapPort {
    tap: Tap,
    counters: TapCounters,
}

impl TapPort {
    /// Opens (or creates) TAP interface `name`; see [`Tap::open`].
    pub fn open(name: &str, offload: bool) -> io::Result<TapPort> {
        Ok(TapPort {
            tap: Tap::open(name, offload)?,
            counters: TapCounters::default(),
        })
    }

    /// The device.
    pub fn tap(&self) -> &Tap {
        &self.tap
    }

    /// The counters now.
    pub fn counters(&self) -> TapCountersSnapshot {
        self.counters.snapshot()
    }

    /// Writes a netif packet out to the TAP, with the `virtio_net_hdr` its offloads need;
    /// whether it was written (if not, it is counted under its reason). Safe to call from
    /// several threads at once: each frame is one `writev`.
    pub fn write_packet(&self, p: &Packet) -> bool {
        self.counters.packet_to_write();
        let hdr = match to_tap_header(p) {
            Ok(h) => h,
            Err(e) => {
                let reason = match e {
                    FrameError::TooLarge(_) => DropReason::WriteTooLarge,
                    _ => DropReason::WriteNotTcpUdp,
                };
                self.counters.dropped(reason, &e);
                return false;
            }
        };
        match self.tap.write(&hdr, &p.data) {
            Ok(()) => {
                self.counters.frame_written();
                true
            }
            Err(e) => {
                self.counters.dropped(DropReason::WriteFailed, &e);
                false
            }
        }
    }

    /// Reads frames from the TAP until `stop` is raised or the peer closes, handing each
    /// that netif can carry to `deliver` and counting the rest. Frames are copied into
    /// reused blocks, not allocated one by one. Fails only if the TAP itself fails.
    pub fn pump(
        &self,
        stop: &AtomicBool,
        mut deliver: impl FnMut(Packet) -> Result<(), Refusal>,
    ) -> io::Result<PumpEnd> {
        let mut buf = vec![0u8; READ_BUF_LEN];
        let mut arena = FrameArena::default();
        while !stop.load(Ordering::Relaxed) {
            let Some(n) = self.tap.read(&mut buf, POLL_MS)? else {
                continue;
            };
            self.counters.frame_read();
            let (offloads, frame) = match split_tap_frame(&buf[..n]) {
                Ok(split) => split,
                Err(e) => {
                    self.counters.dropped(read_reason(e), &e);
                    continue;
                }
            };
            let packet = Packet {
                data: arena.copy(frame),
                gso: offloads.gso,
                csum_blank: offloads.csum_blank,
            };
            match deliver(packet) {
                Ok(()) => self.counters.frame_passed(),
                Err(r) => {
                    self.count_refusal(r);
                    if r == Refusal::Closed {
                        return Ok(PumpEnd::PeerClosed);
                    }
                }
            }
        }
        Ok(PumpEnd::Stopped)
    }

    fn count_refusal(&self, r: Refusal) {
        let (reason, what): (_, &dyn std::fmt::Display) = match r {
            Refusal::NoPeer => (DropReason::ReadNoPeer, &"no guest connected yet"),
            Refusal::Full => (DropReason::ReadPeerFull, &"the peer's queue is full"),
            Refusal::Refused => (DropReason::ReadPeerRefused, &"the peer refused it"),
            Refusal::Closed => (DropReason::ReadPeerRefused, &"the peer has closed"),
        };
        self.counters.dropped(reason, what);
    }
}

/// The drop reason of a frame from the TAP that netif cannot carry.
fn read_reason(e: FrameError) -> DropReason {
    match e {
        FrameError::Short(_) => DropReason::ReadShort,
        FrameError::TooLarge(_) => DropReason::ReadTooLarge,
        FrameError::GsoType(_) | FrameError::NotTcpUdp => DropReason::ReadGsoUnsupported,
    }
}

/// Blocks that frames are copied into one after the other, each frame then shared as a
/// `Bytes` view: an allocation per block rather than per frame.
#[derive(Debug, Default)]
struct FrameArena {
    free: BytesMut,
}

impl FrameArena {
    /// `frame`'s bytes in the current block (a new block if it has no room left).
    fn copy(&mut self, frame: &[u8]) -> Bytes {
        if self.free.capacity() < frame.len() {
            // Reuses the old block when every frame in it has been dropped.
            self.free.reserve(ARENA_BLOCK.max(frame.len()));
        }
        self.free.extend_from_slice(frame);
        self.free.split().freeze()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_share_a_block_until_it_is_full() {
        let mut a = FrameArena::default();
        let f1 = a.copy(&[1u8; 100]);
        let f2 = a.copy(&[2u8; 200]);
        assert_eq!(&f1[..], &[1u8; 100][..]);
        assert_eq!(&f2[..], &[2u8; 200][..]);
        // Adjacent in one block.
        assert_eq!(f1.as_ptr().wrapping_add(100), f2.as_ptr());
        // A frame larger than what is left starts a block of its own size at least.
        let big = a.copy(&vec![3u8; ARENA_BLOCK + 1]);
        assert_eq!(big.len(), ARENA_BLOCK + 1);
        assert!(big.iter().all(|b| *b == 3));
        assert_eq!(&f1[..], &[1u8; 100][..]);
    }
}
