//! `netif-floor`: the least the wire protocol's shape costs at small packets, with no
//! framework around it. Two threads on two cores (a writer as the frontend, a reader as the
//! backend) move records of `--size` bytes through the project's own ring types, in
//! process memory:
//!
//! - `data-ring`: records through one data ring (order 8), `--burst` staged and published
//!   at a time, each read out (copied) by the reader, released once a burst: the harness's
//!   raw 64-byte burst stream, in threads.
//! - `netif`: the same, plus what netif adds: a TX request per record on a netif TX ring,
//!   published once a burst, and a response per request written by the reader into the
//!   request's ring slot (as netif answers), published once a burst and reaped by the
//!   writer, which frees the request's id.
//!
//! The two modes run alternately, `--rounds` times each for `--seconds`, and the median and
//! range of records per second are printed: the ratio says what netif's request and
//! response slots cost on this machine's placement of the two cores, and the rates bound
//! from above what a design's queues can reach (no validation, no counters, no copy policy,
//! no check of the bytes; the steps are [`experiments::floor`]'s, which the harness's raw
//! streams run between two processes). Usage: `netif-floor [--size 64] [--burst 64] [--seconds 1] [--rounds 5]`.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Parser;
use experiments::floor::{self, TxRequests};
use netstage_ring::flex::{self as flex, End};
use netstage_ring::netif::TxRing;
use netstage_ring::sring::{BackRing, FrontRing};
use netstage_ring::{SharedMem, XEN_PAGE_SIZE};

/// The data ring's order: as `ring:8`.
const ORDER: u32 = 8;

#[derive(Parser, Debug, Clone, Copy)]
#[command(
    about = "the netif protocol's own floor at small packets: a data ring alone \
                   against a data ring with netif's TX requests and responses"
)]
struct Opts {
    /// Record (packet) size in bytes, 1 to 65535.
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u16).range(1..))]
    size: u16,
    /// Records staged and published at a time (the queues' burst is 64).
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..=256))]
    burst: u32,
    /// Measured window of each run, after a tenth as long of warm-up.
    #[arg(long, default_value_t = 1.0)]
    seconds: f64,
    /// Runs of each mode, alternating.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..))]
    rounds: u32,
}

/// One direction's shared memory: the data ring and, for `netif`, a TX ring page.
struct Shared {
    intf: SharedMem,
    data: SharedMem,
    tx: Option<SharedMem>,
}

impl Shared {
    fn new(netif: bool) -> anyhow::Result<Shared> {
        let intf = SharedMem::new_zeroed(XEN_PAGE_SIZE);
        let data = SharedMem::new_zeroed(XEN_PAGE_SIZE << ORDER);
        // The grant references are never looked up between threads of one process.
        let refs: Vec<u32> = (0..1u32 << ORDER).collect();
        flex::init_intf(&intf, ORDER, &refs)?;
        let tx = netif.then(|| SharedMem::new_zeroed(XEN_PAGE_SIZE));
        Ok(Shared { intf, data, tx })
    }
}

/// The writer (frontend), on core 0: stages bursts of records (with their requests) and
/// reaps the answers, until `stop`.
fn write(s: &Shared, o: Opts, stop: &AtomicBool) -> anyhow::Result<()> {
    experiments::sys::pin_to_core(0).context("pinning the writer")?;
    let (mut prod, _) = flex::open(End::Frontend, &s.intf, &s.data, ORDER)?;
    let mut tx = match &s.tx {
        Some(m) => Some(TxRequests::new(FrontRing::<TxRing>::init(m.clone())?)),
        None => None,
    };
    let record = vec![0x3cu8; usize::from(o.size)];
    while !stop.load(Ordering::Relaxed) {
        let n = floor::stage_burst(&mut prod, tx.as_mut(), &record, o.burst)?;
        if n > 0 {
            prod.publish()?;
        }
        if let Some(t) = tx.as_mut() {
            t.publish_and_reap(n > 0)?;
        }
        if n == 0 {
            std::hint::spin_loop();
        }
    }
    Ok(())
}

/// The reader (backend), on core 1: takes the records (answering their requests), gives
/// the room back and publishes the answers once a burst; counts records in `moved`.
fn read(s: &Shared, o: Opts, stop: &AtomicBool, moved: &AtomicU64) -> anyhow::Result<()> {
    experiments::sys::pin_to_core(1).context("pinning the reader")?;
    let (_, mut cons) = flex::open(End::Backend, &s.intf, &s.data, ORDER)?;
    let mut rx = match &s.tx {
        Some(m) => Some(BackRing::<TxRing>::attach(m.clone())?),
        None => None,
    };
    let mut buf = vec![0u8; usize::from(o.size)];
    while !stop.load(Ordering::Relaxed) {
        let n = match rx.as_mut() {
            Some(rx) => floor::take_requests(rx, &mut cons, &mut buf, o.burst)?,
            None => floor::take_records(&mut cons, &mut buf, o.burst)?,
        };
        if n == 0 {
            std::hint::spin_loop();
            continue;
        }
        cons.release()?;
        if let Some(rx) = rx.as_mut() {
            rx.push_responses()?;
        }
        moved.store(
            moved.load(Ordering::Relaxed) + u64::from(n),
            Ordering::Relaxed,
        );
    }
    std::hint::black_box(&buf);
    Ok(())
}

/// One run of a mode: records per second over the window.
fn run(netif: bool, o: Opts) -> anyhow::Result<f64> {
    let shared = Arc::new(Shared::new(netif)?);
    let stop = Arc::new(AtomicBool::new(false));
    let moved = Arc::new(AtomicU64::new(0));
    let reader = {
        let (s, st, m) = (Arc::clone(&shared), Arc::clone(&stop), Arc::clone(&moved));
        thread::spawn(move || read(&s, o, &st, &m))
    };
    let writer = {
        let (s, st) = (Arc::clone(&shared), Arc::clone(&stop));
        thread::spawn(move || write(&s, o, &st))
    };
    let window = Duration::from_secs_f64(o.seconds);
    thread::sleep(window / 10);
    let (t, before) = (Instant::now(), moved.load(Ordering::Relaxed));
    thread::sleep(window);
    let (secs, after) = (t.elapsed().as_secs_f64(), moved.load(Ordering::Relaxed));
    stop.store(true, Ordering::Relaxed);
    reader
        .join()
        .map_err(|_| anyhow::anyhow!("the reader panicked"))??;
    writer
        .join()
        .map_err(|_| anyhow::anyhow!("the writer panicked"))??;
    Ok((after - before) as f64 / secs)
}

/// Median, least and most of `v` (not empty).
fn summary(v: &mut [f64]) -> (f64, f64, f64) {
    v.sort_by(f64::total_cmp);
    (v[v.len() / 2], v[0], v[v.len() - 1])
}

fn main() -> anyhow::Result<()> {
    let o = Opts::parse();
    if !(o.seconds > 0.0 && o.seconds <= 60.0) {
        anyhow::bail!("--seconds {} must be above 0 and at most 60", o.seconds);
    }
    let (mut ring, mut netif, mut ratio) = (Vec::new(), Vec::new(), Vec::new());
    for round in 1..=o.rounds {
        let r = run(false, o)?;
        let n = run(true, o)?;
        println!(
            "round {round}: data-ring {:.2} M/s, netif {:.2} M/s ({:.2}x)",
            r / 1e6,
            n / 1e6,
            n / r
        );
        ring.push(r);
        netif.push(n);
        ratio.push(n / r);
    }
    for (name, v, scale) in [
        ("data-ring (M/s)", &mut ring, 1e6),
        ("netif (M/s)", &mut netif, 1e6),
        ("netif / data-ring", &mut ratio, 1.0),
    ] {
        let (med, lo, hi) = summary(v);
        println!(
            "{name}: median {:.2} [{:.2}..{:.2}] over {} rounds, {} B records, bursts of {}",
            med / scale,
            lo / scale,
            hi / scale,
            o.rounds,
            o.size,
            o.burst
        );
    }
    Ok(())
}
