//! The harness's system calls: pinning to a core, reading own CPU time and signals (the TAP
//! devices' are in the `netstage-tap` crate). The only module of this crate with `unsafe`; every block says why it is
//! sound.

/// Pins the calling thread (and threads it starts afterwards) to `core`.
pub fn pin_to_core(core: usize) -> std::io::Result<()> {
    pin_to_cores(&[core])
}

/// Pins the calling thread (and threads it starts afterwards) to the set `cores`; an empty
/// set leaves the placement alone.
pub fn pin_to_cores(cores: &[usize]) -> std::io::Result<()> {
    if cores.is_empty() {
        return Ok(());
    }
    let max = 8 * std::mem::size_of::<libc::cpu_set_t>();
    if let Some(c) = cores.iter().find(|&&c| c >= max) {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("core {c} is beyond the {max} a CPU set holds"),
        ));
    }
    // Every core was checked above to fall inside the set.
    // SAFETY: `set` is a zeroed bitmask on our stack, CPU_SET writes inside it, and
    // sched_setaffinity only reads `size_of::<cpu_set_t>()` bytes of it.
    let r = unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        for &c in cores {
            libc::CPU_SET(c, &mut set);
        }
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set)
    };
    if r == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// CPU time (user + system) this process has used, in seconds, all threads included.
pub fn cpu_seconds() -> f64 {
    rusage_seconds(libc::RUSAGE_SELF)
}

/// CPU time (user + system) of this process's waited-for children, in seconds.
pub fn children_cpu_seconds() -> f64 {
    rusage_seconds(libc::RUSAGE_CHILDREN)
}

fn rusage_seconds(who: libc::c_int) -> f64 {
    // SAFETY: getrusage fills the zeroed struct we pass; callers pass RUSAGE_SELF or
    // RUSAGE_CHILDREN, both always valid.
    let ru = unsafe {
        let mut ru: libc::rusage = std::mem::zeroed();
        libc::getrusage(who, &mut ru);
        ru
    };
    let t = |tv: libc::timeval| tv.tv_sec as f64 + tv.tv_usec as f64 * 1e-6;
    t(ru.ru_utime) + t(ru.ru_stime)
}

/// Number of online CPUs.
pub fn cpus() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// Clock ticks per second of `/proc`'s CPU times.
fn clock_ticks() -> f64 {
    // SAFETY: sysconf only reads its argument.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if hz > 0 {
        hz as f64
    } else {
        100.0
    }
}

/// CPU seconds every CPU of the machine has spent busy (everything but idle and iowait)
/// since boot, from the first line of `/proc/stat`; `None` where it cannot be read.
pub fn machine_busy_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let line = stat.lines().next()?.strip_prefix("cpu ")?;
    let v: Vec<f64> = line
        .split_whitespace()
        .filter_map(|f| f.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal ...
    let busy = [0, 1, 2, 5, 6, 7]
        .iter()
        .filter_map(|i| v.get(*i))
        .sum::<f64>();
    Some(busy / clock_ticks())
}

/// CPU seconds (user + system) process `pid` has used so far, from `/proc/<pid>/stat`;
/// `None` once it has exited or where it cannot be read.
pub fn process_cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces: the fields after it follow the last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // After the name: state is field 3 (index 0 here); utime and stime are fields 14, 15.
    let utime: f64 = f.get(11)?.parse().ok()?;
    let stime: f64 = f.get(12)?.parse().ok()?;
    Some((utime + stime) / clock_ticks())
}

/// The cores of the frontend and of the backend for a run with `queues` queues on a machine
/// with `cpus` cores: the frontend on even cores from 0, the backend on odd cores from 1, a
/// core per queue thread while there are enough; otherwise core 0 and core 1 (shared by each
/// end's queue threads), or core 0 alone on a one-core machine.
pub fn placement(queues: u16, cpus: usize) -> (Vec<usize>, Vec<usize>) {
    let q = usize::from(queues.max(1));
    if cpus >= 2 * q {
        (
            (0..q).map(|i| 2 * i).collect(),
            (0..q).map(|i| 2 * i + 1).collect(),
        )
    } else {
        (vec![0], vec![1 % cpus.max(1)])
    }
}

/// Whether process `pid` exists.
pub fn alive(pid: u32) -> bool {
    std::path::Path::new(&format!("/proc/{pid}")).exists()
}

/// The process id at the end of a name the harness gave something it made (`<prefix><pid>`),
/// when that process has exited: the thing was left behind by a run that was interrupted.
pub fn left_behind(name: &str, prefix: &str) -> bool {
    name.strip_prefix(prefix)
        .and_then(|p| p.parse::<u32>().ok())
        .is_some_and(|pid| !alive(pid))
}

/// Removes the worlds in /dev/shm that interrupted runs of the harness left behind
/// (`netstage-experiments-<pid>`, `netstage-stream-<pid>`, `netstage-tcp-<pid>` of exited
/// processes).
pub fn remove_stale_worlds() {
    let Ok(dir) = std::fs::read_dir("/dev/shm") else {
        return;
    };
    for e in dir.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let stale = ["netstage-experiments-", "netstage-stream-", "netstage-tcp-"]
            .iter()
            .any(|p| left_behind(&name, p));
        if stale {
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
}

/// Sends signal `sig` to process `pid`.
pub fn signal(pid: u32, sig: libc::c_int) -> std::io::Result<()> {
    let pid = libc::pid_t::try_from(pid)
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::InvalidInput, "pid out of range"))?;
    // SAFETY: kill() has no memory effects; a stale pid at worst signals nothing.
    if unsafe { libc::kill(pid, sig) } == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// Whether this process runs as root.
pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// Keeps freed memory in the process instead of handing it back to the kernel: raises
/// glibc's trim threshold (256 MiB) and mmap threshold (4 MiB). The TCP ends use the
/// libraries' convenience layers, which allocate and free a buffer per packet; with glibc's
/// defaults, 64 KiB buffers freed by a queue
/// thread shrink its arena again and again, so every next buffer is faulted in page by page
/// (measured: TCP through any design 18-28 % slower). The queue API needs none of this: it
/// allocates nothing per packet. No effect with other C libraries.
pub fn keep_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: mallopt only changes allocator parameters; called before the process
        // starts its threads.
        unsafe {
            libc::mallopt(libc::M_TRIM_THRESHOLD, 256 << 20);
            libc::mallopt(libc::M_MMAP_THRESHOLD, 4 << 20);
        }
    }
}
