//! A user-space netif frontend: the XenBus handshake as Linux netfront does it, rings and
//! buffer pools shared with the backend, and a run-to-completion queue API over them.
//!
//! [`connect_queues`] does the handshake and returns a [`FrontendLink`] (the XenStore side,
//! the counters, a monitor of the backend) and one [`FrontQueue`] per negotiated queue. The
//! application drives each queue from one of its threads, the shape of DPDK and netmap:
//! [`FrontQueue::send_burst`] copies borrowed packets into shared memory,
//! [`FrontQueue::recv_burst`] copies received ones into [`PacketBuf`]s made once, both reap
//! completions and publish, and [`FrontQueue::wait`] sleeps on the event channel. Nothing
//! allocates per packet. [`Frontend`] is a convenience layer on top: a thread per queue, a
//! channel to send into and a [`FrontendHandler`] for what arrives.
//!
//! The backend is not trusted: ring indexes, TX response ids and RX response chains are
//! validated, RX data is copied out of the shared buffers before anyone parses it, and a
//! backend that breaks the protocol marks the device broken.
//!
//! Each staging design is one module behind one trait (`src/staging/`): the queue's TX and
//! RX paths never look at the design.
//!
//! # Example
//!
//! ```no_run
//! use std::time::Duration;
//! use netstage_netfront_user::{connect_queues, FrontendConfig, PacketBuf, PacketRef};
//! use netstage_platform::sim::{DomainConfig, SimWorld};
//! use netstage_platform::xenstore::XsClient;
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let world = SimWorld::open(std::path::Path::new("/dev/shm/my-world"))?;
//! let me = world.create_domain(1, DomainConfig::default())?;
//! let xs = XsClient::connect(std::path::Path::new("/dev/shm/my-world/dom1.sock"))?;
//! let (link, mut queues) = connect_queues(me, xs, 0, FrontendConfig::default())?;
//! let q = &mut queues[0];
//! let frame = [0u8; 60];
//! let out = [PacketRef::new(&frame); 32];
//! let mut bufs = PacketBuf::pool(32); // made once, filled again and again
//! let (mut sent, mut received) = (0, 0);
//! while sent < 1000 || received < 1000 {
//!     sent += q.send_burst(&out)?;
//!     let n = q.recv_burst(&mut bufs)?;
//!     for b in &bufs[..n] {
//!         println!("queue {}: {} bytes", q.index(), b.len());
//!     }
//!     received += n;
//!     if n == 0 {
//!         q.wait(Some(Duration::from_millis(100)))?;
//!     }
//! }
//! drop(queues);
//! link.close()?;
//! # Ok(()) }
//! ```

#![forbid(unsafe_code)]

mod connect;
mod link;
mod metrics;
mod queue;
mod staging;
mod stats;
#[cfg(test)]
mod testbed;
mod threaded;

use std::time::Duration;

use netstage_ring::netif::{GsoType, XEN_NETIF_MAX_TX_SIZE};
use netstage_ring::XEN_PAGE_SIZE;

pub use connect::connect_queues;
pub use link::FrontendLink;
pub use metrics::{Metrics, MetricsSnapshot};
pub use netstage_fallback::StatsKind;
pub use netstage_fallback::{
    CopyPolicy, Design, Features, Packet, PacketBuf, PacketRef, PollMode, WhenFull,
};
pub use netstage_fallback::{YIELD_EVERY, YIELD_IDLE};
use netstage_platform::xenstore::XsError;
use netstage_platform::{DomId, DomainInfo, EventChannels, GrantExport};
pub use queue::FrontQueue;
pub use stats::{FrontendStats, STATS_SCHEMA};
pub use threaded::{Frontend, FrontendHandler};

/// Frontend settings.
#[derive(Debug, Clone)]
pub struct FrontendConfig {
    /// Queues wanted (fewer if the backend allows fewer).
    pub queues: u16,
    /// Features requested; asking for one the backend does not offer is an error.
    pub want: Features,
    /// Waiting.
    pub poll: PollMode,
    /// Packets queued for transmission per queue before [`Frontend::send`] blocks.
    pub tx_queue_len: usize,
    /// How long the backend may take between handshake steps.
    pub handshake_timeout: Duration,
    /// How long TX requests may stay unanswered (the backend still connected) before the
    /// device is declared broken: a backend that stopped answering.
    pub answer_timeout: Duration,
    /// How long [`Frontend::send`] waits for room in a full queue before it gives up with
    /// [`FrontendError::SendTimeout`] (the packet not taken).
    pub send_timeout: Duration,
    /// Where packet bytes go. `Slots` and `Ring` are used if the backend offers them and
    /// fall back to the baseline otherwise; their sizes are clamped to the backend's
    /// maximum. (`GrantCopy` and `GrantMap` differ only at the backend.)
    pub design: Design,
    /// Forwarding mode: every received packet is transmitted back out on its queue instead
    /// of reaching the handler. With slots, a packet wholly in its RX slot leaves straight
    /// from there, without a copy (`NETTXF_staging_buffer`); others are copied.
    pub forward: bool,
}

impl Default for FrontendConfig {
    fn default() -> Self {
        FrontendConfig {
            design: Design::GrantCopy,
            forward: false,
            queues: 1,
            want: Features::ALL,
            poll: PollMode::Block,
            tx_queue_len: 1024,
            handshake_timeout: Duration::from_secs(30),
            answer_timeout: Duration::from_secs(30),
            send_timeout: Duration::from_secs(30),
        }
    }
}

/// A frontend failure.
#[derive(Debug, thiserror::Error)]
pub enum FrontendError {
    /// XenStore failed.
    #[error(transparent)]
    XenStore(#[from] XsError),
    /// The platform failed.
    #[error(transparent)]
    Platform(#[from] netstage_platform::PlatformError),
    /// The toolstack has not configured this vif.
    #[error("no vif {devid} is configured for domain {dom} ({path} is missing): the toolstack (netback-user) must create it first")]
    NoVif {
        /// This domain.
        dom: DomId,
        /// The device.
        devid: u32,
        /// The missing node.
        path: String,
    },
    /// A feature was requested that the backend does not offer.
    #[error("the backend does not offer {0}; leave it out of the requested features")]
    FeatureMismatch(&'static str),
    /// The backend refused the connection.
    #[error("the backend refused the connection: {0}")]
    Refused(String),
    /// The handshake did not complete.
    #[error("handshake: {0}")]
    Handshake(String),
    /// The device is broken or closed.
    #[error("device unusable: {0}")]
    Broken(String),
    /// A packet the protocol cannot carry.
    #[error("cannot send a packet of {len} bytes: {why}")]
    BadPacket {
        /// Its length.
        len: usize,
        /// Why.
        why: &'static str,
    },
    /// [`Frontend::send`] found its queue full for the whole send timeout (the packet was
    /// not taken).
    #[error("queue {queue} stayed full for {waited:?}: the backend is not taking packets")]
    SendTimeout {
        /// The queue.
        queue: u16,
        /// How long it waited.
        waited: Duration,
    },
}

/// The platform services a frontend needs.
pub trait FrontendPlatform:
    GrantExport + EventChannels + DomainInfo + Clone + Send + Sync + 'static
{
}
impl<T: GrantExport + EventChannels + DomainInfo + Clone + Send + Sync + 'static> FrontendPlatform
    for T
{
}

/// Why netif cannot carry `p` with `features` negotiated, if it cannot.
pub(crate) fn validate(features: &Features, p: &PacketRef<'_>) -> Result<(), &'static str> {
    let len = p.data.len();
    if len == 0 || len > XEN_NETIF_MAX_TX_SIZE {
        return Err("a packet has 1 to 65535 bytes");
    }
    if !features.sg && len > XEN_PAGE_SIZE {
        return Err("multi-slot packets need feature-sg");
    }
    if let Some(g) = p.gso {
        let ok = match g.gso_type {
            GsoType::TcpV4 => features.gso_tcpv4,
            GsoType::TcpV6 => features.gso_tcpv6,
        };
        if !ok || g.mss == 0 {
            return Err("GSO needs the negotiated feature and a non-zero MSS");
        }
    }
    Ok(())
}
