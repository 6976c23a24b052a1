//! Property tests of both ends of the XenStore wire protocol, on the inputs the fuzz
//! targets `xenstored_wire` and `xs_client_reader` explore, so that every test run covers
//! them: seeded random streams of well-formed, malformed and oversized messages, with
//! payloads made of path-like pieces (a small xorshift generator: the platform crate has no
//! property-testing dependency).

use netstage_platform::sim::xenstored::wire::{message, Header, MsgType, HEADER_LEN, PAYLOAD_MAX};
use netstage_platform::sim::xenstored::{process_stream, Quotas};
use netstage_platform::xenstore::{read_incoming, reply_payload, Incoming};

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

const PIECES: &[&str] = &[
    "/",
    "a",
    "b",
    "/local/domain/5/",
    "/local/domain/6/",
    "device/vif/0",
    "state",
    "@",
    "@introduceDomain",
    "@releaseDomain",
    "T",
    "F",
    "n5",
    "r0",
    "b6",
    "w5",
    "1",
    "0",
    "-",
    "_",
    "//",
    " ",
    "\u{e9}",
    "..",
    "4096",
];

/// A payload of path-like pieces and NULs, sometimes long.
fn payload(rng: &mut Rng) -> Vec<u8> {
    let mut p = Vec::new();
    let target = match rng.below(10) {
        0 => 3000 + rng.below(1096) as usize,
        _ => rng.below(80) as usize,
    };
    while p.len() < target {
        match rng.below(6) {
            0 => p.push(0),
            1 => p.extend((0..rng.below(300)).map(|_| b'a' + (rng.below(26) as u8))),
            _ => p.extend_from_slice(PIECES[rng.below(PIECES.len() as u64) as usize].as_bytes()),
        }
    }
    p.truncate(PAYLOAD_MAX);
    p
}

/// A stream of messages as a hostile or buggy peer might send them.
fn stream(rng: &mut Rng) -> Vec<u8> {
    let mut s = Vec::new();
    for _ in 0..1 + rng.below(24) {
        match rng.below(20) {
            0 => s.extend((0..rng.below(40)).map(|_| rng.next() as u8)),
            1 => {
                let h = Header {
                    ty: rng.below(24) as u32,
                    req_id: rng.next() as u32,
                    tx_id: 0,
                    len: PAYLOAD_MAX as u32 + 1 + rng.below(1 << 20) as u32,
                };
                s.extend_from_slice(&h.encode());
            }
            _ => {
                let ty = match rng.below(12) {
                    0 => rng.next() as u32,
                    _ => rng.below(24) as u32,
                };
                let tx = if rng.below(4) == 0 {
                    rng.below(5) as u32
                } else {
                    0
                };
                s.extend(message(ty, rng.next() as u32, tx, &payload(rng)));
            }
        }
    }
    s
}

/// Splits what the daemon sent into headers and payloads, checking the framing.
fn frames(sent: &[Vec<u8>]) -> Vec<(Header, &[u8])> {
    sent.iter()
        .map(|m| {
            let h = Header::decode(m[..HEADER_LEN].try_into().unwrap());
            assert_eq!(h.len as usize, m.len() - HEADER_LEN);
            (h, &m[HEADER_LEN..])
        })
        .collect()
}

/// The daemon's parser and request handling: never a panic; every message it sends is
/// framed right, within XENSTORE_PAYLOAD_MAX, and a reply of the request's type, an error
/// or a watch event; the client's reader reads all of it back unchanged.
#[test]
fn the_daemon_answers_any_stream_within_the_protocol() {
    let mut rng = Rng(0x5eed_1234_abcd_0001);
    for case in 0..3000 {
        let input = stream(&mut rng);
        let dom = [0, 5][case % 2];
        let quotas = if case % 3 == 0 {
            Quotas::default()
        } else {
            Quotas::unlimited()
        };
        let sent = process_stream(&input, dom, quotas).unwrap();
        let mut wire = Vec::new();
        for (h, body) in frames(&sent) {
            assert!(
                body.len() <= PAYLOAD_MAX,
                "case {case}: {} bytes",
                body.len()
            );
            assert!(h.ty < 24, "case {case}: type {}", h.ty);
            wire.extend(message(h.ty, h.req_id, h.tx_id, body));
        }
        let mut r = &wire[..];
        let mut n = 0;
        while let Some(m) = read_incoming(&mut r).unwrap() {
            if let Incoming::Reply { ty, body, .. } = m {
                if ty == MsgType::Error as u32 {
                    let e = reply_payload(MsgType::Read, ty, body, "read", "").unwrap_err();
                    assert!(e.errno().is_some(), "case {case}: {e}");
                }
            }
            n += 1;
        }
        assert_eq!(n, sent.len(), "case {case}");
    }
}

/// The client's reader on any stream: never a panic, bodies within the limit, and a
/// protocol error exactly when a header announced more than the limit.
#[test]
fn the_client_reader_accepts_or_rejects_any_stream() {
    let mut rng = Rng(0x0dd_ba11_cafe_f00d);
    for case in 0..3000 {
        let input = stream(&mut rng);
        let mut r = &input[..];
        loop {
            match read_incoming(&mut r) {
                Ok(None) => break,
                Ok(Some(Incoming::Reply { ty, body, .. })) => {
                    assert!(body.len() <= PAYLOAD_MAX);
                    let _ = reply_payload(MsgType::Directory, ty, body, "directory", "/x");
                }
                Ok(Some(Incoming::Event { path, token })) => {
                    assert!(!path.is_empty() && !token.is_empty() && path.len() < PAYLOAD_MAX);
                }
                Err(e) => {
                    assert!(e.to_string().contains("exceeds"), "case {case}: {e}");
                    break;
                }
            }
        }
    }
}
