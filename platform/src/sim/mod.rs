//! The emulated hypervisor: domains in shared memory, Xen v1 grant tables, event channels.
//!
//! A *world* is a directory (under `/dev/shm` by default) holding one sub-directory per
//! domain, `dom<ID>/`, with four files that any process can map (`docs/sim-abi.md` has the
//! byte layouts). Each is a link to a memfd that the domain's process holds open
//! (`/proc/<pid>/fd/<n>`), sealed so that it can neither shrink nor grow: a participant
//! cannot truncate its files under a peer that mapped them (which would take `SIGBUS`), and
//! a peer refuses files that are not sealed so. The files of a domain go with its process.
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
use std::os::fd::AsRawFd;
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
    /// Refuse peer domains whose files are plain files rather than sealed memfds
    /// (`docs/sim-abi.md`): such a peer can truncate them under this domain's mappings,
    /// which then take `SIGBUS`. On by default; turn it off only for participants written
    /// against the earlier ABI, which made plain files (`netback-user
    /// --allow-plain-guests`). A link into `/proc` that does not lead to the domain's sealed
    /// memfd is refused either way.
    pub sealed_peers_only: bool,
}

impl Default for DomainConfig {
    fn default() -> Self {
        DomainConfig {
            mem_pages: 16384, // 64 MiB, allocated lazily by tmpfs
            grant_entries: 32768,
            ports: 256,
            cost: CostMode::Kernel,
            spin_before_block: Duration::from_micros(20),
            sealed_peers_only: true,
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
        let pid = std::process::id();
        let create = |name: &str, len: usize| -> Result<(File, SharedMem)> {
            let path = ddir.join(name);
            let f = sys::sealed_memfd(&memfd_name(&path), len as u64)
                .map_err(|e| PlatformError::io(format!("create {}", path.display()), e))?;
            // The name in the world links to our descriptor, which peers open through /proc
            // (the file lives as long as this domain keeps it open or a peer maps it).
            let link = format!("/proc/{pid}/fd/{}", f.as_raw_fd());
            std::os::unix::fs::symlink(&link, &path)
                .map_err(|e| PlatformError::io(format!("link {}", path.display()), e))?;
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
        let [mem_name, gnttab_name, active_name, evtchn_name] = FILE_NAMES;
        let (mem_file, mem) = create(mem_name, cfg.mem_pages as usize * PAGE_SIZE)?;
        let (gnttab_file, gnttab) = create(gnttab_name, cfg.grant_entries as usize * 8)?;
        let (active_file, active) = create(active_name, gnttab::active_len(cfg.grant_entries))?;
        let (evtchn_file, evtchn) = create(evtchn_name, evtchn::table_len(cfg.ports))?;
        evtchn::init_table(&evtchn, cfg.ports)?;
        let inner = DomInner {
            id,
            world: self.dir.clone(),
            cfg: cfg.clone(),
            files: [mem_file, gnttab_file, active_file, evtchn_file],
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

/// A domain's mapped files, in the order [`DomInner`] keeps them.
const FILE_NAMES: [&str; 4] = ["mem", "gnttab", "active", "evtchn"];

fn domain_dir(world: &Path, id: DomId) -> PathBuf {
    world.join(format!("dom{id}"))
}

/// The name a domain file's memfd carries: its path in the world (the last 240 bytes of it,
/// within the kernel's 249), so that a descriptor number reused by another file is told
/// apart.
fn memfd_name(path: &Path) -> String {
    let p = path.to_string_lossy();
    let mut from = p.len().saturating_sub(240);
    while !p.is_char_boundary(from) {
        from += 1;
    }
    p[from..].to_string()
}

/// Whether `f`, opened at `path`, may serve as a domain file: the memfd of that name, sealed
/// so that it can never shrink (a participant could otherwise truncate its own files under
/// a peer that mapped them, and the peer would take `SIGBUS` on its next access); or, unless
/// `sealed_only`, a plain file. A link into `/proc` must always lead to the sealed memfd: a
/// descriptor number the domain's process closed may have been reused for another file.
fn acceptable(f: &File, path: &Path, sealed_only: bool) -> bool {
    let Ok(target) = fs::read_link(format!("/proc/self/fd/{}", f.as_raw_fd())) else {
        return false;
    };
    let named = format!("/memfd:{}", memfd_name(path));
    let target = target.to_string_lossy();
    let ours = target
        .strip_prefix(named.as_str())
        .is_some_and(|rest| rest.is_empty() || rest == " (deleted)");
    if ours {
        return sys::sealed_as_domain_file(f).unwrap_or(false);
    }
    let linked = fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_symlink());
    !sealed_only && !linked && !target.starts_with("/memfd:")
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
    fn open(world: &Path, id: DomId, sealed_only: bool) -> Result<Foreign> {
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
            if !acceptable(&f, &path, sealed_only) {
                let plain = fs::symlink_metadata(&path).is_ok_and(|m| m.file_type().is_file());
                if plain {
                    return Err(PlatformError::NoDomain {
                        dom: id,
                        detail: format!(
                            "{} is a plain file, which domain {id} could truncate under our \
                             mappings: its files must be sealed memfds linked from the world \
                             (docs/sim-abi.md, section 1); a participant written against the \
                             earlier ABI is accepted only with DomainConfig::sealed_peers_only \
                             off (netback-user --allow-plain-guests)",
                            path.display()
                        ),
                    });
                }
                return Err(PlatformError::NoDomain {
                    dom: id,
                    detail: format!(
                        "{} is not a sealed memory file of this world's domain {id} (a \
                         domain's files are memfds sealed against shrinking, named after \
                         their path: docs/sim-abi.md)",
                        path.display()
                    ),
                });
            }
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
    /// The domain's files ([`FILE_NAMES`]), open for as long as it runs: peers reach them
    /// through `/proc/<pid>/fd`.
    files: [File; 4],
    mem: SharedMem,
    gnttab: SharedMem,
    active: SharedMem,
    evtchn: SharedMem,
    alloc: Mutex<gnttab::Allocator>,
    foreign: Mutex<HashMap<DomId, Arc<Foreign>>>,
    stats: Stats,
}

impl Drop for DomInner {
    fn drop(&mut self) {
        // The links lead to our descriptors, which close now: a number reused for another
        // file must not be found through them.
        let ddir = domain_dir(&self.world, self.id);
        let pid = std::process::id();
        for (name, f) in FILE_NAMES.iter().zip(&self.files) {
            let link = ddir.join(name);
            let ours = PathBuf::from(format!("/proc/{pid}/fd/{}", f.as_raw_fd()));
            if fs::read_link(&link).is_ok_and(|t| t == ours) {
                let _ = fs::remove_file(&link);
            }
        }
    }
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
        let f = Arc::new(Foreign::open(&self.world, id, self.cfg.sealed_peers_only)?);
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
