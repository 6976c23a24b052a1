//! The harness's system calls: pinning to a core and reading own CPU time.

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
    // SAFETY: `set` is a zeroed bitmask on our stack; CPU_SET writes the bit of each core,
    // all checked to be inside it above; sched_setaffinity only reads
    // `size_of::<cpu_set_t>()` bytes of it.
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
    // SAFETY: getrusage fills the zeroed struct we pass; RUSAGE_SELF is always valid.
    let ru = unsafe {
        let mut ru: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_SELF, &mut ru);
        ru
    };
    let t = |tv: libc::timeval| tv.tv_sec as f64 + tv.tv_usec as f64 * 1e-6;
    t(ru.ru_utime) + t(ru.ru_stime)
}

/// Number of online CPUs.
pub fn cpus() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
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
