//! Peers measured beside the designs in the same run (`experiments compare --peer dpdk`).
//!
//! The one peer so far is the KVM world's user-space paravirtual NIC: DPDK's `net_vhost`
//! (the host side, our backend's counterpart) and `net_virtio_user` (the guest side, our
//! frontend's counterpart), two `dpdk-testpmd` processes joined by a vhost-user socket, with
//! no hugepages and no PCI device. The guest side generates (TX) or the host side does (RX),
//! the other side receives, and the receiver's per-second `Rx-pps` is the figure. The host
//! side runs on the backend's core and the guest side on the frontend's, at the same packet
//! sizes as the designs, interleaved with them round by round.
//!
//! Caveat for readers of the numbers: the vhost side maps all of the virtio-user process's
//! memory, testpmd's `txonly` writes only the headers of the mbufs it sends (the payload is
//! whatever the pool held) and `rxonly` frees what it receives without reading it, so a
//! frame is copied once, by the vhost library, and read by nobody; a netstage frame is
//! copied into shared memory by the sender, lent in place or grant-copied to the receiver,
//! and read in full by the receiver's check.

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::Dir;

/// A peer that `--peer` can add to a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Peer {
    /// DPDK's vhost-user and virtio-user devices driven by `dpdk-testpmd`.
    Dpdk,
}

impl std::fmt::Display for Peer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Peer::Dpdk => f.write_str("dpdk"),
        }
    }
}

/// The Debian packages that provide `dpdk-testpmd` and the two virtual devices it needs.
pub const DPDK_PACKAGES: &str =
    "dpdk-dev librte-net-vhost23 librte-net-virtio23 librte-mempool-ring23";

/// One measured run of a peer at one direction and size.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct PeerSample {
    /// Round (peers are interleaved with the designs round by round).
    pub round: u32,
    /// Which peer (`dpdk`).
    pub peer: String,
    /// Direction: TX is guest (virtio-user) to host (vhost), RX the reverse.
    pub dir: Dir,
    /// Frame size in bytes.
    pub size: usize,
    /// Packets per second: the median of the receiver's per-period rates.
    pub pps: f64,
    /// Gigabits per second of frame data at that rate.
    pub gbps: f64,
    /// The receiver's per-period rates that were measured (warm-up excluded).
    pub periods: Vec<f64>,
    /// Cross-core cache-line round trip just before the run, in nanoseconds.
    pub probe_ns: f64,
    /// Cross-core cache-line round trip just after the run, in nanoseconds.
    pub probe_after_ns: f64,
    /// The exact commands run: the host side (vhost) first, then the guest side.
    pub commands: Vec<String>,
}

/// Why a peer could not be run.
#[derive(Debug, thiserror::Error)]
pub enum PeerError {
    /// The peer's program is not installed.
    #[error(
        "--peer dpdk needs dpdk-testpmd, which is not on PATH; install Debian's {DPDK_PACKAGES}"
    )]
    NotInstalled,
    /// A process could not be started or waited for (the I/O error is its source: printed
    /// after it as a cause, not repeated in its text).
    #[error("cannot run {what}")]
    Spawn {
        /// Which process.
        what: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The peer ran but did not produce its figures; the tail of what it printed.
    #[error("dpdk-testpmd {what}; last output:\n{tail}\n(the vhost and virtio-user drivers come with Debian's {DPDK_PACKAGES})")]
    Failed {
        /// What went wrong.
        what: String,
        /// The last lines both processes printed.
        tail: String,
    },
}

/// DPDK's testpmd, found on this machine.
#[derive(Debug, Clone)]
pub struct Dpdk {
    testpmd: PathBuf,
}

/// Bytes of packet data per mbuf segment for frames that do not fit the default mbuf.
const SEGMENT: usize = 8192;
/// Headroom DPDK reserves at the front of each mbuf.
const HEADROOM: usize = 128;

impl Dpdk {
    /// Finds `dpdk-testpmd` on `PATH`.
    pub fn detect() -> Result<Dpdk, PeerError> {
        let path = std::env::var_os("PATH").unwrap_or_default();
        std::env::split_paths(&path)
            .map(|d| d.join("dpdk-testpmd"))
            .find(|p| p.is_file())
            .map(|testpmd| Dpdk { testpmd })
            .ok_or(PeerError::NotInstalled)
    }

    /// The two command lines of one run, host side (vhost) first. `prefix` names the EAL
    /// runtime directories and `sock` the vhost-user socket.
    pub fn commands(
        &self,
        dir: Dir,
        size: usize,
        cores: (usize, usize),
        sock: &Path,
        prefix: &str,
    ) -> [Vec<String>; 2] {
        let (host_mode, guest_mode) = match dir {
            Dir::Rx => ("txonly", "rxonly"),
            _ => ("rxonly", "txonly"),
        };
        // Frames beyond the default 2 KiB mbuf go as chains of 8 KiB segments, as a guest
        // with scatter-gather would send them; the mbuf size must come before --txpkts.
        let mut pkt = Vec::new();
        if size > 2048 {
            pkt.push(format!("--mbuf-size={}", SEGMENT + HEADROOM));
            let segs: Vec<String> = (0..size.div_ceil(SEGMENT))
                .map(|i| (size - i * SEGMENT).min(SEGMENT).to_string())
                .collect();
            pkt.push(format!("--txpkts={}", segs.join(",")));
        } else {
            pkt.push(format!("--txpkts={size}"));
        }
        let one = |core: usize, side: &str, vdev: String, mode: &str| -> Vec<String> {
            let mut v = vec![
                self.testpmd.display().to_string(),
                "--lcores".into(),
                format!("0@{core},1@{core}"),
                "--no-pci".into(),
                "--no-huge".into(),
                "-m".into(),
                "1024".into(),
                format!("--file-prefix={prefix}-{side}"),
                "--vdev".into(),
                vdev,
                "--".into(),
                format!("--forward-mode={mode}"),
                "--auto-start".into(),
                "--stats-period".into(),
                "1".into(),
                "--nb-cores=1".into(),
                "--total-num-mbufs=32768".into(),
            ];
            v.extend(pkt.iter().cloned());
            v
        };
        [
            one(
                cores.1,
                "vh",
                format!("net_vhost0,iface={},queues=1", sock.display()),
                host_mode,
            ),
            one(
                cores.0,
                "vu",
                format!("net_virtio_user0,path={},queues=1", sock.display()),
                guest_mode,
            ),
        ]
    }

    /// Runs one direction and size for `periods` one-second periods after the first period
    /// that moved packets (the warm-up), with the guest side on `cores.0` and the host side
    /// on `cores.1`. `scratch` is a directory for the socket. Returns the measured periods'
    /// rates and the two commands.
    pub fn run(
        &self,
        dir: Dir,
        size: usize,
        periods: usize,
        cores: (usize, usize),
        scratch: &Path,
    ) -> Result<(Vec<f64>, [String; 2]), PeerError> {
        let prefix = format!("netstage-{}", std::process::id());
        let sock = scratch.join(format!("{prefix}.sock"));
        let _ = std::fs::remove_file(&sock);
        let cmds = self.commands(dir, size, cores, &sock, &prefix);
        let shown = [cmds[0].join(" "), cmds[1].join(" ")];
        let mut run = Run {
            children: Vec::new(),
            log: mpsc::channel(),
            seen: VecDeque::new(),
        };
        let result = (|| {
            // The host side listens on the socket; the guest side connects once it is there.
            let receiver_is_host = dir != Dir::Rx;
            run.spawn(&cmds[0], "vhost", receiver_is_host)?;
            let t = Instant::now();
            while !sock.exists() {
                if t.elapsed() > Duration::from_secs(30) {
                    return Err(run.failed("did not create the vhost-user socket in 30 s"));
                }
                if let Some(st) = run.exited() {
                    return Err(run.failed(&format!("(vhost) exited early ({st})")));
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            run.spawn(&cmds[1], "virtio-user", !receiver_is_host)?;
            run.collect(periods)
        })();
        run.stop();
        let _ = std::fs::remove_file(&sock);
        for side in ["vh", "vu"] {
            let _ = std::fs::remove_dir_all(
                Path::new("/var/run/dpdk").join(format!("{prefix}-{side}")),
            );
        }
        result.map(|rates| (rates, shown))
    }
}

/// A line a process printed, and whether that process is the receiver.
type Line = (bool, String);

/// One run's processes and what they print.
struct Run {
    children: Vec<Child>,
    log: (mpsc::Sender<Line>, mpsc::Receiver<Line>),
    /// The last lines printed, for error messages.
    seen: VecDeque<String>,
}

impl Run {
    fn spawn(&mut self, argv: &[String], what: &str, receiver: bool) -> Result<(), PeerError> {
        let mut child = Command::new(&argv[0])
            .args(&argv[1..])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|source| PeerError::Spawn {
                what: format!("dpdk-testpmd ({what})"),
                source,
            })?;
        let out: Vec<Box<dyn Read + Send>> = [
            child
                .stdout
                .take()
                .map(|o| Box::new(o) as Box<dyn Read + Send>),
            child
                .stderr
                .take()
                .map(|e| Box::new(e) as Box<dyn Read + Send>),
        ]
        .into_iter()
        .flatten()
        .collect();
        for r in out {
            let tx = self.log.0.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(r).lines().map_while(Result::ok) {
                    if tx.send((receiver, line)).is_err() {
                        break;
                    }
                }
            });
        }
        self.children.push(child);
        Ok(())
    }

    /// The exit status of a process that has already exited.
    fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.children
            .iter_mut()
            .find_map(|c| c.try_wait().ok().flatten())
    }

    /// Reads the receiver's rates until `periods` of them follow the first one that moved
    /// packets; gives up after 30 s or when a process exits.
    fn collect(&mut self, periods: usize) -> Result<Vec<f64>, PeerError> {
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut parser = RatesParser::new(periods);
        while Instant::now() < deadline {
            match self.log.1.recv_timeout(Duration::from_millis(100)) {
                Ok((receiver, line)) => {
                    if receiver {
                        if let Some(rates) = parser.line(&line) {
                            return Ok(rates);
                        }
                    }
                    self.keep(line);
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    if let Some(st) = self.exited() {
                        return Err(self.failed(&format!("exited early ({st})")));
                    }
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
            }
        }
        Err(self.failed("moved no packets within 30 s"))
    }

    /// Keeps the last 20 lines printed.
    fn keep(&mut self, line: String) {
        if self.seen.len() == 20 {
            self.seen.pop_front();
        }
        self.seen.push_back(line);
    }

    /// An error with the last lines both processes printed.
    fn failed(&mut self, what: &str) -> PeerError {
        std::thread::sleep(Duration::from_millis(200));
        while let Ok((_, l)) = self.log.1.try_recv() {
            self.keep(l);
        }
        PeerError::Failed {
            what: what.into(),
            tail: self.seen.iter().cloned().collect::<Vec<_>>().join("\n"),
        }
    }

    /// Stops both processes (SIGINT, as a user would; SIGKILL after 5 s).
    fn stop(&mut self) {
        for c in &self.children {
            // Not waited for yet, so the pid is still the child's.
            let _ = crate::sys::signal(c.id(), libc::SIGINT);
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        for c in &mut self.children {
            while matches!(c.try_wait(), Ok(None)) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(10));
            }
            if matches!(c.try_wait(), Ok(None)) {
                let _ = c.kill();
            }
            let _ = c.wait();
        }
    }
}

/// Picks the receiver's measured rates out of testpmd's periodic statistics: the `Rx-pps`
/// lines after the first non-zero one (a partial period while traffic started).
#[derive(Debug)]
pub struct RatesParser {
    want: usize,
    started: bool,
    rates: Vec<f64>,
}

impl RatesParser {
    /// A parser that completes after `want` measured periods (at least one).
    pub fn new(want: usize) -> RatesParser {
        RatesParser {
            want: want.max(1),
            started: false,
            rates: Vec::new(),
        }
    }

    /// Feeds one line of output; returns the rates when the `want`th period is measured
    /// (once: later lines are ignored).
    pub fn line(&mut self, line: &str) -> Option<Vec<f64>> {
        if self.rates.len() >= self.want {
            return None;
        }
        let rest = line.trim_start().strip_prefix("Rx-pps:")?;
        let pps: f64 = rest.split_whitespace().next()?.parse().ok()?;
        if !self.started {
            self.started = pps > 0.0;
            return None;
        }
        self.rates.push(pps);
        (self.rates.len() >= self.want).then(|| self.rates.clone())
    }
}
