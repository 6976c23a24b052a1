//! The queue API allocates nothing per packet: a counting global allocator watches the two
//! threads that drive a frontend queue and a backend queue over 100,000 packets after a
//! warm-up, for every design and both directions, copied out and lent in place, at 64 B and
//! at 1500 B (grant map and linux too: their maps reuse the platform's map storage). Only
//! those two
//! threads are counted (XenStore watches and the backend's XenBus loop run on threads of
//! their own and allocate as they please).

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use netstage_fallback::{PacketBuf, PacketRef};
use netstage_netback_user::{BackQueue, QueueDriver, QueueFault, BURST};
use netstage_netfront_user::{FrontQueue, PollMode};
use netstage_platform::sim::SimDomain;

mod queue_rig;
use queue_rig::Rig;

struct Counting;

thread_local! {
    static COUNTED: Cell<bool> = const { Cell::new(false) };
    /// Per thread, so that tests running in parallel do not count each other.
    static ALLOCATIONS: Cell<u64> = const { Cell::new(0) };
}

// SAFETY: every call is passed on to the system allocator unchanged; the counting touches
// only thread-local cells, which do not allocate.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        note();
        // SAFETY: the caller's contract is System's.
        unsafe { System.alloc(l) }
    }
    unsafe fn alloc_zeroed(&self, l: Layout) -> *mut u8 {
        note();
        // SAFETY: as above.
        unsafe { System.alloc_zeroed(l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, n: usize) -> *mut u8 {
        note();
        // SAFETY: as above.
        unsafe { System.realloc(p, l, n) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        // SAFETY: as above.
        unsafe { System.dealloc(p, l) }
    }
}

fn note() {
    if COUNTED.try_with(Cell::get).unwrap_or(false) {
        let _ = ALLOCATIONS.try_with(|n| n.set(n.get() + 1));
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

const WARM: u64 = 20_000;
const MEASURED: u64 = 100_000;

/// Counts on this thread while `f` runs; returns the allocations made.
fn counted(f: impl FnOnce()) -> u64 {
    let before = ALLOCATIONS.with(Cell::get);
    COUNTED.with(|c| c.set(true));
    f();
    COUNTED.with(|c| c.set(false));
    ALLOCATIONS.with(Cell::get) - before
}

/// The backend's queue: moves `WARM` packets, then `MEASURED` counted, in direction
/// `guest_tx` (receiving) or not (sending `size`-byte frames).
struct BackSide {
    guest_tx: bool,
    in_place: bool,
    size: usize,
    allocations: AtomicU64,
    done: AtomicBool,
}

/// Room a pump needs, made before the counting starts.
struct PumpRoom {
    frame: Vec<u8>,
    bufs: Vec<PacketBuf>,
}

impl PumpRoom {
    fn new(size: usize) -> PumpRoom {
        PumpRoom {
            frame: vec![0x77u8; size],
            bufs: PacketBuf::pool(BURST),
        }
    }
}

impl BackSide {
    fn pump(
        &self,
        q: &mut BackQueue<SimDomain>,
        room: &mut PumpRoom,
        n: u64,
    ) -> Result<(), QueueFault> {
        let burst = [PacketRef::new(&room.frame); BURST];
        let mut moved = 0u64;
        let deadline = Instant::now() + Duration::from_secs(60);
        while moved < n && !q.stopped() && Instant::now() < deadline {
            // Never past `n`: the warm-up must leave the measured packets to be measured.
            let left = usize::try_from(n - moved).unwrap_or(BURST).min(BURST);
            let k = if self.guest_tx && self.in_place {
                q.recv_burst_in_place(&mut room.bufs[..left], |_| {})?
            } else if self.guest_tx {
                q.recv_burst(&mut room.bufs[..left])?
            } else {
                q.send_burst(&burst[..left])?
            };
            moved += k as u64;
            if k == 0 {
                q.wait(Some(Duration::from_millis(10)))?;
            }
        }
        Ok(())
    }
}

impl QueueDriver<SimDomain> for BackSide {
    fn run(&self, q: &mut BackQueue<SimDomain>) -> Result<(), QueueFault> {
        let mut room = PumpRoom::new(self.size);
        self.pump(q, &mut room, WARM)?;
        let mut r = Ok(());
        let n = counted(|| r = self.pump(q, &mut room, MEASURED));
        self.allocations.store(n, Ordering::Relaxed);
        self.done.store(true, Ordering::Release);
        r?;
        while !q.stopped() {
            q.wait(Some(Duration::from_millis(10)))?;
        }
        Ok(())
    }
}

/// The frontend's half of the same transfer.
fn front_pump(
    q: &mut FrontQueue<SimDomain>,
    guest_tx: bool,
    in_place: bool,
    room: &mut PumpRoom,
    n: u64,
) {
    let burst = [PacketRef::new(&room.frame); BURST];
    let mut moved = 0u64;
    let deadline = Instant::now() + Duration::from_secs(60);
    while moved < n {
        assert!(
            Instant::now() < deadline,
            "only {moved} of {n} packets moved"
        );
        let left = usize::try_from(n - moved).unwrap_or(BURST).min(BURST);
        let k = if guest_tx {
            q.send_burst(&burst[..left]).unwrap()
        } else if in_place {
            q.recv_burst_in_place(left, |_| {}).unwrap()
        } else {
            q.recv_burst(&mut room.bufs[..left]).unwrap()
        };
        moved += k as u64;
        if k == 0 {
            q.wait(Some(Duration::from_millis(10))).unwrap();
        }
    }
}

/// Allocations of the frontend's and the backend's queue thread over `MEASURED` packets,
/// and the frontend's `tx_ring_full_waits`.
fn allocations(design: &str, guest_tx: bool, in_place: bool, size: usize) -> (u64, u64, u64) {
    let side = Arc::new(BackSide {
        guest_tx,
        in_place,
        size,
        allocations: AtomicU64::new(0),
        done: AtomicBool::new(false),
    });
    let mut rig = Rig::new(design, PollMode::Block, Arc::clone(&side) as _);
    let q = &mut rig.queues[0];
    let mut room = PumpRoom::new(size);
    front_pump(q, guest_tx, in_place, &mut room, WARM);
    let front = counted(|| front_pump(q, guest_tx, in_place, &mut room, MEASURED));
    let t = Instant::now();
    while !side.done.load(Ordering::Acquire) {
        assert!(
            t.elapsed() < Duration::from_secs(60),
            "the backend never finished"
        );
        // RX: the backend may still be sending what the frontend already counted.
        thread::sleep(Duration::from_millis(1));
    }
    let waits = rig
        .link
        .as_ref()
        .map_or(0, |l| l.metrics().tx_ring_full_waits);
    rig.close();
    (front, side.allocations.load(Ordering::Relaxed), waits)
}

/// Checks both directions at 64 and 1500 B, copied out and lent in place: no allocation on
/// either queue thread.
fn check(design: &str) {
    for (size, guest_tx, in_place) in [64, 1500]
        .into_iter()
        .flat_map(|s| [(s, true), (s, false)])
        .flat_map(|(s, t)| [(s, t, false), (s, t, true)])
    {
        let (front, back, _) = allocations(design, guest_tx, in_place, size);
        let dir = match (guest_tx, in_place) {
            (true, false) => "TX",
            (true, true) => "TX in place",
            (false, false) => "RX",
            (false, true) => "RX in place",
        };
        assert_eq!(
            (front, back),
            (0, 0),
            "{design} {dir} {size} B: allocations over {MEASURED} packets (frontend, backend)"
        );
    }
}

#[test]
fn grant_copy_allocates_nothing_per_packet() {
    check("grant-copy");
}

#[test]
fn slots_allocate_nothing_per_packet() {
    check("slots:256");
}

#[test]
fn rfc_slots_allocate_nothing_per_packet() {
    check("slots-rfc:256");
    check("slots-rfc:65536");
}

#[test]
fn the_data_ring_allocates_nothing_per_packet() {
    check("ring:8:greedy");
}

/// A ring of 4 KiB a direction: at 1500 B the sender keeps finding it full and holds
/// packets back for room (`:wait`), which must not allocate either.
#[test]
fn a_data_ring_that_waits_for_room_allocates_nothing_per_packet() {
    check("ring:1:greedy:wait");
    let (front, _, waits) = allocations("ring:1:greedy:wait", true, false, 1500);
    assert_eq!(front, 0);
    assert!(
        waits > 0,
        "the sender never held a packet back: nothing was tested"
    );
}

/// Grant map maps each TX packet's pages into storage kept from packet to packet.
#[test]
fn grant_map_allocates_nothing_per_packet() {
    check("grant-map");
}

/// Linux maps the pages past each TX packet's first 128 bytes, a burst at a time, into
/// storage kept from burst to burst (at 1500 B a page per packet; at 64 B none).
#[test]
fn linux_allocates_nothing_per_packet() {
    check("linux");
}
