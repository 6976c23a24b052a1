//! `netif-floor`: what the wire protocol's shape alone costs at small packets, with no
//! framework around it. Two threads on two cores (a writer as the frontend, a reader as the
//! backend) move records of `--size` bytes through the project's own ring types, in
//! process memory:
//!
//! - `data-ring`: records through one data ring (order 8), `--burst` staged and published
//!   at a time, each read out (copied) by the reader, released once a burst: the harness's
//!   raw 64-byte stream, in threads.
//! - `netif`: the same, plus what netif adds: a TX request per record on a netif TX ring,
//!   published once a burst, and a response per request written by the reader into the
//!   request's ring slot (as netif answers), published once a burst and reaped by the
//!   writer, which frees the request's id.
//!
//! The two modes run alternately, `--rounds` times each for `--seconds`, and the median and
//! range of records per second are printed: the ratio says what netif's request and
//! response slots cost on this machine's placement of the two cores, and the rates are a
//! floor no design's queue reaches (no validation, no counters, no copy policy, no check of
//! the bytes). Usage: `netif-floor [--size 64] [--burst 64] [--seconds 1] [--rounds 5]`.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use clap::Parser;
use netstage_ring::flex::{self, End, FlexConsumer, FlexProducer};
use netstage_ring::netif::{NetifTxRequest, NetifTxResponse, TxRing, NETIF_RSP_OKAY};
use netstage_ring::sring::{BackRing, FrontRing};
use netstage_ring::{SharedMem, XEN_PAGE_SIZE};

type Res<T> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

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
    fn new(netif: bool) -> Res<Shared> {
        let intf = SharedMem::new_zeroed(XEN_PAGE_SIZE);
        let data = SharedMem::new_zeroed(XEN_PAGE_SIZE << ORDER);
        // The grant references are never looked up between threads of one process.
        let refs: Vec<u32> = (0..1u32 << ORDER).collect();
        flex::init_intf(&intf, ORDER, &refs)?;
        let tx = netif.then(|| SharedMem::new_zeroed(XEN_PAGE_SIZE));
        Ok(Shared { intf, data, tx })
    }
}

/// Pins the calling thread to `core`.
fn pin(core: usize) -> Res<()> {
    // SAFETY: `set` is a zeroed CPU set on this stack; CPU_SET writes inside it (`core` is
    // below the set's size, checked first), and sched_setaffinity only reads it.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        if core >= 8 * std::mem::size_of::<libc::cpu_set_t>() {
            return Err(format!("core {core} is beyond a CPU set").into());
        }
        libc::CPU_SET(core, &mut set);
        if libc::sched_setaffinity(0, std::mem::size_of_val(&set), &set) != 0 {
            return Err(format!(
                "cannot pin to core {core}: {}",
                std::io::Error::last_os_error()
            )
            .into());
        }
    }
    Ok(())
}

/// The writer (frontend): stages records and, with a TX ring, a request for each; reaps
/// the responses and frees their ids. Runs until `stop`.
fn write(s: &Shared, o: Opts, stop: &AtomicBool) -> Res<()> {
    pin(0)?;
    let (mut prod, _) = flex::open(End::Frontend, &s.intf, &s.data, ORDER)?;
    let mut tx = match &s.tx {
        Some(m) => Some(FrontRing::<TxRing>::init(m.clone())?),
        None => None,
    };
    let record = vec![0x3cu8; usize::from(o.size)];
    let mut free_ids: Vec<u16> = (0..256).collect();
    while !stop.load(Ordering::Relaxed) {
        let n = stage_burst(&mut prod, tx.as_mut(), &mut free_ids, &record, o)?;
        if n > 0 {
            prod.publish()?;
        }
        if let Some(tx) = tx.as_mut() {
            if n > 0 {
                tx.push_requests()?;
            }
            tx.refresh_responses()?;
            while let Some(r) = tx.take_response()? {
                free_ids.push(r.id);
            }
        }
        if n == 0 {
            std::hint::spin_loop();
        }
    }
    Ok(())
}

/// Stages up to a burst of records (and their requests); how many.
fn stage_burst(
    prod: &mut FlexProducer,
    mut tx: Option<&mut FrontRing<TxRing>>,
    free_ids: &mut Vec<u16>,
    record: &[u8],
    o: Opts,
) -> Res<u32> {
    let mut n = 0;
    while n < o.burst {
        if tx
            .as_ref()
            .is_some_and(|t| t.free_requests() == 0 || free_ids.is_empty())
        {
            break;
        }
        if prod.stage(record)?.is_none() {
            break;
        }
        if let Some(t) = tx.as_mut() {
            let id = free_ids.pop().ok_or("no free id")?;
            t.put_request(&NetifTxRequest {
                gref: 0,
                offset: 0,
                flags: 0,
                id,
                size: o.size,
            })?;
        }
        n += 1;
    }
    Ok(n)
}

/// The reader (backend): takes the records (and requests), answers each request in its
/// slot, releases the ring once a burst; counts records in `moved` until `stop`.
fn read(s: &Shared, o: Opts, stop: &AtomicBool, moved: &AtomicU64) -> Res<()> {
    pin(1)?;
    let (_, mut cons) = flex::open(End::Backend, &s.intf, &s.data, ORDER)?;
    let mut rx = match &s.tx {
        Some(m) => Some(BackRing::<TxRing>::attach(m.clone())?),
        None => None,
    };
    let mut buf = vec![0u8; usize::from(o.size)];
    let mut sum = 0u64;
    while !stop.load(Ordering::Relaxed) {
        let n = match rx.as_mut() {
            Some(rx) => take_requests(rx, &mut cons, &mut buf, o.burst)?,
            None => take_records(&mut cons, &mut buf, o.burst)?,
        };
        if n == 0 {
            std::hint::spin_loop();
            continue;
        }
        sum = sum.wrapping_add(u64::from(buf[0]));
        cons.release()?;
        if let Some(rx) = rx.as_mut() {
            rx.push_responses()?;
        }
        moved.store(moved.load(Ordering::Relaxed) + n, Ordering::Relaxed);
    }
    std::hint::black_box(sum);
    Ok(())
}

/// Up to `burst` records read out of the data ring alone.
fn take_records(cons: &mut FlexConsumer, buf: &mut [u8], burst: u32) -> Res<u64> {
    let mut n = 0;
    while n < u64::from(burst) && cons.read(buf)? > 0 {
        n += 1;
    }
    Ok(n)
}

/// Up to `burst` requests taken, each record read out and the request answered.
fn take_requests(
    rx: &mut BackRing<TxRing>,
    cons: &mut FlexConsumer,
    buf: &mut [u8],
    burst: u32,
) -> Res<u64> {
    rx.refresh_requests()?;
    let mut n = 0;
    while n < u64::from(burst) {
        let Some(req) = rx.take_request()? else { break };
        let len = usize::from(req.size).min(buf.len());
        cons.read_exact(&mut buf[..len])?;
        rx.put_response(&NetifTxResponse {
            id: req.id,
            status: NETIF_RSP_OKAY,
        })?;
        n += 1;
    }
    Ok(n)
}

/// One run of a mode: records per second over the window.
fn run(netif: bool, o: Opts) -> Res<f64> {
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
    reader.join().map_err(|_| "the reader panicked")??;
    writer.join().map_err(|_| "the writer panicked")??;
    Ok((after - before) as f64 / secs)
}

/// Median, least and most of `v` (not empty).
fn summary(v: &mut [f64]) -> (f64, f64, f64) {
    v.sort_by(f64::total_cmp);
    (v[v.len() / 2], v[0], v[v.len() - 1])
}

fn main() -> Res<()> {
    let o = Opts::parse();
    if !(o.seconds > 0.0 && o.seconds <= 60.0) {
        return Err(format!("--seconds {} must be above 0 and at most 60", o.seconds).into());
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
