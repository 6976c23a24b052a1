//! [`FrontQueue`]: one queue of a connected frontend, driven by one application thread
//! (run to completion: the bursts reap completions, copy packets in and out of shared
//! memory and publish, with no thread or channel between the caller and the rings).

mod forward;
mod rx;
mod tx;

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use netstage_fallback::{Features, IdleSpin, Looked, PacketBuf, PollMode, StormGuard};
use netstage_platform::{EventChannels, EventPort, GrantRef, SharedPages};
use netstage_ring::netif::{RxRing, TxRing};
use netstage_ring::sring::FrontRing;

use crate::link::Shared;
use crate::metrics::Tally;
use crate::staging::{err, pool_gref, Broken, Pool, Staging};
use crate::{FrontendError, FrontendPlatform};

/// Buffers per direction: one per ring slot.
pub(crate) const POOL: usize = 256;

/// The pages one queue shares besides its staging memory.
pub(crate) struct QueuePages {
    /// The TX ring's page.
    pub(crate) tx_ring: SharedPages,
    /// The RX ring's page.
    pub(crate) rx_ring: SharedPages,
    /// One page per TX request id (read-only for the backend).
    pub(crate) tx_pool: SharedPages,
    /// One page per RX buffer (written by the backend).
    pub(crate) rx_pool: SharedPages,
}

impl QueuePages {
    /// The buffer pages of `pool`.
    fn pool(&self, pool: Pool) -> &SharedPages {
        match pool {
            Pool::Tx => &self.tx_pool,
            Pool::Rx => &self.rx_pool,
        }
    }
}

/// One negotiated queue of a frontend: its TX and RX rings, their buffer pools and its
/// staging memory, driven by exactly one thread of the application.
///
/// [`FrontQueue::send_burst`] and [`FrontQueue::recv_burst`] move packets;
/// [`FrontQueue::wait`] sleeps until the backend has answered or sent something. Neither
/// allocates once the queue runs: ids, buffers and chains live in memory made at connect.
/// Dropping the queue revokes its shared pages.
pub struct FrontQueue<P: FrontendPlatform> {
    index: u16,
    poll: PollMode,
    /// How long TX requests may stay unanswered before the device is broken.
    answer_timeout: Duration,
    /// Where the TX responses stood while requests were outstanding, and since when they
    /// have not moved.
    unanswered: Option<Unanswered>,
    features: Features,
    tx: FrontRing<TxRing>,
    rx: FrontRing<RxRing>,
    port: Arc<<P as EventChannels>::Port>,
    /// TX request ids free, and which are in flight.
    tx_free: Vec<u16>,
    tx_inflight: Vec<bool>,
    /// Per request id: in flight as the first request of its packet.
    tx_head: Vec<bool>,
    /// TX ids answered whose page the backend still held when its grant was revoked: out
    /// of use until a later revoke succeeds.
    tx_held: Vec<u16>,
    /// RX buffers in the order they were posted (a response's buffer is the one posted in
    /// its ring slot: the response id is not trusted to name it).
    rx_posted: VecDeque<u16>,
    staging: Box<dyn Staging>,
    /// [`Staging::grants_per_packet`], asked once.
    grants_per_packet: bool,
    /// The staging decision for a packet that did not fit: `(length, staged bytes)`, used
    /// again when a burst starts with a packet of that length (decided once per packet).
    held: Option<(usize, usize)>,
    /// A TX burst stopped before a packet held back for data-ring room (`:wait`): once
    /// nothing is in flight that room will not come, and the packet can go by grants, so a
    /// wait must not sleep (the last response may have been reaped by an RX call, which
    /// leaves the TX event unarmed).
    tx_room_hold: bool,
    /// For each TX id sent from an RX slot, that slot's RX buffer (posted on completion).
    zc_pending: Vec<Option<u16>>,
    /// Forwarding: the received packet waiting for room on the TX ring.
    fwd: Option<forward::Fwd>,
    /// Forwarding: the buffer copied packets wait in (made at the first copy).
    fwd_buf: Option<PacketBuf>,
    tally: Tally,
    /// Busy-polling's idle looks.
    idle: IdleSpin,
    /// Wake-ups that brought no work (an event storm backs off).
    storm: StormGuard,
    shared: Arc<Shared>,
    /// This queue's counters (counted in the device's too; this queue writes them alone).
    metrics: crate::metrics::QueueCounters,
    /// Declared last: the pages outlive the rings and staging that point into them.
    pages: QueuePages,
}

/// Busy-polling looks without a TX answer between two reads of the clock for the answer
/// timeout ([`FrontQueue::wait`]).
const LOOKS_PER_CLOCK: u32 = 64;

/// TX requests outstanding whose responses have not moved: where they stood, the waits
/// since, and since when (read at the first wait, or busy-polling at the
/// [`LOOKS_PER_CLOCK`]th).
#[derive(Debug)]
struct Unanswered {
    cons: u32,
    looks: u32,
    since: Option<Instant>,
}

impl<P: FrontendPlatform> FrontQueue<P> {
    /// A queue over freshly shared pages, all its RX buffers posted.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        index: u16,
        poll: PollMode,
        answer_timeout: Duration,
        features: Features,
        pages: QueuePages,
        staging: Box<dyn Staging>,
        port: Arc<<P as EventChannels>::Port>,
        shared: Arc<Shared>,
        metrics: crate::metrics::QueueCounters,
    ) -> Result<FrontQueue<P>, FrontendError> {
        let ring = |e: netstage_ring::sring::RingError| FrontendError::Handshake(e.to_string());
        let mut q = FrontQueue {
            index,
            poll,
            answer_timeout,
            unanswered: None,
            features,
            tx: FrontRing::init(pages.tx_ring.mem.clone()).map_err(ring)?,
            rx: FrontRing::init(pages.rx_ring.mem.clone()).map_err(ring)?,
            port,
            tx_free: (0..POOL as u16).rev().collect(),
            tx_inflight: vec![false; POOL],
            tx_head: vec![false; POOL],
            tx_held: Vec::with_capacity(POOL),
            rx_posted: VecDeque::with_capacity(POOL),
            grants_per_packet: staging.grants_per_packet(),
            staging,
            held: None,
            tx_room_hold: false,
            zc_pending: vec![None; POOL],
            fwd: None,
            fwd_buf: None,
            tally: Tally::default(),
            idle: IdleSpin::default(),
            storm: StormGuard::default(),
            shared,
            metrics,
            pages,
        };
        q.staging
            .pools_shared(&q.pages.tx_pool, &q.pages.rx_pool)
            .map_err(FrontendError::Handshake)?;
        q.post_all_rx().map_err(FrontendError::Handshake)?;
        Ok(q)
    }

    /// The reference of buffer `id` of `pool` for a request about to be published: the
    /// pool's own, or the design's grant made now ([`Staging::grant`]) where it grants per
    /// packet.
    pub(crate) fn buffer_gref(&mut self, pool: Pool, id: u16) -> Result<GrantRef, Broken> {
        let pages = self.pages.pool(pool);
        if self.grants_per_packet {
            return self.staging.grant(pool, pages, id, &mut self.tally);
        }
        pool_gref(pages, id)
    }

    /// Ends the backend's access to answered buffer `id` of `pool` where the design grants
    /// per packet ([`Staging::revoke`]); whether the buffer may be used again. (A pool's own
    /// grants stay: nothing to end, no call per packet.)
    pub(crate) fn end_buffer_access(&mut self, pool: Pool, id: u16) -> Result<bool, Broken> {
        if !self.grants_per_packet {
            return Ok(true);
        }
        let pages = self.pages.pool(pool);
        self.staging.revoke(pool, pages, id, &mut self.tally)
    }

    /// Whether the answer timeout is being timed (for tests).
    #[cfg(test)]
    pub(crate) fn answer_timer_started(&self) -> bool {
        self.unanswered.as_ref().is_some_and(|u| u.since.is_some())
    }

    /// Marks this queue's thread as sharing its core with the threads that feed it (as the
    /// convenience layers' do): busy-polling then yields the CPU at every
    /// [`netstage_fallback::YIELD_EVERY`]th idle look, counted across packets moved,
    /// rather than after [`netstage_fallback::YIELD_IDLE`] without work.
    pub fn share_core(&mut self) {
        self.idle = IdleSpin::sharing();
    }

    /// Whether [`Self::share_core`] marked this queue's thread as sharing its core.
    pub fn shares_core(&self) -> bool {
        self.idle.is_sharing()
    }

    /// Busy-polling's idle looks in the current run (for tests).
    #[cfg(test)]
    pub(crate) fn idle_looks(&self) -> u32 {
        self.idle.idle_looks()
    }

    /// This queue's number.
    pub fn index(&self) -> u16 {
        self.index
    }

    /// Counts `n` packets handed to this queue's owner that will never be sent
    /// (`tx_unsent`).
    pub(crate) fn count_unsent(&mut self, n: u64) {
        self.tally.tx_unsent += n;
        self.metrics.flush(&mut self.tally);
    }

    /// TX requests in flight (put on the ring, not yet answered).
    pub fn tx_pending(&self) -> usize {
        self.tx.outstanding() as usize
    }

    /// Waits for work. Blocking ([`PollMode::Block`]), it first spins (for the port's
    /// [`EventPort::spin`]) looking at the rings without arming them, then arms the rings'
    /// event indexes, returns `Ok(true)` at once if the backend answered or sent something
    /// meanwhile, and otherwise sleeps on the event channel up to `timeout`; after a run of
    /// wake-ups that brought no work (a backend storming events) it first sleeps a
    /// millisecond ([`StormGuard`], counted in `storm_backoffs`). Busy-polling, it looks at
    /// the rings and the port once without arming anything (so the backend sends no
    /// notifications while this end polls) and yields the CPU
    /// once it has idled for [`netstage_fallback::YIELD_IDLE`] (and again after each
    /// further [`netstage_fallback::YIELD_IDLE`]; after [`Self::share_core`], at every
    /// [`netstage_fallback::YIELD_EVERY`]th idle look). With [`PollMode::BlockArmed`] it also
    /// arms the rings before the spin (and returns at once if that finds work). Returns
    /// whether there may be work. Fails with [`FrontendError::Broken`] once the device is
    /// closed or broken.
    pub fn wait(&mut self, timeout: Option<Duration>) -> Result<bool, FrontendError> {
        self.check_open()?;
        self.check_answering()?;
        let woke = match self.poll {
            PollMode::Block | PollMode::BlockArmed => {
                if self.storm.before_wait() {
                    self.tally.storm_backoffs += 1;
                    std::thread::sleep(netstage_fallback::storm::STORM_BACKOFF);
                }
                let start = Instant::now();
                if self.poll == PollMode::BlockArmed {
                    let armed = self.arm();
                    if self.finish(armed)? {
                        return Ok(true);
                    }
                }
                let looked = self.spin_for_work(timeout);
                let woke = match self.finish(looked)? {
                    Some(Looked::Work) => return Ok(true),
                    Some(Looked::Event) => true,
                    None => {
                        let armed = self.arm();
                        if self.finish(armed)? {
                            return Ok(true);
                        }
                        self.port
                            .block(timeout.map(|t| t.saturating_sub(start.elapsed())))?
                    }
                };
                self.storm.after_wait(woke);
                woke
            }
            PollMode::BusyPoll => {
                let looked = self.poll_once();
                return self.finish(looked);
            }
        };
        if woke {
            self.tally.wakeups += 1;
            self.metrics.flush(&mut self.tally);
        }
        self.check_open()?;
        Ok(woke)
    }

    /// Breaks the device if TX requests have gone unanswered for the answer timeout (looked
    /// at only when the caller is about to wait: never on the hot path). Busy-polling, it
    /// reads the clock only every [`LOOKS_PER_CLOCK`]th look without an answer (a look is
    /// far shorter than a clock read there, and a transaction rarely waits that many): the
    /// timeout is timed from the [`LOOKS_PER_CLOCK`]th such look and found at the first
    /// [`LOOKS_PER_CLOCK`]th look after it, so up to about twice that many looks late,
    /// never early.
    fn check_answering(&mut self) -> Result<(), FrontendError> {
        if self.tx.outstanding() == 0 {
            self.unanswered = None;
            return Ok(());
        }
        let cons = self.tx.rsp_cons();
        let u = match &mut self.unanswered {
            Some(u) if u.cons == cons => u,
            other => other.insert(Unanswered {
                cons,
                looks: 0,
                since: None,
            }),
        };
        u.looks = u.looks.wrapping_add(1);
        if self.poll == PollMode::BusyPoll && u.looks % LOOKS_PER_CLOCK != 0 {
            return Ok(());
        }
        match u.since {
            None => u.since = Some(Instant::now()),
            Some(since) if since.elapsed() >= self.answer_timeout => {
                let why = format!(
                    "the backend answered none of {} TX requests for {:?}",
                    self.tx.outstanding(),
                    self.answer_timeout
                );
                // A fault: the device is reset (Closing, with the reason), as for a
                // backend that breaks the protocol.
                self.shared.fault(&why);
                return Err(FrontendError::Broken(why));
            }
            Some(_) => {}
        }
        Ok(())
    }

    /// One busy-polling look at the rings and the port.
    fn poll_once(&mut self) -> Result<bool, Broken> {
        let work = self.look()?.is_some();
        Ok(self.idle.look(work))
    }

    /// Before a blocking wait arms for its sleep, spins for the port's [`EventPort::spin`]
    /// (at most `timeout`) looking at the rings, and at the port: unless the wait armed
    /// first ([`PollMode::BlockArmed`]), the backend sends no notification for what arrives
    /// meanwhile. What it found first, if anything.
    fn spin_for_work(&mut self, timeout: Option<Duration>) -> Result<Option<Looked>, Broken> {
        netstage_platform::spin_looking(self.port.spin(), timeout, || self.look())
    }

    /// One look at the rings, unarmed, and at the port (consuming an event).
    fn look(&mut self) -> Result<Option<Looked>, Broken> {
        let mut work = self.rx.refresh_responses().map_err(err("RX ring"))? > 0;
        if self.tx.outstanding() > 0 {
            work |= self.tx.refresh_responses().map_err(err("TX ring"))? > 0;
        }
        if work || self.room_hold_can_go() {
            return Ok(Some(Looked::Work));
        }
        Ok(matches!(self.port.poll(), Ok(true)).then_some(Looked::Event))
    }

    /// The final checks before sleeping: whether responses are pending, or a packet held
    /// back for data-ring room can go.
    fn arm(&mut self) -> Result<bool, Broken> {
        let mut work = self.room_hold_can_go();
        if self.tx.outstanding() > 0 {
            work |= self
                .tx
                .final_check_for_responses()
                .map_err(err("TX ring"))?;
        }
        work |= self
            .rx
            .final_check_for_responses()
            .map_err(err("RX ring"))?;
        Ok(work)
    }

    /// Whether a packet held back for data-ring room can go now that nothing is in flight;
    /// said once (the caller's next send decides it afresh), so a caller that no longer
    /// offers it is not woken again and again.
    fn room_hold_can_go(&mut self) -> bool {
        let go = self.tx_room_hold && self.tx.outstanding() == 0;
        if go {
            self.tx_room_hold = false;
        }
        go
    }

    /// The queue moved packets (sent, received, answered): for the storm guard, and to end
    /// busy-polling's run of idle looks.
    fn moved(&mut self) {
        self.storm.moved();
        self.idle.moved();
    }

    /// Fails if the device was stopped (closed, backend gone, or broken by any queue).
    fn check_open(&self) -> Result<(), FrontendError> {
        if self.shared.stopped() {
            return Err(FrontendError::Broken(self.shared.reason()));
        }
        Ok(())
    }

    /// Ends a call: warns of the backend's faults it counted (rate-limited), publishes the
    /// counters and turns a protocol violation into a broken device.
    fn finish<T>(&mut self, r: Result<T, Broken>) -> Result<T, FrontendError> {
        if !self.tally.is_zero() {
            self.shared.warn_faults(self.index, &self.tally);
            self.metrics.flush(&mut self.tally);
        }
        r.map_err(|b| {
            self.shared.fault(&b);
            FrontendError::Broken(b)
        })
    }

    /// Sends an event to the backend.
    fn notify(&mut self) {
        if self.port.notify().is_ok() {
            self.tally.notifications += 1;
        }
    }
}

impl<P: FrontendPlatform> FrontQueue<P> {
    /// This queue's event port, for another thread to wake its [`FrontQueue::wait`].
    /// Resolves the event port's peer (see [`EventPort::prepare`]).
    pub(crate) fn prepare_port(&self) -> Result<(), FrontendError> {
        Ok(self.port.prepare()?)
    }

    pub(crate) fn port_handle(&self) -> Arc<dyn EventPort> {
        Arc::clone(&self.port) as Arc<dyn EventPort>
    }
}
