//! A `loom` model of the notify protocol between netfront-user and netback-user: every
//! interleaving (up to a bounded number of preemptions) of a frontend thread and a backend
//! thread is run, and loom fails the test if both end up blocked (a lost wake-up: loom
//! reports "deadlock" when no thread can run), if a slot or a staged byte is read while its
//! writer may still be writing it (loom's `UnsafeCell` checks causality), or if an assertion
//! of the model fails.
//!
//! # What is modelled
//!
//! The model is written by hand after the real code (no other implementation has one to
//! copy: Linux, QEMU and DPDK rely on review). Each step names the function it mirrors, and
//! keeps its order of operations and its memory orderings:
//!
//! - the shared ring (`ring/src/sring.rs`): `req_prod`, `req_event`, `rsp_prod`,
//!   `rsp_event`, the slots, and both ends' private indexes;
//!   `push_requests_and_check_notify`, `push_responses_and_check_notify`,
//!   `final_check_for_requests`, `final_check_for_responses`, `set_req_event`, the
//!   refreshes and their overflow checks. The index arithmetic is the real one
//!   (`netstage_ring::idx`).
//! - the data ring (`ring/src/flex.rs`, the **out** direction): the producer's `stage`
//!   (refreshing once when short of room), `publish`; the consumer's `read_exact` (refreshing
//!   when short, a short read being a fault) and `release`; in units of bytes, 4 of them.
//! - the event channel (`platform/src/sim/evtchn.rs`): `notify` (SeqCst `fetch_or` of the
//!   pending bit, then a futex wake only if `waiters > 0`), `wait` with no timeout (spin on
//!   `take_pending`, then `block`), `block` with no timeout (register as a waiter,
//!   re-check, `futex_wait(pending, 0)`, deregister), `take_pending` (Acquire load, then
//!   AcqRel swap). The futex is a `Mutex` and a `Condvar`:
//!   `futex_wait` compares the word with 0 under the lock and sleeps, `futex_wake` takes the
//!   lock and wakes all.
//! - the queue loops: `FrontQueue::send_burst` (`reap_tx`, `tx_one` with `held`, the copy
//!   policy's "a page or less goes whole or not at all", `publish_tx`), `FrontQueue::wait`
//!   (`spin_for_work`'s unarmed looks, `arm`, the port's `block`), `BackQueue::recv_burst`
//!   (read staged bytes, grant copy, `tx_release`, answer, push and notify),
//!   `BackQueue::send_burst` (stop for lack of RX requests, noting how many it needs),
//!   `BackQueue::wait` (`spin_for_work`'s unarmed looks, `armed_work`, which arms the RX
//!   ring at `req_cons + need`, the port's `block`), and the driving loops of
//!   `experiments/src/roles.rs` (burst, and wait when nothing moved).
//!
//! # What is not
//!
//! - Bytes: a packet is a tag (its number), a staged head a run of data-ring units each
//!   holding the tag, a granted page a cell holding the tag. The real copies are volatile
//!   byte copies; here they are plain accesses to loom `UnsafeCell`s, which is what the
//!   indexes' Release/Acquire must protect (loom fails on a read not ordered after its
//!   write, or a write not ordered after the peer's last read).
//! - Timeouts: every wait here is `wait(None)`. The real loops wait with a timeout (10 or
//!   100 ms), which turns a lost wake-up into a stall of that length instead of a hang.
//! - Busy polling (`PollMode::BusyPoll`): those waits deliberately arm no event index and
//!   look at the rings instead, so the peer sends no notification and there is nothing to
//!   lose; it is not modelled.
//! - Only the rings a scenario uses exist: the TX scenarios have no RX ring (the frontend's
//!   `arm` also arms the RX ring, the backend's `armed_work` the TX ring; neither takes part
//!   in the other direction's wake-ups), the RX scenario has no TX ring. Extras, GSO,
//!   staging slots, forwarding, several queues, and the peer's hostile indexes (the checks
//!   are kept, as assertions) are left out. The fill sampling of `tx_decide` (a refresh every
//!   16th decision) is left out: it only refreshes more often.
//! - SeqCst accesses: loom regards a SeqCst load, store or read-modify-write as AcqRel (its
//!   README, "Unsupported features"), which would report lost wake-ups that C++/Rust's SeqCst
//!   forbids. Where the code relies on two SeqCst accesses being in the single total order
//!   (`notify`: the `fetch_or` of the pending bit, then the load of `waiters`), the model puts
//!   a `fence(SeqCst)` between them, marked `SC:`; for this store-buffering shape that gives
//!   exactly the guarantee the SeqCst accesses give. The rings use `fence(SeqCst)` themselves,
//!   as `ring.h` does, and loom models fences fully.
//!
//! # Scenarios
//!
//! 1. TX, ring full: 3 packets through a 2-slot TX ring with 2 request ids; the frontend
//!    waits for responses when the ring is full, the backend waits for requests. Also
//!    with both ends arming at once and spinning in the port's wait (real Xen's order),
//!    and, as a negative control, with a backend that never arms.
//! 2. RX, the backend stopping for lack of requests (a packet needing 2): the frontend posts
//!    requests one at a time. The model of `armed_work` as it was (a final check at
//!    `req_cons + 1`) loses the wake-up (see [`rx_stop_armed_at_one_loses_the_wakeup`]);
//!    arming at `req_cons + need`, what the code does now, does not.
//! 3. TX with the data ring and its fallback: 4 packets of 3 bytes staged on a 4-byte data
//!    ring, falling back to a granted page when it lacks room (nothing waits for data-ring
//!    room: docs/protocol.md 4.2, `Ring::tx_decide`).
//! 4. The event channel's spin-then-block alone, and negative controls showing the checker
//!    catches a lost wake-up when the model is broken on purpose.
//!
//! The TX scenarios are checked with at most 2 preemptions (3 takes minutes), the others
//! with 3. A model that must fail runs in a child process (see [`run_failing_model`]).

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering as StdOrdering};

use loom::cell::UnsafeCell;
use loom::sync::atomic::{fence, AtomicU32, Ordering};
use loom::sync::{Arc, Condvar, Mutex};
use loom::thread;
use netstage_ring::idx::{distance, event_in_window};

// ---------------------------------------------------------------------------------------
// The event channel: platform/src/sim/evtchn.rs
// ---------------------------------------------------------------------------------------

/// `PEER_EVENT`: the bit `notify` sets in the peer's pending word.
const PEER_EVENT: u32 = 1;

/// How the event channel is built: the code's way ([`EVTCHN`]), or broken on purpose for a
/// negative control.
#[derive(Debug, Clone, Copy)]
struct Evtchn {
    /// `take_pending` looks before registering as a waiter (the spin of
    /// `spin_before_block`; a count here instead of a time).
    spins: u32,
    /// `wait` calls `take_pending` after `waiters += 1`, before its first `futex_wait`.
    recheck: bool,
    /// `futex_wait(pending, 0)` sleeps only if the word is still 0 (the kernel's compare).
    futex_compares: bool,
    /// `notify`'s `fetch_or` and load of `waiters` are SeqCst (the code); without it they
    /// are AcqRel and Acquire.
    notify_seqcst: bool,
}

/// The event channel as the code has it.
const EVTCHN: Evtchn = Evtchn {
    spins: 1,
    recheck: true,
    futex_compares: true,
    notify_seqcst: true,
};

/// The unarmed looks a queue's blocking wait takes before it arms its rings
/// (`spin_for_work`: a refresh of the ring it waits on, then the port's `poll`; the spin of
/// `EventPort::spin`, a count here instead of a time).
const QUEUE_LOOKS: u32 = 1;

/// One end's port words (`PortWords`: `pending`, `waiters`) and the futex on `pending`.
#[derive(Debug)]
struct Port {
    pending: AtomicU32,
    waiters: AtomicU32,
    futex: Mutex<()>,
    sleepers: Condvar,
    how: Evtchn,
}

impl Port {
    fn new(how: Evtchn) -> Port {
        Port {
            pending: AtomicU32::new(0),
            waiters: AtomicU32::new(0),
            futex: Mutex::new(()),
            sleepers: Condvar::new(),
            how,
        }
    }

    /// `SimPort::take_pending`: read before writing, then swap the word to 0.
    fn take_pending(&self) -> bool {
        if self.pending.load(Ordering::Acquire) == 0 {
            return false;
        }
        self.pending.swap(0, Ordering::AcqRel) != 0
    }

    /// `SimPort::notify`, called by the peer on this (its remote) port.
    fn notify(&self) {
        if self.how.notify_seqcst {
            self.pending.fetch_or(PEER_EVENT, Ordering::SeqCst);
            // SC: the fetch_or and the load below are both SeqCst in the code.
            fence(Ordering::SeqCst);
            if self.waiters.load(Ordering::SeqCst) > 0 {
                self.futex_wake();
            }
        } else {
            self.pending.fetch_or(PEER_EVENT, Ordering::AcqRel);
            if self.waiters.load(Ordering::Acquire) > 0 {
                self.futex_wake();
            }
        }
    }

    /// `SimPort::wait(None)`: spin, then [`Port::block`]. Returns when an event was
    /// taken (without a timeout it cannot return otherwise).
    fn wait(&self) {
        for _ in 0..self.how.spins {
            if self.take_pending() {
                return;
            }
        }
        self.block();
    }

    /// `SimPort::block(None)` (the queues' waits, which spin themselves first): register,
    /// re-check, sleep.
    fn block(&self) {
        self.waiters.fetch_add(1, Ordering::SeqCst);
        let mut first = true;
        loop {
            if (self.how.recheck || !first) && self.take_pending() {
                break;
            }
            first = false;
            self.futex_wait();
        }
        self.waiters.fetch_sub(1, Ordering::SeqCst);
    }

    /// `sys::futex_wait(&pending, 0, None)`: the kernel orders the caller's earlier accesses
    /// before its read of the word (`futex_wait_setup`: `smp_mb` after counting the waiter
    /// in the hash bucket), compares the word under the bucket lock and sleeps only if it
    /// is still 0.
    fn futex_wait(&self) {
        fence(Ordering::SeqCst);
        let bucket = self.futex.lock().unwrap();
        if self.how.futex_compares && self.pending.load(Ordering::Relaxed) != 0 {
            return;
        }
        drop(self.sleepers.wait(bucket).unwrap());
    }

    /// `sys::futex_wake(&pending, u32::MAX)`.
    fn futex_wake(&self) {
        let _bucket = self.futex.lock().unwrap();
        self.sleepers.notify_all();
    }
}

// ---------------------------------------------------------------------------------------
// The shared ring: ring/src/sring.rs
// ---------------------------------------------------------------------------------------

/// The `*_sring` header and its slots (a slot holds a request, then its response).
#[derive(Debug)]
struct Sring {
    req_prod: AtomicU32,
    req_event: AtomicU32,
    rsp_prod: AtomicU32,
    rsp_event: AtomicU32,
    slots: Vec<UnsafeCell<u32>>,
    size: u32,
}

impl Sring {
    /// `SharedRing::init` at index 0 (`SHARED_RING_INIT`), before either end runs.
    fn new(size: u32) -> Sring {
        Sring {
            req_prod: AtomicU32::new(0),
            req_event: AtomicU32::new(1),
            rsp_prod: AtomicU32::new(0),
            rsp_event: AtomicU32::new(1),
            slots: (0..size).map(|_| UnsafeCell::new(0)).collect(),
            size,
        }
    }

    fn write(&self, idx: u32, v: u32) {
        let slot = &self.slots[(idx & (self.size - 1)) as usize];
        // SAFETY: loom's cell checks that no access to it races with this one.
        slot.with_mut(|p| unsafe { *p = v });
    }

    fn read(&self, idx: u32) -> u32 {
        let slot = &self.slots[(idx & (self.size - 1)) as usize];
        // SAFETY: loom's cell checks that no access to it races with this one.
        slot.with(|p| unsafe { *p })
    }
}

/// `FrontRing`: the frontend's private indexes.
#[derive(Debug)]
struct Front {
    s: Arc<Sring>,
    req_prod_pvt: u32,
    req_prod_published: u32,
    rsp_cons: u32,
    rsp_prod_seen: u32,
}

impl Front {
    fn new(s: Arc<Sring>) -> Front {
        Front {
            s,
            req_prod_pvt: 0,
            req_prod_published: 0,
            rsp_cons: 0,
            rsp_prod_seen: 0,
        }
    }

    /// `FrontRing::free_requests`.
    fn free_requests(&self) -> u32 {
        self.s.size - distance(self.req_prod_pvt, self.rsp_cons)
    }

    /// `FrontRing::outstanding`.
    fn outstanding(&self) -> u32 {
        distance(self.req_prod_published, self.rsp_cons)
    }

    /// `FrontRing::put_request`.
    fn put_request(&mut self, req: u32) {
        assert!(self.free_requests() > 0, "put_request on a full ring");
        self.s.write(self.req_prod_pvt, req);
        self.req_prod_pvt = self.req_prod_pvt.wrapping_add(1);
    }

    /// `FrontRing::push_requests_and_check_notify`.
    fn push_requests_and_check_notify(&mut self) -> bool {
        let old = self.req_prod_published;
        let new = self.req_prod_pvt;
        self.s.req_prod.store(new, Ordering::Release);
        self.req_prod_published = new;
        fence(Ordering::SeqCst);
        let event = self.s.req_event.load(Ordering::Relaxed);
        event_in_window(event, old, new)
    }

    /// `FrontRing::refresh_responses`, its overflow checks as assertions.
    fn refresh_responses(&mut self) -> u32 {
        let prod = self.s.rsp_prod.load(Ordering::Acquire);
        let ahead = distance(prod, self.rsp_cons);
        assert!(ahead <= self.s.size && ahead <= self.outstanding());
        self.rsp_prod_seen = prod;
        ahead
    }

    /// `FrontRing::take_response`.
    fn take_response(&mut self) -> Option<u32> {
        if self.rsp_cons == self.rsp_prod_seen {
            return None;
        }
        let rsp = self.s.read(self.rsp_cons);
        self.rsp_cons = self.rsp_cons.wrapping_add(1);
        Some(rsp)
    }

    /// `FrontRing::final_check_for_responses`.
    fn final_check_for_responses(&mut self) -> bool {
        if self.refresh_responses() > 0 {
            return true;
        }
        self.s
            .rsp_event
            .store(self.rsp_cons.wrapping_add(1), Ordering::Relaxed);
        fence(Ordering::SeqCst);
        self.refresh_responses() > 0
    }
}

/// `BackRing`: the backend's private indexes.
#[derive(Debug)]
struct Back {
    s: Arc<Sring>,
    rsp_prod_pvt: u32,
    rsp_prod_published: u32,
    req_cons: u32,
    req_prod_seen: u32,
}

impl Back {
    fn new(s: Arc<Sring>) -> Back {
        Back {
            s,
            rsp_prod_pvt: 0,
            rsp_prod_published: 0,
            req_cons: 0,
            req_prod_seen: 0,
        }
    }

    /// `BackRing::refresh_requests`, its overflow check as an assertion.
    fn refresh_requests(&mut self) -> u32 {
        let prod = self.s.req_prod.load(Ordering::Acquire);
        assert!(distance(prod, self.rsp_prod_pvt) <= self.s.size);
        self.req_prod_seen = prod;
        self.pending_requests()
    }

    /// `BackRing::pending_requests`.
    fn pending_requests(&self) -> u32 {
        let req = distance(self.req_prod_seen, self.req_cons);
        let rsp = self.s.size - distance(self.req_cons, self.rsp_prod_pvt);
        req.min(rsp)
    }

    /// `BackRing::take_request`.
    fn take_request(&mut self) -> Option<u32> {
        if self.pending_requests() == 0 {
            return None;
        }
        let req = self.s.read(self.req_cons);
        self.req_cons = self.req_cons.wrapping_add(1);
        Some(req)
    }

    /// `BackRing::put_response`.
    fn put_response(&mut self, rsp: u32) {
        assert!(
            distance(self.req_cons, self.rsp_prod_pvt) > 0,
            "no request to answer"
        );
        self.s.write(self.rsp_prod_pvt, rsp);
        self.rsp_prod_pvt = self.rsp_prod_pvt.wrapping_add(1);
    }

    /// `BackRing::push_responses_and_check_notify`.
    fn push_responses_and_check_notify(&mut self) -> bool {
        let old = self.rsp_prod_published;
        let new = self.rsp_prod_pvt;
        self.s.rsp_prod.store(new, Ordering::Release);
        self.rsp_prod_published = new;
        fence(Ordering::SeqCst);
        let event = self.s.rsp_event.load(Ordering::Relaxed);
        event_in_window(event, old, new)
    }

    /// `BackRing::final_check_for_requests`.
    fn final_check_for_requests(&mut self) -> bool {
        if self.refresh_requests() > 0 {
            return true;
        }
        self.s
            .req_event
            .store(self.req_cons.wrapping_add(1), Ordering::Relaxed);
        fence(Ordering::SeqCst);
        self.refresh_requests() > 0
    }

    /// `BackRing::set_req_event`.
    fn set_req_event(&mut self, event: u32) {
        self.s.req_event.store(event, Ordering::Relaxed);
        fence(Ordering::SeqCst);
    }
}

// ---------------------------------------------------------------------------------------
// The data ring's out direction: ring/src/flex.rs
// ---------------------------------------------------------------------------------------

/// Bytes in the modelled data ring (each unit stands for a run of bytes).
const DATA_RING: u32 = 4;

/// The indexes `out_prod`, `out_cons` and the data units.
#[derive(Debug)]
struct DataRing {
    prod: AtomicU32,
    cons: AtomicU32,
    units: Vec<UnsafeCell<u32>>,
}

impl DataRing {
    fn new() -> DataRing {
        DataRing {
            prod: AtomicU32::new(0),
            cons: AtomicU32::new(0),
            units: (0..DATA_RING).map(|_| UnsafeCell::new(u32::MAX)).collect(),
        }
    }

    fn unit(&self, idx: u32) -> &UnsafeCell<u32> {
        &self.units[(idx & (DATA_RING - 1)) as usize]
    }
}

/// `FlexProducer` (the frontend's, on **out**).
#[derive(Debug)]
struct FlexProducer {
    d: Arc<DataRing>,
    prod_pvt: u32,
    cons_seen: u32,
}

impl FlexProducer {
    /// `FlexProducer::refresh`, the overflow check as an assertion.
    fn refresh(&mut self) -> u32 {
        let cons = self.d.cons.load(Ordering::Acquire);
        let used = distance(self.prod_pvt, cons);
        assert!(used <= DATA_RING, "data ring index overflow");
        self.cons_seen = cons;
        DATA_RING - used
    }

    /// `FlexProducer::free`.
    fn free(&self) -> u32 {
        DATA_RING - distance(self.prod_pvt, self.cons_seen)
    }

    /// `FlexProducer::stage` of `n` units holding `tag`: `false` if the ring lacks room.
    fn stage(&mut self, n: u32, tag: u32) -> bool {
        if self.free() < n && self.refresh() < n {
            return false;
        }
        for i in 0..n {
            let unit = self.d.unit(self.prod_pvt.wrapping_add(i));
            // SAFETY: loom's cell checks that no access to it races with this one.
            unit.with_mut(|p| unsafe { *p = tag });
        }
        self.prod_pvt = self.prod_pvt.wrapping_add(n);
        true
    }

    /// `FlexProducer::publish`.
    fn publish(&mut self) {
        self.d.prod.store(self.prod_pvt, Ordering::Release);
    }
}

/// `FlexConsumer` (the backend's, on **out**).
#[derive(Debug)]
struct FlexConsumer {
    d: Arc<DataRing>,
    cons_pvt: u32,
    prod_seen: u32,
}

impl FlexConsumer {
    /// `FlexConsumer::refresh`.
    fn refresh(&mut self) -> u32 {
        let prod = self.d.prod.load(Ordering::Acquire);
        let queued = distance(prod, self.cons_pvt);
        assert!(queued <= DATA_RING, "data ring index overflow");
        self.prod_seen = prod;
        queued
    }

    /// `FlexConsumer::read_exact` of `n` units: every unit must hold `tag`, and the bytes
    /// must have been published (`ensure`: a short ring is the frontend's fault, a
    /// disconnect; here a failure).
    fn read_exact(&mut self, n: u32, tag: u32) {
        if distance(self.prod_seen, self.cons_pvt) < n {
            let q = self.refresh();
            assert!(q >= n, "staged bytes read past the published producer");
        }
        for i in 0..n {
            let unit = self.d.unit(self.cons_pvt.wrapping_add(i));
            // SAFETY: loom's cell checks that no access to it races with this one.
            let got = unit.with(|p| unsafe { *p });
            assert_eq!(got, tag, "a staged byte of another packet");
        }
        self.cons_pvt = self.cons_pvt.wrapping_add(n);
    }

    /// `FlexConsumer::release`.
    fn release(&mut self) {
        self.d.cons.store(self.cons_pvt, Ordering::Release);
    }
}

// ---------------------------------------------------------------------------------------
// Wire values
// ---------------------------------------------------------------------------------------

/// A TX request: its id, its packet's tag and its staged length (0: granted).
fn tx_req(id: u32, tag: u32, staged: u32) -> u32 {
    id | tag << 8 | staged << 16
}

fn tx_req_parts(r: u32) -> (u32, u32, u32) {
    (r & 0xff, (r >> 8) & 0xff, r >> 16)
}

/// A response: the id it answers (status OKAY).
fn rsp(id: u32) -> u32 {
    id
}

// ---------------------------------------------------------------------------------------
// Running the model
// ---------------------------------------------------------------------------------------

/// Runs `f` in every interleaving with at most `preemptions` preemptions; returns how many
/// executions loom explored.
fn check(preemptions: usize, f: impl Fn() + Sync + Send + 'static) -> usize {
    let runs = std::sync::Arc::new(AtomicUsize::new(0));
    let counted = std::sync::Arc::clone(&runs);
    let mut b = loom::model::Builder::new();
    b.preemption_bound = Some(preemptions);
    // Exhaustive within the bound, whatever LOOM_* variables say.
    b.max_duration = None;
    b.max_permutations = None;
    b.check(move || {
        counted.fetch_add(1, StdOrdering::Relaxed);
        f();
    });
    runs.load(StdOrdering::Relaxed)
}

/// Runs the ignored test `name` of this binary, a model that must fail, in a child
/// process; returns whether it failed and what it printed.
///
/// Not `catch_unwind`: loom reports a deadlock by panicking, but unwinding then drops loom
/// objects (a mutex guard, an `Arc`) whose destructors call into loom's runtime, which has
/// no active thread any more; that second panic aborts the process.
fn run_failing_model(name: &str) -> (bool, String) {
    let exe = std::env::current_exe().expect("the test binary");
    let out = std::process::Command::new(exe)
        .args([
            name,
            "--exact",
            "--ignored",
            "--test-threads=1",
            "--nocapture",
        ])
        .env("RUST_BACKTRACE", "0")
        .output()
        .expect("run the test binary");
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(
        text.contains(&format!("{name} ")),
        "the child did not run {name}: {text}"
    );
    (!out.status.success(), text)
}

/// Asserts that loom finds a lost wake-up in the model the ignored test `name` checks.
fn assert_loom_finds_deadlock(name: &str) {
    let (failed, text) = run_failing_model(name);
    assert!(failed, "loom found no failure in {name}: {text}");
    assert!(
        text.contains("deadlock;"),
        "{name} failed otherwise: {text}"
    );
}

/// Something one execution did, to show afterwards that some execution did it.
struct Seen(AtomicBool);

impl Seen {
    const fn new() -> Seen {
        Seen(AtomicBool::new(false))
    }
    fn mark(&self) {
        self.0.store(true, StdOrdering::Relaxed);
    }
    fn get(&self) -> bool {
        self.0.load(StdOrdering::Relaxed)
    }
}

// ---------------------------------------------------------------------------------------
// TX: netfront-user/src/queue/tx.rs and mod.rs; netback-user/src/queue/tx.rs and mod.rs
// ---------------------------------------------------------------------------------------

/// What a TX scenario varies.
#[derive(Debug, Clone, Copy)]
struct TxSetup {
    /// Packets to send.
    packets: u32,
    /// TX ring slots (a power of two).
    ring: u32,
    /// TX request ids (`POOL`).
    ids: u32,
    /// Units each packet stages if the data ring has room (0: no data ring, grants only).
    staged: u32,
    /// Chains the backend takes per `recv_burst` (`BURST`).
    burst: u32,
    /// The backend's wait arms the TX ring (its final check) before it blocks, as the code
    /// does; false only for a negative control.
    back_arms: bool,
    /// Each end's unarmed looks before it arms ([`QUEUE_LOOKS`]); 0 as on a port whose own
    /// wait spins (real Xen: `EventPort::spin` is zero), where an end arms at once and then
    /// calls the port's `wait`, spin included.
    looks: u32,
}

/// After an end's wait has armed its ring and found no work: the port's `block` after the
/// end's own looks, or the port's `wait` (spin, then block) when it took none.
fn sleep_on(port: &Port, looks: u32) {
    if looks == 0 {
        port.wait();
    } else {
        port.block();
    }
}

/// What every execution of a TX scenario may mark.
struct TxSeen {
    front_blocked: Seen,
    back_blocked: Seen,
    staged: Seen,
    fallback: Seen,
    wrapped: Seen,
}

impl TxSeen {
    const fn new() -> TxSeen {
        TxSeen {
            front_blocked: Seen::new(),
            back_blocked: Seen::new(),
            staged: Seen::new(),
            fallback: Seen::new(),
            wrapped: Seen::new(),
        }
    }
}

/// The shared memory and ports of a TX scenario.
struct TxShared {
    ring: Arc<Sring>,
    data: Arc<DataRing>,
    /// One granted page per request id (`tx_pool`).
    pages: Vec<UnsafeCell<u32>>,
    /// The frontend's port (the backend notifies it) and the backend's.
    front_port: Port,
    back_port: Port,
}

/// The frontend's TX queue state (`FrontQueue`'s TX half).
struct TxFront {
    sh: Arc<TxShared>,
    tx: Front,
    flex: FlexProducer,
    tx_free: Vec<u32>,
    tx_inflight: Vec<bool>,
    held: Option<u32>,
    unpublished: bool,
    answered: u32,
}

impl TxFront {
    /// `FrontQueue::send_burst` -> `tx_burst` of packets `first..end`: reap, put as many as
    /// fit, publish. Returns how many it took.
    fn send_burst(&mut self, first: u32, end: u32, setup: TxSetup, seen: &TxSeen) -> u32 {
        self.reap_tx();
        let mut n = 0;
        for tag in first..end {
            if !self.tx_one(tag, setup, seen) {
                break;
            }
            n += 1;
        }
        self.publish_tx(n);
        n
    }

    /// `FrontQueue::publish_tx`: the staged bytes first (`Ring::tx_publish`), then the
    /// requests, notifying if the backend asked.
    fn publish_tx(&mut self, n: u32) {
        if n == 0 {
            return;
        }
        if std::mem::take(&mut self.unpublished) {
            self.flex.publish();
        }
        if self.tx.push_requests_and_check_notify() {
            self.sh.back_port.notify();
        }
    }

    /// `Ring::tx_decide` with the greedy policy (`PolicyState::decide`: a head of a page or
    /// less goes whole or not at all).
    fn tx_decide(&mut self, len: u32) -> u32 {
        if len == 0 {
            return 0;
        }
        let mut free = self.flex.free();
        if free < len {
            free = self.flex.refresh();
        }
        if free < len {
            0
        } else {
            len
        }
    }

    /// `FrontQueue::tx_one`: decides (or reuses the held decision), checks ids and slots,
    /// stages or fills a granted page, puts the request.
    fn tx_one(&mut self, tag: u32, setup: TxSetup, seen: &TxSeen) -> bool {
        let staged = match self.held.take() {
            Some(s) => s,
            None => self.tx_decide(setup.staged),
        };
        // `needs`: one id and one slot, staged or not (a packet of a page or less).
        if self.tx_free.is_empty() || self.tx.free_requests() < 1 {
            self.held = Some(staged);
            return false;
        }
        let id = self.take_id();
        if staged > 0 {
            // `Ring::tx_stage`: room was seen by tx_decide and only we produce.
            let at = self.flex.prod_pvt;
            assert!(
                self.flex.stage(staged, tag),
                "TX data ring lost room it had"
            );
            if (at & (DATA_RING - 1)) + staged > DATA_RING {
                seen.wrapped.mark();
            }
            self.unpublished = true;
            seen.staged.mark();
        } else {
            // `fill_pages`: the packet in the page of its id.
            // SAFETY: loom's cell checks that no access to it races with this one.
            self.sh.pages[id as usize].with_mut(|p| unsafe { *p = tag });
            if setup.staged > 0 {
                seen.fallback.mark();
            }
        }
        self.tx.put_request(tx_req(id, tag, staged));
        true
    }

    /// `FrontQueue::take_id`.
    fn take_id(&mut self) -> u32 {
        let id = self.tx_free.pop().expect("TX id pool accounting");
        self.tx_inflight[id as usize] = true;
        id
    }

    /// `FrontQueue::reap_tx`: takes the responses, frees their ids (hardened: the id must
    /// be in flight).
    fn reap_tx(&mut self) {
        if self.tx.refresh_responses() == 0 {
            return;
        }
        while let Some(r) = self.tx.take_response() {
            let id = r as usize;
            assert!(
                self.tx_inflight[id],
                "TX id {id} answered but not in flight"
            );
            self.tx_inflight[id] = false;
            self.tx_free.push(r);
            self.answered += 1;
        }
    }

    /// `FrontQueue::wait(None)` blocking: `spin_for_work` (unarmed looks at the TX ring
    /// and the port), `arm` (the TX ring's final check when requests are outstanding), then
    /// the port's `block`.
    fn wait(&mut self, seen: &TxSeen, looks: u32) {
        for _ in 0..looks {
            let work = self.tx.outstanding() > 0 && self.tx.refresh_responses() > 0;
            if work || self.sh.front_port.take_pending() {
                return;
            }
        }
        let work = self.tx.outstanding() > 0 && self.tx.final_check_for_responses();
        if work {
            return;
        }
        seen.front_blocked.mark();
        sleep_on(&self.sh.front_port, looks);
    }
}

/// The backend's TX queue state (`BackQueue`'s TX half).
struct TxBack {
    sh: Arc<TxShared>,
    tx: Back,
    flex: FlexConsumer,
    received: u32,
}

impl TxBack {
    /// `BackQueue::recv_burst`: takes up to `burst` chains, reads their staged bytes or
    /// their granted page (the fetch), gives the data ring back (`tx_release`), answers,
    /// pushes and notifies if the frontend asked. Returns how many it took.
    fn recv_burst(&mut self, burst: u32) -> u32 {
        if self.tx.refresh_requests() == 0 {
            return 0;
        }
        let mut reqs = Vec::new();
        while self.tx.pending_requests() > 0 && (reqs.len() as u32) < burst {
            reqs.push(self.tx.take_request().expect("counted"));
        }
        let mut used = false;
        for &r in &reqs {
            let (id, tag, staged) = tx_req_parts(r);
            // Packets arrive in order.
            assert_eq!(tag, self.received, "packets out of order");
            self.received += 1;
            if staged > 0 {
                // `tx_stage_one` -> `DataRing::tx_read`.
                used = true;
                self.flex.read_exact(staged, tag);
            } else {
                // The grant copy of the packet's page.
                // SAFETY: loom's cell checks that no access to it races with this one.
                let got = self.sh.pages[id as usize].with(|p| unsafe { *p });
                assert_eq!(got, tag, "a granted page of another packet");
            }
        }
        // `tx_answer`: `DataRing::tx_release`, then the responses.
        if used {
            self.flex.release();
        }
        for &r in &reqs {
            let (id, _, _) = tx_req_parts(r);
            self.tx.put_response(rsp(id));
        }
        if self.tx.push_responses_and_check_notify() {
            self.sh.front_port.notify();
        }
        reqs.len() as u32
    }

    /// `BackQueue::wait(None)` blocking: `spin_for_work` (unarmed looks at the TX ring and
    /// the port), `armed_work` (the TX ring's final check; left out unless `arms`), then
    /// the port's `block`.
    fn wait(&mut self, seen: &TxSeen, arms: bool, looks: u32) {
        for _ in 0..looks {
            if self.tx.refresh_requests() > 0 || self.sh.back_port.take_pending() {
                return;
            }
        }
        if arms && self.tx.final_check_for_requests() {
            return;
        }
        seen.back_blocked.mark();
        sleep_on(&self.sh.back_port, looks);
    }
}

/// One execution of a TX scenario: the frontend on this thread sends every packet, waiting
/// when `send_burst` moved nothing (`roles::stream_step`), then waits for the last
/// responses; the backend on another counts packets (`roles::BenchQueues::count`).
fn tx_model(setup: TxSetup, seen: &'static TxSeen) {
    let sh = Arc::new(TxShared {
        ring: Arc::new(Sring::new(setup.ring)),
        data: Arc::new(DataRing::new()),
        pages: (0..setup.ids).map(|_| UnsafeCell::new(u32::MAX)).collect(),
        front_port: Port::new(EVTCHN),
        back_port: Port::new(EVTCHN),
    });
    let mut back = TxBack {
        sh: Arc::clone(&sh),
        tx: Back::new(Arc::clone(&sh.ring)),
        flex: FlexConsumer {
            d: Arc::clone(&sh.data),
            cons_pvt: 0,
            prod_seen: 0,
        },
        received: 0,
    };
    let backend = thread::spawn(move || {
        while back.received < setup.packets {
            if back.recv_burst(setup.burst) == 0 {
                back.wait(seen, setup.back_arms, setup.looks);
            }
        }
    });
    let mut front = TxFront {
        sh: Arc::clone(&sh),
        tx: Front::new(Arc::clone(&sh.ring)),
        flex: FlexProducer {
            d: Arc::clone(&sh.data),
            prod_pvt: 0,
            cons_seen: 0,
        },
        tx_free: (0..setup.ids).rev().collect(),
        tx_inflight: vec![false; setup.ids as usize],
        held: None,
        unpublished: false,
        answered: 0,
    };
    let mut sent = 0;
    while sent < setup.packets {
        let n = front.send_burst(sent, setup.packets, setup, seen);
        sent += n;
        if n == 0 {
            front.wait(seen, setup.looks);
        }
    }
    while front.answered < setup.packets {
        front.reap_tx();
        if front.answered < setup.packets {
            front.wait(seen, setup.looks);
        }
    }
    backend.join().unwrap();
    assert_eq!(front.tx_free.len() as u32, setup.ids, "every id came back");
}

/// Scenario 1's setup: three packets through a 2-slot ring with 2 ids, grants only; the
/// backend takes one chain per burst.
const RING_FULL: TxSetup = TxSetup {
    packets: 3,
    ring: 2,
    ids: 2,
    staged: 0,
    burst: 1,
    back_arms: true,
    looks: QUEUE_LOOKS,
};

/// Scenario 1 ([`RING_FULL`]). No interleaving leaves an end asleep with work pending.
#[test]
fn tx_ring_full_no_lost_wakeup() {
    static SEEN: TxSeen = TxSeen::new();
    let runs = check(2, move || tx_model(RING_FULL, &SEEN));
    eprintln!("tx_ring_full: {runs} executions");
    assert!(SEEN.front_blocked.get() && SEEN.back_blocked.get());
}

/// Scenario 3: four packets of 3 bytes, staged on a 4-byte data ring when it has room and
/// granted when it has not, through a 2-slot ring with 2 ids; the backend takes up to 2
/// chains per burst. Some execution stages, falls back, and wraps the data ring (the
/// fourth packet: the third reuses the fallback decision `held` when the ring was full).
/// Staged bytes are read only once published and rewritten only once released; no lost
/// wake-up.
#[test]
fn tx_data_ring_and_fallback_no_lost_wakeup() {
    static SEEN: TxSeen = TxSeen::new();
    let setup = TxSetup {
        packets: 4,
        ring: 2,
        ids: 2,
        staged: 3,
        burst: 2,
        back_arms: true,
        looks: QUEUE_LOOKS,
    };
    let runs = check(2, move || tx_model(setup, &SEEN));
    eprintln!("tx_data_ring: {runs} executions");
    assert!(SEEN.staged.get() && SEEN.fallback.get() && SEEN.wrapped.get());
    assert!(SEEN.front_blocked.get() && SEEN.back_blocked.get());
}

/// Scenario 1 with both ends arming at once and then spinning in the port's `wait`, as on
/// real Xen (`EventPort::spin` is zero there). No lost wake-up.
#[test]
fn tx_ring_full_arming_at_once_no_lost_wakeup() {
    static SEEN: TxSeen = TxSeen::new();
    let setup = TxSetup {
        looks: 0,
        ..RING_FULL
    };
    let runs = check(2, move || tx_model(setup, &SEEN));
    eprintln!("tx_ring_full_arming_at_once: {runs} executions");
    assert!(SEEN.front_blocked.get() && SEEN.back_blocked.get());
}

/// Scenario 1 with a backend whose wait only looks (unarmed) before it blocks: the
/// frontend, seeing no `req_event` in what it publishes, sends no event, and the backend
/// sleeps with requests pending. Run by [`tx_wait_without_arming_loses_the_wakeup`].
#[test]
#[ignore = "fails (a lost wake-up): run by tx_wait_without_arming_loses_the_wakeup"]
fn tx_wait_without_arming_model() {
    static SEEN: TxSeen = TxSeen::new();
    let setup = TxSetup {
        back_arms: false,
        ..RING_FULL
    };
    check(2, move || tx_model(setup, &SEEN));
}

/// The looks before arming do not make arming unnecessary: loom finds the lost wake-up
/// of a wait that blocks after them without arming (a negative control of the model of
/// `spin_for_work`).
#[test]
fn tx_wait_without_arming_loses_the_wakeup() {
    assert_loom_finds_deadlock("tx_wait_without_arming_model");
}

// ---------------------------------------------------------------------------------------
// RX: netback-user/src/queue/rx.rs and mod.rs; netfront-user/src/queue/rx.rs and mod.rs
// ---------------------------------------------------------------------------------------

/// How `BackQueue::armed_work` arms the RX ring when the last `send_burst` stopped for lack
/// of requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RxArm {
    /// Today's code: `rx.final_check_for_requests() && rx.refresh_requests() >= need`.
    /// `final_check_for_requests` re-arms `req_event` at `req_cons + 1` when it first sees
    /// nothing, while the test that follows asks for `need`.
    FinalCheck,
    /// netback's `xenvif_rx_ring_slots_available`: `req_event = req_cons + need`, a full
    /// barrier (`set_req_event`), then `refresh_requests() >= need`.
    AtNeed,
}

/// The shared memory and ports of the RX scenario.
struct RxShared {
    ring: Arc<Sring>,
    front_port: Port,
    back_port: Port,
}

/// One execution of the RX scenario: the backend on another thread has `packets` packets
/// for the guest, each needing `NEED` requests (`roles::BenchQueues::generate`: send a
/// burst, wait when it took nothing); the frontend on this thread posts requests one at a
/// time (`post_rx`, `push_rx`), then takes responses, waiting when there are none.
fn rx_model(arm: RxArm, packets: u32, ring: u32) {
    const NEED: u32 = 2;
    let sh = Arc::new(RxShared {
        ring: Arc::new(Sring::new(ring)),
        front_port: Port::new(EVTCHN),
        back_port: Port::new(EVTCHN),
    });
    let bsh = Arc::clone(&sh);
    let backend = thread::spawn(move || {
        let mut rx = Back::new(Arc::clone(&bsh.ring));
        let mut delivered = 0;
        while delivered < packets {
            // `BackQueue::send_burst`.
            let mut avail = rx.refresh_requests();
            let mut rx_need = None;
            let mut taken = 0;
            for _ in delivered..packets {
                if avail < NEED {
                    // Stops; the wait arms (`armed_work`).
                    rx_need = Some(NEED);
                    break;
                }
                // `rx_commit`, then `put_rx_responses`: one response per request.
                for _ in 0..NEED {
                    let id = rx.take_request().expect("counted");
                    rx.put_response(rsp(id));
                }
                avail -= NEED;
                taken += 1;
            }
            // `rx_finish`.
            if taken > 0 && rx.push_responses_and_check_notify() {
                bsh.front_port.notify();
            }
            delivered += taken;
            if taken > 0 {
                continue;
            }
            // `BackQueue::wait`: `spin_for_work`, then `armed_work` (the TX ring's looks
            // and final check are left out), then the port's `block`.
            let need = rx_need.expect("stopped for lack of requests");
            if (0..QUEUE_LOOKS)
                .any(|_| rx.refresh_requests() >= need || bsh.back_port.take_pending())
            {
                continue;
            }
            let work = match arm {
                RxArm::FinalCheck => rx.final_check_for_requests() && rx.refresh_requests() >= need,
                RxArm::AtNeed => {
                    let ev = rx.req_cons.wrapping_add(need);
                    rx.set_req_event(ev);
                    rx.refresh_requests() >= need
                }
            };
            if !work {
                bsh.back_port.block();
            }
        }
    });
    let total = packets * NEED;
    let mut rx = Front::new(Arc::clone(&sh.ring));
    let mut posted = 0;
    let mut got = 0;
    while got < total {
        // Post what the ring has room for, one request per push (`post_rx`, `push_rx`).
        while posted < total && rx.free_requests() > 0 {
            rx.put_request(posted);
            posted += 1;
            if rx.push_requests_and_check_notify() {
                sh.back_port.notify();
            }
        }
        // `recv_burst` -> `next_chain`: the responses, in posting order.
        rx.refresh_responses();
        while let Some(id) = rx.take_response() {
            assert_eq!(id, got, "RX responses out of order");
            got += 1;
        }
        if got < total && !(posted < total && rx.free_requests() > 0) {
            // `FrontQueue::wait(None)`: `spin_for_work`, `arm` (no TX requests
            // outstanding), the port's `block`.
            if (0..QUEUE_LOOKS).any(|_| rx.refresh_responses() > 0 || sh.front_port.take_pending())
            {
                continue;
            }
            if !rx.final_check_for_responses() {
                sh.front_port.block();
            }
        }
    }
    backend.join().unwrap();
}

/// Scenario 2, `armed_work` as it was (a final check at `req_cons + 1`, fixed since): loom
/// finds the lost wake-up. The backend stops for a packet needing 2 requests with none
/// posted and sets `req_event = req_cons + 2`; in
/// `armed_work`, `final_check_for_requests` sees nothing and re-arms `req_event` at
/// `req_cons + 1`; the frontend posts its first request between that look and the re-arm,
/// reads the old `req_event` (`req_cons + 2`), and does not notify; the re-check then sees
/// 1 request, less than 2, and the backend sleeps. The frontend's second request moves
/// `req_prod` from `req_cons + 1` to `req_cons + 2`, a window without `req_event`: no
/// notify, and both ends sleep. (Real waits time out after 100 ms: a stall.)
///
/// When `armed_work` is fixed, mirror the fix in [`RxArm`] and drop this test.
#[test]
fn rx_stop_armed_at_one_loses_the_wakeup() {
    assert_loom_finds_deadlock("rx_stop_armed_at_one_model");
}

/// The model [`rx_stop_armed_at_one_loses_the_wakeup`] runs in a child process.
#[test]
#[ignore = "fails (a lost wake-up): run by rx_stop_armed_at_one_loses_the_wakeup"]
fn rx_stop_armed_at_one_model() {
    check(3, || rx_model(RxArm::FinalCheck, 1, 2));
}

/// Scenario 2, armed at `req_cons + need`: no lost wake-up, with one packet on a 2-slot
/// ring (the frontend posts both requests one push at a time).
#[test]
fn rx_stop_armed_at_need_no_lost_wakeup() {
    let runs = check(3, || rx_model(RxArm::AtNeed, 1, 2));
    eprintln!("rx_stop_armed_at_need: {runs} executions");
}

/// Scenario 2, armed at `req_cons + need`, two packets on a 2-slot ring: the frontend must
/// take the first packet's responses before posting the second's requests.
#[test]
fn rx_stop_armed_at_need_two_packets_no_lost_wakeup() {
    let runs = check(2, || rx_model(RxArm::AtNeed, 2, 2));
    eprintln!("rx_stop_armed_at_need_two_packets: {runs} executions");
}

// ---------------------------------------------------------------------------------------
// The event channel alone: platform/src/sim/evtchn.rs
// ---------------------------------------------------------------------------------------

/// One waiter (`wait(None)` with `spins` looks first) and one notifier on one port: the
/// waiter must return, having taken the event.
fn evtchn_model(how: Evtchn) {
    let port = Arc::new(Port::new(how));
    let p = Arc::clone(&port);
    let notifier = thread::spawn(move || p.notify());
    port.wait();
    notifier.join().unwrap();
    assert_eq!(
        port.pending.load(Ordering::Relaxed),
        0,
        "the event was taken"
    );
}

/// Scenario 4: spin twice, register, re-check, sleep; notify: set the bit, wake if a
/// waiter is registered. No lost wake-up.
#[test]
fn evtchn_spin_then_block_no_lost_wakeup() {
    let runs = check(3, || evtchn_model(Evtchn { spins: 2, ..EVTCHN }));
    eprintln!("evtchn: {runs} executions");
}

/// Without the re-check after registering, the futex's own compare still closes the race:
/// the re-check saves a system call, not a wake-up.
#[test]
fn evtchn_without_recheck_relies_on_futex_compare() {
    check(3, || {
        evtchn_model(Evtchn {
            spins: 2,
            recheck: false,
            ..EVTCHN
        })
    });
}

/// Negative control: a sleep that does not compare the word (a condition variable without
/// its predicate) loses the event sent between the re-check and the sleep, and loom says
/// so.
#[test]
fn evtchn_negative_sleep_without_compare_is_caught() {
    assert_loom_finds_deadlock("evtchn_sleep_without_compare_model");
}

/// The model [`evtchn_negative_sleep_without_compare_is_caught`] runs in a child process.
#[test]
#[ignore = "fails (a lost wake-up): run by evtchn_negative_sleep_without_compare_is_caught"]
fn evtchn_sleep_without_compare_model() {
    check(3, || {
        evtchn_model(Evtchn {
            futex_compares: false,
            ..EVTCHN
        })
    });
}

/// Negative control: `notify` with AcqRel/Acquire instead of SeqCst lets the waiter's
/// registration and the pending bit pass each other (store buffering): the waiter sleeps
/// on a word it reads as 0 and the notifier sees no waiter. Loom says so.
#[test]
fn evtchn_negative_notify_without_seqcst_is_caught() {
    assert_loom_finds_deadlock("evtchn_notify_without_seqcst_model");
}

/// The model [`evtchn_negative_notify_without_seqcst_is_caught`] runs in a child process.
#[test]
#[ignore = "fails (a lost wake-up): run by evtchn_negative_notify_without_seqcst_is_caught"]
fn evtchn_notify_without_seqcst_model() {
    check(3, || {
        evtchn_model(Evtchn {
            notify_seqcst: false,
            ..EVTCHN
        })
    });
}
