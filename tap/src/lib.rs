//! A Linux TAP device as a netif packet source and sink.
//!
//! The device is opened with `IFF_TAP | IFF_NO_PI | IFF_VNET_HDR`, so that every frame
//! carries a `virtio_net_hdr` and the kernel hands over and takes TCP segments of up to
//! 64 KiB with their checksum left to fill in: the same offloads as netif's GSO extra and
//! `csum_blank` flag, which [`from_tap`] and [`to_tap_header`] convert. [`TapPort`] pumps
//! frames from the TAP to a netif end and writes the end's packets out, counting every
//! frame passed on or dropped with its reason ([`TapCountersSnapshot`]).
//!
//! This is how a user-space backend puts a guest's vif on a Linux interface (and from there
//! a bridge), as QEMU's Xen backend and Linux's vif do; `netback-user --sink tap:NAME` and
//! `netfront-user --tap NAME` use it.

// The three TAP ioctls in `device` are the crate's only unsafe code.
#![deny(unsafe_code)]

mod counters;
#[allow(unsafe_code)]
mod device;
mod frame;
mod port;

pub use counters::{DropReason, TapCounters, TapCountersSnapshot};
pub use device::{interface_name_error, Tap};
pub use frame::{
    from_tap, l4, split_tap_frame, to_tap_header, FrameError, FrameOffloads, L4, MAX_FRAME,
    READ_BUF_LEN, VNET_HDR_LEN,
};
pub use port::{PumpEnd, Refusal, TapPort};
