//! The `linux` design end to end over the emulated platform: the backend grant-copies the
//! first 128 bytes of each TX packet and grant-maps the rest in one batch per burst, the
//! frontend grants a page per request and revokes it at the response, RX by grant copy;
//! every operation counted exactly, every byte checked.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use netstage_fallback::{PacketBuf, PacketRef};
use netstage_netback_user::{BackQueue, QueueDriver, QueueFault, BURST};
use netstage_netfront_user::{FrontQueue, PollMode};
use netstage_platform::sim::SimDomain;

mod queue_rig;
use queue_rig::{payload, Rig};

const SIZES: [usize; 6] = [64, 128, 129, 1500, 9000, 65535];
const PACKETS: u64 = 40;

/// Pages a packet of `len` bytes takes.
fn pages(len: usize) -> u64 {
    len.div_ceil(4096) as u64
}

/// Receives what the guest sends, checking each packet against `payload(seq, len)`:
/// `seen[0]` counts the intact, `seen[1]` the corrupted.
struct Receiver {
    len: usize,
    seen: [AtomicU64; 2],
}

impl Receiver {
    fn total(&self) -> u64 {
        self.seen.iter().map(|n| n.load(Ordering::Relaxed)).sum()
    }
}

impl QueueDriver<SimDomain> for Receiver {
    fn run(&self, q: &mut BackQueue<SimDomain>) -> Result<(), QueueFault> {
        let (mut bufs, mut want) = (PacketBuf::pool(BURST), vec![0u8; 65535]);
        while !q.stopped() {
            let n = q.recv_burst(&mut bufs)?;
            for b in &bufs[..n] {
                payload(self.total() as u32, self.len, &mut want);
                let corrupt = b.data() != &want[..self.len];
                self.seen[usize::from(corrupt)].fetch_add(1, Ordering::Relaxed);
            }
            if n == 0 {
                q.wait(Some(Duration::from_millis(10)))?;
            }
        }
        Ok(())
    }
}

/// Sends `PACKETS` packets of `len` bytes to the guest.
struct Sender {
    len: usize,
}

impl QueueDriver<SimDomain> for Sender {
    fn run(&self, q: &mut BackQueue<SimDomain>) -> Result<(), QueueFault> {
        let mut frame = vec![0u8; self.len];
        let mut seq = 0u64;
        while !q.stopped() {
            if seq < PACKETS {
                payload(seq as u32, self.len, &mut frame);
                seq += q.send_burst(&[PacketRef::new(&frame)])? as u64;
            }
            if seq == PACKETS || !q.stopped() {
                q.wait(Some(Duration::from_millis(5)))?;
            }
        }
        Ok(())
    }
}

/// Reaps the frontend's TX responses until none is pending.
fn settle(q: &mut FrontQueue<SimDomain>) {
    let t = Instant::now();
    while q.tx_pending() > 0 {
        assert!(t.elapsed() < Duration::from_secs(30), "TX never answered");
        q.wait(Some(Duration::from_millis(10))).unwrap();
        q.send_burst(&[]).unwrap();
    }
    q.send_burst(&[]).unwrap();
}

#[test]
fn tx_copies_128_bytes_maps_the_rest_and_grants_per_packet() {
    for len in SIZES {
        let rx = Arc::new(Receiver {
            len,
            seen: Default::default(),
        });
        let mut rig = Rig::new("linux", PollMode::Block, Arc::clone(&rx) as _);
        let before = rig.link.as_ref().unwrap().metrics();
        let q = &mut rig.queues[0];
        let mut frame = vec![0u8; len];
        let t = Instant::now();
        for seq in 0..PACKETS {
            payload(seq as u32, len, &mut frame);
            while q.send_burst(&[PacketRef::new(&frame)]).unwrap() == 0 {
                assert!(t.elapsed() < Duration::from_secs(30), "{len} B: stuck");
                q.wait(Some(Duration::from_millis(10))).unwrap();
            }
        }
        while rx.total() < PACKETS {
            assert!(
                t.elapsed() < Duration::from_secs(30),
                "{len} B: not all arrived"
            );
            std::thread::sleep(Duration::from_millis(1));
        }
        settle(q);
        assert_eq!(
            rx.seen[0].load(Ordering::Relaxed),
            PACKETS,
            "{len} B: corrupted"
        );
        let bm = rig.back.snapshot();
        let head = len.min(128) as u64;
        let maps = if len > 128 { pages(len) } else { 0 };
        assert_eq!(bm.tx_packets, PACKETS, "{len} B");
        assert_eq!(
            bm.grant_copy_ops, PACKETS,
            "{len} B: one head copy per packet"
        );
        assert_eq!(
            bm.grant_maps,
            PACKETS * maps,
            "{len} B: a map per page past the head"
        );
        assert_eq!(bm.tx_grant_copy_bytes, PACKETS * head, "{len} B");
        assert_eq!(
            bm.tx_grant_map_bytes,
            PACKETS * (len as u64 - head),
            "{len} B"
        );
        assert_eq!(bm.tx_grant_errors, 0);
        // At most one map call per burst; each unmapped at once, all before the answer.
        let pc = rig.dom0.counters();
        assert_eq!(
            pc.maps,
            bm.grant_maps + 2,
            "{len} B: the two rings and the packets"
        );
        assert_eq!(
            pc.unmaps, bm.grant_maps,
            "{len} B: every packet map unmapped"
        );
        let fm = rig.link.as_ref().unwrap().metrics();
        let granted = PACKETS * pages(len);
        assert_eq!(fm.tx_grants - before.tx_grants, granted, "{len} B");
        assert_eq!(fm.tx_revokes - before.tx_revokes, granted, "{len} B");
        assert_eq!(fm.revokes_refused, 0);
        assert_eq!(
            (fm.rx_grants, fm.rx_revokes),
            (256, 0),
            "{len} B: RX posted once"
        );
        rig.close();
    }
}

#[test]
fn rx_copies_into_buffers_granted_per_packet() {
    for len in SIZES {
        let mut rig = Rig::new("linux", PollMode::Block, Arc::new(Sender { len }));
        let q = &mut rig.queues[0];
        let mut bufs = PacketBuf::pool(BURST);
        let mut want = vec![0u8; len];
        let (mut got, t) = (0u64, Instant::now());
        while got < PACKETS {
            assert!(
                t.elapsed() < Duration::from_secs(30),
                "{len} B: {got} arrived"
            );
            let n = q.recv_burst(&mut bufs).unwrap();
            for b in &bufs[..n] {
                payload(got as u32, len, &mut want);
                assert_eq!(b.data(), &want[..], "{len} B: packet {got}");
                got += 1;
            }
            if n == 0 {
                q.wait(Some(Duration::from_millis(10))).unwrap();
            }
        }
        let fm = rig.link.as_ref().unwrap().metrics();
        let used = PACKETS * pages(len);
        assert_eq!(fm.rx_packets, PACKETS);
        assert_eq!(fm.rx_revokes, used, "{len} B: a revoke per buffer used");
        assert_eq!(
            fm.rx_grants,
            256 + used,
            "{len} B: posted at connect, then again"
        );
        assert_eq!((fm.tx_grants, fm.revokes_refused), (0, 0));
        // The backend adds its counts after it notified: give it a moment.
        while rig.back.snapshot().grant_copy_ops < used && t.elapsed() < Duration::from_secs(30) {
            std::thread::sleep(Duration::from_millis(1));
        }
        let bm = rig.back.snapshot();
        assert_eq!(
            bm.grant_copy_ops, used,
            "{len} B: RX by grant copy, a page each"
        );
        assert_eq!(bm.grant_maps, 0);
        rig.close();
    }
}
