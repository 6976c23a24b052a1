//! Packet sizes of a workload: one size, IMIX, or a weighted mix, in a fixed interleaved
//! order so that sender and receiver agree on the size of every sequence number.
//!
//! Written as `1500`, `imix` (64, 576 and 1500 bytes, 7:4:1 by count) or
//! `mix:<size>[x<weight>]+...` (`mix:64+65535`: the two sizes in turn; `mix:64x7+576x4+1500`
//! is IMIX). A mix's sizes are joined by `+` so that a comma-separated list of specs (the
//! sweep's `--sizes`) can hold it; `,` is accepted too where a single spec is given.
//!
//! In JSON and TOML a fixed size is a number (`1500`, as results and scenario files wrote
//! sizes before mixes existed) and any other spec a string (`"imix"`); either form is read.
//! Specs sort fixed sizes first, by size, then `imix`, then the mixes.

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The smallest and largest packet a spec may name (an Ethernet header; netif's limit).
pub const SIZE_RANGE: std::ops::RangeInclusive<usize> = 14..=65535;
/// Most sizes in a mix.
pub const MAX_SIZES: usize = 16;
/// Largest sum of a mix's weights: packets in one cycle of its order.
pub const MAX_CYCLE: u32 = 4096;

/// IMIX's sizes and weights (the simple IMIX: 7 of 64 B, 4 of 576 B, 1 of 1500 B).
const IMIX: [(usize, u32); 3] = [(64, 7), (576, 4), (1500, 1)];

/// The packet sizes of a workload.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum SizeSpec {
    /// Every packet this many bytes.
    Fixed(usize),
    /// 64, 576 and 1500 bytes, 7:4:1 by count.
    Imix,
    /// Sizes, each with its weight (packets per cycle), at least two entries.
    Mix(Vec<(usize, u32)>),
}

impl SizeSpec {
    /// The sizes and their weights.
    pub fn weights(&self) -> Vec<(usize, u32)> {
        match self {
            SizeSpec::Fixed(n) => vec![(*n, 1)],
            SizeSpec::Imix => IMIX.to_vec(),
            SizeSpec::Mix(m) => m.clone(),
        }
    }

    /// The sizes of one cycle of packets, interleaved (smooth weighted round robin: each
    /// size as evenly spread as its weight allows); packet `seq` has size
    /// `cycle[seq % cycle.len()]`.
    pub fn cycle(&self) -> Vec<usize> {
        let w = self.weights();
        let total: i64 = w.iter().map(|(_, k)| i64::from(*k)).sum();
        let mut credit = vec![0i64; w.len()];
        (0..total)
            .map(|_| {
                for (c, (_, k)) in credit.iter_mut().zip(&w) {
                    *c += i64::from(*k);
                }
                let best = (0..w.len()).max_by_key(|&i| (credit[i], -(i as i64)));
                let i = best.unwrap_or(0);
                credit[i] -= total;
                w[i].0
            })
            .collect()
    }

    /// The largest size.
    pub fn max(&self) -> usize {
        self.weights().iter().map(|(s, _)| *s).max().unwrap_or(0)
    }

    /// The mean size over a cycle, in bytes.
    pub fn mean(&self) -> f64 {
        let w = self.weights();
        let total: u64 = w.iter().map(|(_, k)| u64::from(*k)).sum();
        let bytes: u64 = w.iter().map(|(s, k)| *s as u64 * u64::from(*k)).sum();
        bytes as f64 / total.max(1) as f64
    }

    /// Whether packets come in more than one size.
    pub fn is_mixed(&self) -> bool {
        !matches!(self, SizeSpec::Fixed(_))
    }

    /// The one size of a fixed spec.
    pub fn fixed(&self) -> Option<usize> {
        match self {
            SizeSpec::Fixed(n) => Some(*n),
            _ => None,
        }
    }

    /// The order specs are listed in: fixed sizes first, by size, then `imix`, then the
    /// mixes (not `Ord`, whose `max` would hide [`SizeSpec::max`]).
    pub fn sort_key(&self) -> (u8, Vec<(usize, u32)>) {
        match self {
            SizeSpec::Fixed(n) => (0, vec![(*n, 1)]),
            SizeSpec::Imix => (1, Vec::new()),
            SizeSpec::Mix(m) => (2, m.clone()),
        }
    }

    /// The spec for prose: `1500 B`, or the spec as written (`imix`).
    pub fn with_unit(&self) -> String {
        match self {
            SizeSpec::Fixed(n) => format!("{n} B"),
            _ => self.to_string(),
        }
    }
}

impl From<usize> for SizeSpec {
    fn from(n: usize) -> SizeSpec {
        SizeSpec::Fixed(n)
    }
}

impl From<&SizeSpec> for SizeSpec {
    fn from(s: &SizeSpec) -> SizeSpec {
        s.clone()
    }
}

impl std::fmt::Display for SizeSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SizeSpec::Fixed(n) => write!(f, "{n}"),
            SizeSpec::Imix => write!(f, "imix"),
            SizeSpec::Mix(m) => {
                f.write_str("mix:")?;
                for (i, (s, k)) in m.iter().enumerate() {
                    let sep = if i > 0 { "+" } else { "" };
                    match k {
                        1 => write!(f, "{sep}{s}")?,
                        _ => write!(f, "{sep}{s}x{k}")?,
                    }
                }
                Ok(())
            }
        }
    }
}

impl std::str::FromStr for SizeSpec {
    type Err = String;

    fn from_str(s: &str) -> Result<SizeSpec, String> {
        let size = |n: &str| match n.parse::<usize>() {
            Ok(v) if SIZE_RANGE.contains(&v) => Ok(v),
            _ => Err(format!(
                "size `{s}`: `{n}` is not a packet size of 14 to 65535 bytes"
            )),
        };
        if s == "imix" {
            return Ok(SizeSpec::Imix);
        }
        let Some(list) = s.strip_prefix("mix:") else {
            return size(s).map(SizeSpec::Fixed).map_err(|e| {
                format!("{e}; expected a size, `imix` or `mix:<size>[x<weight>]+...`")
            });
        };
        let mut m = Vec::new();
        for item in list.split(['+', ',']) {
            let (n, k) = item.split_once('x').unwrap_or((item, "1"));
            let k = match k.parse::<u32>() {
                Ok(k) if (1..=MAX_CYCLE).contains(&k) => k,
                _ => return Err(format!("size `{s}`: weight `{k}` is not 1 to {MAX_CYCLE}")),
            };
            m.push((size(n)?, k));
        }
        let total: u32 = m.iter().map(|(_, k)| k).sum();
        if !(2..=MAX_SIZES).contains(&m.len()) || total > MAX_CYCLE {
            return Err(format!(
                "size `{s}`: a mix has 2 to {MAX_SIZES} sizes whose weights add up to at \
                 most {MAX_CYCLE}"
            ));
        }
        Ok(SizeSpec::Mix(m))
    }
}

impl TryFrom<String> for SizeSpec {
    type Error = String;

    fn try_from(s: String) -> Result<SizeSpec, String> {
        s.parse()
    }
}

impl From<SizeSpec> for String {
    fn from(s: SizeSpec) -> String {
        s.to_string()
    }
}

impl Serialize for SizeSpec {
    fn serialize<S: Serializer>(&self, ser: S) -> Result<S::Ok, S::Error> {
        match self {
            SizeSpec::Fixed(n) => ser.serialize_u64(*n as u64),
            _ => ser.collect_str(self),
        }
    }
}

/// Reads a spec from a number (a fixed size) or a string, checked as [`str::parse`] checks
/// it.
struct SpecVisitor;

impl serde::de::Visitor<'_> for SpecVisitor {
    type Value = SizeSpec;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a packet size in bytes, `imix` or `mix:<size>[x<weight>]+...`")
    }

    fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<SizeSpec, E> {
        v.to_string().parse().map_err(E::custom)
    }

    fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<SizeSpec, E> {
        v.to_string().parse().map_err(E::custom)
    }

    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<SizeSpec, E> {
        v.parse().map_err(E::custom)
    }
}

impl<'de> Deserialize<'de> for SizeSpec {
    fn deserialize<D: Deserializer<'de>>(de: D) -> Result<SizeSpec, D::Error> {
        de.deserialize_any(SpecVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs_parse_and_print() {
        let good = "14 64 1500 65535 imix mix:64+65535 mix:64x7+576x4+1500 mix:100x3+200";
        for s in good.split(' ') {
            assert_eq!(s.parse::<SizeSpec>().unwrap().to_string(), s);
        }
        assert_eq!(
            "mix:64,65535".parse::<SizeSpec>().unwrap().to_string(),
            "mix:64+65535"
        );
        let bad = "|13|65536|-1|IMIX|mix:|mix:64|mix:64+|mix:64+65536|mix:64x0+100|\
                   mix:64x4097+100|mix:64x4000+100x97|mix:64xa+100";
        for s in bad.split('|') {
            let e = s.parse::<SizeSpec>().unwrap_err();
            assert!(e.contains(&format!("`{s}`")), "{s}: {e}");
        }
        let json = serde_json::to_string(&SizeSpec::Imix).unwrap();
        assert_eq!(json, "\"imix\"");
        assert_eq!(
            serde_json::from_str::<SizeSpec>("\"mix:64+65535\"").unwrap(),
            SizeSpec::Mix(vec![(64, 1), (65535, 1)])
        );
        assert!(serde_json::from_str::<SizeSpec>("\"mix:1\"").is_err());
        // A fixed size is a number, as sizes were before mixes; a string is read too.
        assert_eq!(
            serde_json::to_string(&SizeSpec::Fixed(1500)).unwrap(),
            "1500"
        );
        for json in ["1500", "\"1500\""] {
            assert_eq!(
                serde_json::from_str::<SizeSpec>(json).unwrap(),
                SizeSpec::Fixed(1500)
            );
        }
        let e = serde_json::from_str::<SizeSpec>("13")
            .unwrap_err()
            .to_string();
        assert!(e.contains("`13`"), "{e}");
        assert!(serde_json::from_str::<SizeSpec>("-1").is_err());
    }

    #[test]
    fn fixed_sizes_sort_first_then_imix_then_mixes() {
        let mut v: Vec<SizeSpec> = ["mix:64+65535", "imix", "1500", "64", "mix:64+1500"]
            .iter()
            .map(|s| s.parse().unwrap())
            .collect();
        v.sort_by_key(SizeSpec::sort_key);
        let shown: Vec<String> = v.iter().map(ToString::to_string).collect();
        assert_eq!(shown, ["64", "1500", "imix", "mix:64+1500", "mix:64+65535"]);
        assert_eq!(SizeSpec::Fixed(64).with_unit(), "64 B");
        assert_eq!(SizeSpec::Imix.with_unit(), "imix");
        assert_eq!(
            (SizeSpec::Fixed(64).fixed(), SizeSpec::Imix.fixed()),
            (Some(64), None)
        );
    }

    #[test]
    fn a_cycle_holds_each_size_by_its_weight_spread_out() {
        let imix = SizeSpec::Imix.cycle();
        assert_eq!(imix.len(), 12);
        for (s, k) in IMIX {
            assert_eq!(imix.iter().filter(|&&x| x == s).count(), k as usize);
        }
        // No two 576s and no 1500 next to another large one: spread out.
        assert!(
            imix.windows(2).all(|w| w[0] == 64 || w[1] == 64),
            "{imix:?}"
        );
        assert_eq!(
            "mix:64+65535".parse::<SizeSpec>().unwrap().cycle(),
            [64, 65535]
        );
        assert_eq!(SizeSpec::Fixed(1500).cycle(), [1500]);
        assert_eq!(SizeSpec::Imix.max(), 1500);
        assert!((SizeSpec::Imix.mean() - (7.0 * 64.0 + 4.0 * 576.0 + 1500.0) / 12.0).abs() < 1e-9);
        assert!(SizeSpec::Imix.is_mixed() && !SizeSpec::from(64).is_mixed());
    }
}
