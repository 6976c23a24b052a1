//! The netif wire format (`io/netif.h`) and the multi-slot packet rules.
//!
//! Layouts are byte-exact copies of the C structures (checked at compile time here and
//! against the installed C headers by `tests/c_abi.rs`). Peer-written structures are parsed
//! from private copies; every malformed chain is a typed [`Fault`]: `Drop` (answer the slots
//! with an error status, count it, carry on) or `Fatal` (the peer is broken or hostile:
//! disconnect it).

use arrayvec::ArrayVec;
use bitflags::bitflags;
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

use crate::mem::XEN_PAGE_SIZE;
use crate::sring::RingProtocol;

/// `netif_tx_request`: one TX slot written by the frontend.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Default, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
#[repr(C)]
pub struct NetifTxRequest {
    /// Grant reference of the buffer page.
    pub gref: u32,
    /// Offset of the data within the page.
    pub offset: u16,
    /// `NETTXF_*` flags (see [`TxFlags`]).
    pub flags: u16,
    /// Echoed in the response.
    pub id: u16,
    /// First slot: total packet size; later slots: this fragment's size.
    pub size: u16,
}

/// `netif_tx_response`.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Default, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
#[repr(C)]
pub struct NetifTxResponse {
    /// The request's id.
    pub id: u16,
    /// `NETIF_RSP_*`.
    pub status: i16,
}

/// `netif_rx_request`: an empty buffer posted by the frontend.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Default, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
#[repr(C)]
pub struct NetifRxRequest {
    /// Echoed in the response.
    pub id: u16,
    /// Padding (`pad`).
    pub pad: u16,
    /// Grant reference of a page the backend may write.
    pub gref: u32,
}

/// `netif_rx_response`.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Default, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
#[repr(C)]
pub struct NetifRxResponse {
    /// The request's id.
    pub id: u16,
    /// Start of the data in the page.
    pub offset: u16,
    /// `NETRXF_*` flags (see [`RxFlags`]).
    pub flags: u16,
    /// Bytes in this slot if >= 0, else `NETIF_RSP_*`.
    pub status: i16,
}

/// `netif_extra_info`: an extra-info slot (overlays a TX request or an RX response).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Default, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
#[repr(C)]
pub struct NetifExtraInfo {
    /// `XEN_NETIF_EXTRA_TYPE_*`.
    pub ty: u8,
    /// `XEN_NETIF_EXTRA_FLAG_*`.
    pub flags: u8,
    /// The union `u` (GSO, multicast or hash), little-endian.
    pub u: [u8; 6],
}

const _: () = {
    assert!(std::mem::size_of::<NetifTxRequest>() == 12);
    assert!(std::mem::size_of::<NetifTxResponse>() == 4);
    assert!(std::mem::size_of::<NetifRxRequest>() == 8);
    assert!(std::mem::size_of::<NetifRxResponse>() == 8);
    assert!(std::mem::size_of::<NetifExtraInfo>() == 8);
    assert!(std::mem::offset_of!(NetifTxRequest, size) == 10);
    assert!(std::mem::offset_of!(NetifRxRequest, gref) == 4);
    assert!(std::mem::offset_of!(NetifRxResponse, status) == 6);
};

/// The TX ring protocol (`DEFINE_RING_TYPES(netif_tx, ...)`): 256 entries per page.
#[derive(Debug)]
pub enum TxRing {}
impl RingProtocol for TxRing {
    type Request = NetifTxRequest;
    type Response = NetifTxResponse;
}

/// The RX ring protocol (`DEFINE_RING_TYPES(netif_rx, ...)`): 256 entries per page.
#[derive(Debug)]
pub enum RxRing {}
impl RingProtocol for RxRing {
    type Request = NetifRxRequest;
    type Response = NetifRxResponse;
}

bitflags! {
    /// `NETTXF_*` request flags. Bits 4-15 are unassigned upstream.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub struct TxFlags: u16 {
        /// The protocol checksum field is blank (`NETTXF_csum_blank`).
        const CSUM_BLANK = 1 << 0;
        /// The packet data has been validated against its checksum.
        const DATA_VALIDATED = 1 << 1;
        /// The packet continues in the next data slot.
        const MORE_DATA = 1 << 2;
        /// Extra-info slots follow this one.
        const EXTRA_INFO = 1 << 3;
        /// netstage extension (`docs/protocol.md`): the first `offset` bytes of the packet
        /// went through staging memory (the request's slot, or the TX data ring); this
        /// request carries no grant data, and the following slots describe the rest.
        const STAGED = 1 << 4;
        /// The staging-grants RFC's `NETTXF_staging_buffer` (netstage's bit, see
        /// `docs/protocol.md`): the whole packet is in the staging slot whose global id is in
        /// `gref` (typically a received packet's RX slot), at offset 0.
        const STAGING_BUFFER = 1 << 5;
        /// Any other bits are kept (`from_bits_retain`) so extensions can define them.
        const _ = !0;
    }
}

bitflags! {
    /// `NETRXF_*` response flags. Bits 0 and 1 are swapped relative to [`TxFlags`].
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub struct RxFlags: u16 {
        /// The packet data has been validated against its checksum.
        const DATA_VALIDATED = 1 << 0;
        /// The protocol checksum field is blank.
        const CSUM_BLANK = 1 << 1;
        /// The packet continues in the next slot.
        const MORE_DATA = 1 << 2;
        /// Extra-info slots follow this one.
        const EXTRA_INFO = 1 << 3;
        /// Deprecated GSO prefix descriptor.
        const GSO_PREFIX = 1 << 4;
        /// netstage extension (`docs/protocol.md`): the first `offset` bytes of the packet
        /// are in staging memory (the first request's slot, or the RX data ring); this
        /// response's buffer holds none of them (status 0), the following ones the rest.
        const STAGED = 1 << 5;
        /// Any other bits are kept so extensions can define them.
        const _ = !0;
    }
}

/// `NETIF_RSP_DROPPED`.
pub const NETIF_RSP_DROPPED: i16 = -2;
/// `NETIF_RSP_ERROR`.
pub const NETIF_RSP_ERROR: i16 = -1;
/// `NETIF_RSP_OKAY`.
pub const NETIF_RSP_OKAY: i16 = 0;
/// `NETIF_RSP_NULL`: the response slot of an extra-info request.
pub const NETIF_RSP_NULL: i16 = 1;

/// `XEN_NETIF_NR_SLOTS_MIN`: every backend accepts packets of this many data slots.
pub const XEN_NETIF_NR_SLOTS_MIN: usize = 18;
/// `XEN_NETIF_MAX_TX_SIZE`: the largest packet (the `size` field is 16 bits).
pub const XEN_NETIF_MAX_TX_SIZE: usize = 0xFFFF;
/// A chain of more data slots than this is a fatal fault (netback's `fatal_skb_slots`);
/// between [`XEN_NETIF_NR_SLOTS_MIN`] and this it is consumed and dropped.
pub const FATAL_DATA_SLOTS: usize = 20;
/// Ethernet header length: a packet shorter than this is dropped.
pub const ETH_HLEN: usize = 14;

/// `XEN_NETIF_EXTRA_TYPE_NONE` (never valid on the wire).
pub const XEN_NETIF_EXTRA_TYPE_NONE: u8 = 0;
/// `XEN_NETIF_EXTRA_TYPE_GSO`.
pub const XEN_NETIF_EXTRA_TYPE_GSO: u8 = 1;
/// `XEN_NETIF_EXTRA_TYPE_MCAST_ADD`.
pub const XEN_NETIF_EXTRA_TYPE_MCAST_ADD: u8 = 2;
/// `XEN_NETIF_EXTRA_TYPE_MCAST_DEL`.
pub const XEN_NETIF_EXTRA_TYPE_MCAST_DEL: u8 = 3;
/// `XEN_NETIF_EXTRA_TYPE_HASH`.
pub const XEN_NETIF_EXTRA_TYPE_HASH: u8 = 4;
/// `XEN_NETIF_EXTRA_TYPE_MAX` (Xen 4.17 header).
pub const XEN_NETIF_EXTRA_TYPE_MAX: u8 = 5;
/// `XEN_NETIF_EXTRA_FLAG_MORE`: another extra follows.
pub const XEN_NETIF_EXTRA_FLAG_MORE: u8 = 1;
/// At most this many extra slots per packet (one per defined type).
pub const MAX_EXTRA_SLOTS: usize = (XEN_NETIF_EXTRA_TYPE_MAX - 1) as usize;
/// Capacity of a parsed chain: the fatal data-slot limit plus the extras.
pub const MAX_CHAIN_SLOTS: usize = FATAL_DATA_SLOTS + MAX_EXTRA_SLOTS;

/// `XEN_NETIF_GSO_TYPE_*`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum GsoType {
    /// `XEN_NETIF_GSO_TYPE_TCPV4`.
    TcpV4 = 1,
    /// `XEN_NETIF_GSO_TYPE_TCPV6`.
    TcpV6 = 2,
}

/// A decoded extra-info slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Extra {
    /// Segmentation offload: the packet is to be cut into `size`-byte segments.
    Gso {
        /// Maximum segment size (never 0).
        size: u16,
        /// Protocol.
        gso_type: GsoType,
        /// Feature bits (none are defined; sent as 0).
        features: u16,
    },
    /// Add a multicast address to the filter.
    McastAdd([u8; 6]),
    /// Remove a multicast address from the filter.
    McastDel([u8; 6]),
    /// A hash value computed by the sender.
    Hash {
        /// `_XEN_NETIF_CTRL_HASH_TYPE_*` bit number.
        hash_type: u8,
        /// `XEN_NETIF_CTRL_HASH_ALGORITHM_*`.
        algorithm: u8,
        /// The hash.
        value: u32,
    },
}

impl Extra {
    /// The `XEN_NETIF_EXTRA_TYPE_*` of this extra.
    pub fn type_code(&self) -> u8 {
        match self {
            Extra::Gso { .. } => XEN_NETIF_EXTRA_TYPE_GSO,
            Extra::McastAdd(_) => XEN_NETIF_EXTRA_TYPE_MCAST_ADD,
            Extra::McastDel(_) => XEN_NETIF_EXTRA_TYPE_MCAST_DEL,
            Extra::Hash { .. } => XEN_NETIF_EXTRA_TYPE_HASH,
        }
    }
}

impl NetifExtraInfo {
    /// Encodes `extra`, with `XEN_NETIF_EXTRA_FLAG_MORE` if `more`.
    pub fn encode(extra: &Extra, more: bool) -> NetifExtraInfo {
        let mut u = [0u8; 6];
        match *extra {
            Extra::Gso {
                size,
                gso_type,
                features,
            } => {
                u[0..2].copy_from_slice(&size.to_le_bytes());
                u[2] = gso_type as u8;
                u[4..6].copy_from_slice(&features.to_le_bytes());
            }
            Extra::McastAdd(a) | Extra::McastDel(a) => u = a,
            Extra::Hash {
                hash_type,
                algorithm,
                value,
            } => {
                u[0] = hash_type;
                u[1] = algorithm;
                u[2..6].copy_from_slice(&value.to_le_bytes());
            }
        }
        NetifExtraInfo {
            ty: extra.type_code(),
            flags: if more { XEN_NETIF_EXTRA_FLAG_MORE } else { 0 },
            u,
        }
    }

    /// Whether another extra follows.
    pub fn more(&self) -> bool {
        self.flags & XEN_NETIF_EXTRA_FLAG_MORE != 0
    }

    /// Decodes and validates the extra (netback's rules: type 0 or >= MAX, GSO size 0 and an
    /// unknown GSO type are fatal).
    pub fn decode(&self) -> Result<Extra, Fault> {
        let u = self.u;
        match self.ty {
            XEN_NETIF_EXTRA_TYPE_GSO => {
                let size = u16::from_le_bytes([u[0], u[1]]);
                let gso_type = match u[2] {
                    1 => GsoType::TcpV4,
                    2 => GsoType::TcpV6,
                    t => return Err(Fault::Fatal(FaultReason::BadGso { size, gso_type: t })),
                };
                if size == 0 {
                    return Err(Fault::Fatal(FaultReason::BadGso {
                        size,
                        gso_type: u[2],
                    }));
                }
                Ok(Extra::Gso {
                    size,
                    gso_type,
                    features: u16::from_le_bytes([u[4], u[5]]),
                })
            }
            XEN_NETIF_EXTRA_TYPE_MCAST_ADD => Ok(Extra::McastAdd(u)),
            XEN_NETIF_EXTRA_TYPE_MCAST_DEL => Ok(Extra::McastDel(u)),
            XEN_NETIF_EXTRA_TYPE_HASH => Ok(Extra::Hash {
                hash_type: u[0],
                algorithm: u[1],
                value: u32::from_le_bytes([u[2], u[3], u[4], u[5]]),
            }),
            ty => Err(Fault::Fatal(FaultReason::BadExtraType { ty })),
        }
    }

    /// Reads the extra that overlays a TX request slot (its last 4 bytes are padding).
    pub fn from_tx_slot(slot: &NetifTxRequest) -> NetifExtraInfo {
        let b: [u8; 12] = zerocopy::transmute!(*slot);
        NetifExtraInfo {
            ty: b[0],
            flags: b[1],
            u: [b[2], b[3], b[4], b[5], b[6], b[7]],
        }
    }

    /// The TX request slot that carries this extra (padding zeroed).
    pub fn to_tx_slot(&self) -> NetifTxRequest {
        let e: [u8; 8] = zerocopy::transmute!(*self);
        let mut b = [0u8; 12];
        b[..8].copy_from_slice(&e);
        zerocopy::transmute!(b)
    }

    /// Reads the extra that overlays an RX response slot (same size).
    pub fn from_rx_slot(slot: &NetifRxResponse) -> NetifExtraInfo {
        zerocopy::transmute!(*slot)
    }

    /// The RX response slot that carries this extra.
    pub fn to_rx_slot(&self) -> NetifRxResponse {
        zerocopy::transmute!(*self)
    }
}

/// What was wrong with a chain of slots written by the peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum FaultReason {
    /// More data slots than allowed.
    #[error("packet uses {slots} data slots (limit {limit})")]
    TooManySlots {
        /// Data slots seen so far.
        slots: usize,
        /// The limit that was passed.
        limit: usize,
    },
    /// More extra-info slots than there are extra types.
    #[error("packet carries more than {MAX_EXTRA_SLOTS} extra-info slots")]
    TooManyExtras,
    /// A slot's data crosses the end of its 4 KiB page.
    #[error("slot data crosses its page: offset {offset} + size {size} > 4096")]
    CrossesPage {
        /// Offset in the page.
        offset: u16,
        /// Size of the slot's data.
        size: u32,
    },
    /// A later fragment is larger than what the first slot's total leaves.
    #[error("fragment of {size} bytes exceeds the {remaining} bytes left of the packet's total")]
    FragmentTooLarge {
        /// The fragment's size.
        size: u16,
        /// Bytes of the declared total not yet covered.
        remaining: u32,
    },
    /// The packet is shorter than an Ethernet header.
    #[error("packet of {size} bytes is shorter than an Ethernet header (14 bytes)")]
    TooShort {
        /// Total size.
        size: u32,
    },
    /// The chain announces more slots than the peer published.
    #[error("chain truncated after {slots} slots: the peer published a partial packet")]
    Truncated {
        /// Slots consumed before the ring ran dry.
        slots: usize,
    },
    /// Extra with an invalid type.
    #[error("extra-info slot of invalid type {ty}")]
    BadExtraType {
        /// The type code.
        ty: u8,
    },
    /// GSO extra with size 0 or an unknown type.
    #[error("GSO extra with size {size} and type {gso_type} is invalid")]
    BadGso {
        /// The MSS.
        size: u16,
        /// The GSO type code.
        gso_type: u8,
    },
    /// `NETTXF_staged`/`NETRXF_staged` claims more staged bytes than the packet has, or
    /// the remaining fragments do not add up to the rest.
    #[error("staged length {staged} does not fit a {total}-byte packet")]
    BadStaged {
        /// Staged bytes claimed.
        staged: u32,
        /// Packet size.
        total: u32,
    },
    /// `NETTXF_staging_buffer` combined with other data (more slots or staged bytes).
    #[error("a staging-buffer request must describe the whole packet alone")]
    BadStagingBuffer,
    /// An RX response with an error status.
    #[error("RX slot reports status {status}")]
    ErrorStatus {
        /// The (negative) status.
        status: i16,
    },
}

/// A malformed chain: either drop the packet (answer its slots with an error) or disconnect
/// the peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Fault {
    /// Drop the packet, count it, carry on.
    #[error("dropped: {0}")]
    Drop(FaultReason),
    /// The peer is broken or hostile: disconnect.
    #[error("fatal: {0}")]
    Fatal(FaultReason),
}

impl Fault {
    /// The reason, whatever the severity.
    pub fn reason(&self) -> FaultReason {
        match *self {
            Fault::Drop(r) | Fault::Fatal(r) => r,
        }
    }

    /// Whether the peer must be disconnected.
    pub fn is_fatal(&self) -> bool {
        matches!(self, Fault::Fatal(_))
    }
}

/// One consumed TX slot, in ring order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TxSlot {
    /// The request's id (echoed in its response).
    pub id: u16,
    /// What the slot carried.
    pub kind: TxSlotKind,
}

/// What a TX slot carried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TxSlotKind {
    /// Packet data (for the first slot, `size` is already the first fragment's own size).
    Data {
        /// Grant of the page.
        gref: u32,
        /// Offset in the page.
        offset: u16,
        /// Bytes of this fragment.
        size: u16,
        /// Bytes before `offset` that staging memory holds instead of the grant: the start
        /// of this request's data, replicated in the staging slot of its id (RFC rev 1's
        /// encoding, marked by [`TxChain::replicate`]; 0 otherwise). `offset` and `size`
        /// then describe only the granted rest.
        staged: u16,
    },
    /// An extra-info slot (answered with `NETIF_RSP_NULL`).
    Extra,
}

/// The set of extras a packet carried.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Extras {
    /// GSO request, if any.
    pub gso: Option<Extra>,
    /// Multicast add, if any.
    pub mcast_add: Option<Extra>,
    /// Multicast delete, if any.
    pub mcast_del: Option<Extra>,
    /// Hash, if any.
    pub hash: Option<Extra>,
}

impl Extras {
    fn set(&mut self, e: Extra) {
        // As in netback, a later extra of the same type replaces an earlier one.
        let slot = match e {
            Extra::Gso { .. } => &mut self.gso,
            Extra::McastAdd(_) => &mut self.mcast_add,
            Extra::McastDel(_) => &mut self.mcast_del,
            Extra::Hash { .. } => &mut self.hash,
        };
        *slot = Some(e);
    }

    /// The extras present, in type order.
    pub fn iter(&self) -> impl Iterator<Item = &Extra> {
        [&self.gso, &self.mcast_add, &self.mcast_del, &self.hash]
            .into_iter()
            .flatten()
    }
}

/// A complete TX chain as the backend consumed it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TxChain {
    /// Every slot in ring order (data and extras), for the responses.
    pub slots: ArrayVec<TxSlot, MAX_CHAIN_SLOTS>,
    /// Total packet size (the first slot's `size`).
    pub total_size: u16,
    /// The first slot's flags.
    pub flags: TxFlags,
    /// Decoded extras.
    pub extras: Extras,
    /// Why the packet must be dropped, if it must. Its slots were consumed all the same and
    /// are to be answered with `NETIF_RSP_ERROR`.
    pub drop: Option<FaultReason>,
    /// Bytes at the start of the packet carried by staging memory (`NETTXF_staged`, or the
    /// replicated requests [`TxChain::replicate`] marked); the fragments hold the rest. Kept
    /// when the packet is dropped for another reason (a data-ring consumer must still skip
    /// them); 0 if it exceeds the packet.
    pub staged: u16,
    /// With `NETTXF_staging_buffer`: the global slot id holding the whole packet.
    pub staging_buffer: Option<u32>,
}

impl Default for TxChain {
    /// An empty chain, to parse into ([`parse_tx_chain_into`]).
    fn default() -> Self {
        TxChain {
            slots: ArrayVec::new(),
            total_size: 0,
            flags: TxFlags::empty(),
            extras: Extras::default(),
            drop: None,
            staged: 0,
            staging_buffer: None,
        }
    }
}

impl TxChain {
    /// The data fragments in order: `(gref, offset, size)`.
    pub fn fragments(&self) -> impl Iterator<Item = (u32, u16, u16)> + '_ {
        self.slots.iter().filter_map(|s| match s.kind {
            TxSlotKind::Data {
                gref, offset, size, ..
            } if size > 0 => Some((gref, offset, size)),
            _ => None,
        })
    }

    /// Number of data slots (including zero-length ones and a staged first slot).
    pub fn data_slots(&self) -> usize {
        self.slots
            .iter()
            .filter(|s| matches!(s.kind, TxSlotKind::Data { .. }))
            .count()
    }

    /// The id of the first request (which selects the staging slot).
    pub fn first_id(&self) -> u16 {
        self.slots.first().map_or(0, |s| s.id)
    }

    /// Marks the bytes a design replicates in staging memory where no flag announces them
    /// (RFC rev 1's encoding): `take(len)` says how many of the first of each data slot's
    /// `len` bytes, in ring order, the staging slot of its id holds. Each such slot then
    /// describes only its granted rest ([`TxChain::fragments`]) and `staged` counts them
    /// all. A chain with `NETTXF_staged` or `NETTXF_staging_buffer`, or one to be dropped,
    /// is left as it is.
    pub fn replicate(&mut self, mut take: impl FnMut(usize) -> usize) {
        let flagged = self.flags.contains(TxFlags::STAGED) || self.staging_buffer.is_some();
        if self.drop.is_some() || self.staged != 0 || flagged {
            return;
        }
        let mut total = 0u16;
        for s in &mut self.slots {
            if let TxSlotKind::Data {
                offset,
                size,
                staged,
                ..
            } = &mut s.kind
            {
                // At most the slot's size; its offset + size is within its page.
                let n = u16::try_from(take(usize::from(*size))).map_or(*size, |n| n.min(*size));
                *staged = n;
                *offset += n;
                *size -= n;
                // Without a drop the slots' sizes add up to the packet's 16-bit total.
                total = total.saturating_add(n);
            }
        }
        self.staged = total;
    }

    /// The replicated requests [`TxChain::replicate`] marked, in ring order: `(id, bytes)`.
    pub fn replicated(&self) -> impl Iterator<Item = (u16, usize)> + '_ {
        self.slots.iter().filter_map(|s| match s.kind {
            TxSlotKind::Data { staged, .. } if staged > 0 => Some((s.id, usize::from(staged))),
            _ => None,
        })
    }

    /// The responses for every slot in ring order: `status` for data slots,
    /// `NETIF_RSP_NULL` for extras.
    pub fn responses(&self, status: i16) -> impl Iterator<Item = NetifTxResponse> + '_ {
        self.slots.iter().map(move |s| NetifTxResponse {
            id: s.id,
            status: match s.kind {
                TxSlotKind::Data { .. } => status,
                TxSlotKind::Extra => NETIF_RSP_NULL,
            },
        })
    }
}

fn check_in_page(offset: u16, size: u32) -> Result<(), Fault> {
    if u32::from(offset) + size > XEN_PAGE_SIZE as u32 {
        return Err(Fault::Fatal(FaultReason::CrossesPage { offset, size }));
    }
    Ok(())
}

/// Consumes one TX packet (first slot, extras, fragments) from `next`, which yields the
/// published requests in ring order (each already copied out of shared memory) and `None`
/// when the ring has no more.
///
/// Rules (after Linux netback): the chain is consumed whole even when the packet is dropped;
/// more than [`XEN_NETIF_NR_SLOTS_MIN`] data slots is a drop, more than
/// [`FATAL_DATA_SLOTS`] fatal; a slot crossing its page, a bad extra and a truncated chain
/// are fatal; a fragment larger than what the total leaves and a packet shorter than
/// [`ETH_HLEN`] are drops; zero-length fragments are accepted.
pub fn parse_tx_chain(next: impl FnMut() -> Option<NetifTxRequest>) -> Result<TxChain, Fault> {
    let mut chain = TxChain::default();
    parse_tx_chain_into(next, &mut chain)?;
    Ok(chain)
}

/// [`parse_tx_chain`] into `out`, which a burst reuses from packet to packet (a chain is a
/// few hundred bytes: built in place, it is not copied per packet). On an error `out` holds
/// part of the chain and is not to be used.
pub fn parse_tx_chain_into(
    mut next: impl FnMut() -> Option<NetifTxRequest>,
    out: &mut TxChain,
) -> Result<(), Fault> {
    let first = next().ok_or(Fault::Fatal(FaultReason::Truncated { slots: 0 }))?;
    let flags = TxFlags::from_bits_retain(first.flags);
    if flags.intersects(TxFlags::MORE_DATA | TxFlags::EXTRA_INFO | TxFlags::STAGING_BUFFER) {
        parse_tx_chain_general(first, flags, next, out)
    } else {
        parse_lone_tx_request(first, flags, out)
    }
}

/// The common packet, one request without extras, fragments or a staging buffer, parsed
/// by the rules of [`parse_tx_chain`] without its general machinery (on the hot path of
/// every small packet; `lone_request_parses_as_the_general_chain` checks that both agree).
/// A staged request must stage the whole packet; an unstaged one must fit its page (the
/// one fatal fault here).
#[inline]
fn parse_lone_tx_request(
    first: NetifTxRequest,
    flags: TxFlags,
    out: &mut TxChain,
) -> Result<(), Fault> {
    let total = u32::from(first.size);
    let mut drop = None;
    let (staged, size) = if flags.contains(TxFlags::STAGED) {
        let staged = u32::from(first.offset);
        if staged != total {
            drop = Some(FaultReason::BadStaged { staged, total });
        }
        (staged, 0)
    } else {
        check_in_page(first.offset, total)?;
        (0, first.size)
    };
    if drop.is_none() && (total as usize) < ETH_HLEN {
        drop = Some(FaultReason::TooShort { size: total });
    }
    out.slots.clear();
    out.slots.push(TxSlot {
        id: first.id,
        kind: TxSlotKind::Data {
            gref: first.gref,
            offset: first.offset,
            size,
            staged: 0,
        },
    });
    out.total_size = first.size;
    out.flags = flags;
    out.extras = Extras::default();
    out.drop = drop;
    out.staged = if staged <= total { staged as u16 } else { 0 };
    out.staging_buffer = None;
    Ok(())
}

/// [`parse_tx_chain_into`] for a packet of several requests (extras, fragments) or a
/// staging buffer, after its first request `first` with flags `flags`.
fn parse_tx_chain_general(
    first: NetifTxRequest,
    flags: TxFlags,
    mut next: impl FnMut() -> Option<NetifTxRequest>,
    out: &mut TxChain,
) -> Result<(), Fault> {
    let slots = &mut out.slots;
    slots.clear();
    let mut drop = None;
    // The first slot's size is fixed below, once the fragments are known.
    slots.push(TxSlot {
        id: first.id,
        kind: TxSlotKind::Data {
            gref: first.gref,
            offset: first.offset,
            size: 0,
            staged: 0,
        },
    });
    let extras = if flags.contains(TxFlags::EXTRA_INFO) {
        take_extras(&mut next, slots, tx_extra, tx_extra_slot)?
    } else {
        Extras::default()
    };

    let total = u32::from(first.size);
    let zerocopy = flags.contains(TxFlags::STAGING_BUFFER);
    if zerocopy
        && drop.is_none()
        && (flags.contains(TxFlags::STAGED) || flags.contains(TxFlags::MORE_DATA))
    {
        drop = Some(FaultReason::BadStagingBuffer);
    }
    let staged = if zerocopy {
        total
    } else if flags.contains(TxFlags::STAGED) {
        u32::from(first.offset)
    } else {
        0
    };
    if staged > total && drop.is_none() {
        drop = Some(FaultReason::BadStaged { staged, total });
    }
    let mut remaining = total.saturating_sub(staged);
    let mut data_slots = 1usize;
    let mut more = flags.contains(TxFlags::MORE_DATA);
    while more {
        let slot = next().ok_or(Fault::Fatal(FaultReason::Truncated { slots: slots.len() }))?;
        data_slots += 1;
        if data_slots > FATAL_DATA_SLOTS {
            return Err(Fault::Fatal(FaultReason::TooManySlots {
                slots: data_slots,
                limit: FATAL_DATA_SLOTS,
            }));
        }
        if drop.is_none() && data_slots > XEN_NETIF_NR_SLOTS_MIN {
            drop = Some(FaultReason::TooManySlots {
                slots: data_slots,
                limit: XEN_NETIF_NR_SLOTS_MIN,
            });
        }
        check_in_page(slot.offset, u32::from(slot.size))?;
        if drop.is_none() && u32::from(slot.size) > remaining {
            drop = Some(FaultReason::FragmentTooLarge {
                size: slot.size,
                remaining,
            });
        }
        remaining = remaining.saturating_sub(u32::from(slot.size));
        more = TxFlags::from_bits_retain(slot.flags).contains(TxFlags::MORE_DATA);
        slots.push(TxSlot {
            id: slot.id,
            kind: TxSlotKind::Data {
                gref: slot.gref,
                offset: slot.offset,
                size: slot.size,
                staged: 0,
            },
        });
    }

    if staged > 0 || flags.contains(TxFlags::STAGED) || zerocopy {
        // A staged first slot carries no grant data: the fragments cover the rest exactly.
        if remaining != 0 && drop.is_none() {
            drop = Some(FaultReason::BadStaged { staged, total });
        }
        remaining = 0;
    } else {
        // What the total leaves for the first slot must fit its page.
        check_in_page(first.offset, remaining)?;
    }
    if drop.is_none() && (total as usize) < ETH_HLEN {
        drop = Some(FaultReason::TooShort { size: total });
    }
    if let Some(TxSlot {
        kind: TxSlotKind::Data { size, .. },
        ..
    }) = slots.first_mut()
    {
        // remaining <= total <= u16::MAX.
        *size = u16::try_from(remaining).unwrap_or(u16::MAX);
    }
    out.total_size = first.size;
    out.flags = flags;
    out.extras = extras;
    out.drop = drop;
    // The claimed length when it fits the packet (a consumer of a data ring must skip it
    // even if the packet is dropped); 0 when it does not.
    out.staged = if staged <= total { staged as u16 } else { 0 };
    out.staging_buffer = zerocopy.then_some(first.gref);
    Ok(())
}

/// Consumes the extra slots that follow a chain's first slot (netif.h: each says whether
/// another follows), TX requests or RX responses alike: `extra` reads one as its id and
/// extra info, `slot` makes the chain's slot for that id.
fn take_extras<R, S>(
    next: &mut impl FnMut() -> Option<R>,
    slots: &mut ArrayVec<S, MAX_CHAIN_SLOTS>,
    extra: impl Fn(&R) -> (u16, NetifExtraInfo),
    slot: impl Fn(u16) -> S,
) -> Result<Extras, Fault> {
    let mut extras = Extras::default();
    let mut n = 0;
    loop {
        let r = next().ok_or(Fault::Fatal(FaultReason::Truncated { slots: slots.len() }))?;
        n += 1;
        if n > MAX_EXTRA_SLOTS {
            return Err(Fault::Fatal(FaultReason::TooManyExtras));
        }
        let (id, raw) = extra(&r);
        extras.set(raw.decode()?);
        slots.push(slot(id));
        if !raw.more() {
            return Ok(extras);
        }
    }
}

/// A TX request read as an extra: its id and extra info.
fn tx_extra(r: &NetifTxRequest) -> (u16, NetifExtraInfo) {
    (r.id, NetifExtraInfo::from_tx_slot(r))
}

/// The TX chain's slot for an extra of request id `id`.
fn tx_extra_slot(id: u16) -> TxSlot {
    TxSlot {
        id,
        kind: TxSlotKind::Extra,
    }
}

/// An RX response read as an extra: its id and extra info.
fn rx_extra(r: &NetifRxResponse) -> (u16, NetifExtraInfo) {
    (r.id, NetifExtraInfo::from_rx_slot(r))
}

/// The RX chain's slot for an extra of response id `id`.
fn rx_extra_slot(id: u16) -> RxSlot {
    RxSlot {
        id,
        offset: 0,
        len: 0,
        extra: true,
        staged: 0,
    }
}

/// One fragment of a packet to transmit: where its bytes are granted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TxFragment {
    /// Request id for this slot.
    pub id: u16,
    /// Grant of the page.
    pub gref: u32,
    /// Offset in the page.
    pub offset: u16,
    /// Bytes in this fragment.
    pub size: u16,
}

/// Why a packet cannot be encoded (a bug or a limit on our side, not a peer fault).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum EncodeError {
    /// No fragment given.
    #[error("a packet needs at least one fragment")]
    Empty,
    /// Fragment sizes do not add up to a representable total.
    #[error("fragments add up to {total} bytes, more than the 65535 a packet may have")]
    TooLarge {
        /// Sum of fragment sizes.
        total: usize,
    },
    /// Too many data slots for the protocol minimum every backend accepts.
    #[error("packet needs {slots} data slots; at most 18 are accepted by every backend")]
    TooManySlots {
        /// Slots needed.
        slots: usize,
    },
    /// A fragment crosses its page.
    #[error("fragment at offset {offset} of {size} bytes crosses its 4 KiB page")]
    CrossesPage {
        /// Offset.
        offset: u16,
        /// Size.
        size: u16,
    },
    /// More extras than ids, or than types.
    #[error("{extras} extras need as many slot ids (got {ids}), at most 4")]
    Extras {
        /// Extras given.
        extras: usize,
        /// Ids given for them.
        ids: usize,
    },
}

/// Encodes a TX packet as its ring slots, in order: the first fragment (carrying the total
/// size and `flags`), the extras (each with an id from `extra_ids`), then the remaining
/// fragments chained with `NETTXF_more_data`.
pub fn encode_tx_chain(
    flags: TxFlags,
    frags: &[TxFragment],
    extras: &[Extra],
    extra_ids: &[u16],
    out: impl FnMut(NetifTxRequest),
) -> Result<(), EncodeError> {
    let (first, rest) = frags.split_first().ok_or(EncodeError::Empty)?;
    fragment_in_page(first)?;
    encode_chain(flags, *first, first.size, rest, extras, extra_ids, out)
}

/// Encodes a TX packet whose first `staged` bytes went through staging memory
/// (`NETTXF_staged`): a first request with id `first_id`, `offset` = `staged`, `size` = the
/// total, no grant; then the extras; then `rest`, the fragments of the remaining bytes.
pub fn encode_staged_tx_chain(
    flags: TxFlags,
    staged: u16,
    first_id: u16,
    rest: &[TxFragment],
    extras: &[Extra],
    extra_ids: &[u16],
    mut out: impl FnMut(NetifTxRequest),
) -> Result<(), EncodeError> {
    if rest.is_empty() && extras.is_empty() {
        // The common small packet: one request, which cannot fail the checks below.
        out(staged_tx_request(flags, staged, first_id));
        return Ok(());
    }
    let head = TxFragment {
        gref: 0,
        offset: staged,
        size: staged,
        id: first_id,
    };
    encode_chain(
        flags | TxFlags::STAGED,
        head,
        staged,
        rest,
        extras,
        extra_ids,
        out,
    )
}

/// The one request of a packet of `len` bytes staged whole, with request id `id`: what
/// [`encode_staged_tx_chain`] puts for it without fragments or extras (`flags` besides
/// `NETTXF_more_data` and `NETTXF_extra_info`, which it clears, and `NETTXF_staged`, which
/// it sets), without the checks such a packet cannot fail. The caller's part: `len` is the
/// packet's whole length (1 to 65535 bytes, all of it staged) and the packet has no extras;
/// anything else goes through [`encode_staged_tx_chain`].
#[inline]
pub fn staged_tx_request(flags: TxFlags, len: u16, id: u16) -> NetifTxRequest {
    let flags = flags.difference(TxFlags::MORE_DATA | TxFlags::EXTRA_INFO) | TxFlags::STAGED;
    NetifTxRequest {
        gref: 0,
        offset: len,
        flags: flags.bits(),
        id,
        size: len,
    }
}

/// A fragment must lie within its granted page.
fn fragment_in_page(f: &TxFragment) -> Result<(), EncodeError> {
    if usize::from(f.offset) + usize::from(f.size) > XEN_PAGE_SIZE {
        return Err(EncodeError::CrossesPage {
            offset: f.offset,
            size: f.size,
        });
    }
    Ok(())
}

/// The common part of both encoders: `head` is the first request's gref, offset and id,
/// `head_bytes` what it contributes to the total; `rest` are checked against their pages.
fn encode_chain(
    flags: TxFlags,
    head: TxFragment,
    head_bytes: u16,
    rest: &[TxFragment],
    extras: &[Extra],
    extra_ids: &[u16],
    mut out: impl FnMut(NetifTxRequest),
) -> Result<(), EncodeError> {
    if rest.len() + 1 > XEN_NETIF_NR_SLOTS_MIN {
        return Err(EncodeError::TooManySlots {
            slots: rest.len() + 1,
        });
    }
    if extras.len() > MAX_EXTRA_SLOTS || extra_ids.len() < extras.len() {
        return Err(EncodeError::Extras {
            extras: extras.len(),
            ids: extra_ids.len(),
        });
    }
    let total = usize::from(head_bytes) + rest.iter().map(|f| usize::from(f.size)).sum::<usize>();
    let total16 = u16::try_from(total).map_err(|_| EncodeError::TooLarge { total })?;
    for f in rest {
        fragment_in_page(f)?;
    }
    let mut f0 = flags.difference(TxFlags::MORE_DATA | TxFlags::EXTRA_INFO);
    if !rest.is_empty() {
        f0 |= TxFlags::MORE_DATA;
    }
    if !extras.is_empty() {
        f0 |= TxFlags::EXTRA_INFO;
    }
    out(NetifTxRequest {
        gref: head.gref,
        offset: head.offset,
        flags: f0.bits(),
        id: head.id,
        size: total16,
    });
    for (i, (e, id)) in extras.iter().zip(extra_ids).enumerate() {
        let mut slot = NetifExtraInfo::encode(e, i + 1 < extras.len()).to_tx_slot();
        slot.id = *id;
        out(slot);
    }
    for (i, f) in rest.iter().enumerate() {
        let more = i + 1 < rest.len();
        out(NetifTxRequest {
            gref: f.gref,
            offset: f.offset,
            flags: if more { TxFlags::MORE_DATA.bits() } else { 0 },
            id: f.id,
            size: f.size,
        });
    }
    Ok(())
}

/// One consumed RX slot of a received packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RxSlot {
    /// The response's id (which buffer it filled).
    pub id: u16,
    /// Data offset in the buffer page, or 0 for an extra slot.
    pub offset: u16,
    /// Bytes of data, 0 for an extra slot.
    pub len: u16,
    /// Whether this slot carried an extra rather than data.
    pub extra: bool,
    /// Bytes before `offset` that are in the staging slot of this slot's buffer instead of
    /// the buffer (RFC rev 1's replicated encoding, marked by [`RxChain::replicate`]; 0
    /// otherwise). `offset` and `len` then describe only the rest, in the buffer.
    pub staged: u16,
}

/// A complete RX chain as the frontend consumed it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RxChain {
    /// Every slot in ring order (data and extras): each frees one posted buffer.
    pub slots: ArrayVec<RxSlot, MAX_CHAIN_SLOTS>,
    /// The first slot's flags.
    pub flags: RxFlags,
    /// Decoded extras.
    pub extras: Extras,
    /// Total bytes (staged bytes plus the data slots' statuses).
    pub total_len: u32,
    /// Why the packet must be dropped, if it must.
    pub drop: Option<FaultReason>,
    /// Bytes at the start of the packet in staging memory (`NETRXF_staged`, as claimed,
    /// even when the packet is dropped; or the replicated slots [`RxChain::replicate`]
    /// marked); the data slots hold the rest.
    pub staged: u16,
}

impl Default for RxChain {
    /// An empty chain, to parse into ([`parse_rx_chain_into`]).
    fn default() -> Self {
        RxChain {
            slots: ArrayVec::new(),
            flags: RxFlags::empty(),
            extras: Extras::default(),
            total_len: 0,
            drop: None,
            staged: 0,
        }
    }
}

impl RxChain {
    /// The data slots in order: `(id, offset, len)`.
    pub fn fragments(&self) -> impl Iterator<Item = (u16, u16, u16)> + '_ {
        self.slots
            .iter()
            .filter(|s| !s.extra)
            .map(|s| (s.id, s.offset, s.len))
    }

    /// Marks the bytes a design replicates in staging memory where no flag announces them
    /// (RFC rev 1's encoding): `take(len)` says how many of the first of each data slot's
    /// `len` bytes, in ring order, the staging slot of its buffer holds. Each such slot
    /// then describes only the rest, in its buffer, and `staged` counts them all. A chain
    /// with `NETRXF_staged`, or one to be dropped, is left as it is.
    pub fn replicate(&mut self, mut take: impl FnMut(usize) -> usize) {
        if self.drop.is_some() || self.staged != 0 || self.flags.contains(RxFlags::STAGED) {
            return;
        }
        let mut total = 0u16;
        for s in self.slots.iter_mut().filter(|s| !s.extra) {
            // At most the slot's length; its offset + len is within its page.
            let n = u16::try_from(take(usize::from(s.len))).map_or(s.len, |n| n.min(s.len));
            s.staged = n;
            s.offset += n;
            s.len -= n;
            // Without a drop the packet has at most 65535 bytes.
            total = total.saturating_add(n);
        }
        self.staged = total;
    }
}

/// Consumes one RX packet from `next` (responses in ring order, copied out).
///
/// Rules (after Linux netfront, hardened): a slot with a negative status or data past its
/// page drops the packet (the chain is still consumed); more than
/// [`XEN_NETIF_NR_SLOTS_MIN`] data slots drops it and more than [`FATAL_DATA_SLOTS`] is
/// fatal; a bad extra and a truncated chain are fatal.
pub fn parse_rx_chain(next: impl FnMut() -> Option<NetifRxResponse>) -> Result<RxChain, Fault> {
    let mut chain = RxChain::default();
    parse_rx_chain_into(next, &mut chain)?;
    Ok(chain)
}

/// [`parse_rx_chain`] into `out`, reused from packet to packet (built in place, a chain is
/// not copied per packet). On an error `out` holds part of the chain and is not to be used.
pub fn parse_rx_chain_into(
    mut next: impl FnMut() -> Option<NetifRxResponse>,
    out: &mut RxChain,
) -> Result<(), Fault> {
    let first = next().ok_or(Fault::Fatal(FaultReason::Truncated { slots: 0 }))?;
    let flags = RxFlags::from_bits_retain(first.flags);
    if flags.intersects(RxFlags::MORE_DATA | RxFlags::EXTRA_INFO) {
        parse_rx_chain_general(first, next, out)
    } else {
        parse_lone_rx_response(first, flags, out);
        Ok(())
    }
}

/// The common packet, one response without extras or further data slots, parsed by the
/// rules of [`parse_rx_chain`] without its general machinery (on the hot path of every
/// small packet; `lone_response_parses_as_the_general_chain` checks that both agree). A
/// lone response cannot be fatal: its faults are drops.
#[inline]
fn parse_lone_rx_response(first: NetifRxResponse, flags: RxFlags, out: &mut RxChain) {
    let staged_first = flags.contains(RxFlags::STAGED);
    let (slot, drop) = data_rx_slot(&first, staged_first);
    // A staged response's slot holds no bytes (`slot.len` is 0).
    let staged = if staged_first { first.offset } else { 0 };
    out.slots.clear();
    out.slots.push(slot);
    out.flags = flags;
    out.extras = Extras::default();
    out.total_len = u32::from(staged) + u32::from(slot.len);
    out.drop = drop;
    out.staged = staged;
}

/// The slot a data response makes, and why it drops its packet if it does: `staged_first`
/// for a chain's first response with `NETRXF_staged` (its `offset` is the staged length,
/// its buffer holds none of them and its status must be 0); otherwise a negative status
/// and a range crossing the page are drops, and the slot then holds no bytes.
#[inline]
fn data_rx_slot(rsp: &NetifRxResponse, staged_first: bool) -> (RxSlot, Option<FaultReason>) {
    let mut slot = RxSlot {
        id: rsp.id,
        offset: rsp.offset,
        len: 0,
        extra: false,
        staged: 0,
    };
    let drop = if staged_first {
        slot.offset = 0;
        (rsp.status != 0).then(|| FaultReason::BadStaged {
            staged: u32::from(rsp.offset),
            total: u32::from(rsp.offset) + rsp.status.max(0) as u32,
        })
    } else if rsp.status < 0 {
        Some(FaultReason::ErrorStatus { status: rsp.status })
    } else {
        let len = rsp.status as u16; // non-negative i16
        if usize::from(rsp.offset) + usize::from(len) > XEN_PAGE_SIZE {
            Some(FaultReason::CrossesPage {
                offset: rsp.offset,
                size: u32::from(len),
            })
        } else {
            slot.len = len;
            None
        }
    };
    (slot, drop)
}

/// [`parse_rx_chain_into`] for a packet of several responses (extras, further data
/// slots), after its first response `first`.
fn parse_rx_chain_general(
    first: NetifRxResponse,
    mut next: impl FnMut() -> Option<NetifRxResponse>,
    out: &mut RxChain,
) -> Result<(), Fault> {
    let slots = &mut out.slots;
    slots.clear();
    let mut extras = Extras::default();
    let mut drop = None;
    let mut total = 0u32;
    let mut data_slots = 0usize;
    let mut flags = RxFlags::empty();
    let mut staged = 0u16;
    let mut rsp = first;
    loop {
        data_slots += 1;
        if data_slots > FATAL_DATA_SLOTS {
            return Err(Fault::Fatal(FaultReason::TooManySlots {
                slots: data_slots,
                limit: FATAL_DATA_SLOTS,
            }));
        }
        if drop.is_none() && data_slots > XEN_NETIF_NR_SLOTS_MIN {
            drop = Some(FaultReason::TooManySlots {
                slots: data_slots,
                limit: XEN_NETIF_NR_SLOTS_MIN,
            });
        }
        let f = RxFlags::from_bits_retain(rsp.flags);
        let staged_first = data_slots == 1 && f.contains(RxFlags::STAGED);
        if staged_first {
            staged = rsp.offset;
            total += u32::from(staged);
        }
        let (slot, why) = data_rx_slot(&rsp, staged_first);
        drop = drop.or(why);
        total += u32::from(slot.len);
        slots.push(slot);
        if data_slots == 1 {
            flags = f;
            if f.contains(RxFlags::EXTRA_INFO) {
                extras = take_extras(&mut next, slots, rx_extra, rx_extra_slot)?;
            }
        }
        if !f.contains(RxFlags::MORE_DATA) {
            break;
        }
        rsp = next().ok_or(Fault::Fatal(FaultReason::Truncated { slots: slots.len() }))?;
    }
    if drop.is_none() && (total as usize) > XEN_NETIF_MAX_TX_SIZE {
        drop = Some(FaultReason::TooManySlots {
            slots: data_slots,
            limit: data_slots - 1,
        });
    }
    out.flags = flags;
    out.extras = extras;
    out.total_len = total;
    out.drop = drop;
    out.staged = staged;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// The lone request's shortcut parses every request it takes exactly as the general
        /// chain parser does: the same chain, or the same fault.
        #[test]
        fn lone_request_parses_as_the_general_chain(
            gref: u32,
            offset in prop_oneof![0u16..=64, 4000u16..=4200, any::<u16>()],
            flags: u16,
            id: u16,
            size in prop_oneof![0u16..=64, 4000u16..=4200, any::<u16>()],
            whole in any::<bool>(),
        ) {
            // Half the cases are the short path's reason to be: a packet staged whole.
            let (offset, flags) = if whole {
                (size, flags | TxFlags::STAGED.bits())
            } else {
                (offset, flags)
            };
            let flags = TxFlags::from_bits_retain(flags)
                .difference(TxFlags::MORE_DATA | TxFlags::EXTRA_INFO | TxFlags::STAGING_BUFFER);
            let first = NetifTxRequest { gref, offset, flags: flags.bits(), id, size };
            let mut fast = TxChain::default();
            let mut general = TxChain::default();
            let f = parse_lone_tx_request(first, flags, &mut fast);
            let g = parse_tx_chain_general(first, flags, || None, &mut general);
            prop_assert_eq!(&f, &g);
            if f.is_ok() {
                prop_assert_eq!(fast, general);
            }
        }

        /// The lone response's shortcut parses every response it takes exactly as the
        /// general chain parser does.
        #[test]
        fn lone_response_parses_as_the_general_chain(
            id: u16,
            offset in prop_oneof![0u16..=64, 4000u16..=4200, any::<u16>()],
            flags: u16,
            status in prop_oneof![-2i16..=64, 4000i16..=4200, any::<i16>()],
        ) {
            let flags = RxFlags::from_bits_retain(flags)
                .difference(RxFlags::MORE_DATA | RxFlags::EXTRA_INFO);
            let first = NetifRxResponse { id, offset, flags: flags.bits(), status };
            let mut fast = RxChain::default();
            let mut general = RxChain::default();
            parse_lone_rx_response(first, flags, &mut fast);
            parse_rx_chain_general(first, || None, &mut general).unwrap();
            prop_assert_eq!(fast, general);
        }

        /// A packet staged whole is encoded as the general chain encoder would encode it.
        #[test]
        fn staged_request_encodes_as_the_chain_encoder(flags: u16, len: u16, id: u16) {
            let flags = TxFlags::from_bits_retain(flags);
            let mut short = Vec::new();
            encode_staged_tx_chain(flags, len, id, &[], &[], &[], |r| short.push(r)).unwrap();
            let head = TxFragment { gref: 0, offset: len, size: len, id };
            let mut general = Vec::new();
            encode_chain(flags | TxFlags::STAGED, head, len, &[], &[], &[], |r| general.push(r))
                .unwrap();
            prop_assert_eq!(short, general);
        }
    }
}
