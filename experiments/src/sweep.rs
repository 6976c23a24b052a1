//! Scenario files: a custom sweep written down in TOML, so that it can be kept with a paper
//! draft and run again. Every key is optional; a key left out takes the command line's value,
//! and failing that the default sweep's. Flags given on the command line win over the file.
//!
//! ```toml
//! # Slots against the data ring at small sizes, busy-polling, five rounds.
//! designs = ["grant-copy", "slots:256", "ring:8:greedy"]
//! sizes = [64, 128, 256, "imix", "mix:64+65535"]
//! dirs = ["tx", "rx", "rr-busy"]
//! queues = [1, 2]
//! rounds = 5
//! seconds = 0.5
//! busy = true
//! armed = false
//! cost = "kernel"
//! stream = false
//! front_spin_us = 0
//! back_spin_us = 20
//! peers = ["dpdk"]
//! seed = 1234
//! ```

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::sizes::SizeSpec;
use crate::Dir;

/// One sweep as a scenario file describes it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Sweep {
    /// Designs, as `--design` spells them (`grant-copy`, `slots:256`, `ring:8:greedy`...).
    pub designs: Option<Vec<String>>,
    /// Packet sizes: bytes (14 to 65535, a number), `"imix"` or a mix (`"mix:64+65535"`,
    /// weights as `64x7`), as `--size` spells them.
    pub sizes: Option<Vec<SizeSpec>>,
    /// Directions: `tx`, `rx`, `rr`, `rr-busy`.
    pub dirs: Option<Vec<Dir>>,
    /// Queue counts of the throughput runs (1 to 8; request/response runs use one queue).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub queues: Option<Vec<u16>>,
    /// Interleaved rounds.
    pub rounds: Option<u32>,
    /// Measured seconds per run.
    pub seconds: Option<f64>,
    /// Busy-poll instead of blocking on event channels (throughput runs).
    pub busy: Option<bool>,
    /// Blocking waits arm the rings' event indexes at once, as Linux's drivers do, instead
    /// of spinning unarmed first (`PollMode::BlockArmed`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub armed: Option<bool>,
    /// Grant cost mode: `xen` (the calibrated preset), `kernel`, `none` or
    /// `model:<call>,<copy>,<map>,<unmap>`.
    pub cost: Option<String>,
    /// Run the raw data-ring stream (the upper bound) once per round.
    pub stream: Option<bool>,
    /// Microseconds the frontend's event-channel waits spin before sleeping.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub front_spin_us: Option<u64>,
    /// The same for the backend.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub back_spin_us: Option<u64>,
    /// Peers to measure beside the designs: `dpdk`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub peers: Option<Vec<crate::peer::Peer>>,
    /// The seed of the run order and of the report's intervals (a run left without one
    /// draws it from the clock and writes it down here).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seed: Option<u64>,
}

/// Why a scenario file was refused.
#[derive(Debug, thiserror::Error)]
pub enum SweepError {
    /// The file could not be read.
    #[error("cannot read scenario file {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file is not valid TOML or has a key or value this harness does not know.
    #[error("scenario file {path}: {source}")]
    Parse {
        /// The file.
        path: String,
        /// What the parser said (line, column, the key).
        source: Box<toml::de::Error>,
    },
    /// A value is out of range.
    #[error("scenario file {path}: {msg}")]
    Invalid {
        /// The file.
        path: String,
        /// What is wrong.
        msg: String,
    },
}

impl Sweep {
    /// Parses and checks a scenario file's text; `path` only names it in errors.
    pub fn parse(text: &str, path: &str) -> Result<Sweep, SweepError> {
        let s: Sweep = toml::from_str(text).map_err(|e| SweepError::Parse {
            path: path.into(),
            source: Box::new(e),
        })?;
        s.check().map_err(|msg| SweepError::Invalid {
            path: path.into(),
            msg,
        })?;
        Ok(s)
    }

    /// Reads, parses and checks a scenario file.
    pub fn load(path: &Path) -> Result<Sweep, SweepError> {
        let name = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| SweepError::Read {
            path: name.clone(),
            source,
        })?;
        Sweep::parse(&text, &name)
    }

    /// The checks the command line applies too: designs and the cost mode parse, sizes are
    /// specs of frames of 14 to 65535 bytes, the lists are not empty, rounds and seconds are positive.
    pub fn check(&self) -> Result<(), String> {
        if self.busy == Some(true) && self.armed == Some(true) {
            return Err(
                "armed (`--armed`, `armed = true`): blocking waits armed at once cannot go with \
                 busy-polling (`--busy`, `busy = true`), which never blocks"
                    .into(),
            );
        }
        if let Some(ds) = &self.designs {
            if ds.is_empty() {
                return Err("designs: the list is empty".into());
            }
            for d in ds {
                d.parse::<netstage_fallback::Design>()
                    .map_err(|e| format!("designs: {d:?}: {e}"))?;
            }
        }
        if let Some(sz) = &self.sizes {
            if sz.is_empty() {
                return Err("sizes: the list is empty".into());
            }
            // What a file or the command line gave is checked as it is read; a sweep built
            // in code is checked here.
            for spec in sz {
                spec.to_string()
                    .parse::<SizeSpec>()
                    .map_err(|e| format!("sizes: {e}"))?;
            }
        }
        if self.dirs.as_ref().is_some_and(Vec::is_empty) {
            return Err("dirs: the list is empty".into());
        }
        if let Some(q) = &self.queues {
            if q.is_empty() {
                return Err("queues: the list is empty".into());
            }
            if let Some(bad) = q.iter().find(|q| !(1..=8).contains(*q)) {
                return Err(format!(
                    "queues: {bad} is not 1 to 8 (the backend offers up to 8)"
                ));
            }
        }
        if self.rounds == Some(0) {
            return Err("rounds: must be at least 1".into());
        }
        if let Some(c) = self
            .cost
            .as_deref()
            .filter(|c| *c != crate::calibrate::XEN_PRESET)
        {
            c.parse::<netstage_platform::sim::CostMode>()
                .map_err(|e| format!("cost: {c:?}: {e}"))?;
        }
        for (key, v) in [
            ("front_spin_us", self.front_spin_us),
            ("back_spin_us", self.back_spin_us),
        ] {
            if let Some(us) = v.filter(|us| *us > 1_000_000) {
                return Err(format!("{key}: {us} is more than a second"));
            }
        }
        if let Some(s) = self.seconds {
            if !(s > 0.0 && s <= 3600.0) {
                return Err(format!("seconds: {s} is not in (0, 3600]"));
            }
        }
        Ok(())
    }

    /// This sweep with every key that `over` sets taken from `over` (the command line).
    pub fn overridden_by(self, over: Sweep) -> Sweep {
        Sweep {
            designs: over.designs.or(self.designs),
            sizes: over.sizes.or(self.sizes),
            dirs: over.dirs.or(self.dirs),
            queues: over.queues.or(self.queues),
            rounds: over.rounds.or(self.rounds),
            seconds: over.seconds.or(self.seconds),
            busy: over.busy.or(self.busy),
            armed: over.armed.or(self.armed),
            cost: over.cost.or(self.cost),
            stream: over.stream.or(self.stream),
            front_spin_us: over.front_spin_us.or(self.front_spin_us),
            back_spin_us: over.back_spin_us.or(self.back_spin_us),
            peers: over.peers.or(self.peers),
            seed: over.seed.or(self.seed),
        }
    }
}

/// The order of a sweep's runs, round by round: for each of `rounds` rounds a shuffle of
/// the run indexes `0..runs`, drawn from `seed` (the same seed, the same orders).
pub fn run_order(runs: usize, rounds: u32, seed: u64) -> Vec<Vec<usize>> {
    use rand::seq::SliceRandom;
    let mut rng = crate::stats::seeded(seed, crate::stats::RngStream::Order);
    (0..rounds)
        .map(|_| {
            let mut order: Vec<usize> = (0..runs).collect();
            order.shuffle(&mut rng);
            order
        })
        .collect()
}
