//! Micro-benchmarks of the `ring` crate: request/response ring round trips (one thread, and
//! producer/consumer on two threads), flex data-ring throughput, and the netif TX protocol's
//! floor with a data ring (requests, staged bytes and responses between two threads, nothing
//! else: what the harness's datapath costs above it is the framework's).
//!
//! Run with `cargo bench -p netstage-benches --bench ring`. Nothing here is asserted: the
//! figures go into issue notes, and the harness measures the designs end to end.

#![forbid(unsafe_code)]

use std::hint::black_box;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use netstage_ring::mock::flex_pair;
use netstage_ring::netif::{NetifTxRequest, NetifTxResponse, TxRing};
use netstage_ring::sring::{BackRing, FrontRing};
use netstage_ring::SharedMem;

fn req(id: u16) -> NetifTxRequest {
    NetifTxRequest {
        gref: 8,
        offset: 0,
        flags: 0,
        id,
        size: 64,
    }
}

/// One thread plays both ends: put, push, take, respond, push, take; per request.
fn ring_single_thread(c: &mut Criterion) {
    let mut g = c.benchmark_group("sring/single-thread");
    for batch in [1u32, 32] {
        g.throughput(Throughput::Elements(u64::from(batch)));
        g.bench_with_input(BenchmarkId::new("push+pop", batch), &batch, |b, &batch| {
            let mem = SharedMem::new_zeroed(4096);
            let mut f = FrontRing::<TxRing>::init(mem.clone()).unwrap();
            let mut k = BackRing::<TxRing>::attach(mem).unwrap();
            b.iter(|| {
                for i in 0..batch {
                    f.put_request(&req(i as u16)).unwrap();
                }
                black_box(f.push_requests_and_check_notify().unwrap());
                k.refresh_requests().unwrap();
                while let Some(r) = k.take_request().unwrap() {
                    k.put_response(&NetifTxResponse {
                        id: r.id,
                        status: 0,
                    })
                    .unwrap();
                }
                black_box(k.push_responses_and_check_notify().unwrap());
                f.refresh_responses().unwrap();
                while let Some(r) = f.take_response().unwrap() {
                    black_box(r);
                }
            });
        });
    }
    g.finish();
}

/// Frontend on this thread, a busy-polling backend on another: requests per second.
fn ring_two_threads(c: &mut Criterion) {
    let mut g = c.benchmark_group("sring/two-threads");
    g.throughput(Throughput::Elements(1));
    g.measurement_time(Duration::from_secs(4));
    g.bench_function("request+response", |b| {
        b.iter_custom(|iters| {
            let mem = SharedMem::new_zeroed(4096);
            let mut f = FrontRing::<TxRing>::init(mem.clone()).unwrap();
            let mut k = BackRing::<TxRing>::attach(mem).unwrap();
            let server = thread::spawn(move || {
                let mut served = 0u64;
                while served < iters {
                    k.refresh_requests().unwrap();
                    while let Some(r) = k.take_request().unwrap() {
                        k.put_response(&NetifTxResponse {
                            id: r.id,
                            status: 0,
                        })
                        .unwrap();
                        served += 1;
                    }
                    k.push_responses().unwrap();
                    std::hint::spin_loop();
                }
            });
            let start = Instant::now();
            let (mut sent, mut done) = (0u64, 0u64);
            while done < iters {
                while sent < iters && !f.is_full() {
                    f.put_request(&req(sent as u16)).unwrap();
                    sent += 1;
                }
                f.push_requests().unwrap();
                done += reap(&mut f);
            }
            let t = start.elapsed();
            server.join().unwrap();
            t
        });
    });
    g.finish();
}

const SIZES: [usize; 3] = [64, 1500, 65536];
const ORDER: u32 = 6; // 128 KiB per direction: room for 64 KiB writes

/// Write then read on one thread: the copy cost alone.
fn flex_single_thread(c: &mut Criterion) {
    let mut g = c.benchmark_group("flex/single-thread");
    for size in SIZES {
        g.throughput(Throughput::Bytes(size as u64));
        g.bench_with_input(BenchmarkId::new("write+read", size), &size, |b, &size| {
            let mut pair = flex_pair(ORDER).unwrap();
            let src = vec![0x5au8; size];
            let mut dst = vec![0u8; size];
            b.iter(|| {
                let (p, _) = &mut pair.front;
                assert_eq!(p.write(&src).unwrap(), size);
                let (_, cons) = &mut pair.back;
                cons.read_exact(&mut dst).unwrap();
                cons.release().unwrap();
                black_box(&dst);
            });
        });
    }
    g.finish();
}

/// Producer on this thread, consumer on another: streaming bytes per second.
fn flex_two_threads(c: &mut Criterion) {
    let mut g = c.benchmark_group("flex/two-threads");
    g.measurement_time(Duration::from_secs(4));
    for size in SIZES {
        g.throughput(Throughput::Bytes(size as u64));
        g.bench_with_input(BenchmarkId::new("stream", size), &size, |b, &size| {
            b.iter_custom(|iters| {
                let pair = flex_pair(ORDER).unwrap();
                let (mut prod, _) = pair.front;
                let (_, mut cons) = pair.back;
                let total = iters as usize * size;
                let stop = Arc::new(AtomicBool::new(false));
                let stop2 = Arc::clone(&stop);
                let reader = thread::spawn(move || {
                    let mut buf = vec![0u8; size];
                    let mut got = 0usize;
                    while got < total && !stop2.load(Ordering::Relaxed) {
                        let n = cons.read(&mut buf).unwrap();
                        if n > 0 {
                            cons.release().unwrap();
                            got += n;
                        } else {
                            std::hint::spin_loop();
                        }
                    }
                });
                let src = vec![0xa5u8; size];
                let start = Instant::now();
                let mut sent = 0usize;
                while sent < total {
                    let want = (total - sent).min(size);
                    match prod.stage(&src[..want]).unwrap() {
                        Some(_) => {
                            prod.publish().unwrap();
                            sent += want;
                        }
                        None => std::hint::spin_loop(),
                    }
                }
                reader.join().unwrap();
                let t = start.elapsed();
                stop.store(true, Ordering::Relaxed);
                t
            });
        });
    }
    g.finish();
}

/// The netif TX protocol's floor with a data ring, nothing else: the frontend stages each
/// packet's bytes in the data ring and puts one request, a burst at a time; a busy-polling
/// backend on another thread reads each packet's bytes out, answers it and releases the
/// ring. No grants, no checks, no queue API: what the datapath costs above this is the
/// framework's. Packets per second.
fn netif_data_ring_two_threads(c: &mut Criterion) {
    let mut g = c.benchmark_group("netif+data-ring/two-threads");
    g.measurement_time(Duration::from_secs(4));
    for size in [64usize, 1500] {
        g.throughput(Throughput::Elements(1));
        g.bench_with_input(BenchmarkId::new("tx", size), &size, |b, &size| {
            b.iter_custom(|iters| netif_floor(iters, size));
        });
    }
    g.finish();
}

/// One run of [`netif_data_ring_two_threads`]: `iters` packets of `size` bytes.
fn netif_floor(iters: u64, size: usize) -> Duration {
    const BURST: u64 = 32;
    let mem = SharedMem::new_zeroed(4096);
    let mut f = FrontRing::<TxRing>::init(mem.clone()).unwrap();
    let mut k = BackRing::<TxRing>::attach(mem).unwrap();
    let pair = flex_pair(8).unwrap();
    let (mut prod, _) = pair.front;
    let (_, mut cons) = pair.back;
    let server = thread::spawn(move || {
        let mut buf = vec![0u8; size];
        let mut served = 0u64;
        while served < iters {
            k.refresh_requests().unwrap();
            let mut took = false;
            while let Some(r) = k.take_request().unwrap() {
                cons.read_exact(&mut buf[..usize::from(r.size)]).unwrap();
                black_box(&buf);
                k.put_response(&NetifTxResponse {
                    id: r.id,
                    status: 0,
                })
                .unwrap();
                served += 1;
                took = true;
            }
            if took {
                cons.release().unwrap();
                k.push_responses().unwrap();
            } else {
                std::hint::spin_loop();
            }
        }
    });
    let pkt = vec![0x5au8; size];
    let start = Instant::now();
    let (mut sent, mut done) = (0u64, 0u64);
    while done < iters {
        let mut n = 0;
        while n < BURST && sent < iters && !f.is_full() {
            if prod.stage(&pkt).unwrap().is_none() {
                break;
            }
            let mut r = req(sent as u16);
            r.size = size as u16;
            f.put_request(&r).unwrap();
            sent += 1;
            n += 1;
        }
        if n > 0 {
            prod.publish().unwrap();
            f.push_requests().unwrap();
        }
        done += reap(&mut f);
    }
    let t = start.elapsed();
    server.join().unwrap();
    t
}

/// Takes the responses the backend published; returns how many.
fn reap(f: &mut FrontRing<TxRing>) -> u64 {
    f.refresh_responses().unwrap();
    let mut n = 0;
    while f.take_response().unwrap().is_some() {
        n += 1;
    }
    n
}

criterion_group!(
    benches,
    ring_single_thread,
    ring_two_threads,
    flex_single_thread,
    flex_two_threads,
    netif_data_ring_two_threads
);
criterion_main!(benches);
