//! The toolstack's `rate` limit on what a guest transmits, as Linux netback keeps it
//! (`credit_bytes`, `credit_usec`, `tx_credit_exceeded`, `tx_add_credit`): a credit of bytes
//! per interval, spent by each TX packet's size; a packet past the credit waits, unanswered,
//! until the next interval replenishes it.

use std::fmt;
use std::str::FromStr;
use std::time::{Duration, Instant};

use netstage_platform::sim::xenstored::wire::Errno;
use netstage_platform::xenstore::{XenStore, NO_TX};

/// A burst of credit big enough for a packet of up to 128 KiB, whatever the rate (netback's
/// `tx_add_credit`): a packet larger than one interval's bytes still goes, after a few
/// intervals' credit has added up.
const MAX_BURST: u64 = 131_072;

/// The longest interval accepted (an hour): a longer one is a toolstack's mistake.
const MAX_INTERVAL_US: u64 = 3_600_000_000;

/// A `rate` key: `<bytes>,<usecs>`, bytes a guest may transmit per interval.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    /// Bytes allowed per interval (`credit_bytes`).
    pub bytes: u64,
    /// The interval (`credit_usec`).
    pub interval: Duration,
}

/// Why a `rate` value was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("rate {value:?}: {why} (the toolstack writes <bytes>,<usecs>, e.g. 1000000,100000 for 1 MB per 100 ms)")]
pub struct BadRate {
    /// The value read.
    pub value: String,
    /// What is wrong with it.
    pub why: &'static str,
}

impl FromStr for Rate {
    type Err = BadRate;

    fn from_str(value: &str) -> Result<Rate, BadRate> {
        let bad = |why| BadRate {
            value: value.chars().take(64).collect(),
            why,
        };
        let (b, us) = value
            .trim()
            .split_once(',')
            .ok_or_else(|| bad("no comma between bytes and microseconds"))?;
        let number = |s: &str| s.trim().parse::<u64>().ok();
        let bytes = number(b).ok_or_else(|| bad("bytes is not a whole number"))?;
        let us = number(us).ok_or_else(|| bad("microseconds is not a whole number"))?;
        if bytes == 0 {
            return Err(bad("zero bytes per interval would stop all traffic"));
        }
        if us == 0 || us > MAX_INTERVAL_US {
            return Err(bad("the interval must be 1 us to 1 hour"));
        }
        Ok(Rate {
            bytes,
            interval: Duration::from_micros(us),
        })
    }
}

impl fmt::Display for Rate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{},{}", self.bytes, self.interval.as_micros())
    }
}

/// The vif's `rate` key in backend directory `dir`: `None` if the toolstack wrote none,
/// an error naming the key and what is wrong with it if its value is not a rate (the vif
/// is then refused: a vif meant to be limited does not run unlimited).
pub(crate) fn read_rate<X: XenStore>(xs: &X, dir: &str) -> Result<Option<Rate>, String> {
    let key = format!("{dir}/rate");
    match xs.read(NO_TX, &key) {
        Ok(v) => String::from_utf8_lossy(&v)
            .parse()
            .map(Some)
            .map_err(|e: BadRate| format!("{key}: {e}")),
        Err(e) if e.errno() == Some(Errno::ENOENT) => Ok(None),
        Err(e) => Err(format!("cannot read {key}: {e}")),
    }
}

/// A queue's TX credit (unlimited without a rate).
#[derive(Debug, Clone)]
pub(crate) struct TxCredit {
    rate: Option<Rate>,
    /// Bytes that may still go in this interval (`remaining_credit`).
    remaining: u64,
    /// When this interval began (`credit_window_start`).
    window: Instant,
    /// A packet is waiting for the next interval.
    limited: bool,
}

impl TxCredit {
    pub(crate) fn new(rate: Option<Rate>) -> TxCredit {
        TxCredit {
            rate,
            remaining: rate.map_or(u64::MAX, |r| r.bytes),
            window: Instant::now(),
            limited: false,
        }
    }

    /// Whether a packet of `size` bytes may go now; if so its size is spent.
    pub(crate) fn admit(&mut self, size: u64) -> bool {
        if self.rate.is_none() {
            return true;
        }
        if self.remaining < size && !self.replenish(size) {
            self.limited = true;
            return false;
        }
        self.remaining -= size;
        self.limited = false;
        true
    }

    /// Adds the next interval's credit if it has begun (`tx_credit_exceeded`); returns
    /// whether `size` bytes fit then.
    fn replenish(&mut self, size: u64) -> bool {
        let Some(rate) = self.rate else {
            return true;
        };
        let now = Instant::now();
        let next = self.window + rate.interval;
        if now >= next {
            // Intervals follow each other (as netback's timer starts the next at the end of
            // the last), unless the queue was idle for longer: no credit is saved up then.
            self.window = if now < next + rate.interval {
                next
            } else {
                now
            };
            let max_burst = MAX_BURST.max(rate.bytes);
            self.remaining = self.remaining.saturating_add(rate.bytes).min(max_burst);
        }
        size <= self.remaining
    }

    /// When a packet waits for credit: the start of the next interval.
    pub(crate) fn next_credit(&self) -> Option<Instant> {
        let rate = self.rate.filter(|_| self.limited)?;
        Some(self.window + rate.interval)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_parse_or_say_what_is_wrong() {
        let r: Rate = "1000000,100000".parse().unwrap();
        assert_eq!(r.bytes, 1_000_000);
        assert_eq!(r.interval, Duration::from_millis(100));
        assert_eq!(r.to_string(), "1000000,100000");
        for (v, why) in [
            ("1000000", "no comma"),
            ("x,100", "bytes"),
            ("100,-1", "microseconds"),
            ("0,100", "zero bytes"),
            ("100,0", "interval"),
            ("100,3600000001", "interval"),
            ("18446744073709551616,1", "bytes"),
        ] {
            let e = v.parse::<Rate>().unwrap_err().to_string();
            assert!(e.contains(why), "{v}: {e}");
        }
    }

    #[test]
    fn credit_is_spent_then_waits_for_the_next_interval() {
        let rate = Rate {
            bytes: 3000,
            interval: Duration::from_millis(50),
        };
        let mut c = TxCredit::new(Some(rate));
        assert!(c.admit(1500) && c.admit(1500));
        assert!(!c.admit(1500), "the interval's credit is spent");
        let next = c.next_credit().expect("waiting");
        std::thread::sleep(next.saturating_duration_since(Instant::now()));
        assert!(c.admit(1500), "replenished");
        assert_eq!(c.next_credit(), None);
        // A packet larger than an interval's credit goes once enough has added up.
        let mut small = TxCredit::new(Some(Rate {
            bytes: 1000,
            interval: Duration::from_millis(1),
        }));
        let mut tries = 0;
        while !small.admit(60_000) {
            tries += 1;
            std::thread::sleep(Duration::from_millis(1));
        }
        assert!(tries >= 59, "{tries}");
        assert!(TxCredit::new(None).admit(u64::MAX));
    }
}
