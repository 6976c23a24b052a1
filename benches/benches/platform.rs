//! Micro-benchmarks of the emulated platform in its default `kernel` cost mode: grant copy
//! against a plain memcpy of the same bytes, grant map + unmap, and event-channel round
//! trips, blocking and busy-polling.
//!
//! Run with `cargo bench -p netstage-benches --bench platform`. Nothing here is asserted.

#![forbid(unsafe_code)]

use std::hint::black_box;
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use netstage_platform::sim::{CostMode, DomainConfig, SimDomain, SimWorld};
use netstage_platform::{
    EventChannels, EventPort, ForeignRef, GrantCopyBatch, GrantExport, GrantImport,
};

const SIZES: [usize; 4] = [64, 256, 1500, 4096];

fn domains(cost: CostMode, spin: Duration) -> (SimWorld, SimDomain, SimDomain) {
    let w = SimWorld::create_temp().unwrap();
    let cfg = DomainConfig {
        cost,
        spin_before_block: spin,
        ..DomainConfig::default()
    };
    let f = w.create_domain(1, cfg.clone()).unwrap();
    let b = w.create_domain(0, cfg).unwrap();
    (w, f, b)
}

fn grant_copy(c: &mut Criterion) {
    let (_w, front, back) = domains(CostMode::Kernel, Duration::ZERO);
    let pages = front.share(0, 64, false).unwrap();
    let mut g = c.benchmark_group("grant-copy");
    for size in SIZES {
        for batch in [1usize, 64] {
            g.throughput(Throughput::Elements(batch as u64));
            let mut bufs = vec![vec![0u8; size]; batch];
            g.bench_with_input(
                BenchmarkId::new(format!("kernel/batch{batch}"), size),
                &size,
                |b, _| {
                    b.iter(|| {
                        let mut cb = GrantCopyBatch::new();
                        for (i, buf) in bufs.iter_mut().enumerate() {
                            cb.from_foreign(
                                ForeignRef {
                                    dom: 1,
                                    gref: pages.grefs[i],
                                    offset: 0,
                                },
                                buf,
                            );
                        }
                        back.copy(&mut cb).unwrap();
                        black_box(cb.all_okay());
                    })
                },
            );
            // The same bytes by plain memcpy from a mapping held permanently.
            let mapped = back.map(1, &pages.grefs[..batch], false).unwrap();
            g.bench_with_input(
                BenchmarkId::new(format!("memcpy/batch{batch}"), size),
                &size,
                |b, &size| {
                    b.iter(|| {
                        for (i, buf) in bufs.iter_mut().enumerate() {
                            mapped.read_at(i * 4096, &mut buf[..size]).unwrap();
                        }
                        black_box(&bufs);
                    })
                },
            );
        }
    }
    g.finish();
}

fn grant_map(c: &mut Criterion) {
    let (_w, front, back) = domains(CostMode::Kernel, Duration::ZERO);
    let pages = front.share(0, 1, true).unwrap();
    let mut g = c.benchmark_group("grant-map");
    g.throughput(Throughput::Elements(1));
    g.bench_function("kernel/map+touch+unmap", |b| {
        b.iter(|| {
            let m = back.map(1, &pages.grefs, true).unwrap();
            m.write_at(0, &[1]).unwrap();
            drop(m);
        })
    });
    g.finish();
}

/// Round trips between two threads acting as two domains.
fn event_round_trip(c: &mut Criterion) {
    let mut g = c.benchmark_group("evtchn-round-trip");
    g.measurement_time(Duration::from_secs(4));
    for (name, spin) in [
        ("blocking", Duration::ZERO),
        ("busy-poll", Duration::from_secs(1)),
    ] {
        g.bench_function(name, |b| {
            b.iter_custom(|iters| {
                let (_w, front, back) = domains(CostMode::Kernel, spin);
                let fp = front.alloc_unbound(0).unwrap();
                let bp = Arc::new(back.bind_interdomain(1, fp.port()).unwrap());
                let bp2 = Arc::clone(&bp);
                let echo = thread::spawn(move || {
                    for _ in 0..iters {
                        while !bp2.wait(Some(Duration::from_secs(5))).unwrap() {}
                        bp2.notify().unwrap();
                    }
                });
                let start = Instant::now();
                for _ in 0..iters {
                    fp.notify().unwrap();
                    while !fp.wait(Some(Duration::from_secs(5))).unwrap() {}
                }
                let t = start.elapsed();
                echo.join().unwrap();
                t
            })
        });
    }
    g.finish();
}

criterion_group!(benches, grant_copy, grant_map, event_round_trip);
criterion_main!(benches);
