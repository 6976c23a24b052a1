//! The embedded xenstored's side of the wire protocol: any byte stream from a client of dom0
//! or of a guest goes through the daemon's framing, parsing and request handling (in
//! memory); every message it sends back is framed right and within XENSTORE_PAYLOAD_MAX.
#![no_main]

use libfuzzer_sys::fuzz_target;
use netstage_platform::sim::xenstored::wire::{Header, HEADER_LEN, PAYLOAD_MAX};
use netstage_platform::sim::xenstored::{process_stream, Quotas};

fuzz_target!(|data: &[u8]| {
    let Some((&mode, input)) = data.split_first() else {
        return;
    };
    let dom = [0, 5][usize::from(mode & 1)];
    let quotas = if mode & 2 == 0 {
        Quotas::default()
    } else {
        Quotas::unlimited()
    };
    let sent = process_stream(input, dom, quotas).expect("a socket pair");
    for m in sent {
        let h = Header::decode(m[..HEADER_LEN].try_into().expect("a header"));
        assert_eq!(h.len as usize, m.len() - HEADER_LEN);
        assert!(m.len() - HEADER_LEN <= PAYLOAD_MAX);
    }
});
