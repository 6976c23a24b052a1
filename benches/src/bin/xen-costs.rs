//! `xen-costs`: what `benches/benches/platform.rs` measures on the emulation (grant copy of
//! 64 B / 1500 B / 4 KiB in batches of 1 and 64, grant map + unmap of one page, an
//! event-channel round trip), measured on real Xen through `/dev/xen/*`, with the yardsticks
//! beside them in the same run: a plain memcpy of the same bytes, a `getppid` system call,
//! a null hypercall (`xen_version` through `/dev/xen/privcmd`) and an event-channel notify.
//! Under an emulator (QEMU TCG) the absolute times mean little; the ratios between them are
//! the evidence (`docs/xen.md`, "Costs measured inside the VM").
//!
//! Usage: `xen-costs [--xen | --sim COST] [--round-ms MS] [--rounds N]`.
//! - `--xen` (in dom0, or any domain with the three Xen drivers and XenStore): the domain
//!   grants pages to itself with gntalloc and maps and copies its own grants with gntdev;
//!   the event channel is an interdomain channel from the domain to itself.
//! - `--sim COST`: the same measurements on the emulated platform (`kernel`, `none` or
//!   `model:...`), domain 1 granting to domain 0, as the criterion benchmark does.
//!
//! Each figure is measured in `--rounds` rounds (default 11) of about `--round-ms`
//! milliseconds each (default 80): the mean time per iteration of each round, and of those
//! the least and the median are printed. The least is what the ratios use: under an
//! emulator on a loaded host, a round in which the host took the emulator's CPU away is
//! slower for reasons that are not the operation's.

use std::fmt::Write as _;
use std::hint::black_box;
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use netstage_platform::sim::{CostMode, DomainConfig, SimWorld};
use netstage_platform::xen::XenDomain;
use netstage_platform::xenstore::{XenStore, XsClient, NO_TX};
use netstage_platform::{
    DomId, EventChannels, EventPort, ForeignRef, GrantCopyBatch, GrantExport, GrantImport,
};

const SIZES: [usize; 3] = [64, 1500, 4096];
const BATCHES: [usize; 2] = [1, 64];

type Res<T> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

struct Opts {
    round: Duration,
    rounds: usize,
}

/// Nanoseconds per call: the least and the median of the rounds' means.
#[derive(Clone, Copy)]
struct Stat {
    min: f64,
    med: f64,
}

impl Stat {
    fn of(mut rounds: Vec<f64>) -> Stat {
        rounds.sort_by(f64::total_cmp);
        Stat {
            min: rounds.first().copied().unwrap_or(f64::NAN),
            med: rounds.get(rounds.len() / 2).copied().unwrap_or(f64::NAN),
        }
    }
}

/// The mean nanoseconds per call of `f` in each round, summed up.
fn measure(o: &Opts, mut f: impl FnMut()) -> Stat {
    // Calibrate: how many calls fill a round.
    let mut n = 1u64;
    loop {
        let t = Instant::now();
        for _ in 0..n {
            f();
        }
        let e = t.elapsed();
        if e >= o.round / 4 || n >= 1 << 30 {
            let per = e.as_secs_f64() / n as f64;
            n = ((o.round.as_secs_f64() / per.max(1e-9)) as u64).max(1);
            break;
        }
        n *= 4;
    }
    Stat::of(
        (0..o.rounds)
            .map(|_| {
                let t = Instant::now();
                for _ in 0..n {
                    f();
                }
                t.elapsed().as_secs_f64() * 1e9 / n as f64
            })
            .collect(),
    )
}

/// The results, in order, by name.
#[derive(Default)]
struct Table(Vec<(String, Stat)>);

impl Table {
    fn add(&mut self, name: impl Into<String>, ns: Stat) {
        let name = name.into();
        println!("  {name:<34} {:>12.0} {:>12.0}", ns.min, ns.med);
        self.0.push((name, ns));
    }
    /// The least round's mean: what a call costs when nothing else took the CPU.
    fn get(&self, name: &str) -> f64 {
        self.0
            .iter()
            .find(|(n, _)| n == name)
            .map_or(f64::NAN, |(_, v)| v.min)
    }
}

/// The grant measurements: `export` grants pages to `to`; `import` (domain `from` is the
/// granter) copies and maps them.
fn grants(
    o: &Opts,
    t: &mut Table,
    export: &impl GrantExport,
    to: DomId,
    import: &impl GrantImport,
    from: DomId,
) -> Res<()> {
    let pages = export.share(to, 64, true)?;
    for size in SIZES {
        for batch in BATCHES {
            let mut bufs = vec![vec![0u8; size]; batch];
            let mut err = None;
            let ns = measure(o, || {
                let mut cb = GrantCopyBatch::new();
                for (i, buf) in bufs.iter_mut().enumerate() {
                    let src = ForeignRef {
                        dom: from,
                        gref: pages.grefs[i],
                        offset: 0,
                    };
                    cb.from_foreign(src, buf);
                }
                if let Err(e) = import.copy(&mut cb) {
                    err = Some(e.to_string());
                } else if !cb.all_okay() {
                    err = Some(format!("grant copy status {:?}", cb.status));
                }
                black_box(&cb);
            });
            if let Some(e) = err {
                return Err(format!("grant copy of {size} B, batch {batch}: {e}").into());
            }
            t.add(format!("grant-copy {size} B batch {batch}"), ns);
            // The same bytes by plain memcpy from a mapping held throughout.
            let mapped = import.map(from, &pages.grefs[..batch], false)?;
            let ns = measure(o, || {
                for (i, buf) in bufs.iter_mut().enumerate() {
                    let _ = mapped.read_at(i * 4096, &mut buf[..size]);
                }
                black_box(&bufs);
            });
            t.add(format!("memcpy {size} B batch {batch}"), ns);
        }
    }
    let one = &pages.grefs[..1];
    let mut err = None;
    let ns = measure(o, || match import.map(from, one, true) {
        Ok(m) => {
            let _ = m.write_at(0, &[1]);
            drop(m);
        }
        Err(e) => err = Some(e.to_string()),
    });
    if let Some(e) = err {
        return Err(format!("grant map: {e}").into());
    }
    t.add("grant map+touch+unmap 1 page", ns);
    // Map and unmap apart: each half of map, touch, unmap cycles, summed per round.
    let (mut map_ns, mut unmap_ns) = (Vec::new(), Vec::new());
    for _ in 0..o.rounds {
        let (mut map, mut unmap, mut n) = (Duration::ZERO, Duration::ZERO, 0u32);
        let end = Instant::now() + o.round;
        while Instant::now() < end || n < 3 {
            let s = Instant::now();
            let m = import.map(from, one, true)?;
            let _ = m.write_at(0, &[1]);
            let s2 = Instant::now();
            drop(m);
            map += s2 - s;
            unmap += s2.elapsed();
            n += 1;
        }
        map_ns.push(map.as_secs_f64() * 1e9 / f64::from(n));
        unmap_ns.push(unmap.as_secs_f64() * 1e9 / f64::from(n));
    }
    t.add("grant map+touch 1 page", Stat::of(map_ns));
    t.add("grant unmap 1 page", Stat::of(unmap_ns));
    Ok(())
}

/// Round trips between two threads on the two ends of one channel (`a` allocated unbound
/// for `b`'s domain, `b` bound to it), and the cost of a notify alone.
fn events<C: EventChannels>(
    o: &Opts,
    t: &mut Table,
    name: &str,
    a_dom: &C,
    a_id: DomId,
    b_dom: &C,
    b_id: DomId,
) -> Res<()>
where
    C::Port: 'static,
{
    let a = Arc::new(a_dom.alloc_unbound(b_id)?);
    let b = Arc::new(b_dom.bind_interdomain(a_id, a.port())?);
    a.prepare()?;
    b.prepare()?;
    // Round trips per round: about a round's worth, from a one-way estimate.
    let per_round = {
        let mut n = 0u64;
        let s = Instant::now();
        while s.elapsed() < o.round / 2 {
            a.notify()?;
            while !b.wait(Some(Duration::from_secs(5)))? {}
            n += 1;
        }
        n.max(5)
    };
    let iters = per_round * o.rounds as u64;
    let b2 = Arc::clone(&b);
    let echo = thread::spawn(move || -> Res<()> {
        for _ in 0..iters {
            while !b2.wait(Some(Duration::from_secs(5)))? {}
            b2.notify()?;
        }
        Ok(())
    });
    let mut rounds = Vec::new();
    for _ in 0..o.rounds {
        let s = Instant::now();
        for _ in 0..per_round {
            a.notify()?;
            while !a.wait(Some(Duration::from_secs(5)))? {}
        }
        rounds.push(s.elapsed().as_secs_f64() * 1e9 / per_round as f64);
    }
    echo.join().map_err(|_| "echo thread panicked")??;
    t.add(format!("evtchn round trip {name}"), Stat::of(rounds));
    if name == "blocking" {
        // A notify whose event is already pending: the call and the hypercall, no upcall.
        let ns = measure(o, || {
            let _ = a.notify();
        });
        t.add("evtchn notify (pending)", ns);
        while b.poll()? {}
    }
    Ok(())
}

/// Plain local work and system calls, the yardsticks.
fn yardsticks(o: &Opts, t: &mut Table) {
    let ns = measure(o, || {
        black_box(std::os::unix::process::parent_id());
    });
    t.add("getppid", ns);
    for size in SIZES {
        let src = vec![7u8; size];
        let mut dst = vec![0u8; size];
        let ns = measure(o, || {
            dst.copy_from_slice(black_box(&src));
            black_box(&dst);
        });
        t.add(format!("memcpy local {size} B"), ns);
    }
}

/// A null hypercall (`__HYPERVISOR_xen_version(XENVER_version)`) through privcmd.
mod privcmd {
    use std::os::fd::AsRawFd;

    #[repr(C)]
    struct Hypercall {
        op: u64,
        arg: [u64; 5],
    }
    /// `IOCTL_PRIVCMD_HYPERCALL`: `_IOC(_IOC_NONE, 'P', 0, sizeof(struct privcmd_hypercall))`.
    const IOCTL_PRIVCMD_HYPERCALL: libc::c_ulong = (48 << 16) | ((b'P' as libc::c_ulong) << 8);
    const HYPERVISOR_XEN_VERSION: u64 = 17;

    pub(crate) struct Privcmd(std::fs::File);

    impl Privcmd {
        pub(crate) fn open() -> std::io::Result<Privcmd> {
            std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open("/dev/xen/privcmd")
                .map(Privcmd)
        }

        /// Xen's version, `major << 16 | minor`.
        pub(crate) fn xen_version(&self) -> std::io::Result<i64> {
            let mut h = Hypercall {
                op: HYPERVISOR_XEN_VERSION,
                arg: [0; 5],
            };
            // SAFETY: the request number and layout are Linux's `privcmd_hypercall`
            // (op and five arguments, 48 bytes); XENVER_version (0) takes no buffer, so the
            // hypervisor reads and writes no memory of ours.
            let r = unsafe {
                libc::ioctl(
                    self.0.as_raw_fd(),
                    IOCTL_PRIVCMD_HYPERCALL,
                    &mut h as *mut Hypercall,
                )
            };
            if r < 0 {
                Err(std::io::Error::last_os_error())
            } else {
                Ok(i64::from(r))
            }
        }
    }
}

fn summary(t: &Table) -> String {
    let mut s = String::new();
    let base = t.get("getppid");
    let _ = writeln!(
        s,
        "per-operation figures (ns, from the least round) and ratios to getppid:"
    );
    let call1 = t.get("grant-copy 64 B batch 1");
    for size in SIZES {
        let b1 = t.get(&format!("grant-copy {size} B batch 1"));
        let b64 = t.get(&format!("grant-copy {size} B batch 64"));
        let per_op = (b64 - b1) / 63.0;
        let m64 = t.get(&format!("memcpy {size} B batch 64")) / 64.0;
        let _ = writeln!(
            s,
            "  grant copy {size:>4} B: per op in a batch of 64 {per_op:>8.0} ({:.2}x getppid, \
             {:.1}x its memcpy {m64:.0}); batch of 1 {b1:>8.0} ({:.2}x)",
            per_op / base,
            per_op / m64,
            b1 / base
        );
    }
    let per_op64 = (t.get("grant-copy 64 B batch 64") - call1) / 63.0;
    let call = call1 - per_op64;
    let _ = writeln!(
        s,
        "  grant copy call overhead (batch of 1 minus one 64 B op) {call:.0} ({:.2}x getppid)",
        call / base
    );
    for name in [
        "hypercall xen_version (privcmd)",
        "evtchn notify (pending)",
        "grant map+touch 1 page",
        "grant unmap 1 page",
        "grant map+touch+unmap 1 page",
        "evtchn round trip blocking",
        "evtchn round trip busy-poll",
    ] {
        let v = t.get(name);
        if !v.is_nan() {
            let _ = writeln!(s, "  {name:<34} {v:>8.0} ({:.2}x getppid)", v / base);
        }
    }
    let mu = t.get("grant map+touch+unmap 1 page");
    let _ = writeln!(
        s,
        "  map+unmap : grant copy op (64 B, batched) : memcpy 64 B = {:.1} : 1 : {:.3}",
        mu / per_op64,
        t.get("memcpy 64 B batch 64") / 64.0 / per_op64
    );
    s
}

fn run() -> Res<()> {
    let mut args = std::env::args().skip(1);
    let mut o = Opts {
        round: Duration::from_millis(80),
        rounds: 11,
    };
    let mut mode: Option<String> = None;
    while let Some(a) = args.next() {
        let mut val = || args.next().ok_or(format!("{a} needs a value"));
        match a.as_str() {
            "--xen" => mode = Some("xen".into()),
            "--sim" => mode = Some(format!("sim:{}", val()?)),
            "--round-ms" => o.round = Duration::from_millis(val()?.parse()?),
            "--rounds" => o.rounds = val()?.parse::<usize>()?.max(1),
            "-h" | "--help" => {
                println!("usage: xen-costs (--xen | --sim kernel|none|model:...) [--round-ms MS] [--rounds N]");
                return Ok(());
            }
            _ => return Err(format!("unknown argument {a} (try --help)").into()),
        }
    }
    let mode = mode.ok_or("give --xen or --sim COST (try --help)")?;
    let mut t = Table::default();
    println!(
        "xen-costs: {mode}; {} rounds of about {} ms each; ns per iteration, the least and \
         the median round's mean:",
        o.rounds,
        o.round.as_millis()
    );
    println!("  {:<34} {:>12} {:>12}", "", "least", "median");
    yardsticks(&o, &mut t);
    if mode == "xen" {
        let p = privcmd::Privcmd::open()
            .map_err(|e| format!("/dev/xen/privcmd: {e} (is this a Xen domain?)"))?;
        let v = p.xen_version()?;
        println!("  (Xen {}.{} answers xen_version)", v >> 16, v & 0xffff);
        let ns = measure(&o, || {
            let _ = black_box(p.xen_version());
        });
        t.add("hypercall xen_version (privcmd)", ns);
        let xs = XsClient::connect_default()?;
        let me: DomId = xs
            .read(NO_TX, "domid")
            .ok()
            .and_then(|s| String::from_utf8(s).ok())
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(0);
        let dom = XenDomain::open(me, xs)?;
        let blocking = dom.clone().with_spin(Duration::ZERO);
        grants(&o, &mut t, &dom, me, &dom, me)?;
        events(&o, &mut t, "blocking", &blocking, me, &blocking, me)?;
        let busy = dom.clone().with_spin(Duration::from_secs(1));
        events(&o, &mut t, "busy-poll", &busy, me, &busy, me)?;
    } else {
        let cost: CostMode = mode["sim:".len()..].parse()?;
        let w = SimWorld::create_temp()?;
        let cfg = |spin| DomainConfig {
            cost,
            spin_before_block: spin,
            ..DomainConfig::default()
        };
        let front = w.create_domain(1, cfg(Duration::ZERO))?;
        let back = w.create_domain(0, cfg(Duration::ZERO))?;
        grants(&o, &mut t, &front, 0, &back, 1)?;
        events(&o, &mut t, "blocking", &front, 1, &back, 0)?;
        drop((front, back));
        let w = SimWorld::create_temp()?;
        let front = w.create_domain(1, cfg(Duration::from_secs(1)))?;
        let back = w.create_domain(0, cfg(Duration::from_secs(1)))?;
        events(&o, &mut t, "busy-poll", &front, 1, &back, 0)?;
    }
    print!("{}", summary(&t));
    Ok(())
}

fn main() -> std::process::ExitCode {
    match run() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xen-costs: error: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
