//! How the emulated hypervisor charges grant operations and notifications: the cost modes.

use std::fmt;
use std::str::FromStr;

use crate::{PlatformError, Result};

/// How grant operations are charged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CostMode {
    /// As on Xen, in kind: a grant copy is one kernel crossing per batch
    /// (`process_vm_readv`/`writev`), a map is a real `mmap` and an unmap a real `munmap`
    /// (with its TLB shootdown), a notify is a system call.
    #[default]
    Kernel,
    /// No extra system calls; each call spins for the given times, to reproduce a measured
    /// Xen host.
    Model(ModelCost),
    /// Grant operations as plain memory operations: isolates the cost of a design itself.
    None,
}

/// Spin times of [`CostMode::Model`], in nanoseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ModelCost {
    /// Per call (hypercall entry and exit), also charged per notify.
    pub call_ns: u64,
    /// Per grant-copy operation.
    pub copy_ns: u64,
    /// Per page mapped.
    pub map_ns: u64,
    /// Per page unmapped.
    pub unmap_ns: u64,
}

impl FromStr for CostMode {
    type Err = PlatformError;

    /// `kernel`, `none`, or `model:<call>,<copy>,<map>,<unmap>` (nanoseconds).
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "kernel" => Ok(CostMode::Kernel),
            "none" => Ok(CostMode::None),
            _ => {
                let bad = || {
                    PlatformError::Invalid(format!(
                        "cost mode `{s}`: expected `kernel`, `none` or \
                         `model:<ns per call>,<ns per copy op>,<ns per map>,<ns per unmap>`"
                    ))
                };
                let rest = s.strip_prefix("model:").ok_or_else(bad)?;
                let v: Vec<u64> = rest
                    .split(',')
                    .map(|x| x.trim().parse::<u64>())
                    .collect::<std::result::Result<_, _>>()
                    .map_err(|_| bad())?;
                match v[..] {
                    [call_ns, copy_ns, map_ns, unmap_ns] => Ok(CostMode::Model(ModelCost {
                        call_ns,
                        copy_ns,
                        map_ns,
                        unmap_ns,
                    })),
                    _ => Err(bad()),
                }
            }
        }
    }
}

impl fmt::Display for CostMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CostMode::Kernel => write!(f, "kernel"),
            CostMode::None => write!(f, "none"),
            CostMode::Model(m) => write!(
                f,
                "model:{},{},{},{}",
                m.call_ns, m.copy_ns, m.map_ns, m.unmap_ns
            ),
        }
    }
}
