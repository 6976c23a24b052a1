//! XenStore access: the [`XenStore`] trait front- and backends use, and [`XsClient`], a
//! blocking client of the XenStore wire protocol over a Unix socket (the embedded
//! xenstored, or a system xenstored's `/run/xenstored/socket`) or over Linux's
//! `/dev/xen/xenbus` device (how a guest reaches XenStore).
//!
//! One connection serves many threads: requests carry distinct `req_id`s, a reader thread
//! routes each reply to its caller and each watch event to the [`Watch`] that registered its
//! token.
//!
//! Why not the `xenstore-rs` crate: its blocking client (0.8) finds the daemon only through
//! the process-wide `XENSTORED_PATH` (so one process cannot talk to two sockets, as a test
//! acting as two domains must), is not `Sync`, and has neither transactions, watches, `mkdir`
//! nor permissions, all of which the XenBus handshake needs; its watches need a tokio
//! runtime. The tests show it interoperating with the embedded daemon all the same.

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, Sender, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use crate::sim::xenstored::wire::{message, read_frame, Errno, Frame, MsgType, PAYLOAD_MAX};
use crate::DomId;

/// A transaction id; [`NO_TX`] outside transactions.
pub type TxId = u32;
/// Operations outside any transaction.
pub const NO_TX: TxId = 0;

/// A XenStore operation that failed.
#[derive(Debug, thiserror::Error)]
pub enum XsError {
    /// The daemon answered `XS_ERROR`.
    #[error("xenstore {op} {path}: {errno}")]
    Errno {
        /// The operation.
        op: &'static str,
        /// Its path (or argument).
        path: String,
        /// The error name the daemon sent.
        errno: Errno,
    },
    /// The connection failed or closed.
    #[error("xenstore connection to {socket}: {source}")]
    Io {
        /// The socket.
        socket: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// The daemon sent something that is not the protocol.
    #[error("xenstore protocol violation: {0}")]
    Protocol(String),
    /// The daemon did not answer within the client's reply timeout
    /// ([`XsClient::set_reply_timeout`]); a reply that comes later is ignored.
    #[error("xenstore {op} {path}: no reply within {waited:?} (the daemon is stopped or stuck)")]
    Timeout {
        /// The operation.
        op: &'static str,
        /// Its path (or argument).
        path: String,
        /// How long the client waited.
        waited: Duration,
    },
}

impl XsError {
    /// The XenStore error name, if the daemon sent one.
    pub fn errno(&self) -> Option<Errno> {
        match self {
            XsError::Errno { errno, .. } => Some(*errno),
            _ => None,
        }
    }
}

/// Result of XenStore operations.
pub type XsResult<T> = Result<T, XsError>;

/// XenStore access as front- and backend code uses it.
pub trait XenStore: Send + Sync {
    /// Reads a node's value.
    fn read(&self, tx: TxId, path: &str) -> XsResult<Vec<u8>>;
    /// Writes a node, creating it and its parents as needed.
    fn write(&self, tx: TxId, path: &str, value: &[u8]) -> XsResult<()>;
    /// Creates a node if absent.
    fn mkdir(&self, tx: TxId, path: &str) -> XsResult<()>;
    /// Removes a node and its subtree.
    fn rm(&self, tx: TxId, path: &str) -> XsResult<()>;
    /// Lists a node's children.
    fn directory(&self, tx: TxId, path: &str) -> XsResult<Vec<String>>;
    /// Reads a node's permissions (`n0`, `r5`, ...; the first is the owner).
    fn get_perms(&self, tx: TxId, path: &str) -> XsResult<Vec<String>>;
    /// Sets a node's permissions.
    fn set_perms(&self, tx: TxId, path: &str, perms: &[&str]) -> XsResult<()>;
    /// Starts a transaction.
    fn transaction_start(&self) -> XsResult<TxId>;
    /// Ends a transaction: `Ok(true)` if committed (or aborted as asked), `Ok(false)` if the
    /// commit conflicted (`EAGAIN`) and the whole transaction must be redone.
    fn transaction_end(&self, tx: TxId, commit: bool) -> XsResult<bool>;
    /// Registers a watch; events arrive on the returned [`Watch`] (the first one at once).
    fn watch(&self, path: &str, token: &str) -> XsResult<Watch>;
    /// `/local/domain/<dom>`.
    fn get_domain_path(&self, dom: DomId) -> XsResult<String>;

    /// Runs `f` in a transaction, redoing it while the commit conflicts (at most `tries`
    /// times).
    fn transaction<T>(&self, tries: u32, mut f: impl FnMut(TxId) -> XsResult<T>) -> XsResult<T>
    where
        Self: Sized,
    {
        for _ in 0..tries.max(1) {
            let tx = self.transaction_start()?;
            match f(tx) {
                Ok(v) => {
                    if self.transaction_end(tx, true)? {
                        return Ok(v);
                    }
                }
                Err(e) => {
                    let _ = self.transaction_end(tx, false);
                    return Err(e);
                }
            }
        }
        Err(XsError::Errno {
            op: "transaction",
            path: String::new(),
            errno: Errno::EAGAIN,
        })
    }
}

type Pending = HashMap<u32, Sender<(u32, Vec<u8>)>>;
type Watchers = HashMap<String, WatchSink>;

/// Events one [`Watch`] may have waiting; more are dropped, counted, and reported by the
/// next [`Watch::next`] as the watched path itself ("look again at everything").
pub const WATCH_QUEUE: usize = 1024;

/// How long a call waits for the daemon's reply by default: a daemon stopped (not dead)
/// cannot hang its clients for longer. C xenstored answers in microseconds; a transaction
/// commit of a large store in milliseconds.
pub const REPLY_TIMEOUT: Duration = Duration::from_secs(30);

/// The reader thread's end of one watch's bounded queue.
struct WatchSink {
    tx: SyncSender<String>,
    lost: Arc<WatchLoss>,
}

/// Events dropped because the watch's queue was full.
#[derive(Default)]
struct WatchLoss {
    total: AtomicU64,
    unreported: std::sync::atomic::AtomicBool,
}

struct Inner {
    socket: PathBuf,
    writer: Mutex<Box<dyn Write + Send>>,
    /// Ends the reader thread (which holds its own handle on the connection).
    hang_up: Box<dyn Fn() + Send + Sync>,
    pending: Mutex<Pending>,
    watchers: Mutex<Watchers>,
    next_req: AtomicU32,
    /// How long a call waits for its reply, in milliseconds.
    reply_timeout_ms: AtomicU64,
    /// Set (under the `pending` lock) when the reader has stopped.
    closed: std::sync::atomic::AtomicBool,
    /// Why the reader stopped, when the daemon broke the protocol (rather than hung up).
    broken: Mutex<Option<String>>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        (self.hang_up)();
    }
}

/// The xenbus device read with a timeout, so that the reader thread notices a hang-up (a
/// blocking read on the device cannot be interrupted).
struct DeviceReader {
    file: std::fs::File,
    closed: Arc<std::sync::atomic::AtomicBool>,
}

impl Read for DeviceReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        use std::os::fd::AsFd;
        loop {
            if self.closed.load(Ordering::Acquire) {
                return Ok(0);
            }
            let ready = crate::sys::poll_readable(
                &[self.file.as_fd()],
                Some(std::time::Duration::from_millis(100)),
            )?;
            if ready {
                return self.file.read(buf);
            }
        }
    }
}

/// A connection to a XenStore daemon. Cheap to clone; threads may share it.
#[derive(Clone)]
pub struct XsClient {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for XsClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("XsClient")
            .field("socket", &self.inner.socket)
            .finish()
    }
}

/// Events of one watch: the paths that changed. Unregistered when dropped.
///
/// At most [`WATCH_QUEUE`] events wait; when a watcher falls that far behind, further
/// events are dropped and counted ([`Watch::lost`]), and the next call of [`Watch::next`]
/// or [`Watch::try_next`] returns the watched path itself. XenStore allows spurious events,
/// and a XenBus driver answers any event by reading the state it cares about again, so this
/// coalesces what was lost into one "look again" without the queue growing with a flood.
pub struct Watch {
    client: XsClient,
    path: String,
    token: String,
    rx: Receiver<String>,
    lost: Arc<WatchLoss>,
}

impl std::fmt::Debug for Watch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Watch")
            .field("path", &self.path)
            .field("token", &self.token)
            .finish()
    }
}

impl Watch {
    /// The next event's path, waiting at most `timeout`. `Ok(None)` on timeout; an error if
    /// the connection is gone.
    pub fn next(&self, timeout: Duration) -> XsResult<Option<String>> {
        if let Some(p) = self.lost_event() {
            return Ok(Some(p));
        }
        match self.rx.recv_timeout(timeout) {
            Ok(p) => Ok(Some(p)),
            Err(mpsc::RecvTimeoutError::Timeout) => Ok(None),
            Err(mpsc::RecvTimeoutError::Disconnected) => Err(self.client.gone()),
        }
    }

    /// An event if one is queued, without waiting.
    pub fn try_next(&self) -> Option<String> {
        self.lost_event().or_else(|| self.rx.try_recv().ok())
    }

    /// Events dropped so far because this watch's queue was full.
    pub fn lost(&self) -> u64 {
        self.lost.total.load(Ordering::Acquire)
    }

    /// The watched path, once after events were dropped.
    fn lost_event(&self) -> Option<String> {
        self.lost
            .unreported
            .swap(false, Ordering::AcqRel)
            .then(|| self.path.clone())
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        if let Ok(mut w) = self.client.inner.watchers.lock() {
            w.remove(&self.token);
        }
        let payload = format!("{}\0{}\0", self.path, self.token);
        let _ = self.client.call(
            MsgType::Unwatch,
            NO_TX,
            payload.as_bytes(),
            "unwatch",
            &self.path,
        );
    }
}

static TOKENS: AtomicU64 = AtomicU64::new(1);

/// A token unique within this process, for [`XenStore::watch`].
pub fn unique_token(prefix: &str) -> String {
    format!(
        "{prefix}-{}-{}",
        std::process::id(),
        TOKENS.fetch_add(1, Ordering::Relaxed)
    )
}

impl XsClient {
    /// Connects to the daemon's socket.
    pub fn connect(socket: &Path) -> XsResult<XsClient> {
        let io_err = |source| XsError::Io {
            socket: socket.to_path_buf(),
            source,
        };
        let stream = UnixStream::connect(socket).map_err(io_err)?;
        let reader = stream.try_clone().map_err(io_err)?;
        let hang = stream.try_clone().map_err(io_err)?;
        XsClient::start(
            socket,
            Box::new(stream),
            reader,
            Box::new(move || {
                let _ = hang.shutdown(std::net::Shutdown::Both);
            }),
        )
    }

    /// Connects through Linux's xenbus device (`/dev/xen/xenbus` in a guest), which carries
    /// the same messages to the system's xenstored.
    pub fn connect_device(device: &Path) -> XsResult<XsClient> {
        let io_err = |source| XsError::Io {
            socket: device.to_path_buf(),
            source,
        };
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(device)
            .map_err(io_err)?;
        let closed = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let reader = DeviceReader {
            file: file.try_clone().map_err(io_err)?,
            closed: Arc::clone(&closed),
        };
        XsClient::start(
            device,
            Box::new(file),
            reader,
            Box::new(move || closed.store(true, Ordering::Release)),
        )
    }

    fn start(
        path: &Path,
        writer: Box<dyn Write + Send>,
        reader: impl Read + Send + 'static,
        hang_up: Box<dyn Fn() + Send + Sync>,
    ) -> XsResult<XsClient> {
        let inner = Arc::new(Inner {
            socket: path.to_path_buf(),
            writer: Mutex::new(writer),
            hang_up,
            pending: Mutex::new(HashMap::new()),
            watchers: Mutex::new(HashMap::new()),
            next_req: AtomicU32::new(1),
            reply_timeout_ms: AtomicU64::new(REPLY_TIMEOUT.as_millis() as u64),
            closed: std::sync::atomic::AtomicBool::new(false),
            broken: Mutex::new(None),
        });
        let weak = Arc::downgrade(&inner);
        thread::Builder::new()
            .name("xenstore-reader".into())
            .spawn(move || read_loop(reader, weak))
            .map_err(|source| XsError::Io {
                socket: path.to_path_buf(),
                source,
            })?;
        Ok(XsClient { inner })
    }

    /// Connects to the socket named by `XENSTORED_PATH`, else `XENSTORED_RUNDIR/socket`,
    /// else `/run/xenstored/socket`, and where none of these exists but `/dev/xen/xenbus`
    /// does (a guest), through that device (libxenstore's order).
    pub fn connect_default() -> XsResult<XsClient> {
        let named = std::env::var_os("XENSTORED_PATH")
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("XENSTORED_RUNDIR").map(|d| Path::new(&d).join("socket")));
        let p = named
            .clone()
            .unwrap_or_else(|| PathBuf::from("/run/xenstored/socket"));
        let device = Path::new("/dev/xen/xenbus");
        if named.is_none() && !p.exists() && device.exists() {
            return XsClient::connect_device(device);
        }
        XsClient::connect(&p)
    }

    /// The socket this client talks to.
    pub fn socket(&self) -> &Path {
        &self.inner.socket
    }

    fn gone(&self) -> XsError {
        if let Some(why) = self.inner.broken.lock().ok().and_then(|b| b.clone()) {
            return XsError::Protocol(why);
        }
        XsError::Io {
            socket: self.inner.socket.clone(),
            source: io::Error::new(io::ErrorKind::ConnectionAborted, "connection closed"),
        }
    }

    fn call(
        &self,
        ty: MsgType,
        tx: TxId,
        payload: &[u8],
        op: &'static str,
        path: &str,
    ) -> XsResult<Vec<u8>> {
        if payload.len() > PAYLOAD_MAX {
            return Err(XsError::Errno {
                op,
                path: path.to_string(),
                errno: Errno::E2BIG,
            });
        }
        let req_id = self.inner.next_req.fetch_add(1, Ordering::Relaxed);
        let (stx, srx) = mpsc::channel();
        {
            let mut p = self.inner.pending.lock().map_err(|_| self.gone())?;
            if self.inner.closed.load(Ordering::Acquire) {
                return Err(self.gone());
            }
            p.insert(req_id, stx);
        }
        {
            let mut w = self.inner.writer.lock().map_err(|_| self.gone())?;
            w.write_all(&message(ty as u32, req_id, tx, payload))
                .map_err(|source| XsError::Io {
                    socket: self.inner.socket.clone(),
                    source,
                })?;
        }
        let waited = self.reply_timeout();
        match srx.recv_timeout(waited) {
            Ok((rty, body)) => reply_payload(ty, rty, body, op, path),
            Err(mpsc::RecvTimeoutError::Timeout) => {
                if let Ok(mut p) = self.inner.pending.lock() {
                    p.remove(&req_id);
                }
                Err(XsError::Timeout {
                    op,
                    path: path.to_string(),
                    waited,
                })
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => Err(self.gone()),
        }
    }

    /// How long each call waits for the daemon's reply before it fails with
    /// [`XsError::Timeout`] ([`REPLY_TIMEOUT`] unless set).
    pub fn reply_timeout(&self) -> Duration {
        Duration::from_millis(self.inner.reply_timeout_ms.load(Ordering::Relaxed))
    }

    /// Sets [`XsClient::reply_timeout`] for every clone of this connection (at least a
    /// millisecond).
    pub fn set_reply_timeout(&self, timeout: Duration) {
        let ms = u64::try_from(timeout.as_millis())
            .unwrap_or(u64::MAX)
            .max(1);
        self.inner.reply_timeout_ms.store(ms, Ordering::Relaxed);
    }

    fn call_path(&self, ty: MsgType, tx: TxId, path: &str, op: &'static str) -> XsResult<Vec<u8>> {
        self.call(ty, tx, format!("{path}\0").as_bytes(), op, path)
    }

    /// Introduces guest domain `dom` (dom0 only): the embedded daemon opens its socket.
    pub fn introduce(&self, dom: DomId) -> XsResult<()> {
        self.call(
            MsgType::Introduce,
            NO_TX,
            format!("{dom}\x000\x000\0").as_bytes(),
            "introduce",
            "",
        )?;
        Ok(())
    }

    /// Releases guest domain `dom` (dom0 only).
    pub fn release(&self, dom: DomId) -> XsResult<()> {
        self.call(
            MsgType::Release,
            NO_TX,
            format!("{dom}\0").as_bytes(),
            "release",
            "",
        )?;
        Ok(())
    }
}

fn strings(body: &[u8]) -> Vec<String> {
    body.split(|b| *b == 0)
        .filter(|s| !s.is_empty())
        .map(|s| String::from_utf8_lossy(s).into_owned())
        .collect()
}

impl XenStore for XsClient {
    fn read(&self, tx: TxId, path: &str) -> XsResult<Vec<u8>> {
        self.call_path(MsgType::Read, tx, path, "read")
    }

    fn write(&self, tx: TxId, path: &str, value: &[u8]) -> XsResult<()> {
        let mut p = Vec::with_capacity(path.len() + 1 + value.len());
        p.extend_from_slice(path.as_bytes());
        p.push(0);
        p.extend_from_slice(value);
        self.call(MsgType::Write, tx, &p, "write", path)?;
        Ok(())
    }

    fn mkdir(&self, tx: TxId, path: &str) -> XsResult<()> {
        self.call_path(MsgType::Mkdir, tx, path, "mkdir")?;
        Ok(())
    }

    fn rm(&self, tx: TxId, path: &str) -> XsResult<()> {
        self.call_path(MsgType::Rm, tx, path, "rm")?;
        Ok(())
    }

    fn directory(&self, tx: TxId, path: &str) -> XsResult<Vec<String>> {
        Ok(strings(&self.call_path(
            MsgType::Directory,
            tx,
            path,
            "directory",
        )?))
    }

    fn get_perms(&self, tx: TxId, path: &str) -> XsResult<Vec<String>> {
        Ok(strings(&self.call_path(
            MsgType::GetPerms,
            tx,
            path,
            "get-perms",
        )?))
    }

    fn set_perms(&self, tx: TxId, path: &str, perms: &[&str]) -> XsResult<()> {
        let mut p = format!("{path}\0");
        for x in perms {
            p.push_str(x);
            p.push('\0');
        }
        self.call(MsgType::SetPerms, tx, p.as_bytes(), "set-perms", path)?;
        Ok(())
    }

    fn transaction_start(&self) -> XsResult<TxId> {
        let body = self.call(
            MsgType::TransactionStart,
            NO_TX,
            b"\0",
            "transaction-start",
            "",
        )?;
        let s = String::from_utf8_lossy(body.strip_suffix(&[0]).unwrap_or(&body)).to_string();
        s.parse()
            .map_err(|_| XsError::Protocol(format!("bad transaction id {s:?}")))
    }

    fn transaction_end(&self, tx: TxId, commit: bool) -> XsResult<bool> {
        let arg: &[u8] = if commit { b"T\0" } else { b"F\0" };
        match self.call(MsgType::TransactionEnd, tx, arg, "transaction-end", "") {
            Ok(_) => Ok(true),
            Err(XsError::Errno {
                errno: Errno::EAGAIN,
                ..
            }) => Ok(false),
            Err(e) => Err(e),
        }
    }

    fn watch(&self, path: &str, token: &str) -> XsResult<Watch> {
        let (stx, srx) = mpsc::sync_channel(WATCH_QUEUE);
        let lost = Arc::new(WatchLoss::default());
        self.inner.watchers.lock().map_err(|_| self.gone())?.insert(
            token.to_string(),
            WatchSink {
                tx: stx,
                lost: Arc::clone(&lost),
            },
        );
        let payload = format!("{path}\0{token}\0");
        if let Err(e) = self.call(MsgType::Watch, NO_TX, payload.as_bytes(), "watch", path) {
            if let Ok(mut w) = self.inner.watchers.lock() {
                w.remove(token);
            }
            return Err(e);
        }
        Ok(Watch {
            client: self.clone(),
            path: path.to_string(),
            token: token.to_string(),
            rx: srx,
            lost,
        })
    }

    fn get_domain_path(&self, dom: DomId) -> XsResult<String> {
        let body = self.call(
            MsgType::GetDomainPath,
            NO_TX,
            format!("{dom}\0").as_bytes(),
            "get-domain-path",
            "",
        )?;
        Ok(String::from_utf8_lossy(body.strip_suffix(&[0]).unwrap_or(&body)).into_owned())
    }
}

/// One message from the daemon, as [`XsClient`]'s reader classifies it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Incoming {
    /// The answer (or `XS_ERROR`) to the request with this `req_id`.
    Reply {
        /// The request it answers.
        req_id: u32,
        /// Its type: the request's, or `XS_ERROR`.
        ty: u32,
        /// Its payload (at most `XENSTORE_PAYLOAD_MAX` bytes).
        body: Vec<u8>,
    },
    /// A watch event.
    Event {
        /// The path that changed (as the watch was given: relative or absolute).
        path: String,
        /// The watch's token.
        token: String,
    },
}

/// Reads the next message from the daemon: `Ok(None)` once the stream ends (or ends inside
/// a message), a [`XsError::Protocol`] for a payload over `XENSTORE_PAYLOAD_MAX` (after
/// which the stream cannot be trusted to be in step). Watch events without a path and a
/// token are skipped.
pub fn read_incoming(r: &mut impl Read) -> XsResult<Option<Incoming>> {
    let mut payload = Box::new([0u8; PAYLOAD_MAX]);
    loop {
        let h = match read_frame(r, &mut payload) {
            Frame::Message(h) => h,
            Frame::End => return Ok(None),
            Frame::Oversized(h) => {
                return Err(XsError::Protocol(format!(
                    "a message of {} payload bytes (type {}, request {}) exceeds \
                     XENSTORE_PAYLOAD_MAX ({PAYLOAD_MAX}): the daemon is broken",
                    h.len, h.ty, h.req_id
                )))
            }
        };
        let body = &payload[..h.len as usize];
        if h.ty != MsgType::WatchEvent as u32 {
            return Ok(Some(Incoming::Reply {
                req_id: h.req_id,
                ty: h.ty,
                body: body.to_vec(),
            }));
        }
        let mut parts = strings(body).into_iter();
        if let (Some(path), Some(token)) = (parts.next(), parts.next()) {
            return Ok(Some(Incoming::Event { path, token }));
        }
    }
}

/// Interprets the reply of type `rty` with payload `body` to a request of type `ty`: the
/// payload, or the error the daemon named (a typed error, never a closed connection).
pub fn reply_payload(
    ty: MsgType,
    rty: u32,
    body: Vec<u8>,
    op: &'static str,
    path: &str,
) -> XsResult<Vec<u8>> {
    if rty == MsgType::Error as u32 {
        let name = String::from_utf8_lossy(body.strip_suffix(&[0]).unwrap_or(&body)).to_string();
        let errno = Errno::from_name(&name)
            .ok_or_else(|| XsError::Protocol(format!("unknown error name {name:?}")))?;
        return Err(XsError::Errno {
            op,
            path: path.to_string(),
            errno,
        });
    }
    if rty != ty as u32 {
        return Err(XsError::Protocol(format!(
            "reply of type {rty} to a request of type {}",
            ty as u32
        )));
    }
    Ok(body)
}

/// Routes replies to callers and events to watches until the connection closes.
fn read_loop(mut s: impl Read, inner: std::sync::Weak<Inner>) {
    loop {
        let msg = match read_incoming(&mut s) {
            Ok(Some(m)) => m,
            Ok(None) => break,
            Err(e) => {
                if let Some(inner) = inner.upgrade() {
                    if let Ok(mut b) = inner.broken.lock() {
                        *b = Some(e.to_string());
                    }
                    (inner.hang_up)();
                }
                break;
            }
        };
        let Some(inner) = inner.upgrade() else { break };
        match msg {
            Incoming::Event { path, token } => {
                if let Ok(w) = inner.watchers.lock() {
                    if let Some(sink) = w.get(&token) {
                        // Never block the reader on a slow watcher: count and drop.
                        if let Err(TrySendError::Full(_)) = sink.tx.try_send(path) {
                            sink.lost.total.fetch_add(1, Ordering::AcqRel);
                            sink.lost.unreported.store(true, Ordering::Release);
                        }
                    }
                }
            }
            Incoming::Reply { req_id, ty, body } => {
                if let Ok(mut p) = inner.pending.lock() {
                    if let Some(tx) = p.remove(&req_id) {
                        let _ = tx.send((ty, body));
                    }
                }
            }
        }
    }
    // Wake every caller and watcher: the connection is gone.
    if let Some(inner) = inner.upgrade() {
        if let Ok(mut p) = inner.pending.lock() {
            inner.closed.store(true, Ordering::Release);
            p.clear();
        }
        if let Ok(mut w) = inner.watchers.lock() {
            w.clear();
        }
    }
}
