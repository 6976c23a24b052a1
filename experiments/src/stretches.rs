//! Slow stretches within a run: tens of milliseconds in which a throughput run moved
//! packets at a fraction of its own pace, too short to pull the run under the outlier
//! threshold but enough to widen a scenario's interval. The report lists them (they stay in
//! the medians) with the data ring's fill, which says which end was behind
//! (`docs/findings.md`, "Slow stretches, the raw streams, and busy-polling against Linux's
//! blocking").

use std::fmt::Write as _;

use crate::{run_cells, Bin, Results, Sample};

/// A bin is slow below this share of its run's pace.
pub const SLOW_SHARE: f64 = 0.7;

/// Consecutive slow bins that make a stretch worth listing (about 50 ms).
pub const MIN_BINS: usize = 5;

/// Bins a run needs before its pace means anything.
const MIN_RUN_BINS: usize = 10;

/// The longest slow stretch of one run.
#[derive(Debug, Clone, PartialEq)]
pub struct Stretch {
    /// Index of its first bin in the run's timeline.
    pub first: usize,
    /// Its bins.
    pub bins: usize,
    /// Where it starts and ends, in seconds from the start of the measured window.
    pub span_s: (f64, f64),
    /// The run's pace: the 90th percentile of its bins' packets.
    pub pace: f64,
    /// The stretch's mean packets a bin over the pace.
    pub share: f64,
    /// The data ring's mean fill in the stretch and in the rest of the run, in percent
    /// (designs with a data ring).
    pub fill: Option<(f64, f64)>,
}

/// The longest run of bins under [`SLOW_SHARE`] of the run's pace, if it is at least
/// [`MIN_BINS`] long.
pub fn longest_stretch(timeline: &[Bin]) -> Option<Stretch> {
    if timeline.len() < MIN_RUN_BINS {
        return None;
    }
    let mut rates: Vec<f64> = timeline.iter().map(|b| b.packets).collect();
    rates.sort_by(f64::total_cmp);
    let pace = rates[(rates.len() - 1) * 9 / 10];
    if pace <= 0.0 {
        return None;
    }
    let slow = |b: &Bin| b.packets < SLOW_SHARE * pace;
    let (mut best, mut at) = ((0, 0), 0);
    while at < timeline.len() {
        let len = timeline[at..].iter().take_while(|b| slow(b)).count();
        if len > best.1 {
            best = (at, len);
        }
        at += len.max(1);
    }
    let (first, bins) = best;
    if bins < MIN_BINS {
        return None;
    }
    let inside = &timeline[first..first + bins];
    let outside = timeline[..first].iter().chain(&timeline[first + bins..]);
    let from = first.checked_sub(1).map_or(0.0, |i| timeline[i].t);
    Some(Stretch {
        first,
        bins,
        span_s: (from, timeline[first + bins - 1].t),
        pace,
        share: inside.iter().map(|b| b.packets).sum::<f64>() / bins as f64 / pace,
        fill: mean_fill(inside.iter()).zip(mean_fill(outside)),
    })
}

fn mean_fill<'a>(bins: impl Iterator<Item = &'a Bin>) -> Option<f64> {
    let fills: Vec<f64> = bins.filter_map(|b| b.fill_pct).collect();
    (!fills.is_empty()).then(|| fills.iter().sum::<f64>() / fills.len() as f64)
}

/// Every throughput run with a slow stretch, with it.
pub fn slow_stretches(r: &Results) -> Vec<(&Sample, Stretch)> {
    r.samples
        .iter()
        .filter(|s| !s.dir.is_rr())
        .filter_map(|s| Some((s, longest_stretch(&s.timeline)?)))
        .collect()
}

/// The report's section on slow stretches (none: one sentence saying so).
pub fn report_section(out: &mut String, r: &Results) {
    let found = slow_stretches(r);
    let runs = r
        .samples
        .iter()
        .filter(|s| !s.dir.is_rr() && s.timeline.len() >= MIN_RUN_BINS)
        .count();
    let _ = writeln!(out, "\n## Slow stretches\n");
    if runs == 0 {
        let _ = writeln!(
            out,
            "No throughput run recorded {MIN_RUN_BINS} or more 10 ms bins to look for slow \
             stretches in."
        );
        return;
    }
    if found.is_empty() {
        let _ = writeln!(
            out,
            "No throughput run spent {} ms or more under {:.0} % of its own pace.",
            MIN_BINS * 10,
            SLOW_SHARE * 100.0
        );
        return;
    }
    let _ = writeln!(
        out,
        "{} of {runs} throughput runs spent {} ms or more in a row under {:.0} % of their own \
         pace (the 90th percentile of their 10 ms bins); they stay in the medians. Where the \
         design has a data ring, its fill in the stretch against the rest of the run says which \
         end was behind: on TX a ring emptier than elsewhere means the frontend, one as full \
         the backend; on RX the other way round.\n",
        found.len(),
        MIN_BINS * 10,
        SLOW_SHARE * 100.0
    );
    let _ = writeln!(
        out,
        "| round | design | dir | size | from (ms) | for (ms) | rate in it | ring fill in it / elsewhere (%) |"
    );
    let _ = writeln!(out, "|---:|---|---|---:|---:|---:|---:|---|");
    for (s, st) in found {
        let fill = st
            .fill
            .map_or("-".into(), |(i, o)| format!("{i:.1} / {o:.1}"));
        let _ = writeln!(
            out,
            "{} {} | {} | {:.0} % | {fill} |",
            run_cells(s),
            (st.span_s.0 * 1e3).round(),
            ((st.span_s.1 - st.span_s.0) * 1e3).round(),
            st.share * 100.0
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bins(rates: &[f64], fill: Option<f64>) -> Vec<Bin> {
        (1..)
            .zip(rates)
            .map(|(i, &packets)| Bin {
                t: f64::from(i) * 0.01,
                packets,
                staged: packets,
                fill_pct: fill,
            })
            .collect()
    }

    #[test]
    fn the_longest_stretch_under_the_runs_pace_is_found() {
        let mut rates = vec![100.0; 30];
        // Six bins at half the pace, and a shorter dip of two.
        rates[10..16].fill(50.0);
        rates[20..22].fill(10.0);
        let mut tl = bins(&rates, Some(2.8));
        for b in &mut tl[10..16] {
            b.fill_pct = Some(0.7);
        }
        let st = longest_stretch(&tl).expect("a stretch");
        assert_eq!((st.first, st.bins), (10, 6));
        assert_eq!(st.pace, 100.0);
        assert!((st.share - 0.5).abs() < 1e-9, "{st:?}");
        assert!((st.span_s.0 - 0.10).abs() < 1e-9 && (st.span_s.1 - 0.16).abs() < 1e-9);
        let (inside, outside) = st.fill.unwrap();
        assert!((inside - 0.7).abs() < 1e-9 && (outside - 2.8).abs() < 1e-9);
    }

    #[test]
    fn short_dips_steady_runs_and_short_runs_have_no_stretch() {
        let mut rates = vec![100.0; 30];
        rates[3..7].fill(20.0); // four bins: under MIN_BINS
        assert_eq!(longest_stretch(&bins(&rates, None)), None);
        assert_eq!(longest_stretch(&bins(&[100.0; 30], None)), None);
        // Slow from the start to the end of a short run: too few bins to judge.
        assert_eq!(longest_stretch(&bins(&[10.0; 9], None)), None);
        // A stretch at 75 % of the pace is not slow.
        let mut rates = vec![100.0; 30];
        rates[5..20].fill(75.0);
        assert_eq!(longest_stretch(&bins(&rates, None)), None);
    }

    #[test]
    fn a_stretch_without_a_data_ring_has_no_fill() {
        let mut rates = vec![100.0; 20];
        rates[0..5].fill(0.0);
        let st = longest_stretch(&bins(&rates, None)).unwrap();
        assert_eq!((st.first, st.bins, st.fill), (0, 5, None));
        assert_eq!(st.span_s.0, 0.0);
    }
}
