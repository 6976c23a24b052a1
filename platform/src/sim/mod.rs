//! The emulated hypervisor: domains in shared memory, Xen v1 grant tables, event channels.
//!
//! A *world* is a directory (under `/dev/shm` by default) holding one sub-directory per
//! domain, `dom<ID>/`, with four files that any process can map (`docs/sim-abi.md` has the
//! byte layouts):
//!
//! | file | content |
//! |---|---|
//! | `mem` | the domain's guest memory, frame `n` at byte `n * 4096` |
//! | `gnttab` | its grant table: `grant_entry_v1 {flags: u16, domid: u16, frame: u32}` per ref |
//! | `active` | hypervisor bookkeeping: a lock word and per-ref pin counts of maps and copies |
//! | `evtchn` | its event-channel ports |
//! | `pid` | the process that runs the domain (a domain whose process is gone is destroyed) |
//!
//! A domain is a process (or, in tests, a thread) that created its directory with
//! [`SimWorld::create_domain`]. Another domain reaches its memory only through grants,
//! checked as Xen checks them: the entry must be `GTF_permit_access`, granted to the caller's
//! domid, writable if a write is asked for, and name a frame of the granter's memory; while a
//! mapping or copy is in flight the entry carries `GTF_reading` (and `GTF_writing`), so the
//! granter cannot revoke it. Failures give the Xen status ([`crate::GrantStatus`]).
//!
//! Grant operations cost what they cost in kind ([`CostMode`]).

mod cost;
mod evtchn;
mod gnttab;
pub mod xenstored;

use std::collections::HashMap;
use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use netstage_ring::SharedMem;

pub use cost::{CostMode, ModelCost};
pub use evtchn::SimPort;
pub use gnttab::{GTF_PERMIT_ACCESS, GTF_READING, GTF_READONLY, GTF_TYPE_MASK, GTF_WRITING};

use crate::{sys, DomId, GrantRef, PlatformError, Result};

/// Bytes of a guest frame.
pub const PAGE_SIZE: usize = 4096;
/// Grant refs below this are reserved (Linux reserves 0-7: console, xenstore, ...).
pub const FIRST_FREE_GREF: u32 = 8;

/// Sizes and behaviour of one emulated domain.
#[derive(Debug, Clone)]
pub struct DomainConfig {
    /// Guest memory in 4 KiB frames.
    pub mem_pages: u32,
    /// Grant-table entries.
    pub grant_entries: u32,
    /// Event-channel ports (port 0 is never used).
    pub ports: u32,
    /// How grant operations and notifications are charged.
    pub cost: CostMode,
    /// How long [`crate::EventPort::wait`] busy-polls before blocking in the kernel (it
    /// yields the CPU every 64 polls, so a thread sharing the core is not held up).
    pub spin_before_block: Duration,
}

impl Default for DomainConfig {
    fn default() -> Self {
        DomainConfig {
            mem_pages: 16384, // 64 MiB, allocated lazily by tmpfs
            grant_entries: 32768,
            ports: 256,
            cost: CostMode::Kernel,
            spin_before_block: Duration::from_micros(20),
        }
    }
}

/// Counters of the grant operations a domain performed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct GrantCounters {
    /// Xen-equivalent hypercalls: one per copy batch, per map call, per unmap, per notify.
    pub hypercalls: u64,
    /// System calls the emulation actually made for them (0 in `model` and `none` modes).
    pub kernel_crossings: u64,
    /// Grant-copy operations issued.
    pub copy_ops: u64,
    /// Grant-copy operations that failed.
    pub copy_failures: u64,
    /// Bytes moved by successful grant copies.
    pub copy_bytes: u64,
    /// Pages mapped.
    pub maps: u64,
    /// Pages unmapped.
    pub unmaps: u64,
    /// Pages currently granted by this domain.
    pub granted_pages: u64,
}

#[derive(Debug, Default)]
pub(crate) struct Stats {
    hypercalls: AtomicU64,
    kernel_crossings: AtomicU64,
    copy_ops: AtomicU64,
    copy_failures: AtomicU64,
    copy_bytes: AtomicU64,
    maps: AtomicU64,
    unmaps: AtomicU64,
    granted_pages: AtomicU64,
}

impl Stats {
    fn snapshot(&self) -> GrantCounters {
        let l = |a: &AtomicU64| a.load(Ordering::Relaxed);
        GrantCounters {
            hypercalls: l(&self.hypercalls),
            kernel_crossings: l(&self.kernel_crossings),
            copy_ops: l(&self.copy_ops),
            copy_failures: l(&self.copy_failures),
            copy_bytes: l(&self.copy_bytes),
            maps: l(&self.maps),
            unmaps: l(&self.unmaps),
            granted_pages: l(&self.granted_pages),
        }
    }

    fn add(a: &AtomicU64, n: u64) {
        a.fetch_add(n, Ordering::Relaxed);
    }
}

/// A directory of emulated domains.
#[derive(Debug)]
pub struct SimWorld {
    dir: PathBuf,
    remove_on_drop: bool,
}

impl SimWorld {
    /// Creates a fresh world in a new directory under `/dev/shm` (or the system temporary
    /// directory if there is no `/dev/shm`), removed when this value is dropped.
    pub fn create_temp() -> Result<SimWorld> {
        static SEQ: AtomicU64 = AtomicU64::new(0);
        let base = if Path::new("/dev/shm").is_dir() {
            PathBuf::from("/dev/shm")
        } else {
            std::env::temp_dir()
        };
        let dir = base.join(format!(
            "netstage-{}-{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        ));
        let mut w = SimWorld::create(&dir)?;
        w.remove_on_drop = true;
        Ok(w)
    }

    /// Creates (or reuses) the world directory `dir`; it is left in place when dropped.
    pub fn create(dir: &Path) -> Result<SimWorld> {
        fs::create_dir_all(dir)
            .map_err(|e| PlatformError::io(format!("create world {}", dir.display()), e))?;
        Ok(SimWorld {
            dir: dir.to_path_buf(),
            remove_on_drop: false,
        })
    }

    /// Opens an existing world (created by another process).
    pub fn open(dir: &Path) -> Result<SimWorld> {
        if !dir.is_dir() {
            return Err(PlatformError::Invalid(format!(
                "{} is not a netstage world directory (start the process that creates it \
                 first, or pass the path it printed)",
                dir.display()
            )));
        }
        Ok(SimWorld {
            dir: dir.to_path_buf(),
            remove_on_drop: false,
        })
    }

    /// The world's directory.
    pub fn path(&self) -> &Path {
        &self.dir
    }

    /// Creates domain `id` (its files must not exist yet) and returns a handle to act as it.
    pub fn create_domain(&self, id: DomId, cfg: DomainConfig) -> Result<SimDomain> {
        let ddir = domain_dir(&self.dir, id);
        if ddir.exists() && !pid_alive(&ddir) {
            // A domain of this id existed and its process is gone: it was destroyed.
            fs::remove_dir_all(&ddir)
                .map_err(|e| PlatformError::io(format!("remove stale {}", ddir.display()), e))?;
        }
        fs::create_dir(&ddir).map_err(|e| {
            PlatformError::io(
                format!(
                    "create domain {id} in {} (is it already running?)",
                    ddir.display()
                ),
                e,
            )
        })?;
        let create = |name: &str, len: usize| -> Result<(File, SharedMem)> {
            let path = ddir.join(name);
            let f = OpenOptions::new()
                .read(true)
                .write(true)
                .create_new(true)
                .open(&path)
                .map_err(|e| PlatformError::io(format!("create {}", path.display()), e))?;
            f.set_len(len as u64)
                .map_err(|e| PlatformError::io(format!("size {}", path.display()), e))?;
            let m = sys::map_file(&f, len, true)
                .map_err(|e| PlatformError::io(format!("map {}", path.display()), e))?;
            Ok((f, m))
        };
        if cfg.mem_pages == 0 || cfg.grant_entries <= FIRST_FREE_GREF || cfg.ports < 2 {
            return Err(PlatformError::Invalid(format!(
                "domain config needs memory, more than {FIRST_FREE_GREF} grant entries and at \
                 least 2 ports: {cfg:?}"
            )));
        }
        fs::write(ddir.join("pid"), std::process::id().to_string())
            .map_err(|e| PlatformError::io(format!("write {}/pid", ddir.display()), e))?;
        let (mem_file, mem) = create("mem", cfg.mem_pages as usize * PAGE_SIZE)?;
        let (_, gnttab) = create("gnttab", cfg.grant_entries as usize * 8)?;
        let (_, active) = create("active", gnttab::active_len(cfg.grant_entries))?;
        let (_, evtchn) = create("evtchn", evtchn::table_len(cfg.ports))?;
        evtchn::init_table(&evtchn, cfg.ports)?;
        let inner = DomInner {
            id,
            world: self.dir.clone(),
            cfg: cfg.clone(),
            _mem_file: mem_file,
            mem,
            gnttab,
            evtchn,
            alloc: Mutex::new(gnttab::Allocator::new(cfg.mem_pages, cfg.grant_entries)),
            foreign: Mutex::new(HashMap::new()),
            stats: Stats::default(),
            active,
        };
        Ok(SimDomain {
            inner: Arc::new(inner),
        })
    }
}

impl Drop for SimWorld {
    fn drop(&mut self) {
        if self.remove_on_drop {
            let _ = fs::remove_dir_all(&self.dir);
        }
    }
}

fn domain_dir(world: &Path, id: DomId) -> PathBuf {
    world.join(format!("dom{id}"))
}

/// The process recorded in a domain directory's `pid` file, if it runs.
fn domain_pid(ddir: &Path) -> Option<u32> {
    fs::read_to_string(ddir.join("pid"))
        .ok()
        .and_then(|s| s.trim().parse::<u32>().ok())
        .filter(|p| sys::process_alive(*p))
}

/// Whether the process recorded in a domain directory's `pid` file runs.
fn pid_alive(ddir: &Path) -> bool {
    domain_pid(ddir).is_some()
}

/// Another domain's files as the emulated hypervisor sees them.
pub(crate) struct Foreign {
    id: DomId,
    mem_file: File,
    /// The hypervisor's view of the domain's memory (its "direct map").
    view: SharedMem,
    gnttab: SharedMem,
    active: SharedMem,
    evtchn: SharedMem,
    pages: u32,
    entries: u32,
    ports: u32,
}

impl fmt::Debug for Foreign {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Foreign").field("id", &self.id).finish()
    }
}

impl Foreign {
    fn open(world: &Path, id: DomId) -> Result<Foreign> {
        let ddir = domain_dir(world, id);
        let open = |name: &str| -> Result<(File, SharedMem)> {
            let path = ddir.join(name);
            let f = OpenOptions::new()
                .read(true)
                .write(true)
                .open(&path)
                .map_err(|e| PlatformError::NoDomain {
                    dom: id,
                    detail: format!("cannot open {}: {e}", path.display()),
                })?;
            let len = f
                .metadata()
                .map_err(|e| PlatformError::io(format!("stat {}", path.display()), e))?
                .len() as usize;
            let m = sys::map_file(&f, len, true)
                .map_err(|e| PlatformError::io(format!("map {}", path.display()), e))?;
            Ok((f, m))
        };
        let (mem_file, view) = open("mem")?;
        let (_, gnttab) = open("gnttab")?;
        let (_, active) = open("active")?;
        let (_, evtchn) = open("evtchn")?;
        let ports = evtchn::table_ports(&evtchn)?;
        Ok(Foreign {
            id,
            pages: (view.len() / PAGE_SIZE) as u32,
            entries: (gnttab.len() / 8) as u32,
            mem_file,
            view,
            gnttab,
            active,
            evtchn,
            ports,
        })
    }
}

pub(crate) struct DomInner {
    id: DomId,
    world: PathBuf,
    cfg: DomainConfig,
    _mem_file: File,
    mem: SharedMem,
    gnttab: SharedMem,
    active: SharedMem,
    evtchn: SharedMem,
    alloc: Mutex<gnttab::Allocator>,
    foreign: Mutex<HashMap<DomId, Arc<Foreign>>>,
    stats: Stats,
}

impl DomInner {
    /// The files of domain `id` (cached; this domain's own files too).
    fn foreign(&self, id: DomId) -> Result<Arc<Foreign>> {
        let mut map = self
            .foreign
            .lock()
            .map_err(|_| PlatformError::Invalid("foreign-domain cache poisoned".into()))?;
        if let Some(f) = map.get(&id) {
            return Ok(Arc::clone(f));
        }
        let f = Arc::new(Foreign::open(&self.world, id)?);
        map.insert(id, Arc::clone(&f));
        Ok(f)
    }

    /// Charges one Xen-equivalent call in the configured cost mode (`kernel` crossings are
    /// made by the caller).
    fn charge(&self, model_ns: impl Fn(&ModelCost) -> u64) {
        Stats::add(&self.stats.hypercalls, 1);
        if let CostMode::Model(m) = &self.cfg.cost {
            sys::spin_for(model_ns(m));
        }
    }
}

/// A handle to act as one emulated domain: share pages, map and copy grants, use event
/// channels. Cheap to clone; threads may share it.
#[derive(Clone)]
pub struct SimDomain {
    inner: Arc<DomInner>,
}

impl fmt::Debug for SimDomain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SimDomain")
            .field("id", &self.inner.id)
            .field("cost", &self.inner.cfg.cost)
            .finish()
    }
}

impl crate::DomainInfo for SimDomain {
    fn domain_instance(&self, dom: DomId) -> Option<u64> {
        domain_pid(&domain_dir(&self.inner.world, dom)).map(u64::from)
    }

    fn forget_domain(&self, dom: DomId) {
        if let Ok(mut m) = self.inner.foreign.lock() {
            m.remove(&dom);
        }
        // As Xen does when a domain dies: its maps of our grants are gone, so the pins it
        // held on them are released.
        if !self.domain_alive(dom) {
            gnttab::release_grantee(&self.inner, dom);
        }
    }
}

impl SimDomain {
    /// The domain id.
    pub fn id(&self) -> DomId {
        self.inner.id
    }

    /// The cost mode in force.
    pub fn cost_mode(&self) -> CostMode {
        self.inner.cfg.cost
    }

    /// The domain's configuration.
    pub fn config(&self) -> &DomainConfig {
        &self.inner.cfg
    }

    /// Counters of the grant operations this handle's domain performed.
    pub fn counters(&self) -> GrantCounters {
        self.inner.stats.snapshot()
    }

    /// The domain's own guest memory (what its pages are carved from).
    pub fn memory(&self) -> &SharedMem {
        &self.inner.mem
    }

    /// The entries of this domain's grant table that a peer holds: `GTF_reading` or
    /// `GTF_writing` set, or a pin count that is not zero (what keeps them from being
    /// revoked). Empty when no peer maps or copies any of its grants.
    pub fn grant_pins(&self) -> Result<Vec<GrantPin>> {
        let d = &self.inner;
        // `active` is the lock's line, then two pin counts per entry (docs/sim-abi.md).
        let counts = gnttab::active_len(0);
        let mut pins = Vec::new();
        for gref in FIRST_FREE_GREF..d.cfg.grant_entries {
            let at = gref as usize * 8;
            let word: u32 = d.gnttab.read_obj(at)?;
            let readers: u32 = d.active.read_obj(counts + at)?;
            let writers: u32 = d.active.read_obj(counts + at + 4)?;
            let flags = word as u16;
            if flags & (GTF_READING | GTF_WRITING) != 0 || readers != 0 || writers != 0 {
                pins.push(GrantPin {
                    gref,
                    grantee: (word >> 16) as DomId,
                    flags,
                    readers,
                    writers,
                });
            }
        }
        Ok(pins)
    }
}

/// A grant entry that a peer holds (see [`SimDomain::grant_pins`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GrantPin {
    /// The grant reference.
    pub gref: GrantRef,
    /// The domain it is granted to.
    pub grantee: DomId,
    /// The entry's flags (`GTF_*`).
    pub flags: u16,
    /// Maps and copies reading it.
    pub readers: u32,
    /// Maps and copies writing it.
    pub writers: u32,
}
