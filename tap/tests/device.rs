//! A real TAP device (needs root and /dev/net/tun; fails, naming what is missing, without
//! them): created by name, gone when dropped, and a packet written while the interface is
//! down is counted as dropped, not lost.

use std::path::Path;

use netstage_fallback::Packet;
use netstage_tap::{DropReason, TapPort};

fn interface_exists(name: &str) -> bool {
    Path::new("/sys/class/net").join(name).exists()
}

#[test]
fn a_tap_is_created_by_name_counts_what_it_cannot_write_and_goes_away() {
    assert!(
        Path::new("/dev/net/tun").exists(),
        "this test needs /dev/net/tun (modprobe tun)"
    );
    let name = format!("nstap{}", std::process::id() % 100_000);
    let port = TapPort::open(&name, true).unwrap_or_else(|e| {
        panic!("opening TAP {name} failed (this test needs root, CAP_NET_ADMIN): {e}")
    });
    assert_eq!(port.tap().name(), name);
    assert!(interface_exists(&name));
    // Down: the kernel refuses the frame (EIO); counted under its reason.
    let mut frame = vec![0u8; 60];
    frame[12] = 0x08;
    assert!(!port.write_packet(&Packet::new(frame)));
    // A blank checksum on a frame that is not TCP or UDP: its offsets cannot be found.
    let mut arp = vec![0u8; 60];
    arp[12..14].copy_from_slice(&[0x08, 0x06]);
    let blank = Packet {
        data: arp.into(),
        gso: None,
        csum_blank: true,
    };
    assert!(!port.write_packet(&blank));
    let c = port.counters();
    assert_eq!(c.packets_to_write, 2);
    assert_eq!(c.drop_count(DropReason::WriteFailed), 1, "{c:?}");
    assert_eq!(c.drop_count(DropReason::WriteNotTcpUdp), 1, "{c:?}");
    assert!(c.balanced());
    drop(port);
    assert!(!interface_exists(&name));
}

#[test]
fn a_bad_name_is_refused_before_any_system_call() {
    let e = TapPort::open("name_of_17_bytes_", false).unwrap_err();
    assert_eq!(e.kind(), std::io::ErrorKind::InvalidInput);
    assert!(e.to_string().contains("at most 15"), "{e}");
}
