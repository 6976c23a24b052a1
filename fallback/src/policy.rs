//! The designs, and how much of each packet the data ring carries.

/// How much of each packet goes through the data ring (the rest by grant operations).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CopyPolicy {
    /// At most this many bytes per packet.
    Fixed(u32),
    /// As much of the packet as the ring has room for.
    Greedy,
    /// What the cost model ([`CostModel`]) says saves time: a piece of the packet is staged
    /// when its memcpy costs less than the grant operation it saves, and, while the ring's
    /// smoothed fill is high, less than that operation minus the ring room it takes from
    /// later packets (`docs/policies.md`).
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

impl std::str::FromStr for CopyPolicy {
    type Err = String;

    /// `fixed:<bytes>`, `greedy` or `adaptive` (as [`CopyPolicy`] prints itself).
    fn from_str(s: &str) -> Result<CopyPolicy, String> {
        match s.split_once(':') {
            None if s == "greedy" => Ok(CopyPolicy::Greedy),
            None if s == "adaptive" => Ok(CopyPolicy::Adaptive),
            Some(("fixed", n)) => n.parse().map(CopyPolicy::Fixed).map_err(|_| {
                format!("copy policy `{s}`: `{n}` is not a byte count (0 to 4294967295)")
            }),
            _ => Err(format!(
                "copy policy `{s}`: expected fixed:<bytes>, greedy or adaptive"
            )),
        }
    }
}

/// Why a packet, or part of it, did not go through staging memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FallbackReason {
    /// The data ring had no room for what the policy chose.
    RingFull,
    /// The packet is larger than the copy limit (slot size, policy limit, or what the
    /// adaptive policy's model found worth staging).
    OverLimit,
}

/// What a data ring's sender does with a packet the ring has no room for now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum WhenFull {
    /// Sends what does not fit by grant operations at once: the design as proposed.
    #[default]
    Grant,
    /// Holds the packet back while the peer has packets of this direction in flight (taking
    /// them frees ring room), and sends it when the room is there; by grant operations only
    /// when nothing is in flight, or when the packet would not fit the empty ring. The
    /// frontend's TX only: not announced to the backend, whose RX packets go by
    /// [`WhenFull::Grant`].
    Wait,
}

/// Bytes a grant operation moves at most: one page of a packet is one operation.
const GRANT_PAGE: usize = 4096;

/// What the adaptive policy weighs against each other, per packet.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CostModel {
    /// Nanoseconds to memcpy one byte through the data ring: the copy staging adds. (The
    /// receiving end's copy out of the ring is paid for a granted byte too, by the grant
    /// copy, so it cancels.)
    pub copy_ns_per_byte: f64,
    /// Nanoseconds per grant operation (one page of a packet copied or mapped), beyond the
    /// bytes it moves.
    pub grant_op_ns: f64,
}

impl CostModel {
    /// Xen's cost per grant-copy operation as the `xen` cost preset charges it
    /// (`ModelCost::XEN.copy_ns`, docs/calibration.md), and a memcpy of 10 GB/s.
    pub const XEN: CostModel = CostModel {
        copy_ns_per_byte: 0.1,
        grant_op_ns: netstage_platform::sim::ModelCost::XEN.copy_ns as f64,
    };

    /// [`CostModel::XEN`]'s grant cost with this machine's memcpy, measured now (the best
    /// of a few 64 KiB copies, a few microseconds): what both ends use at connect.
    pub fn measured() -> CostModel {
        CostModel {
            copy_ns_per_byte: measure_copy_ns_per_byte(),
            ..CostModel::XEN
        }
    }
}

/// The best of eight timed 64 KiB memcpys, in nanoseconds per byte (never 0, at most 1).
fn measure_copy_ns_per_byte() -> f64 {
    let src = vec![0x5au8; 65536];
    let mut dst = vec![0u8; 65536];
    let mut best = f64::MAX;
    for _ in 0..8 {
        let t = std::time::Instant::now();
        dst.copy_from_slice(std::hint::black_box(&src));
        std::hint::black_box(&mut dst);
        best = best.min(t.elapsed().as_nanos() as f64);
    }
    (best / 65536.0).clamp(0.001, 1.0)
}

/// Decisions over which the adaptive policy's fill is smoothed: each decision moves the
/// smoothed fill `1 / FILL_DECISIONS` of the way to the fill it reads.
pub const FILL_DECISIONS: f64 = 16.0;
/// Smoothed fill above which the ring counts as congested (ring room is priced).
pub const FILL_HIGH: f64 = 0.75;
/// Smoothed fill below which a congested ring is no longer.
pub const FILL_LOW: f64 = 0.5;

/// The state of a [`CopyPolicy`] on one ring.
#[derive(Debug, Clone)]
pub struct PolicyState {
    policy: CopyPolicy,
    costs: CostModel,
    /// The ring's fill (0 to 1), smoothed over [`FILL_DECISIONS`] decisions.
    fill: f64,
    /// Whether the smoothed fill went above [`FILL_HIGH`] and not yet below [`FILL_LOW`].
    congested: bool,
}

impl PolicyState {
    /// A fresh state with the costs of [`CostModel::XEN`].
    pub fn new(policy: CopyPolicy) -> PolicyState {
        PolicyState::with_costs(policy, CostModel::XEN)
    }

    /// A fresh state whose adaptive decisions weigh `costs`.
    pub fn with_costs(policy: CopyPolicy, costs: CostModel) -> PolicyState {
        PolicyState {
            policy,
            costs,
            fill: 0.0,
            congested: false,
        }
    }

    /// The policy.
    pub fn policy(&self) -> CopyPolicy {
        self.policy
    }

    /// The longest packet the policy stages whole whenever the ring has room for all of
    /// it, a choice that needs and changes no state: any under the greedy policy, those
    /// within the limit under a fixed one, `None` under the adaptive policy (its choice
    /// follows the fill it tracks, decision by decision).
    pub fn whole_up_to(&self) -> Option<usize> {
        match self.policy {
            CopyPolicy::Greedy => Some(usize::MAX),
            CopyPolicy::Fixed(n) => Some(n as usize),
            CopyPolicy::Adaptive => None,
        }
    }

    /// Whether [`PolicyState::decide`] wants the ring's free room read afresh (the
    /// consumer's index) for every decision: the adaptive policy does, the others only
    /// when the room they know of is short.
    pub fn wants_fresh_fill(&self) -> bool {
        self.policy == CopyPolicy::Adaptive
    }

    /// The adaptive policy's smoothed fill, 0 to 1.
    pub fn fill(&self) -> f64 {
        self.fill
    }

    /// Whether the adaptive policy prices ring room (its fill is high).
    pub fn congested(&self) -> bool {
        self.congested
    }

    /// Bytes of a `len`-byte packet to copy through a ring of `size` bytes with `free` bytes
    /// free, and why the rest (if any) goes by grants. Never more than `free` or `len`.
    pub fn decide(
        &mut self,
        len: usize,
        free: usize,
        size: usize,
    ) -> (usize, Option<FallbackReason>) {
        let (want, n) = self.choose(len, free, size);
        (n, reason(len, want, n))
    }

    /// As [`PolicyState::decide`], except that with `may_wait` a packet the ring has no
    /// room for now, but would have room for once empty, gets `Err(want)`: the caller holds
    /// it back until the peer has freed `want` bytes ([`WhenFull::Wait`]), where
    /// [`PolicyState::decide`] would cut it to the room there is.
    #[inline]
    pub fn decide_or_wait(
        &mut self,
        len: usize,
        free: usize,
        size: usize,
        may_wait: bool,
    ) -> Result<(usize, Option<FallbackReason>), usize> {
        let (want, n) = self.choose(len, free, size);
        if may_wait && n < want && want <= size {
            return Err(want);
        }
        Ok((n, reason(len, want, n)))
    }

    /// The policy's choice, as (bytes it would stage with room enough, bytes it stages).
    #[inline]
    fn choose(&mut self, len: usize, free: usize, size: usize) -> (usize, usize) {
        match self.policy {
            CopyPolicy::Fixed(n) => whole_or_cut(len.min(n as usize), free),
            CopyPolicy::Greedy => whole_or_cut(len, free),
            CopyPolicy::Adaptive => self.adaptive(len, free, size),
        }
    }

    /// Updates the smoothed fill and the congestion state from a fresh `free` of `size`.
    fn observe(&mut self, free: usize, size: usize) {
        let now = if size == 0 {
            1.0
        } else {
            size.saturating_sub(free) as f64 / size as f64
        };
        self.fill += (now - self.fill) / FILL_DECISIONS;
        if self.congested && self.fill < FILL_LOW {
            self.congested = false;
        } else if !self.congested && self.fill > FILL_HIGH {
            self.congested = true;
        }
    }

    /// The model's choice, as (bytes it would stage with room enough, bytes it stages).
    ///
    /// A staged prefix of `s` bytes leaves `len - s` to grants, `ceil((len - s) / 4096)`
    /// operations. So the prefixes worth a look are the first piece `t` (`len` less its
    /// whole pages after it, 1 to 4096 bytes) and then whole pages: each piece saves one
    /// grant operation and costs its bytes at `price` per byte, the memcpy plus, while the
    /// ring is congested, the room it takes (a grant operation per page of room, the least
    /// a later packet of a page or less would save with it). Since `t` is at most a page,
    /// pages are worth it only if `t` is.
    fn adaptive(&mut self, len: usize, free: usize, size: usize) -> (usize, usize) {
        self.observe(free, size);
        if len == 0 {
            return (0, 0);
        }
        let g = self.costs.grant_op_ns;
        let room = if self.congested {
            g / GRANT_PAGE as f64
        } else {
            0.0
        };
        let price = self.costs.copy_ns_per_byte + room;
        let t = len - (len.div_ceil(GRANT_PAGE) - 1) * GRANT_PAGE;
        let want = if price * t as f64 >= g {
            0
        } else if price * GRANT_PAGE as f64 >= g {
            t
        } else {
            len
        };
        let n = if want <= free {
            want
        } else if t <= free {
            // The first piece and as many whole pages as fit.
            t + (free - t) / GRANT_PAGE * GRANT_PAGE
        } else {
            0
        };
        (want, n.min(want))
    }
}

/// Why a `len`-byte packet of which the policy wanted `want` bytes staged, and `n` were,
/// goes partly by grants (`None`: it does not).
#[inline]
fn reason(len: usize, want: usize, n: usize) -> Option<FallbackReason> {
    if n < want {
        Some(FallbackReason::RingFull)
    } else if n < len {
        Some(FallbackReason::OverLimit)
    } else {
        None
    }
}

/// A limit of `want` bytes in `free` bytes of room, as (wanted, staged): a page or less
/// goes whole or not at all (a partial copy would still need a grant operation), a larger
/// one is cut to the room.
#[inline]
fn whole_or_cut(want: usize, free: usize) -> (usize, usize) {
    let n = if want <= GRANT_PAGE && free < want {
        0
    } else {
        want.min(free)
    };
    (want, n)
}

/// Where packet bytes go: the two baselines and the staging designs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Design {
    /// Grants for every packet; the backend copies them.
    GrantCopy,
    /// Grants for every packet; the backend maps them.
    GrantMap,
    /// Linux netback and netfront without persistent grants: the frontend grants a page
    /// per request and revokes it at the response; the backend grant-copies the first
    /// `XEN_NETBACK_TX_COPY_LEN` (128) bytes of a TX packet and grant-maps the rest, in
    /// batches; RX by grant copy.
    Linux,
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
        /// What the frontend's TX does when the ring has no room (`:wait` at the end of
        /// the design's name: [`WhenFull::Wait`]).
        when_full: WhenFull,
    },
}

impl std::fmt::Display for Design {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Design::GrantCopy => write!(f, "grant-copy"),
            Design::GrantMap => write!(f, "grant-map"),
            Design::Linux => write!(f, "linux"),
            Design::Slots { data_len } => write!(f, "slots:{data_len}"),
            Design::SlotsRfc { data_len } => write!(f, "slots-rfc:{data_len}"),
            Design::Ring {
                order,
                policy,
                when_full,
            } => {
                write!(f, "ring:{order}:{policy}")?;
                match when_full {
                    WhenFull::Grant => Ok(()),
                    WhenFull::Wait => write!(f, ":wait"),
                }
            }
        }
    }
}

impl std::str::FromStr for Design {
    type Err = String;

    /// `grant-copy`, `grant-map`, `linux`, `slots:<data-len>`, `slots-rfc:<data-len>` or
    /// `ring:<order>:<policy>[:wait]` with policy `fixed:<bytes>`, `greedy` or `adaptive`.
    fn from_str(s: &str) -> Result<Design, String> {
        let bad = || {
            format!(
                "design `{s}`: expected grant-copy, grant-map, linux, slots:<data-len 64..65536>, \
                 slots-rfc:<data-len 64..65536> or ring:<order 0..9>:<fixed:N|greedy|adaptive>[:wait]"
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
            ["linux"] => Ok(Design::Linux),
            ["slots", n] => Ok(Design::Slots {
                data_len: data_len(n)?,
            }),
            ["slots-rfc", n] => Ok(Design::SlotsRfc {
                data_len: data_len(n)?,
            }),
            ["ring", o, _, ..] => {
                let order: u32 = o.parse().map_err(|_| bad())?;
                if order > 9 {
                    return Err(bad());
                }
                let (policy, when_full) = match parts[2..] {
                    [ref p @ .., "wait"] if !p.is_empty() => (p, WhenFull::Wait),
                    ref p => (p, WhenFull::Grant),
                };
                let policy = policy.join(":").parse().map_err(|_| bad())?;
                Ok(Design::Ring {
                    order,
                    policy,
                    when_full,
                })
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
            "linux",
            "slots:256",
            "slots-rfc:64",
            "slots-rfc:256",
            "slots-rfc:4096",
            "slots-rfc:65536",
            "ring:4:greedy",
            "ring:0:fixed:128",
            "ring:9:adaptive",
            "ring:8:greedy:wait",
            "ring:2:fixed:1500:wait",
            "ring:9:adaptive:wait",
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
            "ring:4:wait",
            "ring:4:greedy:wait:wait",
            "ring:4:fixed:wait",
            "ring:4:greedy:grant",
            "copy",
            "linux:128",
            "Linux",
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
        let mut p = PolicyState::new(CopyPolicy::Fixed(256));
        assert_eq!(p.decide(64, 4096, 4096), (64, None));
        assert_eq!(
            p.decide(1500, 4096, 4096),
            (256, Some(FallbackReason::OverLimit))
        );
        assert_eq!(
            p.decide(1500, 100, 4096),
            (0, Some(FallbackReason::RingFull))
        );
        let mut g = PolicyState::new(CopyPolicy::Greedy);
        assert_eq!(
            g.decide(9000, 4096, 4096),
            (4096, Some(FallbackReason::RingFull))
        );
        assert_eq!(g.decide(0, 0, 4096), (0, None));
        assert!(!g.wants_fresh_fill() && PolicyState::new(CopyPolicy::Adaptive).wants_fresh_fill());
    }

    #[test]
    fn a_packet_waits_for_room_only_when_asked_and_when_it_would_fit_the_empty_ring() {
        let mut g = PolicyState::new(CopyPolicy::Greedy);
        // Room enough: the same choice either way.
        assert_eq!(g.decide_or_wait(5000, 8192, 8192, true), Ok((5000, None)));
        // Too little room now: held back if asked, cut to the room otherwise.
        assert_eq!(g.decide_or_wait(5000, 3192, 8192, true), Err(5000));
        let cut = (3192, Some(FallbackReason::RingFull));
        assert_eq!(g.decide_or_wait(5000, 3192, 8192, false), Ok(cut));
        assert_eq!(g.decide(5000, 3192, 8192), cut);
        // Larger than the ring: waiting would never help.
        assert_eq!(
            g.decide_or_wait(9000, 100, 8192, true),
            Ok((100, Some(FallbackReason::RingFull)))
        );
        // What the policy does not want staged never waits.
        let mut f = PolicyState::new(CopyPolicy::Fixed(256));
        assert_eq!(
            f.decide_or_wait(1500, 4096, 8192, true),
            Ok((256, Some(FallbackReason::OverLimit)))
        );
        assert_eq!(f.decide_or_wait(1500, 255, 8192, true), Err(256));
        assert_eq!(f.decide_or_wait(0, 0, 8192, true), Ok((0, None)));
    }

    #[test]
    fn policies_parse_and_print() {
        for s in "greedy adaptive fixed:0 fixed:128 fixed:4294967295".split(' ') {
            assert_eq!(s.parse::<CopyPolicy>().unwrap().to_string(), s);
        }
        for s in "|fixed|fixed:|fixed:-1|fixed:1:2|greedy:1|Greedy".split('|') {
            let e = s.parse::<CopyPolicy>().unwrap_err();
            assert!(e.contains(&format!("`{s}`")), "{e}");
        }
    }

    /// Memcpy at 0.05 ns a byte (20 GB/s), 370 ns a grant operation: a page costs 205 ns
    /// to stage and saves 370; under congestion room costs 370 / 4096 ns a byte more,
    /// 575 ns a page, and only pieces below 2,627 bytes are worth their room.
    const FAST: CostModel = CostModel {
        copy_ns_per_byte: 0.05,
        grant_op_ns: 370.0,
    };

    /// A fresh adaptive state driven to congestion (or not) on a ring of `size` bytes.
    fn adaptive_at(congested: bool, size: usize) -> PolicyState {
        let mut a = PolicyState::with_costs(CopyPolicy::Adaptive, FAST);
        if congested {
            for _ in 0..200 {
                a.decide(0, 0, size);
            }
            assert!(a.congested());
        }
        a
    }

    #[test]
    fn the_model_stages_what_saves_more_than_its_copy_costs() {
        const RING: usize = 1 << 20;
        let mut a = adaptive_at(false, RING);
        // Room enough and a cheap copy: everything, as greedy.
        for len in [64, 576, 1500, 4096, 9000, 65535] {
            assert_eq!(a.decide(len, RING, RING), (len, None), "{len}");
        }
        // A copy dearer than a grant operation per page (0.1 ns a byte: 410 ns a page):
        // only the first piece, whose whole pages follow by grants; none of a piece
        // that costs more than the operation it saves.
        let slow = CostModel {
            copy_ns_per_byte: 0.1,
            grant_op_ns: 370.0,
        };
        let mut s = PolicyState::with_costs(CopyPolicy::Adaptive, slow);
        assert_eq!(s.decide(1500, RING, RING), (1500, None));
        assert_eq!(
            s.decide(9000, RING, RING),
            (9000 - 8192, Some(FallbackReason::OverLimit))
        );
        assert_eq!(
            s.decide(4096, RING, RING),
            (0, Some(FallbackReason::OverLimit))
        );
        assert_eq!(
            s.decide(65535, RING, RING),
            (0, Some(FallbackReason::OverLimit)),
            "its first piece is 4095 bytes: 409.5 ns for 370"
        );
        // Grant operations 10 times dearer: all of it again.
        let dear = CostModel {
            grant_op_ns: 3700.0,
            ..slow
        };
        let mut d = PolicyState::with_costs(CopyPolicy::Adaptive, dear);
        assert_eq!(d.decide(65535, RING, RING), (65535, None));
        // Short of room: the first piece and whole pages, never a cut that saves nothing.
        assert_eq!(
            d.decide(65535, 10_000, RING),
            (4095 + 4096, Some(FallbackReason::RingFull))
        );
        assert_eq!(
            d.decide(1500, 1499, RING),
            (0, Some(FallbackReason::RingFull))
        );
    }

    #[test]
    fn greedy_and_adaptive_part_where_the_ring_is_nearly_full() {
        const RING: usize = 1 << 16;
        let mut g = PolicyState::new(CopyPolicy::Greedy);
        let mut a = adaptive_at(true, RING);
        // 12 KiB free of 64 KiB: greedy copies 12 KiB of a 64 KiB packet and still grants
        // 13 pages; adaptive grants all 16 and keeps the room for small packets.
        let free = 12 * 1024;
        assert_eq!(
            g.decide(65535, free, RING),
            (free, Some(FallbackReason::RingFull))
        );
        assert_eq!(
            a.decide(65535, free, RING),
            (0, Some(FallbackReason::OverLimit))
        );
        // Small ones go through the ring with both.
        for len in [64, 576, 1500] {
            assert_eq!(g.decide(len, free, RING), (len, None));
            assert_eq!(a.decide(len, free, RING), (len, None));
        }
        // A 4 KiB packet: a page of room is worth more than its copy saves.
        assert_eq!(
            a.decide(4096, free, RING),
            (0, Some(FallbackReason::OverLimit))
        );
        // An empty ring: the same answers.
        let mut calm = adaptive_at(false, RING);
        assert_eq!(calm.decide(65535, RING, RING), g.decide(65535, RING, RING));
    }

    #[test]
    fn congestion_has_hysteresis_and_a_time_constant() {
        const RING: usize = 1 << 16;
        let mut a = adaptive_at(false, RING);
        // One full reading moves the smoothed fill a sixteenth of the way.
        a.decide(64, 0, RING);
        assert!((a.fill() - 1.0 / FILL_DECISIONS).abs() < 1e-9);
        assert!(!a.congested(), "one full reading is not congestion");
        // From empty, a full ring is congestion after ln(1 - 0.75) / ln(15/16) = 22 readings.
        let mut k = 1;
        while !a.congested() {
            a.decide(64, 0, RING);
            k += 1;
        }
        assert_eq!(k, 22);
        // Between the watermarks (60 % full) it stays congested, however long.
        let free = RING * 2 / 5;
        for _ in 0..1000 {
            a.decide(64, free, RING);
        }
        assert!(a.congested() && (a.fill() - 0.6).abs() < 1e-3);
        // Below the low watermark it is not, and stays so up to the high one.
        for _ in 0..100 {
            a.decide(64, RING, RING);
        }
        assert!(!a.congested());
        for _ in 0..1000 {
            a.decide(64, free, RING);
        }
        assert!(!a.congested(), "60 % full is below the high watermark");
        // The decision follows: a 64 KiB packet goes by grants only while congested.
        assert_eq!(a.decide(65535, RING, RING).0, 65535);
        let mut c = adaptive_at(true, RING);
        assert_eq!(c.decide(65535, RING, RING).0, 0);
    }

    #[test]
    fn the_measured_model_is_sane() {
        let m = CostModel::measured();
        assert!(m.copy_ns_per_byte > 0.0 && m.copy_ns_per_byte <= 1.0);
        assert_eq!(m.grant_op_ns, CostModel::XEN.grant_op_ns);
    }
}
