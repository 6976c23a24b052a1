//! Latency under load: request/response as a paced stream. The frontend sends frames at a
//! set rate, many in flight, each carrying the time it was sent; the backend echoes every
//! frame; each echo's round trip is measured when it returns. `experiments latency` first
//! finds a design's peak echo rate (frames sent as fast as the rings take them), then
//! measures p50 and p99 at fractions of that peak ([`LOADS`]), round by round.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use arrayvec::ArrayVec;
use netstage_fallback::{PacketBuf, PacketRef};
use netstage_netback_user::BURST;
use netstage_netfront_user::FrontQueue;
use netstage_platform::sim::SimDomain;
use serde::{Deserialize, Serialize};

use crate::check::Check;
use crate::stats::{Bootstrap, Interval};

/// The loads measured, as fractions of the round's peak echo rate (1.0: the peak run
/// itself, frames sent as fast as the rings take them).
pub const LOADS: [f64; 3] = [1.0, 0.5, 0.9];
/// Frames in flight at most: below the rings' 256 slots, so that neither end waits on the
/// other's ring and a paced frame goes out when it is due.
const IN_FLIGHT: u64 = 192;
/// Round trips kept per run at most (32 MiB); the rest are counted, not kept.
const MAX_SAMPLES: usize = 1 << 22;
/// The first bytes of a frame carry its send time.
pub const MIN_FRAME: usize = 8;

/// What a paced echo stream measured over its window.
#[derive(Debug, Clone, Default)]
pub struct EchoWindow {
    /// Frames sent in the window.
    pub sent: u64,
    /// Echoes received in the window.
    pub echoed: u64,
    /// Length of the window in seconds.
    pub seconds: f64,
    /// p50, p99 and p999 round trip of the frames sent in the window, nanoseconds.
    pub latency_ns: Option<[f64; 3]>,
    /// Every frame of the run: echoed, or lost (no echo within a second of the window's
    /// end).
    pub check: Check,
}

/// The sending and receiving state of one paced echo stream on one queue.
struct EchoStream {
    epoch: Instant,
    /// Frames per second (0: as fast as the rings take them).
    rate: f64,
    start: Instant,
    frames: Vec<Vec<u8>>,
    bufs: Vec<PacketBuf>,
    sent: u64,
    echoed: u64,
    /// Round trips of frames sent at or after this time (ns since `epoch`) are kept.
    keep_from: u64,
    round_trips: Vec<u64>,
    /// Round trips past [`MAX_SAMPLES`], not kept.
    unkept: u64,
}

impl EchoStream {
    fn new(len: usize, rate: f64) -> EchoStream {
        let now = Instant::now();
        EchoStream {
            epoch: now,
            rate,
            start: now,
            frames: vec![vec![0x5au8; len]; BURST],
            bufs: PacketBuf::pool(BURST),
            sent: 0,
            echoed: 0,
            keep_from: u64::MAX,
            round_trips: Vec::new(),
            unkept: 0,
        }
    }

    fn now_ns(&self) -> u64 {
        self.epoch.elapsed().as_nanos() as u64
    }

    /// Frames that may go now: what the rate allows so far, within the in-flight bound
    /// (none once draining, a negative rate).
    fn due(&self) -> usize {
        if self.rate < 0.0 {
            return 0;
        }
        let room = IN_FLIGHT.saturating_sub(self.sent - self.echoed);
        let owed = if self.rate > 0.0 {
            let allowed = (self.start.elapsed().as_secs_f64() * self.rate) as u64;
            allowed.saturating_sub(self.sent)
        } else {
            u64::MAX
        };
        owed.min(room).min(BURST as u64) as usize
    }

    /// When the next paced frame is due (now when unpaced; a millisecond on when
    /// draining).
    fn next_due(&self) -> Instant {
        if self.rate > 0.0 {
            self.start + Duration::from_secs_f64((self.sent + 1) as f64 / self.rate)
        } else if self.rate < 0.0 {
            Instant::now() + Duration::from_millis(1)
        } else {
            Instant::now()
        }
    }

    /// Sends what is due and takes the echoes that came; whether anything moved.
    fn step(&mut self, q: &mut FrontQueue<SimDomain>) -> anyhow::Result<bool> {
        let k = self.due();
        let mut moved = 0;
        if k > 0 {
            let stamp = self.now_ns().to_le_bytes();
            for f in &mut self.frames[..k] {
                f[..MIN_FRAME].copy_from_slice(&stamp);
            }
            let refs: ArrayVec<PacketRef<'_>, BURST> =
                self.frames[..k].iter().map(|f| PacketRef::new(f)).collect();
            let n = q.send_burst(&refs)?;
            self.sent += n as u64;
            moved += n;
        }
        let n = q.recv_burst(&mut self.bufs)?;
        let now = self.now_ns();
        for b in &self.bufs[..n] {
            let mut stamp = [0u8; MIN_FRAME];
            let data = b.data();
            if data.len() < MIN_FRAME {
                anyhow::bail!("an echo of {} bytes, shorter than the frame", data.len());
            }
            stamp.copy_from_slice(&data[..MIN_FRAME]);
            let sent_at = u64::from_le_bytes(stamp);
            if sent_at >= self.keep_from {
                if self.round_trips.len() < MAX_SAMPLES {
                    self.round_trips.push(now.saturating_sub(sent_at));
                } else {
                    self.unkept += 1;
                }
            }
        }
        self.echoed += n as u64;
        Ok(moved + n > 0)
    }

    /// Runs until `end`; with `drain`, stops sending and waits (up to `end`) until every
    /// frame has come back.
    fn run_until(
        &mut self,
        q: &mut FrontQueue<SimDomain>,
        end: Instant,
        drain: bool,
    ) -> anyhow::Result<()> {
        if drain {
            self.rate = -1.0;
        }
        while Instant::now() < end && !(drain && self.sent == self.echoed) {
            if !self.step(q)? {
                let wait = self
                    .next_due()
                    .saturating_duration_since(Instant::now())
                    .min(Duration::from_millis(1));
                q.wait(Some(wait))?;
            }
        }
        Ok(())
    }
}

/// Runs a paced echo stream of `len`-byte frames at `rate` per second (0: as fast as the
/// rings take them) on `q`: `warm` unmeasured, then `window` measured, then up to a second
/// for the echoes still in flight. The round trips are those of frames sent in the window.
pub fn measure_echo_stream(
    q: &mut FrontQueue<SimDomain>,
    len: usize,
    rate: f64,
    warm: Duration,
    window: Duration,
) -> anyhow::Result<EchoWindow> {
    if len < MIN_FRAME {
        anyhow::bail!("--size: an echo stream's frames carry their send time: at least {MIN_FRAME} bytes, not {len}");
    }
    if !(rate >= 0.0 && rate.is_finite()) {
        anyhow::bail!("--rate: {rate} is not a rate in frames per second");
    }
    let mut s = EchoStream::new(len, rate);
    s.run_until(q, s.start + warm, false)?;
    let (sent0, echoed0) = (s.sent, s.echoed);
    let t = Instant::now();
    s.keep_from = s.now_ns();
    s.run_until(q, t + window, false)?;
    let seconds = t.elapsed().as_secs_f64();
    let (sent, echoed) = (s.sent - sent0, s.echoed - echoed0);
    s.run_until(q, Instant::now() + Duration::from_secs(1), true)?;
    let mut rt = std::mem::take(&mut s.round_trips);
    rt.sort_unstable();
    let at = |p: f64| rt[((rt.len() as f64 * p) as usize).min(rt.len() - 1)] as f64;
    Ok(EchoWindow {
        sent,
        echoed,
        seconds,
        latency_ns: (!rt.is_empty()).then(|| [at(0.50), at(0.99), at(0.999)]),
        check: Check {
            delivered: s.echoed,
            lost: s.sent - s.echoed,
            ..Check::default()
        },
    })
}

/// One run of `experiments latency`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LatencyRun {
    /// Round, from 1.
    pub round: u32,
    /// Design asked for.
    pub design: String,
    /// The load as a fraction of the round's peak (1: the peak run, unpaced).
    pub load: f64,
    /// Frames per second asked for (0: as fast as the rings take them).
    pub target_pps: f64,
    /// Frames per second sent in the window.
    pub sent_pps: f64,
    /// Echoes per second received in the window.
    pub echoed_pps: f64,
    /// p50 round trip, nanoseconds.
    pub p50_ns: f64,
    /// p99 round trip, nanoseconds.
    pub p99_ns: f64,
    /// p999 round trip, nanoseconds.
    pub p999_ns: f64,
    /// Frames with no echo within a second of the window's end.
    pub lost: u64,
}

impl LatencyRun {
    /// Whether the sender kept up with the rate asked for (within 5 %).
    pub fn kept_up(&self) -> bool {
        self.target_pps == 0.0 || self.sent_pps >= 0.95 * self.target_pps
    }
}

/// A design at one load, over the rounds: medians with their 95 % intervals.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LatencyRow {
    /// Design.
    pub design: String,
    /// The load as a fraction of the peak.
    pub load: f64,
    /// Echoes per second.
    pub echoed_pps: Interval,
    /// p50 round trip, microseconds.
    pub p50_us: Interval,
    /// p99 round trip, microseconds.
    pub p99_us: Interval,
    /// Runs whose sender fell more than 5 % short of the rate asked for.
    pub short: usize,
    /// Frames lost, over all runs.
    pub lost: u64,
}

/// The rows of `runs`, by design (in the order given) and load (in [`LOADS`] order),
/// intervals drawn from `seed`.
pub fn latency_rows(runs: &[LatencyRun], designs: &[String], seed: u64) -> Vec<LatencyRow> {
    let mut boot = Bootstrap::new(seed);
    let mut by: BTreeMap<(usize, usize), Vec<&LatencyRun>> = BTreeMap::new();
    for r in runs {
        let d = designs.iter().position(|d| *d == r.design);
        let l = LOADS.iter().position(|l| *l == r.load);
        if let (Some(d), Some(l)) = (d, l) {
            by.entry((d, l)).or_default().push(r);
        }
    }
    by.into_iter()
        .filter_map(|((d, l), rs)| {
            let of = |f: &dyn Fn(&LatencyRun) -> f64| rs.iter().map(|r| f(r)).collect::<Vec<_>>();
            Some(LatencyRow {
                design: designs[d].clone(),
                load: LOADS[l],
                echoed_pps: boot.interval(&of(&|r| r.echoed_pps))?,
                p50_us: boot.interval(&of(&|r| r.p50_ns / 1e3))?,
                p99_us: boot.interval(&of(&|r| r.p99_ns / 1e3))?,
                short: rs.iter().filter(|r| !r.kept_up()).count(),
                lost: rs.iter().map(|r| r.lost).sum(),
            })
        })
        .collect()
}

/// The rows as a Markdown table.
pub fn latency_markdown(rows: &[LatencyRow]) -> String {
    let iv = |i: &Interval, scale: f64, digits: usize| {
        format!(
            "{:.*} [{:.*}, {:.*}]",
            digits,
            i.median * scale,
            digits,
            i.lo * scale,
            digits,
            i.hi * scale
        )
    };
    let mut s = String::from(
        "| design | load | echoes (Mpps) | p50 (us) | p99 (us) | runs short of the rate | lost |\n\
         |---|---|---|---|---|---|---|\n",
    );
    for r in rows {
        let load = if r.load == 1.0 {
            "peak".to_string()
        } else {
            format!("{:.0} % of peak", r.load * 100.0)
        };
        s.push_str(&format!(
            "| {} | {load} | {} | {} | {} | {} | {} |\n",
            r.design,
            iv(&r.echoed_pps, 1e-6, 3),
            iv(&r.p50_us, 1.0, 1),
            iv(&r.p99_us, 1.0, 1),
            r.short,
            r.lost
        ));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(round: u32, design: &str, load: f64, p50: f64, sent: f64) -> LatencyRun {
        LatencyRun {
            round,
            design: design.into(),
            load,
            target_pps: if load == 1.0 { 0.0 } else { 1e6 * load },
            sent_pps: sent,
            echoed_pps: sent,
            p50_ns: p50,
            p99_ns: p50 * 3.0,
            p999_ns: p50 * 5.0,
            lost: 0,
        }
    }

    #[test]
    fn rows_follow_the_designs_and_loads_with_intervals() {
        let designs = vec!["ring:8:greedy".to_string(), "grant-copy".to_string()];
        let mut runs = Vec::new();
        for round in 1..=3 {
            for d in ["grant-copy", "ring:8:greedy"] {
                runs.push(run(round, d, 1.0, 9000.0, 1e6));
                runs.push(run(round, d, 0.5, 2000.0 + f64::from(round), 5e5));
                // The sender fell short in one round.
                let sent = if round == 2 { 8e5 } else { 9e5 };
                runs.push(run(round, d, 0.9, 4000.0, sent));
            }
        }
        let rows = latency_rows(&runs, &designs, 1);
        let order: Vec<(&str, f64)> = rows.iter().map(|r| (r.design.as_str(), r.load)).collect();
        assert_eq!(
            order,
            [
                ("ring:8:greedy", 1.0),
                ("ring:8:greedy", 0.5),
                ("ring:8:greedy", 0.9),
                ("grant-copy", 1.0),
                ("grant-copy", 0.5),
                ("grant-copy", 0.9)
            ]
        );
        let half = &rows[1];
        assert_eq!(half.p50_us.median, 2.002);
        assert!(half.p50_us.lo >= 2.001 && half.p50_us.hi <= 2.003);
        assert_eq!(half.p99_us.median, 6.006);
        assert_eq!((rows[2].short, rows[1].short), (1, 0));
        let md = latency_markdown(&rows);
        assert!(
            md.contains("| ring:8:greedy | 50 % of peak | 0.500 [0.500, 0.500] | 2.0 [2.0, 2.0] |"),
            "{md}"
        );
        assert!(md.contains("| grant-copy | peak | 1.000"), "{md}");
    }

    #[test]
    fn a_run_that_keeps_up_is_within_five_percent() {
        let mut r = run(1, "x", 0.9, 1.0, 9e5);
        assert!(r.kept_up());
        r.sent_pps = 0.94 * r.target_pps;
        assert!(!r.kept_up());
        r.target_pps = 0.0;
        assert!(r.kept_up());
    }
}
