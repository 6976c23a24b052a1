//! `experiments soak`: designs, sizes, directions and faults mixed for a while, each run
//! checked. What to run next is drawn here from a seed; the binary runs it.
//!
//! A throughput run must deliver every frame it sent intact (the receiving end checks each
//! frame's sequence number and checksum). A fault run kills one end with SIGKILL at a
//! random moment of a transfer; the survivor must then end on its own account within a
//! bound (the frontend notices the dead backend and stops with its reason; the backend,
//! told to stop, reports and exits) and leave nothing behind in the emulated world.

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
    "ring:4:adaptive",
];
/// The packet sizes a soak mixes.
pub const SOAK_SIZES: &[usize] = &[64, 256, 1500, 9000, 65535];
/// One run in this many is a fault run.
pub const FAULT_EVERY: u64 = 4;

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
    /// victim, 50 to 500 ms in), the others throughput or request/response runs.
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
        Step {
            index,
            design,
            dir,
            size,
            fault,
        }
    }
}

/// The soak's summary: runs, fault runs, failures, and the frames checked.
pub fn summary(outcomes: &[Outcome]) -> String {
    let faults = outcomes.iter().filter(|o| o.step.fault.is_some()).count();
    let failed: Vec<&Outcome> = outcomes.iter().filter(|o| !o.ok).collect();
    let mut s = format!(
        "soak: {} runs ({} with a fault), {} failed",
        outcomes.len(),
        faults,
        failed.len()
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
            })
            .collect();
        let s = summary(&outcomes);
        assert!(
            s.starts_with("soak: 4 runs (1 with a fault), 1 failed"),
            "{s}"
        );
        assert!(s.contains("step 3") && s.contains("detail 3"), "{s}");
    }
}
