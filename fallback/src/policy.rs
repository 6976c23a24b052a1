//! The designs, and how much of each packet the data ring carries.

/// How much of each packet goes through the data ring (the rest by grant operations).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CopyPolicy {
    /// At most this many bytes per packet.
    Fixed(u32),
    /// As much of the packet as the ring has room for.
    Greedy,
    /// A per-packet limit that halves when the ring is more than three quarters full and
    /// doubles when it is less than a quarter full, between 2 KiB (so an MTU packet is never
    /// split) and half the ring.
    Adaptive,
}

impl std::fmt::Display for CopyPolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CopyPolicy::Fixed(n) => write!(f, "fixed:{n}"),
            CopyPolicy::Greedy => write!(f, "greedy"),
            CopyPolicy::Adaptive => write!(f, "adaptive"),
        }
    }
}

/// Why a packet, or part of it, did not go through staging memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FallbackReason {
    /// The data ring had no room for what the policy chose.
    RingFull,
    /// The packet is larger than the copy limit (slot size or policy limit).
    OverLimit,
}

/// The state of a [`CopyPolicy`] on one ring.
#[derive(Debug, Clone)]
pub struct PolicyState {
    policy: CopyPolicy,
    target: usize,
}

impl PolicyState {
    /// A fresh state for a ring of `ring_size` bytes.
    pub fn new(policy: CopyPolicy, ring_size: usize) -> PolicyState {
        PolicyState {
            policy,
            target: (ring_size / 8).max(64),
        }
    }

    /// The current adaptive limit.
    pub fn target(&self) -> usize {
        self.target
    }

    /// Bytes of a `len`-byte packet to copy through a ring of `size` bytes with `free` bytes
    /// free, and why the rest (if any) goes by grants. Never more than `free` or `len`.
    pub fn decide(
        &mut self,
        len: usize,
        free: usize,
        size: usize,
    ) -> (usize, Option<FallbackReason>) {
        let limit = match self.policy {
            CopyPolicy::Fixed(n) => n as usize,
            CopyPolicy::Greedy => len,
            CopyPolicy::Adaptive => {
                // Never below 2 KiB (or half a small ring): an MTU packet is never split,
                // since half by ring and half by grants costs both.
                let floor = 2048.min(size / 2).max(64);
                let used = size.saturating_sub(free);
                if used * 4 > size * 3 {
                    self.target = (self.target / 2).max(floor);
                } else if used * 4 < size {
                    self.target = (self.target * 2).min((size / 2).max(floor));
                }
                self.target
            }
        };
        let want = len.min(limit);
        // A page or less goes whole or not at all: a partial copy would still need a grant.
        let n = if want <= 4096 && free < want {
            0
        } else {
            want.min(free)
        };
        let why = if n < want {
            Some(FallbackReason::RingFull)
        } else if n < len {
            Some(FallbackReason::OverLimit)
        } else {
            None
        };
        (n, why)
    }
}

/// Where packet bytes go: the two baselines and the staging designs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Design {
    /// Grants for every packet; the backend copies them.
    GrantCopy,
    /// Grants for every packet; the backend maps them.
    GrantMap,
    /// Staging slots of `data_len` bytes per request id (the RFC's data list), in
    /// netstage's encoding: the staged head leaves the grants, announced by
    /// `NETTXF_staged` / `NETRXF_staged` and an extra request.
    Slots {
        /// Bytes per slot, 64 to 65536.
        data_len: u32,
    },
    /// Staging slots in RFC revision 1's own encoding: requests and responses as without
    /// staging, the start of a request's data replicated in the slot of its id.
    SlotsRfc {
        /// 64 to 65536. Up to 4096, the slot size: the first request's first `data_len`
        /// bytes are replicated. Above, how much of the packet is, a page per request
        /// (65536: all of it); slots are then a page each.
        data_len: u32,
    },
    /// A data ring of `2^order` pages per queue, split in two directions.
    Ring {
        /// Ring order, 0 to 9.
        order: u32,
        /// How much of each packet goes through the ring.
        policy: CopyPolicy,
    },
}

impl std::fmt::Display for Design {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Design::GrantCopy => write!(f, "grant-copy"),
            Design::GrantMap => write!(f, "grant-map"),
            Design::Slots { data_len } => write!(f, "slots:{data_len}"),
            Design::SlotsRfc { data_len } => write!(f, "slots-rfc:{data_len}"),
            Design::Ring { order, policy } => write!(f, "ring:{order}:{policy}"),
        }
    }
}

impl std::str::FromStr for Design {
    type Err = String;

    /// `grant-copy`, `grant-map`, `slots:<data-len>`, `slots-rfc:<data-len>` or
    /// `ring:<order>:<policy>` with policy `fixed:<bytes>`, `greedy` or `adaptive`.
    fn from_str(s: &str) -> Result<Design, String> {
        let bad = || {
            format!(
                "design `{s}`: expected grant-copy, grant-map, slots:<data-len 64..65536>, \
                 slots-rfc:<data-len 64..65536> or ring:<order 0..9>:<fixed:N|greedy|adaptive>"
            )
        };
        let data_len = |n: &str| match n.parse::<u32>() {
            Ok(v) if (64..=65536).contains(&v) => Ok(v),
            _ => Err(format!(
                "design `{s}`: data-len `{n}` is not a number from 64 to 65536"
            )),
        };
        let parts: Vec<&str> = s.split(':').collect();
        match parts[..] {
            ["grant-copy"] => Ok(Design::GrantCopy),
            ["grant-map"] => Ok(Design::GrantMap),
            ["slots", n] => Ok(Design::Slots {
                data_len: data_len(n)?,
            }),
            ["slots-rfc", n] => Ok(Design::SlotsRfc {
                data_len: data_len(n)?,
            }),
            ["ring", o, p, ref rest @ ..] => {
                let order: u32 = o.parse().map_err(|_| bad())?;
                if order > 9 {
                    return Err(bad());
                }
                let policy = match (p, rest) {
                    ("greedy", []) => CopyPolicy::Greedy,
                    ("adaptive", []) => CopyPolicy::Adaptive,
                    ("fixed", [n]) => CopyPolicy::Fixed(n.parse().map_err(|_| bad())?),
                    _ => return Err(bad()),
                };
                Ok(Design::Ring { order, policy })
            }
            _ => Err(bad()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn designs_parse_and_print() {
        for s in [
            "grant-copy",
            "grant-map",
            "slots:256",
            "slots-rfc:64",
            "slots-rfc:256",
            "slots-rfc:4096",
            "slots-rfc:65536",
            "ring:4:greedy",
            "ring:0:fixed:128",
            "ring:9:adaptive",
        ] {
            assert_eq!(s.parse::<Design>().unwrap().to_string(), s);
        }
        for s in [
            "",
            "slots:63",
            "slots:65537",
            "slots-rfc",
            "slots-rfc:",
            "slots-rfc:63",
            "slots-rfc:65537",
            "slots-rfc:-1",
            "slots-rfc:256:1",
            "slots_rfc:256",
            "ring:10:greedy",
            "ring:4",
            "ring:4:fixed",
            "copy",
        ] {
            assert!(s.parse::<Design>().is_err(), "{s}");
        }
    }

    #[test]
    fn every_data_len_parses_exactly_in_range_and_errors_name_the_input() {
        for n in (0..=70_000u32).chain([u32::MAX, u32::MAX - 1]) {
            for (name, make) in [
                (
                    "slots",
                    (|d| Design::Slots { data_len: d }) as fn(u32) -> Design,
                ),
                ("slots-rfc", |d| Design::SlotsRfc { data_len: d }),
            ] {
                let s = format!("{name}:{n}");
                match s.parse::<Design>() {
                    Ok(d) => {
                        assert!((64..=65536).contains(&n), "{s}");
                        assert_eq!(d, make(n));
                        assert_eq!(d.to_string(), s);
                    }
                    Err(e) => {
                        assert!(!(64..=65536).contains(&n), "{s}: {e}");
                        assert!(e.contains(&format!("`{s}`")) && e.contains(&format!("`{n}`")));
                    }
                }
            }
        }
        for s in ["slots-rfc:0x100", "slots-rfc: 256", "slots-rfc:2.5"] {
            let e = s.parse::<Design>().unwrap_err();
            assert!(e.contains(&format!("`{s}`")), "{e}");
        }
        let e = "slots-rfc".parse::<Design>().unwrap_err();
        assert!(e.contains("slots-rfc:<data-len 64..65536>"), "{e}");
    }

    #[test]
    fn policies_decide() {
        let mut p = PolicyState::new(CopyPolicy::Fixed(256), 4096);
        assert_eq!(p.decide(64, 4096, 4096), (64, None));
        assert_eq!(
            p.decide(1500, 4096, 4096),
            (256, Some(FallbackReason::OverLimit))
        );
        assert_eq!(
            p.decide(1500, 100, 4096),
            (0, Some(FallbackReason::RingFull))
        );
        let mut g = PolicyState::new(CopyPolicy::Greedy, 4096);
        assert_eq!(
            g.decide(9000, 4096, 4096),
            (4096, Some(FallbackReason::RingFull))
        );
        assert_eq!(g.decide(0, 0, 4096), (0, None));
        let mut a = PolicyState::new(CopyPolicy::Adaptive, 65536);
        let t0 = a.target();
        a.decide(100, 65536, 65536); // empty ring: grow
        assert_eq!(a.target(), t0 * 2);
        for _ in 0..20 {
            a.decide(100, 1000, 65536); // nearly full: shrink to the floor
        }
        assert_eq!(a.target(), 2048);
        let mut s = PolicyState::new(CopyPolicy::Adaptive, 2048);
        for _ in 0..20 {
            s.decide(100, 10, 2048); // a small ring: the floor is half of it
        }
        assert_eq!(s.target(), 1024);
        for _ in 0..20 {
            a.decide(100, 65536, 65536);
        }
        assert_eq!(a.target(), 32768);
    }
}
