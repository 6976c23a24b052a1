//! Frame conversion between a TAP's `virtio_net_hdr` framing and netif packets.
//!
//! The header is the 10-byte legacy `struct virtio_net_hdr` of `linux/virtio_net.h`, in the
//! host's byte order (a TAP's default). Its segmentation type and size map onto netif's GSO
//! extra, its `NEEDS_CSUM` flag onto netif's `csum_blank`. Its checksum offsets are not
//! carried by netif (a netif packet only says "checksum blank"), so on the way out to the
//! kernel they are found again by parsing the frame's Ethernet, IP and TCP/UDP headers, as
//! Linux's netback and netfront do with `skb_checksum_setup`.

use bytes::Bytes;
use netstage_fallback::{Gso, Packet};
use netstage_ring::netif::GsoType;

/// Length of `struct virtio_net_hdr`.
pub const VNET_HDR_LEN: usize = 10;
/// `VIRTIO_NET_HDR_F_NEEDS_CSUM`: the checksum at `csum_start + csum_offset` is to be filled.
const F_NEEDS_CSUM: u8 = 1;
/// `VIRTIO_NET_HDR_GSO_NONE`, `_TCPV4`, `_TCPV6`, and the `_ECN` bit.
const GSO_NONE: u8 = 0;
const GSO_TCPV4: u8 = 1;
const GSO_TCPV6: u8 = 4;
const GSO_ECN: u8 = 0x80;
/// The largest frame netif carries (`XEN_NETIF_MAX_TX_SIZE`).
pub const MAX_FRAME: usize = 0xffff;
/// Room for the largest frame a TAP hands over, header included: a 64 KiB segment plus
/// Ethernet and VLAN headers. Larger reads are cut short by the kernel, and then refused
/// here as too large.
pub const READ_BUF_LEN: usize = VNET_HDR_LEN + 65550;

/// Why a frame could not cross between the TAP and netif.
#[derive(Debug, thiserror::Error, PartialEq, Eq, Clone, Copy)]
pub enum FrameError {
    /// Shorter than the header, or than an Ethernet header after it.
    #[error("frame of {0} bytes is too short")]
    Short(usize),
    /// Larger than netif carries.
    #[error("frame of {0} bytes is larger than netif's 65535")]
    TooLarge(usize),
    /// A segmentation type netif has no extra for (UDP, or an unknown value).
    #[error("segmentation type {0:#x} has no netif equivalent")]
    GsoType(u8),
    /// A checksum to fill in or a segmentation, on a frame whose headers are not
    /// Ethernet + IPv4/IPv6 + TCP/UDP.
    #[error("checksum offload on a frame that is not TCP or UDP over IP")]
    NotTcpUdp,
}

/// Where a frame's transport header is and what it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct L4 {
    /// Offset of the TCP or UDP header.
    pub offset: usize,
    /// Offset of its checksum field from `offset` (16 for TCP, 6 for UDP).
    pub csum_offset: usize,
    /// Length of all headers up to the end of the TCP (or UDP) header.
    pub headers: usize,
    /// IPv6 rather than IPv4.
    pub v6: bool,
}

/// Finds the transport header of an Ethernet frame carrying TCP or UDP over IPv4 or IPv6
/// (one optional VLAN tag; IPv6 extension headers are not walked). Every length is checked
/// against the frame: `None` for anything else or anything cut short.
pub fn l4(frame: &[u8]) -> Option<L4> {
    let be16 = |o: usize| -> Option<u16> {
        Some(u16::from_be_bytes([*frame.get(o)?, *frame.get(o + 1)?]))
    };
    let mut l3 = 14;
    let mut ethertype = be16(12)?;
    if ethertype == 0x8100 {
        ethertype = be16(16)?;
        l3 = 18;
    }
    let (proto, offset, v6) = match ethertype {
        0x0800 => {
            let vihl = *frame.get(l3)?;
            let ihl = usize::from(vihl & 0xf) * 4;
            if vihl >> 4 != 4 || ihl < 20 {
                return None;
            }
            (*frame.get(l3 + 9)?, l3 + ihl, false)
        }
        0x86dd => (*frame.get(l3 + 6)?, l3 + 40, true),
        _ => return None,
    };
    let (csum_offset, len) = match proto {
        6 => (16, usize::from(*frame.get(offset + 12)? >> 4) * 4),
        17 => (6, 8),
        _ => return None,
    };
    // A TCP header is at least 20 bytes (data offset 5): below that, its checksum field
    // would lie past the header the frame claims.
    if len < csum_offset + 2 || (proto == 6 && len < 20) || offset + len > frame.len() {
        return None;
    }
    Some(L4 {
        offset,
        csum_offset,
        headers: offset + len,
        v6,
    })
}

/// The offloads a TAP frame's header asks for, as netif expresses them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameOffloads {
    /// Segmentation, for a frame larger than the MTU.
    pub gso: Option<Gso>,
    /// The transport checksum is blank and must be filled in.
    pub csum_blank: bool,
}

/// Splits a buffer read from the TAP (header first) into the offloads its header asks for
/// and the Ethernet frame behind it, refusing what netif cannot carry.
pub fn split_tap_frame(buf: &[u8]) -> Result<(FrameOffloads, &[u8]), FrameError> {
    if buf.len() < VNET_HDR_LEN + 14 {
        return Err(FrameError::Short(buf.len()));
    }
    let frame = &buf[VNET_HDR_LEN..];
    if frame.len() > MAX_FRAME {
        return Err(FrameError::TooLarge(frame.len()));
    }
    let flags = buf[0];
    let gso_size = u16::from_ne_bytes([buf[4], buf[5]]);
    let gso = match buf[1] & !GSO_ECN {
        GSO_NONE => None,
        GSO_TCPV4 => Some(GsoType::TcpV4),
        GSO_TCPV6 => Some(GsoType::TcpV6),
        t => return Err(FrameError::GsoType(t)),
    };
    let offloads = FrameOffloads {
        gso: gso.map(|gso_type| Gso {
            gso_type,
            mss: gso_size,
        }),
        csum_blank: flags & F_NEEDS_CSUM != 0,
    };
    Ok((offloads, frame))
}

/// A frame read from the TAP (header first) as a netif packet, its bytes copied into a new
/// buffer ([`crate::TapPort`] copies into a reused arena instead).
pub fn from_tap(buf: &[u8]) -> Result<Packet, FrameError> {
    let (o, frame) = split_tap_frame(buf)?;
    Ok(Packet {
        data: Bytes::copy_from_slice(frame),
        gso: o.gso,
        csum_blank: o.csum_blank,
    })
}

/// The `virtio_net_hdr` to write in front of a netif packet: checksum offsets found from the
/// frame's headers when the checksum is blank (a segmented packet always has one).
pub fn to_tap_header(p: &Packet) -> Result<[u8; VNET_HDR_LEN], FrameError> {
    let mut h = [0u8; VNET_HDR_LEN];
    if p.data.len() > MAX_FRAME {
        return Err(FrameError::TooLarge(p.data.len()));
    }
    if !p.csum_blank && p.gso.is_none() {
        return Ok(h);
    }
    let l = l4(&p.data).ok_or(FrameError::NotTcpUdp)?;
    h[0] = F_NEEDS_CSUM;
    let put = |h: &mut [u8; VNET_HDR_LEN], at: usize, v: usize| {
        // Every offset here is below the frame length, itself at most 65535.
        let v = u16::try_from(v).unwrap_or(u16::MAX);
        h[at..at + 2].copy_from_slice(&v.to_ne_bytes());
    };
    put(&mut h, 6, l.offset);
    put(&mut h, 8, l.csum_offset);
    if let Some(g) = p.gso {
        if l.csum_offset != 16 {
            return Err(FrameError::NotTcpUdp);
        }
        h[1] = match g.gso_type {
            GsoType::TcpV4 => GSO_TCPV4,
            GsoType::TcpV6 => GSO_TCPV6,
        };
        put(&mut h, 2, l.headers);
        put(&mut h, 4, usize::from(g.mss));
    }
    Ok(h)
}
