//! The data ring: one byte ring per direction, staged heads written in packet order; a
//! copy policy decides how much of each TX packet goes there and what falls back to grants
//! (the backend decides RX packets with the same policy, which this end asks for).

use netstage_fallback::policy::CostModel;
use netstage_fallback::{Design, FallbackReason, PolicyState, WhenFull};
use netstage_platform::SharedPages;
use netstage_ring::flex::{self, End, FlexConsumer, FlexProducer};
use netstage_ring::SharedMem;

use super::{err, setup, Broken, Lent, Module, RxPacket, Share, Staging, WholeBudget};
use crate::metrics::{ppm, Tally};
use crate::FrontendError;

/// The data rings' fill is sampled once per this many TX decisions or staged RX packets:
/// a sample reads the peer's index afresh (a shared cache line), so it is not done for
/// every packet, and without that read the fill would be as stale as the last refresh.
const FILL_EVERY: u32 = 16;

/// The module of the data ring.
pub(crate) struct RingStaging;

/// A queue's data rings.
struct Ring {
    prod: FlexProducer,
    cons: FlexConsumer,
    policy: PolicyState,
    /// Whether a TX packet the ring has no room for waits while requests are in flight.
    when_full: WhenFull,
    /// The TX packets held back for room: asked again, one waits on without a new decision
    /// (the policy's fill, the fill samples and `tx_ring_full_waits` count it once).
    holds: Holds,
    /// TX staging decisions and staged RX packets since the fill was last sampled.
    fill_tick: (u32, u32),
    /// Bytes staged since the last publish.
    unpublished: bool,
    /// RX bytes lent in place and not yet given back (released once a burst, or sooner
    /// past a quarter of the ring).
    rx_lent: u32,
    _pages: [SharedPages; 2],
}

impl Module for RingStaging {
    fn negotiate(&self, asked: Design, backend: &dyn Fn(&str) -> Option<String>) -> Design {
        let Design::Ring {
            order,
            policy,
            when_full,
        } = asked
        else {
            return Design::GrantCopy;
        };
        if backend("feature-data-ring").as_deref() != Some("1") {
            return Design::GrantCopy;
        }
        match backend("data-ring-max-order").and_then(|v| v.parse::<u32>().ok()) {
            Some(max) => Design::Ring {
                order: order.min(max).min(flex::MAX_RING_ORDER),
                policy,
                when_full,
            },
            None => Design::GrantCopy,
        }
    }

    fn share(&self, design: Design, to: &mut Share<'_>) -> Result<Box<dyn Staging>, FrontendError> {
        let Design::Ring {
            order,
            policy,
            when_full,
        } = design
        else {
            return Err(setup("data ring set up for another design"));
        };
        let intf = to.pages(1, true)?;
        let data = to.pages(1 << order, true)?;
        flex::init_intf(&intf.mem, order, &data.grefs).map_err(setup)?;
        let (prod, cons) = flex::open(End::Frontend, &intf.mem, &data.mem, order).map_err(setup)?;
        to.key("data-ring-ref", intf.grefs[0]);
        to.key("data-ring-order", order);
        // The backend's RX decisions follow the same policy (docs/protocol.md 3.2).
        to.key("data-ring-policy", policy);
        Ok(Box::new(Ring {
            prod,
            cons,
            policy: PolicyState::with_costs(policy, CostModel::measured()),
            when_full,
            holds: Holds::default(),
            fill_tick: (0, 0),
            rx_lent: 0,
            unpublished: false,
            _pages: [intf, data],
        }))
    }
}

/// The TX packets held back for room (`:wait`), by length: up to two, so that a queue that
/// sends its own packets and forwards others keeps a hold for each (one packet of each
/// length is held at a time: a burst stops at it).
#[derive(Default)]
struct Holds {
    /// `(length, bytes of room it waits for)`.
    slots: [Option<(usize, usize)>; 2],
    /// The slot a new hold takes when both are in use.
    next: usize,
}

impl Holds {
    /// Whether no packet is held back.
    fn is_empty(&self) -> bool {
        self.slots.iter().all(Option::is_none)
    }

    /// The room the held packet of `len` bytes waits for, if one is held.
    fn want(&self, len: usize) -> Option<usize> {
        self.slots
            .iter()
            .flatten()
            .find(|h| h.0 == len)
            .map(|h| h.1)
    }

    /// Holds a packet of `len` bytes until `want` bytes are free; whether the hold is new
    /// (no packet of that length was held).
    fn hold(&mut self, len: usize, want: usize) -> bool {
        if let Some(h) = self.slots.iter_mut().flatten().find(|h| h.0 == len) {
            h.1 = want;
            return false;
        }
        let i = self
            .slots
            .iter()
            .position(Option::is_none)
            .unwrap_or(self.next);
        self.next = (i + 1) % self.slots.len();
        self.slots[i] = Some((len, want));
        true
    }

    /// Ends the hold of the packet of `len` bytes (it was decided: it goes now).
    fn release(&mut self, len: usize) {
        for h in &mut self.slots {
            if h.is_some_and(|h| h.0 == len) {
                *h = None;
            }
        }
    }
}

impl Ring {
    /// Whether a packet held back for room (`len` bytes long) must wait on: requests are
    /// still in flight and the room it waits for is not there yet. Otherwise it is decided
    /// afresh.
    fn still_holding(&mut self, len: usize, in_flight: bool) -> bool {
        if self.when_full != WhenFull::Wait {
            return false;
        }
        match self.holds.want(len) {
            Some(want) if in_flight => {
                let free = self.prod.refresh().map(|f| f as usize).unwrap_or(0);
                free < want
            }
            _ => false,
        }
    }

    /// Every [`FILL_EVERY`]th staged RX packet, samples the ring's fill as the backend sees
    /// it (this packet's `staged` bytes and those lent before it and not yet given back
    /// included) after reading the backend's index afresh.
    fn sample_rx_fill(&mut self, staged: usize, t: &mut Tally) -> Result<(), Broken> {
        self.fill_tick.1 += 1;
        if self.fill_tick.1 == FILL_EVERY {
            self.fill_tick.1 = 0;
            let queued = self.cons.refresh().map_err(err("RX data ring"))?;
            let used = queued as usize + staged + self.rx_lent as usize;
            t.rx_ring_fill_samples += 1;
            t.rx_ring_fill_ppm += ppm(used, self.cons.size() as usize);
        }
        Ok(())
    }

    /// Gives every byte consumed so far back to the backend.
    fn release_rx(&mut self) -> Result<(), Broken> {
        self.rx_lent = 0;
        self.cons.release().map_err(err("RX data ring"))
    }
}

impl Staging for Ring {
    /// Packets the policy stages whole while the room read now lasts; none while a packet
    /// is held back for room (each is decided again). The read is the budget's fill sample.
    fn tx_whole_budget(&mut self) -> WholeBudget {
        let Some(max_len) = self.policy.whole_up_to() else {
            return WholeBudget::default();
        };
        if !self.holds.is_empty() {
            return WholeBudget::default();
        }
        // A bad index is the backend's fault: no room, and the next decision meets it.
        let Ok(free) = self.prod.refresh() else {
            return WholeBudget::default();
        };
        let size = self.prod.size() as usize;
        WholeBudget {
            max_len,
            room: free as usize,
            fill_ppm: Some(ppm(size - free as usize, size)),
            used: false,
        }
    }

    fn tx_decide(&mut self, len: usize, in_flight: bool, t: &mut Tally) -> Option<usize> {
        if self.still_holding(len, in_flight) {
            return None;
        }
        let size = self.prod.size() as usize;
        let mut free = self.prod.free() as usize;
        self.fill_tick.0 += 1;
        let sample = self.fill_tick.0 == FILL_EVERY;
        // The adaptive policy reads the backend's index for every decision; the others
        // when the room they know of is short.
        if sample || free < len || self.policy.wants_fresh_fill() {
            free = self.prod.refresh().map(|f| f as usize).unwrap_or(0);
        }
        if sample {
            self.fill_tick.0 = 0;
            t.tx_ring_fill_samples += 1;
            t.tx_ring_fill_ppm += ppm(size.saturating_sub(free), size);
        }
        let may_wait = in_flight && self.when_full == WhenFull::Wait;
        let (n, why) = match self.policy.decide_or_wait(len, free, size, may_wait) {
            Ok(decision) => decision,
            Err(want) => {
                if self.holds.hold(len, want) {
                    t.tx_ring_full_waits += 1;
                }
                return None;
            }
        };
        if self.when_full == WhenFull::Wait {
            self.holds.release(len);
        }
        match why {
            Some(FallbackReason::RingFull) => t.tx_fallback_ring_full += 1,
            Some(FallbackReason::OverLimit) => t.tx_fallback_over_limit += 1,
            None => {}
        }
        Some(n)
    }

    fn tx_stage(&mut self, _id: u16, head: &[u8]) -> Result<(), Broken> {
        if self
            .prod
            .stage(head)
            .map_err(err("TX data ring"))?
            .is_none()
        {
            return Err("TX data ring lost room it had".into());
        }
        self.unpublished = true;
        Ok(())
    }

    fn tx_publish(&mut self) -> Result<(), Broken> {
        if std::mem::take(&mut self.unpublished) {
            self.prod.publish().map_err(err("TX data ring"))?;
        }
        Ok(())
    }

    fn rx_head(&mut self, _: RxPacket<'_>, dst: &mut [u8], t: &mut Tally) -> Result<(), Broken> {
        self.cons.read_exact(dst).map_err(err("RX data ring"))?;
        self.sample_rx_fill(dst.len(), t)?;
        self.release_rx()
    }

    fn rx_lend(&mut self, rx: RxPacket<'_>, out: &mut Lent, t: &mut Tally) -> Result<(), Broken> {
        let staged = usize::from(rx.chain.staged);
        // The packets lent before this one have been given back by the application: past
        // a quarter of the ring they go back to the backend now, not at the burst's end.
        if self.rx_lent >= self.cons.size() / 4 {
            self.release_rx()?;
        }
        let ranges = self
            .cons
            .take_in_place(staged)
            .map_err(err("RX data ring"))?;
        self.sample_rx_fill(staged, t)?;
        // staged <= 65535.
        self.rx_lent += staged as u32;
        for (at, n) in ranges.into_iter().filter(|(_, n)| *n > 0) {
            out.try_push((0, at, n))
                .map_err(|_| "an RX packet in more pieces than a view holds")?;
        }
        Ok(())
    }

    fn lent_mem(&self, _region: u32) -> Option<&SharedMem> {
        Some(self.cons.data())
    }

    fn rx_release(&mut self) -> Result<(), Broken> {
        if self.rx_lent > 0 {
            self.release_rx()?;
        }
        Ok(())
    }

    fn rx_skip(&mut self, staged: usize) -> Result<(), Broken> {
        self.cons.skip(staged).map_err(err("RX data ring"))?;
        self.release_rx()
    }
}
