//! `experiments soak`: designs, sizes, directions and faults mixed for a while, each run
//! checked. What to run next is drawn here from a seed; the binary runs it.
//!
//! A throughput run must deliver every frame it sent intact (the receiving end checks each
//! frame's sequence number and checksum). A fault run kills one end with SIGKILL at a
//! random moment of a transfer; the survivor must then end on its own account within a
//! bound (the frontend notices the dead backend and stops with its reason; the backend,
//! told to stop, reports and exits) and leave nothing behind in the emulated world. A
//! reconnect run has further frontends, of other designs, connect to the same backend one
//! after the other, as a guest that reboots with another driver.
//!
//! Every run that ends with both ends' counters is accounted each way ([`Accounting`]): what
//! one end sent is what the other delivered, plus what was dropped, by reason. The soak
//! ends with the totals, and fails if any run's do not add up.

use std::collections::BTreeMap;

use rand::rngs::ChaCha8Rng;
use rand::{RngExt, SeedableRng};
use serde::{Deserialize, Serialize};

use crate::Dir;

/// The designs a soak mixes.
pub const SOAK_DESIGNS: &[&str] = &[
    "grant-copy",
    "grant-map",
    "slots:256",
    "slots-rfc:256",
    "slots-rfc:65536",
    "ring:8:greedy",
    "ring:4:greedy:wait",
    "ring:4:adaptive",
];
/// The packet sizes a soak mixes.
pub const SOAK_SIZES: &[usize] = &[64, 256, 1500, 9000, 65535];
/// One run in this many is a fault run.
pub const FAULT_EVERY: u64 = 4;
/// Of the others, one in this many is a reconnect run.
pub const RECONNECT_EVERY: u64 = 3;
/// Frontends that connect after the first in a reconnect run.
pub const RECONNECTS: usize = 2;

/// Which end a fault run kills.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Victim {
    /// The frontend process.
    Frontend,
    /// The backend process.
    Backend,
}

/// What one soak step runs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Step {
    /// Its place in the soak, from 0.
    pub index: u64,
    /// Design.
    pub design: String,
    /// Direction.
    pub dir: Dir,
    /// Packet size (request/response: the 15-byte frame).
    pub size: usize,
    /// For a fault run: the end killed and after how many milliseconds of the transfer.
    pub fault: Option<(Victim, u64)>,
    /// For a reconnect run: the designs of the frontends that connect, one after the other,
    /// once the first has closed (empty otherwise).
    #[serde(default)]
    pub then: Vec<String>,
}

/// How a step ended.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Outcome {
    /// The step.
    pub step: Step,
    /// Whether it held (every frame intact; after a fault, the survivor ended cleanly).
    pub ok: bool,
    /// What was seen: frames delivered and lost, or how the survivor ended.
    pub detail: String,
    /// Both ends' counts, each way (a run that ended with both ends' counters).
    #[serde(default)]
    pub accounting: Option<Accounting>,
}

/// Packets one way between the ends: every one the sender counted is delivered or dropped
/// by a counted reason.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Flow {
    /// Counted sent (put on the ring) by the sending end.
    pub sent: u64,
    /// Counted delivered by the receiving end.
    pub delivered: u64,
    /// Counted dropped, by counter name.
    pub dropped: BTreeMap<String, u64>,
}

impl Flow {
    /// Whether sent = delivered + dropped.
    pub fn balanced(&self) -> bool {
        self.sent == self.delivered + self.dropped.values().sum::<u64>()
    }

    fn add(&mut self, o: &Flow) {
        self.sent += o.sent;
        self.delivered += o.delivered;
        for (k, v) in &o.dropped {
            *self.dropped.entry(k.clone()).or_default() += v;
        }
    }
}

/// A run's packets each way, from the frontend's and the backend's counters.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Accounting {
    /// Guest to backend: the frontend's `tx_packets` = the backend's `tx_packets` +
    /// `tx_dropped` + `tx_grant_errors` + the frontend's `tx_unanswered`.
    pub tx: Flow,
    /// Backend to guest: the backend's `rx_packets` + `rx_grant_errors` = the frontend's
    /// `rx_packets` + `rx_dropped` + `rx_unread`.
    pub rx: Flow,
}

impl Accounting {
    /// Reads both flows from the ends' counters (JSON objects, as the roles report them);
    /// fails naming a counter that is missing.
    pub fn from_counters(
        front: &serde_json::Value,
        back: &serde_json::Value,
    ) -> Result<Accounting, String> {
        let get = |end: &serde_json::Value, which: &str, key: &str| {
            end[key]
                .as_u64()
                .ok_or_else(|| format!("the {which}'s counters have no {key}"))
        };
        let dropped = |end: &serde_json::Value, which: &str, keys: &[&str]| {
            keys.iter()
                .map(|k| Ok((k.to_string(), get(end, which, k)?)))
                .collect::<Result<BTreeMap<_, _>, String>>()
        };
        let mut tx_dropped = dropped(back, "backend", &["tx_dropped", "tx_grant_errors"])?;
        tx_dropped.extend(dropped(front, "frontend", &["tx_unanswered"])?);
        Ok(Accounting {
            tx: Flow {
                sent: get(front, "frontend", "tx_packets")?,
                delivered: get(back, "backend", "tx_packets")?,
                dropped: tx_dropped,
            },
            rx: Flow {
                // A packet whose copy failed went on the ring too, answered with an error.
                sent: get(back, "backend", "rx_packets")?
                    + get(back, "backend", "rx_grant_errors")?,
                delivered: get(front, "frontend", "rx_packets")?,
                dropped: dropped(front, "frontend", &["rx_dropped", "rx_unread"])?,
            },
        })
    }

    /// Whether both flows add up.
    pub fn balanced(&self) -> bool {
        self.tx.balanced() && self.rx.balanced()
    }

    /// Adds `o`'s counts.
    pub fn add(&mut self, o: &Accounting) {
        self.tx.add(&o.tx);
        self.rx.add(&o.rx);
    }
}

impl std::fmt::Display for Flow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} sent = {} delivered", self.sent, self.delivered)?;
        for (k, v) in &self.dropped {
            write!(f, " + {v} {k}")?;
        }
        if !self.balanced() {
            write!(f, " (DOES NOT ADD UP)")?;
        }
        Ok(())
    }
}

/// Draws the steps of a soak from its seed.
pub struct Plan {
    rng: ChaCha8Rng,
    next: u64,
}

impl Plan {
    /// A plan drawn from `seed`.
    pub fn new(seed: u64) -> Plan {
        Plan {
            rng: ChaCha8Rng::seed_from_u64(seed),
            next: 0,
        }
    }

    /// The next step: every [`FAULT_EVERY`]th a fault run (a throughput direction, a
    /// victim, 50 to 500 ms in), the others throughput or request/response runs, those of
    /// every [`RECONNECT_EVERY`]th group of [`FAULT_EVERY`] reconnect runs.
    pub fn step(&mut self) -> Step {
        let index = self.next;
        self.next += 1;
        let design = SOAK_DESIGNS[self.rng.random_range(0..SOAK_DESIGNS.len())].to_string();
        let fault = (index % FAULT_EVERY == FAULT_EVERY - 1).then(|| {
            let victim = if self.rng.random_bool(0.5) {
                Victim::Frontend
            } else {
                Victim::Backend
            };
            (victim, self.rng.random_range(50..=500))
        });
        let dirs: &[Dir] = if fault.is_some() {
            &[Dir::Tx, Dir::Rx]
        } else {
            &[Dir::Tx, Dir::Rx, Dir::Rr]
        };
        let dir = dirs[self.rng.random_range(0..dirs.len())];
        let size = if dir.is_rr() {
            15
        } else {
            SOAK_SIZES[self.rng.random_range(0..SOAK_SIZES.len())]
        };
        let then = if fault.is_none() && (index / FAULT_EVERY) % RECONNECT_EVERY == 0 {
            (0..RECONNECTS)
                .map(|_| SOAK_DESIGNS[self.rng.random_range(0..SOAK_DESIGNS.len())].to_string())
                .collect()
        } else {
            Vec::new()
        };
        Step {
            index,
            design,
            dir,
            size,
            fault,
            then,
        }
    }
}

/// The soak's summary: runs, fault runs, failures, and the frames checked.
pub fn summary(outcomes: &[Outcome]) -> String {
    let faults = outcomes.iter().filter(|o| o.step.fault.is_some()).count();
    let failed: Vec<&Outcome> = outcomes.iter().filter(|o| !o.ok).collect();
    let reconnects = outcomes.iter().filter(|o| !o.step.then.is_empty()).count();
    let mut total = Accounting::default();
    let mut accounted = 0;
    for a in outcomes.iter().filter_map(|o| o.accounting.as_ref()) {
        total.add(a);
        accounted += 1;
    }
    let mut s = format!(
        "soak: {} runs ({} with a fault, {} with reconnects), {} failed\n\
         accounted ({accounted} runs with both ends' counters):\n  TX: {}\n  RX: {}",
        outcomes.len(),
        faults,
        reconnects,
        failed.len(),
        total.tx,
        total.rx
    );
    for o in failed {
        s.push_str(&format!(
            "\n  step {}: {} {} {} B{}: {}",
            o.step.index,
            o.step.dir,
            o.step.design,
            o.step.size,
            o.step.fault.map_or(String::new(), |(v, ms)| format!(
                ", {v:?} killed after {ms} ms"
            )),
            o.detail
        ));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_plan_is_its_seed() {
        let a: Vec<Step> = {
            let mut p = Plan::new(9);
            (0..40).map(|_| p.step()).collect()
        };
        let b: Vec<Step> = {
            let mut p = Plan::new(9);
            (0..40).map(|_| p.step()).collect()
        };
        assert_eq!(a, b);
        let mut p = Plan::new(10);
        assert_ne!(a, (0..40).map(|_| p.step()).collect::<Vec<_>>());
    }

    #[test]
    fn every_fourth_step_is_a_fault_on_a_throughput_run() {
        let mut p = Plan::new(1);
        for _ in 0..200 {
            let s = p.step();
            let fault = s.index % FAULT_EVERY == FAULT_EVERY - 1;
            assert_eq!(s.fault.is_some(), fault, "{s:?}");
            if let Some((_, ms)) = s.fault {
                assert!((50..=500).contains(&ms) && !s.dir.is_rr(), "{s:?}");
            }
            assert!(SOAK_DESIGNS.contains(&s.design.as_str()));
            assert!(s.dir.is_rr() == (s.size == 15), "{s:?}");
        }
    }

    #[test]
    fn the_summary_names_each_failure() {
        let mut p = Plan::new(3);
        let outcomes: Vec<Outcome> = (0..4)
            .map(|i| Outcome {
                step: p.step(),
                ok: i != 3,
                detail: format!("detail {i}"),
                accounting: None,
            })
            .collect();
        let s = summary(&outcomes);
        assert!(
            s.starts_with("soak: 4 runs (1 with a fault, 3 with reconnects), 1 failed"),
            "{s}"
        );
        assert!(s.contains("step 3") && s.contains("detail 3"), "{s}");
    }

    #[test]
    fn a_group_in_three_reconnects_with_other_designs() {
        let mut p = Plan::new(4);
        for _ in 0..48 {
            let s = p.step();
            let group = (s.index / FAULT_EVERY) % RECONNECT_EVERY == 0;
            assert_eq!(!s.then.is_empty(), group && s.fault.is_none(), "{s:?}");
            if !s.then.is_empty() {
                assert_eq!(s.then.len(), RECONNECTS);
                assert!(s.then.iter().all(|d| SOAK_DESIGNS.contains(&d.as_str())));
            }
        }
    }

    fn counters(pairs: &[(&str, u64)]) -> serde_json::Value {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), serde_json::json!(v)))
            .collect::<serde_json::Map<_, _>>()
            .into()
    }

    #[test]
    fn both_ends_counters_are_accounted_each_way() {
        let front = counters(&[
            ("tx_packets", 102),
            ("tx_unanswered", 2),
            ("rx_packets", 40),
            ("rx_dropped", 1),
            ("rx_unread", 9),
        ]);
        let back = counters(&[
            ("tx_packets", 97),
            ("tx_dropped", 2),
            ("tx_grant_errors", 1),
            ("rx_packets", 49),
            ("rx_grant_errors", 1),
        ]);
        let a = Accounting::from_counters(&front, &back).unwrap();
        assert!(a.balanced(), "{a:?}");
        assert_eq!(
            a.rx.to_string(),
            "50 sent = 40 delivered + 1 rx_dropped + 9 rx_unread"
        );
        let mut twice = a.clone();
        twice.add(&a);
        assert_eq!((twice.tx.sent, twice.tx.dropped["tx_dropped"]), (204, 4));
        assert_eq!(twice.tx.dropped["tx_unanswered"], 4);
        // One packet the backend sent that nothing counts.
        let back = counters(&[
            ("tx_packets", 97),
            ("tx_dropped", 2),
            ("tx_grant_errors", 1),
            ("rx_packets", 50),
            ("rx_grant_errors", 1),
        ]);
        let a = Accounting::from_counters(&front, &back).unwrap();
        assert!(!a.balanced());
        assert!(a.rx.to_string().ends_with("(DOES NOT ADD UP)"), "{}", a.rx);
        let e = Accounting::from_counters(&counters(&[("tx_packets", 1)]), &back).unwrap_err();
        assert_eq!(e, "the frontend's counters have no tx_unanswered");
    }
}
