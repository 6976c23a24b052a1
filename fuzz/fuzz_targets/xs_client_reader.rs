//! XsClient's reader against a hostile or broken daemon: any byte stream gives replies and
//! watch events within XENSTORE_PAYLOAD_MAX, the end of the stream, or a protocol error for
//! an oversized message; never a panic, never an allocation the header alone decides.
#![no_main]

use libfuzzer_sys::fuzz_target;
use netstage_platform::sim::xenstored::wire::{MsgType, PAYLOAD_MAX};
use netstage_platform::xenstore::{read_incoming, reply_payload, Incoming};

fuzz_target!(|data: &[u8]| {
    let mut r = data;
    while let Ok(Some(m)) = read_incoming(&mut r) {
        match m {
            Incoming::Reply { ty, body, .. } => {
                assert!(body.len() <= PAYLOAD_MAX);
                for want in [MsgType::Read, MsgType::Directory, MsgType::TransactionStart] {
                    let _ = reply_payload(want, ty, body.clone(), "fuzz", "/");
                }
            }
            Incoming::Event { path, token } => {
                assert!(!path.is_empty() && !token.is_empty());
            }
        }
    }
});
