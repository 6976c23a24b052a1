//! A user-space netif frontend: XenBus handshake, ring and buffer set-up, TX and RX, one
//! stage implementation per design.
//!
//! Status: not implemented yet; the crate exports nothing.
