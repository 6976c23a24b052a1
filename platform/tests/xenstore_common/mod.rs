//! What the XenStore tests share: a daemon in a temporary directory, guests with their own
//! home directory, and a raw wire-protocol client for hostile and exact cases.

#![allow(dead_code, unreachable_pub)]

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use netstage_platform::sim::xenstored::wire::{message, Header, MsgType, HEADER_LEN};
use netstage_platform::sim::xenstored::{Quotas, Xenstored, XenstoredConfig};
use netstage_platform::xenstore::{XenStore, XsClient, NO_TX};

/// A daemon in a temporary directory, with the default quotas.
pub fn daemon() -> (tempfile::TempDir, Xenstored) {
    let dir = tempfile::tempdir().unwrap();
    let xs = Xenstored::start(XenstoredConfig::in_dir(dir.path())).unwrap();
    (dir, xs)
}

/// A daemon in a temporary directory holding guests to `quotas`.
pub fn daemon_with(quotas: Quotas) -> (tempfile::TempDir, Xenstored) {
    let dir = tempfile::tempdir().unwrap();
    let xs = Xenstored::start_with_quotas(XenstoredConfig::in_dir(dir.path()), quotas).unwrap();
    (dir, xs)
}

/// Introduces guest `dom` and gives it `/local/domain/<dom>` (owned by it, readable by dom0),
/// as a toolstack does. Returns the guest's socket.
pub fn guest(d: &Xenstored, dom: u16) -> PathBuf {
    let sock = d.introduce(dom).unwrap();
    let c = XsClient::connect(d.socket()).unwrap();
    let home = format!("/local/domain/{dom}");
    c.write(NO_TX, &home, b"").unwrap();
    c.set_perms(NO_TX, &home, &[&format!("n{dom}"), "r0"])
        .unwrap();
    sock
}

/// The `XS_ERROR` reply with `name`.
pub fn err(name: &str) -> (u32, Vec<u8>) {
    (MsgType::Error as u32, format!("{name}\0").into_bytes())
}

/// A raw client: exact messages in, exact messages out.
pub struct Raw(pub UnixStream);

impl Raw {
    /// Connects to `p` with a 5 s read timeout.
    pub fn connect(p: &Path) -> Raw {
        let s = UnixStream::connect(p).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        Raw(s)
    }

    /// Sends one message (request id 77).
    pub fn send(&mut self, ty: u32, tx: u32, payload: &[u8]) {
        self.0.write_all(&message(ty, 77, tx, payload)).unwrap();
    }

    /// Receives one message: its type and payload; `None` if the connection ended.
    pub fn recv(&mut self) -> Option<(u32, Vec<u8>)> {
        let mut h = [0u8; HEADER_LEN];
        self.0.read_exact(&mut h).ok()?;
        let h = Header::decode(&h);
        let mut p = vec![0u8; h.len as usize];
        self.0.read_exact(&mut p).ok()?;
        Some((h.ty, p))
    }

    /// A request outside transactions and its reply.
    pub fn call(&mut self, ty: MsgType, payload: &[u8]) -> (u32, Vec<u8>) {
        self.call_tx(ty, 0, payload)
    }

    /// A request in transaction `tx` and its reply.
    pub fn call_tx(&mut self, ty: MsgType, tx: u32, payload: &[u8]) -> (u32, Vec<u8>) {
        self.send(ty as u32, tx, payload);
        self.recv().expect("reply")
    }

    /// `XS_WRITE` of `value` at `path`; the reply's type.
    pub fn write(&mut self, path: &str, value: &[u8]) -> (u32, Vec<u8>) {
        let mut p = format!("{path}\0").into_bytes();
        p.extend_from_slice(value);
        self.call(MsgType::Write, &p)
    }

    /// Whether the daemon closed the connection: what it had sent is read and discarded,
    /// then the stream ends or fails (not merely times out).
    pub fn closed(&mut self) -> bool {
        let mut b = vec![0u8; 1 << 16];
        loop {
            match self.0.read(&mut b) {
                Ok(0) => return true,
                Ok(_) => continue,
                Err(e) => {
                    return !matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    )
                }
            }
        }
    }
}
