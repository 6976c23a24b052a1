//! The statistics of a run: medians over rounds with bootstrap 95 % intervals, ratios taken
//! round by round from paired runs, and the flag on runs taken while the two vCPUs sat far
//! apart.
//!
//! Rounds are the unit of resampling: the scenarios of one round ran within a minute of each
//! other, so a design's run and its baseline's run of the same round share whatever the
//! machine was doing then, and their ratio cancels it. The generator is ChaCha8 (the `rand`
//! crate), seeded from the run's recorded seed, so an interval is the same every time the
//! report is rendered.

use rand::rngs::ChaCha8Rng;
use rand::{RngExt, SeedableRng};
use serde::{Deserialize, Serialize};

/// Bootstrap resamples per interval.
pub const RESAMPLES: usize = 2000;

/// A row whose interval's half-width is more than this share of its median is marked wide.
pub const WIDE: f64 = 0.10;

/// A cross-core round trip above this many nanoseconds may be a far placement: the
/// machine notes put SMT siblings near 30 ns, cores sharing an L3 at 55-145 ns and cores
/// on different dies or sockets at 260-570 ns.
pub const FAR_NS: f64 = 200.0;

/// ... and it is one only when it is also this many times the run's near probe, the lower
/// quartile of its probes (on a machine where every pair of cores is 230 ns apart, nothing
/// is far; on one whose vCPUs sit near for a quarter of the probes or more, every far run
/// is, even when most probes were far).
pub const FAR_FACTOR: f64 = 1.5;

/// Median, lower quartile, min and max of some values.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Spread {
    /// Median (the lower middle value for an even count).
    pub median: f64,
    /// Lower quartile (nearest rank from below: the value at index `(n - 1) / 4`).
    pub lower_quartile: f64,
    /// Smallest.
    pub min: f64,
    /// Largest.
    pub max: f64,
}

/// The spread of `v` (`None` if empty).
pub fn spread(v: &[f64]) -> Option<Spread> {
    if v.is_empty() {
        return None;
    }
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.total_cmp(b));
    Some(Spread {
        median: s[(s.len() - 1) / 2],
        lower_quartile: s[(s.len() - 1) / 4],
        min: s[0],
        max: s[s.len() - 1],
    })
}

/// The median of `v` (the lower middle value for an even count), reordering `v`.
fn median_in_place(v: &mut [f64]) -> f64 {
    let mid = (v.len() - 1) / 2;
    *v.select_nth_unstable_by(mid, |a, b| a.total_cmp(b)).1
}

/// A median with its 95 % interval.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Interval {
    /// The sample's median.
    pub median: f64,
    /// Lower end (2.5th percentile of the bootstrap medians).
    pub lo: f64,
    /// Upper end (97.5th percentile).
    pub hi: f64,
}

impl Interval {
    /// Half the interval's width as a share of the median (0 for a zero median).
    pub fn half_width(&self) -> f64 {
        if self.median == 0.0 {
            return 0.0;
        }
        (self.hi - self.lo) / 2.0 / self.median.abs()
    }

    /// Whether the half-width is more than [`WIDE`] of the median.
    pub fn wide(&self) -> bool {
        self.half_width() > WIDE
    }

    /// Whether the two intervals share a value.
    pub fn overlaps(&self, other: &Interval) -> bool {
        self.lo <= other.hi && other.lo <= self.hi
    }
}

/// A range taken as it is (min..max), for results that carry no interval.
impl From<Spread> for Interval {
    fn from(s: Spread) -> Interval {
        Interval {
            median: s.median,
            lo: s.min,
            hi: s.max,
        }
    }
}

/// What a seeded generator is for: each use draws from its own ChaCha stream of the seed,
/// so adding a resample does not move the run order, or the other way round.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RngStream {
    /// The order of the runs within each round.
    Order = 0,
    /// The bootstrap's resamples.
    Bootstrap = 1,
}

/// The generator of `seed` for `stream`.
pub fn seeded(seed: u64, stream: RngStream) -> ChaCha8Rng {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    rng.set_stream(stream as u64);
    rng
}

/// Percentile bootstrap of the median.
pub struct Bootstrap {
    rng: ChaCha8Rng,
    resamples: usize,
}

impl Bootstrap {
    /// [`RESAMPLES`] resamples per interval, drawn from `seed`.
    pub fn new(seed: u64) -> Bootstrap {
        Bootstrap::with_resamples(seed, RESAMPLES)
    }

    /// `resamples` resamples per interval (at least one), drawn from `seed`.
    pub fn with_resamples(seed: u64, resamples: usize) -> Bootstrap {
        Bootstrap {
            rng: seeded(seed, RngStream::Bootstrap),
            resamples: resamples.max(1),
        }
    }

    /// The median of `v` and its 95 % percentile interval: `v` resampled with replacement
    /// (as many values as it has), the median of each resample, and the 2.5th and 97.5th
    /// percentiles of those medians. `None` when `v` is empty.
    pub fn interval(&mut self, v: &[f64]) -> Option<Interval> {
        let median = spread(v)?.median;
        let n = v.len();
        let mut draw = vec![0.0; n];
        let mut medians: Vec<f64> = (0..self.resamples)
            .map(|_| {
                for x in draw.iter_mut() {
                    *x = v[self.rng.random_range(0..n)];
                }
                median_in_place(&mut draw)
            })
            .collect();
        medians.sort_by(|a, b| a.total_cmp(b));
        // Nearest rank: the k-th smallest of B medians is the k/B quantile.
        let at = |p: f64| {
            medians[((p * medians.len() as f64).ceil() as usize).clamp(1, medians.len()) - 1]
        };
        Some(Interval {
            median,
            lo: at(0.025),
            hi: at(0.975),
        })
    }
}

/// The ratio of each of a design's runs to the baseline's run of the same round, in the
/// design's order; runs are `(round, value)`, and a round missing from either side, or
/// with a baseline of zero, gives no ratio.
pub fn per_round_ratios(runs: &[(u32, f64)], base: &[(u32, f64)]) -> Vec<f64> {
    runs.iter()
        .filter_map(|(round, x)| {
            let b = base.iter().find(|(r, _)| r == round)?.1;
            (b > 0.0).then(|| x / b)
        })
        .collect()
}

/// The runs to summarise: those not `far`, or all of them when every one was far (a
/// scenario is never left without a number; its row says so). Returns them and how many
/// far runs were set aside.
pub fn set_aside_far<T>(runs: Vec<T>, far: impl Fn(&T) -> bool) -> (Vec<T>, usize) {
    let (near, far): (Vec<T>, Vec<T>) = runs.into_iter().partition(|x| !far(x));
    if near.is_empty() {
        (far, 0)
    } else {
        let n = far.len();
        (near, n)
    }
}

/// Which runs were taken while the frontend's and backend's cores were far apart.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Placement {
    /// The median of every probe of the run (before and after each run), nanoseconds.
    pub median_ns: f64,
    /// The lower quartile of those probes: how near the two cores sat when they sat near
    /// (a host that moves the vCPUs mid-sweep can read far for most probes).
    pub near_ns: f64,
    /// A run whose worse probe is above this was far: the larger of [`FAR_NS`] and
    /// [`FAR_FACTOR`] times the near probe.
    pub threshold_ns: f64,
}

impl Placement {
    /// The rule for a run whose probes are `probes` (zeros, which older results hold for a
    /// probe not taken, and NaNs are ignored).
    pub fn from_probes(probes: impl IntoIterator<Item = f64>) -> Placement {
        let v: Vec<f64> = probes.into_iter().filter(|p| *p > 0.0).collect();
        let (median_ns, near_ns) = spread(&v).map_or((0.0, 0.0), |s| (s.median, s.lower_quartile));
        Placement {
            median_ns,
            near_ns,
            threshold_ns: FAR_NS.max(FAR_FACTOR * near_ns),
        }
    }

    /// Whether a run probed `before` and `after` it was far.
    pub fn far(&self, before: f64, after: f64) -> bool {
        before.max(after) > self.threshold_ns
    }

    /// Whether the sweep as a whole ran with the two cores far apart: even its near probe
    /// is above [`FAR_NS`]. No run is then far against the others, yet every rate was
    /// taken far apart.
    pub fn far_throughout(&self) -> bool {
        self.near_ns > FAR_NS
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A noisy sample: `n` values around 100 with a spread of about +-20 %.
    fn noisy(n: usize, seed: u64) -> Vec<f64> {
        let mut rng = seeded(seed, RngStream::Order);
        (0..n)
            .map(|_| 100.0 + 20.0 * (rng.random::<f64>() * 2.0 - 1.0))
            .collect()
    }

    #[test]
    fn the_interval_contains_the_median() {
        for seed in 0..50 {
            let v = noisy(7, seed);
            let i = Bootstrap::new(seed).interval(&v).unwrap();
            assert_eq!(i.median, spread(&v).unwrap().median);
            assert!(i.lo <= i.median && i.median <= i.hi, "{v:?}: {i:?}");
            let s = spread(&v).unwrap();
            assert!(s.min <= i.lo && i.hi <= s.max, "within the sample: {i:?}");
        }
    }

    #[test]
    fn a_constant_sample_has_a_zero_width_interval() {
        let i = Bootstrap::new(1).interval(&[3.5; 6]).unwrap();
        assert_eq!((i.median, i.lo, i.hi), (3.5, 3.5, 3.5));
        assert_eq!(i.half_width(), 0.0);
        assert!(!i.wide());
        let one = Bootstrap::new(1).interval(&[2.0]).unwrap();
        assert_eq!((one.lo, one.hi), (2.0, 2.0));
        assert!(Bootstrap::new(1).interval(&[]).is_none());
    }

    #[test]
    fn more_rounds_narrow_the_interval() {
        // Averaged over several synthetic samples, so that one lucky draw cannot decide it.
        let width = |n: usize| -> f64 {
            (0..20)
                .map(|s| {
                    let i = Bootstrap::new(s).interval(&noisy(n, 100 + s)).unwrap();
                    i.hi - i.lo
                })
                .sum::<f64>()
                / 20.0
        };
        let (w5, w20, w80) = (width(5), width(20), width(80));
        assert!(w5 > w20 && w20 > w80, "{w5} {w20} {w80}");
        assert!(w80 < 0.5 * w5, "{w5} {w80}");
    }

    #[test]
    fn the_same_seed_gives_the_same_interval() {
        let v = noisy(9, 3);
        assert_eq!(
            Bootstrap::new(42).interval(&v),
            Bootstrap::new(42).interval(&v)
        );
        assert_ne!(
            Bootstrap::new(42).interval(&v),
            Bootstrap::new(43).interval(&v)
        );
    }

    #[test]
    fn ratios_pair_runs_of_the_same_round() {
        // The baseline is listed out of order and misses round 3; round 4 has a zero.
        let design = [(1, 300.0), (2, 220.0), (3, 500.0), (4, 10.0)];
        let base = [(2, 110.0), (1, 100.0), (4, 0.0)];
        assert_eq!(per_round_ratios(&design, &base), vec![3.0, 2.0]);
        // Paired, a slow round slows both and the ratio holds; a ratio of the medians of
        // the same runs would not be 2.
        let design = [(1, 200.0), (2, 100.0), (3, 400.0)];
        let base = [(1, 100.0), (2, 50.0), (3, 200.0)];
        let r = Bootstrap::new(0)
            .interval(&per_round_ratios(&design, &base))
            .unwrap();
        assert_eq!((r.median, r.lo, r.hi), (2.0, 2.0, 2.0));
    }

    #[test]
    fn far_is_relative_to_the_runs_own_probes() {
        // The notes' machine: most probes within an L3, a few across dies.
        let near = Placement::from_probes([80.0, 90.0, 100.0, 85.0, 0.0, 400.0]);
        assert_eq!(near.median_ns, 90.0);
        assert_eq!(near.threshold_ns, FAR_NS);
        assert!(near.far(80.0, 400.0) && !near.far(150.0, 190.0));
        // A machine whose every pair of cores reads 230 ns: nothing is far but a jump.
        let flat = Placement::from_probes([230.0, 228.0, 235.0, 231.0]);
        assert!(!flat.far(235.0, 240.0));
        assert!(flat.far(230.0, 520.0));
        // No probes (synthetic results): nothing is far.
        assert!(!Placement::from_probes([0.0, 0.0]).far(0.0, 0.0));
        // Far throughout: even the near probe is above FAR_NS (the flat machine is).
        assert!(!near.far_throughout() && flat.far_throughout());
        assert!(!Placement::from_probes([0.0]).far_throughout());
        assert!(Placement::from_probes([270.0, 300.0, 52.0, 290.0, 310.0]).far_throughout());
    }

    #[test]
    fn a_host_that_moves_the_vcpus_has_its_far_runs_found_though_most_probes_were_far() {
        // Probes of a machine whose vCPUs moved between about 70 ns and 400 ns apart, the
        // far ones the majority: the median is far, the lower quartile near.
        let probes = [
            70.0, 405.0, 72.0, 413.0, 398.0, 75.0, 440.0, 68.0, 452.0, 381.0,
        ];
        let moving = Placement::from_probes(probes);
        assert_eq!(moving.median_ns, 381.0);
        assert_eq!(moving.near_ns, 72.0);
        assert_eq!(moving.threshold_ns, FAR_NS);
        assert!(moving.far(72.0, 405.0) && !moving.far(70.0, 75.0));
        assert!(!moving.far_throughout());
    }

    #[test]
    fn far_runs_are_set_aside_unless_there_is_no_other() {
        let far = |x: &u32| *x > 200;
        assert_eq!(set_aside_far(vec![100, 300, 120], far), (vec![100, 120], 1));
        assert_eq!(set_aside_far(vec![300, 400], far), (vec![300, 400], 0));
        assert_eq!(set_aside_far(Vec::<u32>::new(), far), (vec![], 0));
    }

    #[test]
    fn intervals_overlap_or_not() {
        let a = Interval {
            median: 1.0,
            lo: 0.95,
            hi: 1.1,
        };
        let b = Interval {
            median: 1.2,
            lo: 1.1,
            hi: 1.3,
        };
        let c = Interval {
            median: 1.5,
            lo: 1.4,
            hi: 1.6,
        };
        assert!(a.overlaps(&b) && b.overlaps(&a) && !a.overlaps(&c) && !c.overlaps(&a));
        assert!((a.half_width() - 0.075).abs() < 1e-12 && !a.wide());
        assert!(Interval::from(Spread {
            median: 1.0,
            lower_quartile: 0.75,
            min: 0.5,
            max: 1.5
        })
        .wide());
    }
}
