//! "Slots or data ring, when?": per regime (direction, size, queues) of a run, the best
//! design of each staging family against the other, and whether the difference is beyond
//! the run's noise.

use std::fmt::Write as _;

use crate::stats::Interval;
use crate::{Dir, Row};

/// The two staging families the comparison is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    /// The slot data list, in either encoding (`slots:`, `slots-rfc:`).
    Slots,
    /// The data ring (`ring:`).
    Ring,
}

impl Family {
    /// The family of a design name, if it is a staging design.
    pub fn of(design: &str) -> Option<Family> {
        if design.starts_with("slots") {
            Some(Family::Slots)
        } else if design.starts_with("ring:") {
            Some(Family::Ring)
        } else {
            None
        }
    }
}

/// One regime's verdict.
#[derive(Debug, Clone, PartialEq)]
pub struct Verdict {
    /// Direction.
    pub dir: Dir,
    /// Packet size, as the report writes it.
    pub size: String,
    /// Queues.
    pub queues: u16,
    /// The best slots design, its rate and its ratio to grant-copy.
    pub slots: (String, Interval, Option<Interval>),
    /// The best data-ring design, its rate and its ratio to grant-copy.
    pub ring: (String, Interval, Option<Interval>),
}

impl Verdict {
    /// The ring's median rate over the slots'.
    pub fn ring_over_slots(&self) -> f64 {
        self.ring.1.median / self.slots.1.median.max(f64::MIN_POSITIVE)
    }

    /// The family whose rate interval lies wholly above the other's, if one does.
    pub fn winner(&self) -> Option<Family> {
        let (s, r) = (&self.slots.1, &self.ring.1);
        if r.lo > s.hi {
            Some(Family::Ring)
        } else if s.lo > r.hi {
            Some(Family::Slots)
        } else {
            None
        }
    }
}

/// The verdict of every regime in which the run measured both families.
pub fn verdicts(rows: &[Row]) -> Vec<Verdict> {
    let mut keys: Vec<(Dir, String, u16)> = Vec::new();
    for row in rows {
        let k = (row.dir, row.size.to_string(), row.queues);
        if !keys.contains(&k) {
            keys.push(k);
        }
    }
    keys.into_iter()
        .filter_map(|(dir, size, queues)| {
            let best = |family: Family| {
                rows.iter()
                    .filter(|r| r.dir == dir && r.size.to_string() == size && r.queues == queues)
                    .filter(|r| Family::of(&r.design) == Some(family))
                    .max_by(|a, b| a.pps.median.total_cmp(&b.pps.median))
                    .map(|r| (r.label(), r.pps, r.ratio))
            };
            Some(Verdict {
                slots: best(Family::Slots)?,
                ring: best(Family::Ring)?,
                dir,
                size,
                queues,
            })
        })
        .collect()
}

/// The report's section, if the run measured both families anywhere.
pub fn report_section(out: &mut String, rows: &[Row]) {
    let v = verdicts(rows);
    if v.is_empty() {
        return;
    }
    let _ = writeln!(
        out,
        "\n## Slots or data ring?\n\nPer direction, size and queue count: the best design of each staging family (by median rate), its ratio to grant-copy with the 95 % interval, the ring's rate over the slots', and which family wins — only where one's rate interval lies wholly above the other's; otherwise the difference is within this run's noise.\n"
    );
    let _ = writeln!(
        out,
        "| dir | size (B) | best slots design | x grant-copy | best data-ring design | x grant-copy | ring / slots | wins |"
    );
    let _ = writeln!(out, "|---|---:|---|---:|---|---:|---:|---|");
    let ratio = |r: &Option<Interval>| {
        r.map_or("-".to_string(), |x| {
            format!("{:.2}x [{:.2}..{:.2}]", x.median, x.lo, x.hi)
        })
    };
    for x in &v {
        let wins = match x.winner() {
            Some(Family::Ring) => "data ring",
            Some(Family::Slots) => "slots",
            None => "within noise",
        };
        let queues = if x.queues > 1 {
            format!(" ({} queues)", x.queues)
        } else {
            String::new()
        };
        let _ = writeln!(
            out,
            "| {}{queues} | {} | {} | {} | {} | {} | {:.2} | {wins} |",
            x.dir,
            x.size,
            x.slots.0,
            ratio(&x.slots.2),
            x.ring.0,
            ratio(&x.ring.2),
            x.ring_over_slots(),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(design: &str, dir: Dir, pps: (f64, f64, f64)) -> Row {
        Row {
            dir,
            size: crate::sizes::SizeSpec::Fixed(64),
            design: design.into(),
            queues: 1,
            design_used: design.into(),
            pps: Interval {
                median: pps.0,
                lo: pps.1,
                hi: pps.2,
            },
            gbps: 0.0,
            ratio: None,
            front_us_per_pkt: 0.0,
            n: 7,
            far: 0,
            far_only: false,
        }
    }

    #[test]
    fn the_best_of_each_family_meets_the_other_and_noise_decides_nothing() {
        let rows = vec![
            row("grant-copy", Dir::Tx, (1e6, 0.9e6, 1.1e6)),
            row("slots:256", Dir::Tx, (4e6, 3.9e6, 4.1e6)),
            row("slots-rfc:256", Dir::Tx, (4.5e6, 4.4e6, 4.6e6)),
            row("ring:8:greedy", Dir::Tx, (6e6, 5.8e6, 6.2e6)),
            row("slots:256", Dir::Rx, (4e6, 3.5e6, 4.5e6)),
            row("ring:8:greedy", Dir::Rx, (4.2e6, 3.9e6, 4.6e6)),
            row("grant-copy", Dir::Rr, (2e5, 1.9e5, 2.1e5)),
        ];
        let v = verdicts(&rows);
        assert_eq!(v.len(), 2, "no verdict where a family is missing: {v:?}");
        assert_eq!(v[0].slots.0, "slots-rfc:256");
        assert_eq!(v[0].winner(), Some(Family::Ring));
        assert!((v[0].ring_over_slots() - 6.0 / 4.5).abs() < 1e-9);
        assert_eq!(v[1].winner(), None, "overlapping intervals");
        let mut md = String::new();
        report_section(&mut md, &rows);
        assert!(
            md.contains("| tx | 64 | slots-rfc:256 | - | ring:8:greedy | - | 1.33 | data ring |"),
            "{md}"
        );
        assert!(md.contains("| within noise |"), "{md}");
    }

    #[test]
    fn families_are_told_by_their_names() {
        assert_eq!(Family::of("slots-rfc:65536"), Some(Family::Slots));
        assert_eq!(Family::of("ring:0:fixed:128"), Some(Family::Ring));
        assert_eq!(Family::of("linux"), None);
        assert_eq!(Family::of("grant-copy"), None);
    }
}
