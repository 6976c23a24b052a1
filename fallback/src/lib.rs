//! The grant-op data path shared by both ends: packets, batched grant copy (at most
//! [`MAX_COPY_OPS`] operations per call, as netback batches), and fetching a packet by grant
//! map with the mapping undone when the fetch ends.
//!
//! The per-packet copy-vs-grant policy of the staging designs will live here too.

use bytes::Bytes;
use netstage_platform::{
    CopyOp, DomId, ForeignRef, GrantCopyBatch, GrantImport, GrantRef, GrantStatus, PlatformError,
};
use netstage_ring::netif::GsoType;

/// Optional features of the protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Features {
    /// `feature-sg`: packets of several slots.
    pub sg: bool,
    /// `feature-gso-tcpv4`.
    pub gso_tcpv4: bool,
    /// `feature-gso-tcpv6`.
    pub gso_tcpv6: bool,
    /// `feature-ipv6-csum-offload`.
    pub ipv6_csum_offload: bool,
}

impl Features {
    /// Everything this implementation supports.
    pub const ALL: Features = Features {
        sg: true,
        gso_tcpv4: true,
        gso_tcpv6: true,
        ipv6_csum_offload: true,
    };
    /// Nothing optional.
    pub const NONE: Features = Features {
        sg: false,
        gso_tcpv4: false,
        gso_tcpv6: false,
        ipv6_csum_offload: false,
    };

    /// `(XenStore key, enabled)` pairs.
    pub fn keys(&self) -> [(&'static str, bool); 4] {
        [
            ("feature-sg", self.sg),
            ("feature-gso-tcpv4", self.gso_tcpv4),
            ("feature-gso-tcpv6", self.gso_tcpv6),
            ("feature-ipv6-csum-offload", self.ipv6_csum_offload),
        ]
    }
}

/// How a queue waits for work.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PollMode {
    /// Block on the event channel (after the platform's brief spin).
    Block,
    /// Spin on the rings and the event channel without sleeping.
    BusyPoll,
}

/// Grant-copy operations per call (Linux netback's batch).
pub const MAX_COPY_OPS: usize = 64;

/// Segmentation offload metadata of a packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Gso {
    /// Protocol.
    pub gso_type: GsoType,
    /// Segment size.
    pub mss: u16,
}

/// A packet and its offload metadata.
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
}

/// Runs `ops` with at most [`MAX_COPY_OPS`] per call, appending one status per op to
/// `status`. Returns the number of calls made.
pub fn copy_batched<P: GrantImport + ?Sized>(
    platform: &P,
    mut ops: Vec<CopyOp<'_>>,
    status: &mut Vec<GrantStatus>,
) -> Result<usize, PlatformError> {
    let mut calls = 0;
    while !ops.is_empty() {
        let rest = if ops.len() > MAX_COPY_OPS {
            ops.split_off(MAX_COPY_OPS)
        } else {
            Vec::new()
        };
        let mut batch = GrantCopyBatch {
            ops,
            status: Vec::new(),
        };
        platform.copy(&mut batch)?;
        calls += 1;
        status.extend_from_slice(&batch.status);
        ops = rest;
    }
    Ok(calls)
}

/// One fragment of a packet in the peer's memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fragment {
    /// The grant.
    pub gref: GrantRef,
    /// Offset in the granted page.
    pub offset: u16,
    /// Bytes.
    pub len: u16,
}

/// Fetches the fragments of one packet granted by `dom` by mapping their pages read-only,
/// copying out, and unmapping. Fails with the first failing grant's status.
pub fn fetch_by_map<P: GrantImport + ?Sized>(
    platform: &P,
    dom: DomId,
    frags: &[Fragment],
    dst: &mut [u8],
) -> Result<(), PlatformError> {
    if frags.is_empty() {
        return Ok(());
    }
    let grefs: Vec<GrantRef> = frags.iter().map(|f| f.gref).collect();
    let window = platform.map(dom, &grefs, false)?;
    let mut at = 0usize;
    for (i, f) in frags.iter().enumerate() {
        let len = usize::from(f.len);
        let end = at + len;
        let Some(d) = dst.get_mut(at..end) else {
            return Err(PlatformError::Invalid(format!(
                "fragments need {end} bytes, the buffer has {}",
                dst.len()
            )));
        };
        window.read_at(i * 4096 + usize::from(f.offset), d)?;
        at = end;
    }
    Ok(())
}

/// Builds the copy operations that fetch `frags` of `dom` into `dst`, in order.
pub fn fetch_ops<'a>(
    dom: DomId,
    frags: &[Fragment],
    mut dst: &'a mut [u8],
    ops: &mut Vec<CopyOp<'a>>,
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
        ops.push(CopyOp::FromForeign {
            src: ForeignRef {
                dom,
                gref: f.gref,
                offset: f.offset,
            },
            dst: head,
        });
        dst = tail;
    }
    Ok(())
}
