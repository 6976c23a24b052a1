//! The toolstack's `rate` key (`<bytes>,<usecs>` in the vif's backend directory) limits
//! what the guest transmits, as Linux netback's credit does: packets past the credit wait
//! for the next interval, none is lost; a value that is not a rate refuses the vif.

mod peers;

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use netstage_fallback::Packet;
use netstage_netback_user::{BackendConfig, HandshakeFailure};
use netstage_netfront_user::{Frontend, FrontendConfig, FrontendHandler};
use netstage_platform::xenstore::{XenStore, NO_TX};
use peers::{shared, until, Received, ServedVif};

const FE: u16 = 12;
const WAIT: Duration = Duration::from_secs(30);
const SIZE: usize = 1500;

/// A backend serving vif 0 of `FE` with `rate` written into its directory first.
fn served(rate: &str) -> ServedVif {
    ServedVif::start(FE, BackendConfig::default(), |site, paths| {
        site.xs0
            .write(NO_TX, &format!("{}/rate", paths.backend), rate.as_bytes())
            .unwrap();
    })
}

/// The guest's frontend on `s`'s vif, and what it receives.
fn connect(s: &ServedVif) -> (Frontend<netstage_platform::sim::SimDomain>, Arc<Received>) {
    let got = shared::<Received>();
    let f = Frontend::connect(
        s.site.domain(FE),
        s.site.guest_xs(FE),
        0,
        FrontendConfig::default(),
        Arc::clone(&got) as Arc<dyn FrontendHandler>,
    )
    .unwrap();
    (f, got)
}

/// 1 MB per 100 ms is 10 MB a second: 15 MB of 1500-byte packets take about 1.4 s (the
/// first interval's megabyte goes at once), where without the limit they take a few tens
/// of milliseconds. Over the first second the backend takes no more than 11 MB (the first
/// interval and ten more) and, however slow the machine, at least a third of that; every
/// packet arrives and is echoed, none dropped.
#[test]
fn a_vif_s_rate_holds_its_transmissions_to_the_credit_and_loses_none() {
    let s = served("1000000,100000");
    let (f, got) = connect(&s);
    let n: u64 = 10_000;
    let start = Instant::now();
    let sender = thread::spawn(move || {
        for _ in 0..n {
            f.send(0, Packet::new(bytes::Bytes::from(vec![7u8; SIZE])))
                .unwrap();
        }
        f
    });
    thread::sleep(Duration::from_secs(1).saturating_sub(start.elapsed()));
    let in_one_second = s.backend.metrics().tx_bytes;
    assert!(
        in_one_second <= 11_000_000 + 2 * SIZE as u64,
        "{in_one_second} bytes passed in one second at 10 MB/s"
    );
    let f = sender.join().unwrap();
    until("every packet", WAIT, || {
        s.echo.taken.load(Ordering::Relaxed) == n && got.count() == n
    });
    let elapsed = start.elapsed();
    let m = s.backend.metrics();
    eprintln!(
        "{in_one_second} bytes in the first second; all {} in {elapsed:?}; {} credit waits",
        m.tx_bytes, m.tx_credit_waits
    );
    assert!(
        in_one_second >= 11_000_000 / 3,
        "only {in_one_second} bytes passed in one second at 10 MB/s"
    );
    assert!(
        elapsed >= Duration::from_millis(1_200),
        "15 MB at 10 MB/s took only {elapsed:?}"
    );
    assert_eq!(m.tx_bytes, n * SIZE as u64);
    assert_eq!((m.tx_dropped, m.tx_grant_errors), (0, 0));
    assert!(m.tx_credit_waits > 0, "{m:?}");
    assert_eq!(f.metrics().tx_unsent, 0);
    f.close().unwrap();
}

/// A frontend that closes while its packets wait for credit: the backend counts the one it
/// held (`tx_credit_drops`), the frontend every packet it put on the ring that was never
/// answered (`tx_unanswered`), and the two ends' counts add up.
#[test]
fn packets_waiting_for_credit_at_close_are_counted_at_both_ends() {
    // 1000 bytes per 10 s: after the first interval's credit, a packet waits 10 s.
    let s = served("1000,10000000");
    let (f, _) = connect(&s);
    for _ in 0..5 {
        f.send(0, Packet::new(bytes::Bytes::from(vec![7u8; SIZE])))
            .unwrap();
    }
    until("a packet held for credit", WAIT, || {
        s.backend.metrics().tx_credit_waits == 1
    });
    let fm = f.close_counted().unwrap();
    let bm = s.backend.metrics();
    assert_eq!(bm.tx_credit_drops, 1, "{bm:?}");
    assert_eq!(fm.tx_packets, 5, "{fm:?}");
    assert!(fm.tx_unanswered >= 1, "{fm:?}");
    assert_eq!(
        fm.tx_packets,
        bm.tx_packets + bm.tx_dropped + bm.tx_grant_errors + fm.tx_unanswered,
        "{fm:?} {bm:?}"
    );
}

/// A `rate` that is not `<bytes>,<usecs>` refuses the vif with a reason naming the key; a
/// rate of zero bytes too (it would stop all traffic).
#[test]
fn a_bad_rate_refuses_the_vif_with_a_reason() {
    for bad in ["10MB/s", "0,100000", "100,0", "1000000"] {
        let s = served(bad);
        let cfg = FrontendConfig {
            handshake_timeout: Duration::from_secs(5),
            ..FrontendConfig::default()
        };
        let r = Frontend::connect(
            s.site.domain(FE),
            s.site.guest_xs(FE),
            0,
            cfg,
            shared::<Received>() as Arc<dyn FrontendHandler>,
        );
        assert!(r.is_err(), "{bad}: connected");
        until("the refusal", WAIT, || {
            !s.echo.failures.lock().unwrap().is_empty()
        });
        let failures = s.echo.failures.lock().unwrap();
        match &failures[0] {
            HandshakeFailure::Refused(why) => {
                assert!(why.contains("rate"), "{bad}: {why}")
            }
            other => panic!("{bad}: {other:?}"),
        }
    }
}
