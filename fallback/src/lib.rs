//! What both ends of netstage share below the protocol: packets and the pooled buffers the
//! run-to-completion queues fill ([`packet`]), batched grant copy with storage reused from
//! burst to burst ([`copy`]), fetching a packet by grant map ([`map`]), and the designs and
//! the per-packet copy-vs-grant policy of the data ring ([`policy`]), and received packets
//! lent in place ([`view`]), and rate-limited logging of what a peer causes
//! ([`log_limit`]).

#![forbid(unsafe_code)]

pub mod copy;
pub mod gate;
pub mod log_limit;
pub mod map;
pub mod packet;
pub mod policy;
pub mod stats;
pub mod storm;
pub mod view;

pub use copy::{CopyBurst, CopyDone, GrantCopier, MAX_COPY_OPS};
pub use gate::Gate;
pub use log_limit::LogLimit;
pub use map::{fetch_by_map, Fragment};
pub use packet::{Gso, Packet, PacketBuf, PacketRef, MAX_PACKET};
pub use policy::{CopyPolicy, Design, FallbackReason, PolicyState, WhenFull};
pub use stats::{unix_time, StatsKind};
pub use storm::StormGuard;
pub use view::{PacketView, ViewPart, MAX_VIEW_PARTS};

// For `warn_limited!`: callers need not name `log` themselves.
#[doc(hidden)]
pub use log as __log;

/// Optional features of the protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Features {
    /// `feature-sg`: packets of several slots.
    pub sg: bool,
    /// `feature-gso-tcpv4`.
    pub gso_tcpv4: bool,
    /// `feature-gso-tcpv6`.
    pub gso_tcpv6: bool,
    /// `feature-ipv6-csum-offload`.
    pub ipv6_csum_offload: bool,
}

impl Features {
    /// Everything this implementation supports.
    pub const ALL: Features = Features {
        sg: true,
        gso_tcpv4: true,
        gso_tcpv6: true,
        ipv6_csum_offload: true,
    };
    /// Nothing optional.
    pub const NONE: Features = Features {
        sg: false,
        gso_tcpv4: false,
        gso_tcpv6: false,
        ipv6_csum_offload: false,
    };

    /// `(XenStore key, enabled)` pairs.
    pub fn keys(&self) -> [(&'static str, bool); 4] {
        [
            ("feature-sg", self.sg),
            ("feature-gso-tcpv4", self.gso_tcpv4),
            ("feature-gso-tcpv6", self.gso_tcpv6),
            ("feature-ipv6-csum-offload", self.ipv6_csum_offload),
        ]
    }
}

impl std::str::FromStr for Features {
    type Err = String;

    /// A comma-separated list of `sg`, `gso-tcpv4`, `gso-tcpv6`, `ipv6-csum`, or `none`.
    fn from_str(s: &str) -> Result<Features, String> {
        let mut f = Features::NONE;
        if s == "none" {
            return Ok(f);
        }
        for k in s.split(',').map(str::trim).filter(|k| !k.is_empty()) {
            match k {
                "sg" => f.sg = true,
                "gso-tcpv4" => f.gso_tcpv4 = true,
                "gso-tcpv6" => f.gso_tcpv6 = true,
                "ipv6-csum" => f.ipv6_csum_offload = true,
                other => {
                    return Err(format!(
                        "unknown feature `{other}` (known: sg, gso-tcpv4, gso-tcpv6, ipv6-csum, or none)"
                    ))
                }
            }
        }
        Ok(f)
    }
}

impl std::fmt::Display for Features {
    /// As [`Features::from_str`](std::str::FromStr) reads them: `sg,gso-tcpv4`, or `none`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names = [
            (self.sg, "sg"),
            (self.gso_tcpv4, "gso-tcpv4"),
            (self.gso_tcpv6, "gso-tcpv6"),
            (self.ipv6_csum_offload, "ipv6-csum"),
        ];
        let mut first = true;
        for (_, name) in names.iter().filter(|(on, _)| *on) {
            f.write_str(if first { "" } else { "," })?;
            f.write_str(name)?;
            first = false;
        }
        if first {
            f.write_str("none")?;
        }
        Ok(())
    }
}

/// How a queue waits for work.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PollMode {
    /// Block on the event channel: spin looking at the rings unarmed first (for the
    /// platform's spin), arm the event indexes only when about to sleep. The peer sends no
    /// event for what arrives during the spin. On real Xen the port does not spin, so this
    /// arms at once, as [`PollMode::BlockArmed`] does.
    Block,
    /// Block on the event channel as Linux's netfront and netback do: arm the event
    /// indexes as soon as a look finds no work, then spin and sleep. The peer sends an
    /// event (a hypercall) for every burst that arrives while this end waits: the shape
    /// of the interrupt-driven drivers that busy-polling is measured against.
    BlockArmed,
    /// Spin on the rings and the event channel without sleeping.
    BusyPoll,
}

/// Packet bytes after which a burst call stops taking packets (at either end, either
/// direction): it publishes or answers what it has, so that the peer gets work, or its room
/// back, while this end goes on. Without it a burst of large packets is handled whole
/// before the peer sees any of it, and the two ends take turns instead of overlapping.
/// A burst of 64 packets reaches it from 1 KiB a packet.
pub const BURST_BYTES: usize = 64 * 1024;

/// How long a busy-polling queue idles (looks in a row that find no work) before it yields
/// the CPU, and then between two yields.
pub const YIELD_IDLE: std::time::Duration = std::time::Duration::from_micros(10);

/// Idle busy-polling looks between two reads of the clock for [`YIELD_IDLE`].
pub const IDLE_LOOKS_PER_CLOCK: u32 = 16;

/// A busy-polling queue whose thread shares its core ([`IdleSpin::sharing`]) yields the
/// CPU at every this many idle looks.
pub const YIELD_EVERY: u32 = 64;

/// What one look at a queue's rings and event port found (a waiting queue looks before it
/// arms its rings' event indexes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Looked {
    /// Work on a ring (or a packet held back that may go now).
    Work,
    /// An event from the peer, or a wake from this domain.
    Event,
}

/// A busy-polling queue's idle looks: each spins, and once the queue has idled for
/// [`YIELD_IDLE`] it yields the CPU (and again after each further [`YIELD_IDLE`]), so that
/// a thread sharing the core (one that feeds the queue) gets to run without the queue
/// sleeping. The clock is read every [`IDLE_LOOKS_PER_CLOCK`]th idle look. A run of idle
/// looks ends with any work: found by a look, or moved by a burst call in between
/// ([`IdleSpin::moved`]). Measured by time rather than by looks, so that a short gap
/// between two packets (a request/response transaction's) never pays for a yield, however
/// cheap a look is. A queue that moves a packet at least every [`YIELD_IDLE`] never
/// yields.
///
/// That suits a queue whose thread has its core to itself (the queue API's busy-polling:
/// the application's own loop). A queue whose thread shares its core with the threads that
/// feed it (the convenience layers') is made with [`IdleSpin::sharing`]: it yields at every
/// [`YIELD_EVERY`]th idle look, counted across packets moved, so that the feeders run
/// while packets trickle in.
#[derive(Debug, Default, Clone)]
pub struct IdleSpin {
    in_a_row: u32,
    /// When the current run of idle looks was first timed, or last yielded.
    since: Option<std::time::Instant>,
    /// The queue's thread shares its core: yield by count, not by idle time.
    sharing: bool,
}

impl IdleSpin {
    /// Idle looks for a queue whose thread shares its core with the threads that feed it.
    pub fn sharing() -> IdleSpin {
        IdleSpin {
            sharing: true,
            ..IdleSpin::default()
        }
    }

    /// The queue moved packets (sent, received, answered): the run of idle looks ends
    /// (unless the core is shared: its count goes on).
    #[inline]
    pub fn moved(&mut self) {
        if !self.sharing {
            self.restart();
        }
    }

    /// Notes one look that found `work` (or none: spins, or yields); returns `work`.
    pub fn look(&mut self, work: bool) -> bool {
        if work {
            self.restart();
            return true;
        }
        self.in_a_row = self.in_a_row.wrapping_add(1);
        if self.sharing {
            if self.in_a_row % YIELD_EVERY == 0 {
                std::thread::yield_now();
            } else {
                std::hint::spin_loop();
            }
        } else if self.in_a_row % IDLE_LOOKS_PER_CLOCK != 0 {
            std::hint::spin_loop();
        } else if self.yield_due(std::time::Instant::now()) {
            std::thread::yield_now();
        }
        false
    }

    /// Ends the run of idle looks.
    fn restart(&mut self) {
        self.in_a_row = 0;
        self.since = None;
    }

    /// Whether this queue's thread shares its core ([`IdleSpin::sharing`]).
    pub fn is_sharing(&self) -> bool {
        self.sharing
    }

    /// Idle looks in the current run (0 once work was found or moved).
    pub fn idle_looks(&self) -> u32 {
        self.in_a_row
    }

    /// At a timed idle look at `now`: whether the queue has idled for [`YIELD_IDLE`] since
    /// the run's first timed look or its last yield; if so, the next [`YIELD_IDLE`] is
    /// timed from `now`.
    fn yield_due(&mut self, now: std::time::Instant) -> bool {
        let Some(t) = self.since else {
            self.since = Some(now);
            return false;
        };
        if now.saturating_duration_since(t) < YIELD_IDLE {
            return false;
        }
        self.since = Some(now);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    /// Idle looks are timed from the run's first timed look; a yield is due only once the
    /// queue has idled for [`YIELD_IDLE`].
    #[test]
    fn an_idle_run_yields_only_after_yield_idle() {
        let mut idle = IdleSpin::default();
        for _ in 1..IDLE_LOOKS_PER_CLOCK {
            assert!(!idle.look(false));
        }
        assert!(
            idle.since.is_none(),
            "timed before the {IDLE_LOOKS_PER_CLOCK}th look"
        );
        idle.look(false);
        let t0 = idle.since.expect("the run is timed");
        assert!(!idle.yield_due(t0 + YIELD_IDLE / 2));
        assert!(idle.yield_due(t0 + YIELD_IDLE));
        // Then every YIELD_IDLE, timed from the last yield.
        let t1 = t0 + YIELD_IDLE;
        assert!(!idle.yield_due(t1 + YIELD_IDLE / 2));
        assert!(idle.yield_due(t1 + YIELD_IDLE));
        assert_eq!(idle.idle_looks(), IDLE_LOOKS_PER_CLOCK);
    }

    /// A queue sharing its core counts idle looks across packets moved (only a look that
    /// finds work ends the run), so that it keeps yielding while packets trickle in.
    #[test]
    fn a_shared_core_counts_idle_looks_across_packets_moved() {
        let mut idle = IdleSpin::sharing();
        for _ in 0..10 {
            idle.look(false);
        }
        idle.moved();
        assert_eq!(idle.idle_looks(), 10);
        assert!(idle.since.is_none(), "never timed");
        assert!(idle.look(true));
        assert_eq!(idle.idle_looks(), 0);
    }

    /// Work ends an idle run, whether a look found it or a burst call moved it: the next
    /// run is timed afresh, so a gap between packets never adds up to a yield.
    #[test]
    fn work_ends_an_idle_run() {
        let t0 = Instant::now();
        for end in [
            (|i: &mut IdleSpin| i.moved()) as fn(&mut IdleSpin),
            |i: &mut IdleSpin| assert!(i.look(true)),
        ] {
            let mut idle = IdleSpin::default();
            for _ in 0..IDLE_LOOKS_PER_CLOCK {
                idle.look(false);
            }
            assert!(idle.idle_looks() > 0 && idle.since.is_some());
            end(&mut idle);
            assert_eq!((idle.in_a_row, idle.since), (0, None));
            let later = t0 + Duration::from_secs(1);
            assert!(
                !idle.yield_due(later),
                "a new run is timed from its own start"
            );
            assert!(idle.yield_due(later + YIELD_IDLE));
        }
    }
}
