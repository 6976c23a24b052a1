//! The queue API allocates nothing per packet: a counting allocator, switched on for the
//! thread driving a [`FrontQueue`] only, sees no allocation in 100,000 packets per design
//! and direction after warm-up. The backend is written by hand on the same thread (its own
//! allocations are not counted): it answers TX requests (consuming a data ring's staged
//! bytes) and fills posted RX buffers.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::collections::VecDeque;
use std::thread;
use std::time::Duration;

mod common;

use common::{Stage, FE};
use netstage_netfront_user::{
    connect_queues, CopyPolicy, Design, FrontQueue, FrontendLink, PacketBuf, PacketRef, WhenFull,
};
use netstage_platform::sim::{SimDomain, SimPort};
use netstage_platform::{EventChannels, GrantImport};
use netstage_ring::flex::{self, End, FlexConsumer};
use netstage_ring::netif::{
    NetifRxResponse, NetifTxResponse, RxRing, TxFlags, TxRing, NETIF_RSP_OKAY,
};
use netstage_ring::sring::BackRing;
use netstage_ring::{SharedMem, XEN_PAGE_SIZE};

struct Counting;

thread_local! {
    /// Whether this thread's allocations are counted, and how many were.
    static COUNTING: Cell<bool> = const { Cell::new(false) };
    static ALLOCS: Cell<u64> = const { Cell::new(0) };
}

fn note() {
    if COUNTING.try_with(Cell::get).unwrap_or(false) {
        let _ = ALLOCS.try_with(|a| a.set(a.get() + 1));
    }
}

// SAFETY: every call is forwarded unchanged to the system allocator; counting touches
// only const-initialised thread-locals (which do not allocate).
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note();
        // SAFETY: the caller's contract for `alloc` is passed on as it is.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: the caller's contract for `dealloc` is passed on as it is.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note();
        // SAFETY: the caller's contract for `realloc` is passed on as it is.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Runs `f` with this thread's allocations counted; returns how many there were.
fn counted<T>(f: impl FnOnce() -> T) -> (T, u64) {
    let before = ALLOCS.with(Cell::get);
    COUNTING.with(|c| c.set(true));
    let r = f();
    COUNTING.with(|c| c.set(false));
    (r, ALLOCS.with(Cell::get) - before)
}

const BURST: usize = 32;
const LEN: usize = 64;

/// A connected frontend queue and a backend by hand.
struct Pair {
    _stage: Stage,
    link: Option<FrontendLink<SimDomain>>,
    q: FrontQueue<SimDomain>,
    tx: BackRing<TxRing>,
    rx: BackRing<RxRing>,
    /// The RX buffers' pages, mapped in id order.
    rx_pool: SharedMem,
    /// RX requests posted and not yet answered (their ids).
    rx_ids: VecDeque<u16>,
    /// The TX data ring's consumer, with the data-ring design.
    tx_ring: Option<FlexConsumer>,
    port: SimPort,
}

fn connect(design: Design) -> Pair {
    let (stage, me) = Stage::new();
    let (gxs, fcfg) = (stage.front_xs(), Stage::config(design));
    let ft = thread::spawn(move || connect_queues(me, gxs, 0, fcfg));
    stage.await_front();
    let key = |k: &str| stage.key(k);
    let dom0 = &stage.dom0;
    let tx = BackRing::attach(dom0.map(FE, &[key("tx-ring-ref")], true).unwrap()).unwrap();
    let mut rx: BackRing<RxRing> =
        BackRing::attach(dom0.map(FE, &[key("rx-ring-ref")], true).unwrap()).unwrap();
    let port = dom0.bind_interdomain(FE, key("event-channel")).unwrap();
    let tx_ring = matches!(design, Design::Ring { .. }).then(|| {
        let intf = dom0.map(FE, &[key("data-ring-ref")], true).unwrap();
        let c = flex::read_intf_config(&intf, 4).unwrap();
        let data = dom0.map(FE, &c.refs, true).unwrap();
        flex::open(End::Backend, &intf, &data, c.order).unwrap().1
    });
    rx.refresh_requests().unwrap();
    let mut grefs = Vec::new();
    let mut rx_ids = VecDeque::new();
    while let Some(r) = rx.take_request().unwrap() {
        assert_eq!(usize::from(r.id), grefs.len());
        grefs.push(r.gref);
        rx_ids.push_back(r.id);
    }
    let rx_pool = dom0.map(FE, &grefs, true).unwrap();
    stage.connect_back();
    let (link, mut queues) = ft.join().unwrap().unwrap();
    Pair {
        _stage: stage,
        link: Some(link),
        q: queues.remove(0),
        tx,
        rx,
        rx_pool,
        rx_ids,
        tx_ring,
        port,
    }
}

impl Pair {
    /// Backend: answers every TX request, skipping staged bytes in the data ring.
    fn serve_tx(&mut self) -> usize {
        let mut n = 0;
        self.tx.refresh_requests().unwrap();
        while let Some(r) = self.tx.take_request().unwrap() {
            let flags = TxFlags::from_bits_truncate(r.flags);
            if let (true, Some(c)) = (flags.contains(TxFlags::STAGED), &mut self.tx_ring) {
                c.refresh().unwrap();
                c.skip(usize::from(r.offset)).unwrap();
                c.release().unwrap();
            }
            let rsp = NetifTxResponse {
                id: r.id,
                status: NETIF_RSP_OKAY,
            };
            self.tx.put_response(&rsp).unwrap();
            n += 1;
        }
        self.tx.push_responses().unwrap();
        n
    }

    /// Backend: fills up to `n` posted RX buffers with a `LEN`-byte packet each.
    fn deliver(&mut self, n: usize) {
        self.rx.refresh_requests().unwrap();
        while let Some(r) = self.rx.take_request().unwrap() {
            self.rx_ids.push_back(r.id);
        }
        for _ in 0..n {
            let Some(id) = self.rx_ids.pop_front() else {
                break;
            };
            let at = usize::from(id) * XEN_PAGE_SIZE;
            self.rx_pool.write_at(at, &[0x5a; LEN]).unwrap();
            let rsp = NetifRxResponse {
                id,
                offset: 0,
                flags: 0,
                status: LEN as i16,
            };
            self.rx.put_response(&rsp).unwrap();
        }
        self.rx.push_responses().unwrap();
        let _ = netstage_platform::EventPort::notify(&self.port);
    }

    /// One round: a TX burst and an RX burst of `BURST` packets each; returns the
    /// frontend's allocations.
    fn round(&mut self, frames: &[PacketRef<'_>], bufs: &mut [PacketBuf]) -> u64 {
        let (sent, a) = counted(|| self.q.send_burst(frames).unwrap());
        assert_eq!(sent, BURST);
        assert_eq!(self.serve_tx(), BURST);
        self.deliver(BURST);
        let ((woke, got), b) = counted(|| {
            let woke = self.q.wait(Some(Duration::ZERO)).unwrap();
            (woke, self.q.recv_burst(bufs).unwrap())
        });
        assert!(woke);
        assert_eq!(got, BURST);
        assert!(bufs.iter().all(|b| b.data() == [0x5a; LEN]));
        a + b
    }
}

fn no_allocation(design: Design) {
    // The counter counts.
    assert_eq!(counted(|| drop(std::hint::black_box(Box::new(1u64)))).1, 1);
    let mut p = connect(design);
    let frame = [0xa5u8; LEN];
    let frames = [PacketRef::new(&frame); BURST];
    let mut bufs = PacketBuf::pool(BURST);
    for _ in 0..200 {
        p.round(&frames, &mut bufs);
    }
    let rounds = 100_000 / BURST + 1;
    let allocs: u64 = (0..rounds).map(|_| p.round(&frames, &mut bufs)).sum();
    assert_eq!(allocs, 0, "{design:?}: allocations in {rounds} rounds");
    let m = p.link.as_ref().unwrap().metrics();
    assert!(m.tx_packets >= 100_000 && m.rx_packets >= 100_000, "{m:?}");
    if !matches!(design, Design::GrantCopy) {
        assert_eq!(m.tx_staged_packets, m.tx_packets, "{m:?}");
    }
    drop(p.link.take());
}

#[test]
fn grant_copy_allocates_nothing_per_packet() {
    no_allocation(Design::GrantCopy);
}

#[test]
fn slots_allocate_nothing_per_packet() {
    no_allocation(Design::Slots { data_len: 256 });
}

#[test]
fn the_data_ring_allocates_nothing_per_packet() {
    no_allocation(Design::Ring {
        order: 2,
        policy: CopyPolicy::Greedy,
        when_full: WhenFull::Grant,
    });
}
