//! The TAP adapter of the TCP experiments: the `netstage-tap` crate (a TAP device with
//! `virtio_net_hdr` offloads, frame conversion to and from netif packets, and the pump with
//! its drop counters), re-exported under the harness's earlier path.

pub use netstage_tap::*;
