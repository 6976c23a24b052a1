//! Packets: an owned [`Packet`] for the convenience layers, a borrowed [`PacketRef`] for the
//! burst calls, and [`PacketBuf`], a buffer with room for the largest packet that a
//! run-to-completion queue fills and the application reuses, so that no packet costs an
//! allocation.

use bytes::Bytes;
use netstage_ring::netif::{GsoType, XEN_NETIF_MAX_TX_SIZE};

/// The largest packet netif carries (a TX request's `size` is 16 bits).
pub const MAX_PACKET: usize = XEN_NETIF_MAX_TX_SIZE;

/// Segmentation offload metadata of a packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Gso {
    /// Protocol.
    pub gso_type: GsoType,
    /// Segment size.
    pub mss: u16,
}

impl Gso {
    /// The GSO request among a chain's extras, if any.
    pub fn from_extras(e: &netstage_ring::netif::Extras) -> Option<Gso> {
        match e.gso {
            Some(netstage_ring::netif::Extra::Gso { size, gso_type, .. }) => Some(Gso {
                gso_type,
                mss: size,
            }),
            _ => None,
        }
    }
}

/// A packet and its offload metadata, owning its bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Packet {
    /// The frame, starting with the Ethernet header.
    pub data: Bytes,
    /// Segmentation offload, for frames larger than the MTU.
    pub gso: Option<Gso>,
    /// The protocol checksum is blank and must be filled in.
    pub csum_blank: bool,
}

impl Packet {
    /// A plain frame without offloads.
    pub fn new(data: impl Into<Bytes>) -> Packet {
        Packet {
            data: data.into(),
            gso: None,
            csum_blank: false,
        }
    }

    /// The packet borrowed, for a burst call.
    pub fn packet_ref(&self) -> PacketRef<'_> {
        PacketRef {
            data: &self.data,
            gso: self.gso,
            csum_blank: self.csum_blank,
        }
    }
}

/// A packet borrowed from the application for the length of one burst call (which copies
/// what it takes into shared memory or hands it to grant copies before it returns).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PacketRef<'a> {
    /// The frame, starting with the Ethernet header.
    pub data: &'a [u8],
    /// Segmentation offload, for frames larger than the MTU.
    pub gso: Option<Gso>,
    /// The protocol checksum is blank and must be filled in.
    pub csum_blank: bool,
}

impl<'a> PacketRef<'a> {
    /// A plain frame without offloads.
    #[inline]
    pub fn new(data: &'a [u8]) -> PacketRef<'a> {
        PacketRef {
            data,
            gso: None,
            csum_blank: false,
        }
    }

    /// A copy that owns its bytes (allocates).
    pub fn to_packet(&self) -> Packet {
        Packet {
            data: Bytes::copy_from_slice(self.data),
            gso: self.gso,
            csum_blank: self.csum_blank,
        }
    }
}

/// Room for one packet of up to [`MAX_PACKET`] bytes, allocated once and filled again and
/// again by a queue's receive burst.
///
/// The room is zeroed when made (by the allocator's fresh pages, so untouched room costs
/// nothing) and never reallocated; [`PacketBuf::prepare`] sets the length without clearing,
/// so bytes beyond a packet are whatever an earlier packet left there.
#[derive(Clone, PartialEq, Eq)]
pub struct PacketBuf {
    room: Box<[u8]>,
    len: usize,
    /// Segmentation offload of the packet held.
    pub gso: Option<Gso>,
    /// The held packet's protocol checksum is blank.
    pub csum_blank: bool,
}

impl std::fmt::Debug for PacketBuf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PacketBuf")
            .field("len", &self.len)
            .field("gso", &self.gso)
            .field("csum_blank", &self.csum_blank)
            .finish()
    }
}

impl Default for PacketBuf {
    fn default() -> Self {
        PacketBuf::new()
    }
}

/// A packet longer than a [`PacketBuf`] holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("a packet of {0} bytes is longer than the {MAX_PACKET} bytes netif carries")]
pub struct TooLong(pub usize);

impl PacketBuf {
    /// An empty buffer with room for the largest packet.
    pub fn new() -> PacketBuf {
        PacketBuf {
            room: vec![0u8; MAX_PACKET].into_boxed_slice(),
            len: 0,
            gso: None,
            csum_blank: false,
        }
    }

    /// `n` empty buffers: the pool a queue's receive bursts fill.
    pub fn pool(n: usize) -> Vec<PacketBuf> {
        (0..n).map(|_| PacketBuf::new()).collect()
    }

    /// Bytes held.
    #[inline]
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether no packet is held.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The packet's bytes.
    #[inline]
    pub fn data(&self) -> &[u8] {
        &self.room[..self.len]
    }

    /// Makes the buffer hold `len` bytes with no offloads and returns them to be written.
    #[inline]
    pub fn prepare(&mut self, len: usize) -> Result<&mut [u8], TooLong> {
        if len > MAX_PACKET {
            return Err(TooLong(len));
        }
        self.len = len;
        self.gso = None;
        self.csum_blank = false;
        Ok(&mut self.room[..len])
    }

    /// Makes the buffer a copy of `p`.
    pub fn fill(&mut self, p: PacketRef<'_>) -> Result<(), TooLong> {
        self.prepare(p.data.len())?.copy_from_slice(p.data);
        self.gso = p.gso;
        self.csum_blank = p.csum_blank;
        Ok(())
    }

    /// The packet held, borrowed for a burst call.
    #[inline]
    pub fn packet_ref(&self) -> PacketRef<'_> {
        PacketRef {
            data: self.data(),
            gso: self.gso,
            csum_blank: self.csum_blank,
        }
    }

    /// A copy that owns its bytes (allocates: for the convenience layers).
    pub fn to_packet(&self) -> Packet {
        self.packet_ref().to_packet()
    }
}
