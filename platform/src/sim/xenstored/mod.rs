//! An embedded xenstored speaking the real XenStore wire protocol on Unix sockets.
//!
//! Domains are told apart by socket: dom0 (the privileged toolstack and backends) connects
//! to the main socket, and each guest domain to its own socket, created when the domain is
//! introduced ([`Xenstored::introduce`], or `XS_INTRODUCE` from dom0). Point a client at a
//! socket with `XENSTORED_PATH`; Debian's `xenstore-utils` and `python3-pyxs` work as they
//! do against xenstored.
//!
//! Supported: READ, WRITE, MKDIR, RM, DIRECTORY, DIRECTORY_PART, GET_PERMS, SET_PERMS,
//! WATCH / UNWATCH with WATCH_EVENT (including the initial event), TRANSACTION_START /
//! TRANSACTION_END with conflict detection (`EAGAIN`), RESET_WATCHES, GET_DOMAIN_PATH,
//! INTRODUCE, RELEASE, IS_DOMAIN_INTRODUCED; anything else is answered `XS_ERROR` with the
//! standard error name. Node permissions are enforced as xenstored enforces them.
//!
//! Hostile clients cannot hurt the daemon or other clients: a payload over 4096 bytes or a
//! truncated message closes that connection; bad paths and unknown types get `XS_ERROR`; a
//! reply that would exceed 4096 bytes is `E2BIG`; each guest domain is held to C
//! xenstored's quotas ([`Quotas`]: nodes, watches, transactions, nodes per transaction,
//! permissions and size of a node, path length, outstanding replies) and to a number of
//! connections; every connection has its own writer thread with a bounded queue, so a
//! client that never reads is disconnected instead of stalling anyone.

mod outbox;
pub mod quota;
pub mod store;
pub mod wire;

use std::collections::{BTreeSet, HashMap, HashSet};
use std::io::{self, Read};
use std::os::fd::AsFd;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::{self, JoinHandle};
use std::time::Duration;

use outbox::Outbox;
use quota::{Counters, DEFAULT_QUEUED_BYTES, DEFAULT_TRANSACTIONS, DEFAULT_WATCHES};
pub use quota::{Quotas, XenstoredStats};
use store::{Change, Perm, Store, Tree, TxState, TxView, Want};
use wire::{
    canonical, message, read_frame, split_args, Errno, Frame, Header, MsgType, PAYLOAD_MAX,
};

use crate::DomId;

/// Watches one guest domain may hold by default ([`Quotas::watches`]).
pub const MAX_WATCHES: usize = DEFAULT_WATCHES;
/// Open transactions one guest domain may hold by default ([`Quotas::transactions`]).
pub const MAX_TRANSACTIONS: usize = DEFAULT_TRANSACTIONS;
/// Bytes queued to a connection that does not read before it is disconnected, by default
/// ([`Quotas::queued_bytes`]).
pub const MAX_QUEUED_BYTES: usize = DEFAULT_QUEUED_BYTES;

/// Where the daemon listens.
#[derive(Debug, Clone)]
pub struct XenstoredConfig {
    /// Dom0's socket (what `XENSTORED_PATH` names for the toolstack and backends).
    pub socket: PathBuf,
    /// Directory for the guest sockets, `dom<ID>.sock`.
    pub domain_dir: PathBuf,
}

impl XenstoredConfig {
    /// Dom0 socket `dir/socket`, guest sockets `dir/dom<ID>.sock`.
    pub fn in_dir(dir: &Path) -> XenstoredConfig {
        XenstoredConfig {
            socket: dir.join("socket"),
            domain_dir: dir.to_path_buf(),
        }
    }
}

struct WatchReg {
    abs: String,
    given: String,
    token: String,
}

/// An open transaction: its view of the tree, and whether it went over the
/// `transaction-nodes` quota (then it can only be aborted).
struct Tx {
    state: TxState,
    spoilt: bool,
}

struct Conn {
    dom: DomId,
    watches: Vec<WatchReg>,
    txs: HashMap<u32, Tx>,
    out: Arc<Outbox>,
}

struct State {
    store: Store,
    conns: HashMap<u64, Conn>,
    domains: BTreeSet<DomId>,
    next_tx: u32,
}

struct Shared {
    cfg: XenstoredConfig,
    quotas: Quotas,
    stats: Arc<Counters>,
    /// Thread starts to fail on purpose (tests of that path).
    #[cfg(test)]
    fail_spawns: std::sync::atomic::AtomicU32,
    /// Times an accept loop looked for a connection, and accept loops that ended (tests
    /// of their sleep).
    #[cfg(test)]
    accept_looks: AtomicU64,
    #[cfg(test)]
    accept_ends: AtomicU64,
    state: Mutex<State>,
    stop: AtomicBool,
    next_conn: AtomicU64,
    threads: Mutex<Vec<JoinHandle<()>>>,
    sockets: Mutex<HashMap<DomId, Listening>>,
}

/// A domain's socket, served by an accept loop that sleeps until a client connects.
struct Listening {
    path: PathBuf,
    /// Dropped to end the accept loop: the loop's end then reads end-of-file.
    _wake: UnixStream,
}

/// How long an accept loop sleeps at most between looks at the daemon's stop flag, should
/// a wake-up be missed. Connections and closes wake it at once.
const ACCEPT_GUARD: Duration = Duration::from_secs(1);

/// A running daemon. Stops (closing every connection and removing its sockets) on
/// [`Xenstored::shutdown`] or drop.
pub struct Xenstored {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Xenstored {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Xenstored")
            .field("socket", &self.shared.cfg.socket)
            .finish()
    }
}

impl Xenstored {
    /// Starts the daemon with the default [`Quotas`]: binds dom0's socket (replacing a
    /// stale one) and serves it.
    pub fn start(cfg: XenstoredConfig) -> io::Result<Xenstored> {
        Xenstored::start_with_quotas(cfg, Quotas::default())
    }

    /// Starts the daemon holding guest domains to `quotas`.
    pub fn start_with_quotas(cfg: XenstoredConfig, quotas: Quotas) -> io::Result<Xenstored> {
        for d in [cfg.socket.parent(), Some(cfg.domain_dir.as_path())]
            .into_iter()
            .flatten()
        {
            if !d.as_os_str().is_empty() {
                std::fs::create_dir_all(d)?;
            }
        }
        let shared = Arc::new(Shared {
            cfg: cfg.clone(),
            quotas,
            stats: Arc::default(),
            #[cfg(test)]
            fail_spawns: std::sync::atomic::AtomicU32::new(0),
            #[cfg(test)]
            accept_looks: AtomicU64::new(0),
            #[cfg(test)]
            accept_ends: AtomicU64::new(0),
            state: Mutex::new(State {
                store: Store::with_limits(quotas.tree()),
                conns: HashMap::new(),
                domains: BTreeSet::from([0]),
                next_tx: 1,
            }),
            stop: AtomicBool::new(false),
            next_conn: AtomicU64::new(1),
            threads: Mutex::new(Vec::new()),
            sockets: Mutex::new(HashMap::new()),
        });
        listen(&shared, 0, cfg.socket.clone())?;
        Ok(Xenstored { shared })
    }

    /// Dom0's socket.
    pub fn socket(&self) -> &Path {
        &self.shared.cfg.socket
    }

    /// The socket of guest domain `dom` (exists once introduced).
    pub fn domain_socket(&self, dom: DomId) -> PathBuf {
        domain_socket(&self.shared.cfg, dom)
    }

    /// Introduces guest domain `dom`: opens its socket and fires `@introduceDomain`.
    pub fn introduce(&self, dom: DomId) -> io::Result<PathBuf> {
        introduce(&self.shared, dom)
    }

    /// Releases guest domain `dom`: closes its socket and connections, removes the nodes it
    /// owns and its entries in other nodes' permissions (as C xenstored since XSA-322 and
    /// XSA-419), fires `@releaseDomain`.
    pub fn release(&self, dom: DomId) {
        release(&self.shared, dom);
    }

    /// Number of open client connections.
    pub fn connections(&self) -> usize {
        lock(&self.shared).map_or(0, |s| s.conns.len())
    }

    /// The quotas guests are held to.
    pub fn quotas(&self) -> &Quotas {
        &self.shared.quotas
    }

    /// What the daemon refused or dropped so far to stay within its bounds.
    pub fn stats(&self) -> XenstoredStats {
        self.shared.stats.snapshot()
    }

    /// Stops serving: closes all connections, joins all threads, removes the sockets.
    pub fn shutdown(self) {
        drop(self);
    }
}

impl Drop for Xenstored {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        if let Ok(s) = lock(&self.shared) {
            for c in s.conns.values() {
                c.out.close();
            }
        }
        // Dropping each socket's wake end ends its accept loop.
        if let Ok(mut socks) = self.shared.sockets.lock() {
            for (_, l) in socks.drain() {
                let _ = std::fs::remove_file(&l.path);
            }
        }
        let threads = self
            .shared
            .threads
            .lock()
            .map(|mut t| std::mem::take(&mut *t))
            .unwrap_or_default();
        for t in threads {
            let _ = t.join();
        }
    }
}

fn lock(shared: &Shared) -> io::Result<MutexGuard<'_, State>> {
    shared
        .state
        .lock()
        .map_err(|_| io::Error::other("xenstored state poisoned"))
}

fn domain_socket(cfg: &XenstoredConfig, dom: DomId) -> PathBuf {
    cfg.domain_dir.join(format!("dom{dom}.sock"))
}

/// Starts a thread the daemon joins at shutdown; an error (the OS refused a thread) is
/// returned, never a panic.
fn spawn(shared: &Arc<Shared>, f: impl FnOnce() + Send + 'static) -> io::Result<()> {
    #[cfg(test)]
    if shared
        .fail_spawns
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
        .is_ok()
    {
        return Err(io::Error::new(
            io::ErrorKind::WouldBlock,
            "thread refused (test)",
        ));
    }
    let h = thread::Builder::new().name("xenstored".into()).spawn(f)?;
    if let Ok(mut t) = shared.threads.lock() {
        t.retain(|h| !h.is_finished());
        t.push(h);
    }
    Ok(())
}

fn listen(shared: &Arc<Shared>, dom: DomId, path: PathBuf) -> io::Result<()> {
    if path.exists() {
        // A stale socket from an earlier run; refuse to steal a live one.
        if UnixStream::connect(&path).is_ok() {
            return Err(io::Error::new(
                io::ErrorKind::AddrInUse,
                format!("{} is served by a running xenstored", path.display()),
            ));
        }
        std::fs::remove_file(&path)?;
    }
    let listener = bind_whole(&path)?;
    listener.set_nonblocking(true)?;
    let (wake_rx, wake) = UnixStream::pair()?;
    wake_rx.set_nonblocking(true)?;
    if let Ok(mut s) = shared.sockets.lock() {
        s.insert(dom, Listening { path, _wake: wake });
    }
    let sh = Arc::clone(shared);
    spawn(shared, move || accept_loop(sh, dom, listener, wake_rx))
}

/// Listens at `path` such that the socket's file appears only once it accepts
/// connections: bound and listening under a temporary name first, then renamed into place
/// (a client that waits for the file never meets a refused connection).
fn bind_whole(path: &Path) -> io::Result<UnixListener> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(format!(".{}.binding", std::process::id()));
    let tmp = PathBuf::from(tmp);
    let _ = std::fs::remove_file(&tmp);
    let listener = match UnixListener::bind(&tmp) {
        Ok(l) => l,
        // The longer name does not fit a socket address: bound in place, as before.
        Err(e) if e.kind() == io::ErrorKind::InvalidInput => return UnixListener::bind(path),
        Err(e) => return Err(e),
    };
    if let Err(e) = std::fs::rename(&tmp, path) {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    Ok(listener)
}

/// Accepts domain `dom`'s connections until the daemon stops, the domain goes or its
/// [`Listening`] is dropped (`wake` then reads end-of-file). Between connections it
/// sleeps in `poll`: a loop that woke to look every few milliseconds took the CPU from
/// whatever shared its core (the backend's queue, in the harness) hundreds of times a
/// second.
fn accept_loop(shared: Arc<Shared>, dom: DomId, listener: UnixListener, wake: UnixStream) {
    loop {
        if shared.stop.load(Ordering::SeqCst) || !domain_live(&shared, dom) || woken(&wake) {
            #[cfg(test)]
            shared.accept_ends.fetch_add(1, Ordering::SeqCst);
            return;
        }
        #[cfg(test)]
        shared.accept_looks.fetch_add(1, Ordering::SeqCst);
        match listener.accept() {
            Ok((stream, _)) => {
                if let Err(e) = open_conn(&shared, dom, stream) {
                    log::warn!("cannot serve a connection of domain {dom}: {e}");
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                let fds = [listener.as_fd(), wake.as_fd()];
                if crate::sys::poll_readable(&fds, Some(ACCEPT_GUARD)).is_err() {
                    thread::sleep(Duration::from_millis(20));
                }
            }
            Err(_) => thread::sleep(Duration::from_millis(20)),
        }
    }
}

/// Whether an accept loop's wake end reads end-of-file (its [`Listening`] was dropped) or
/// fails; nothing is ever written to it.
fn woken(wake: &UnixStream) -> bool {
    let mut b = [0u8; 1];
    !matches!((&*wake).read(&mut b), Err(e) if e.kind() == io::ErrorKind::WouldBlock)
}

fn domain_live(shared: &Shared, dom: DomId) -> bool {
    dom == 0 || lock(shared).is_ok_and(|s| s.domains.contains(&dom))
}

fn open_conn(shared: &Arc<Shared>, dom: DomId, stream: UnixStream) -> io::Result<()> {
    stream.set_nonblocking(false)?;
    let id = shared.next_conn.fetch_add(1, Ordering::Relaxed);
    let q = &shared.quotas;
    let out = Arc::new(Outbox::new(
        stream.try_clone()?,
        q.queued_bytes,
        q.queued_messages,
        Arc::clone(&shared.stats),
    ));
    {
        let mut st = lock(shared)?;
        let held = st.conns.values().filter(|c| c.dom == dom).count();
        if dom != 0 && q.connections != 0 && held >= q.connections {
            // Dropping the stream closes it: the client sees the connection end.
            Counters::bump(&shared.stats.connections_refused);
            return Ok(());
        }
        st.conns.insert(
            id,
            Conn {
                dom,
                watches: Vec::new(),
                txs: HashMap::new(),
                out: Arc::clone(&out),
            },
        );
    }
    if let Err(e) = start_threads(shared, id, stream, &out) {
        if let Ok(mut st) = lock(shared) {
            st.conns.remove(&id);
        }
        Counters::bump(&shared.stats.spawn_failures);
        out.close();
        return Err(e);
    }
    Ok(())
}

/// The connection's writer and reader threads.
fn start_threads(
    shared: &Arc<Shared>,
    id: u64,
    stream: UnixStream,
    out: &Arc<Outbox>,
) -> io::Result<()> {
    let writer_stream = stream.try_clone()?;
    let o2 = Arc::clone(out);
    spawn(shared, move || o2.write_all(writer_stream))?;
    let sh = Arc::clone(shared);
    let out = Arc::clone(out);
    spawn(shared, move || {
        reader(&sh, id, stream, &out);
        out.close();
        if let Ok(mut s) = lock(&sh) {
            s.conns.remove(&id);
        }
    })
}

fn reader(shared: &Arc<Shared>, id: u64, mut stream: UnixStream, out: &Outbox) {
    let mut payload = Box::new([0u8; PAYLOAD_MAX]);
    let dom = lock(shared)
        .ok()
        .and_then(|s| s.conns.get(&id).map(|c| c.dom));
    let outstanding = match dom {
        Some(0) => 0,
        Some(_) => shared.quotas.outstanding,
        None => return,
    };
    loop {
        // The `outstanding` quota: a guest that does not read its replies is not read from.
        if !out.wait_below(outstanding) {
            return;
        }
        // Closed, truncated, or (as xenstored) an oversized message: the connection ends.
        let Frame::Message(h) = read_frame(&mut stream, &mut payload) else {
            return;
        };
        let body = &payload[..h.len as usize];
        if shared.stop.load(Ordering::SeqCst) || handle(shared, id, h, body).is_err() {
            return;
        }
    }
}

/// Serves one request: replies, fires watches, opens or closes a domain's socket. Errors
/// only if the connection is gone.
fn handle(shared: &Arc<Shared>, id: u64, h: Header, payload: &[u8]) -> io::Result<()> {
    let special = {
        let mut st = lock(shared)?;
        apply(&mut st, &shared.quotas, id, h, payload)?
    };
    match special {
        Some(("@introduceDomain", d)) => {
            let path = domain_socket(&shared.cfg, d);
            let known = shared
                .sockets
                .lock()
                .map(|s| s.contains_key(&d))
                .unwrap_or(true);
            if !known {
                listen(shared, d, path)?;
            }
        }
        Some((_, d)) => close_domain(shared, d),
        None => {}
    }
    Ok(())
}

/// Executes one request of connection `id` on the state: queues the reply (`E2BIG` for
/// one over the payload limit) and the watch events. Returns the domain introduced or
/// released, if any.
fn apply(
    st: &mut State,
    q: &Quotas,
    id: u64,
    h: Header,
    payload: &[u8],
) -> io::Result<Option<(&'static str, DomId)>> {
    let Some(conn) = st.conns.get(&id) else {
        return Err(io::Error::other("connection gone"));
    };
    let (dom, out) = (conn.dom, Arc::clone(&conn.out));
    let reply = |ty: u32, p: &[u8]| message(ty, h.req_id, h.tx_id, p);
    let mut done = None;
    {
        let result = dispatch(st, q, id, dom, &h, payload);
        match result {
            Ok(o) if o.reply.len() > PAYLOAD_MAX => {
                // As C xenstored's send_reply: an answer that does not fit the wire
                // protocol's payload limit is E2BIG, and the connection stays usable.
                out.reply(reply(
                    MsgType::Error as u32,
                    format!("{}\0", Errno::E2BIG.name()).as_bytes(),
                ));
            }
            Ok(Outcome {
                reply: body,
                changes,
                event,
                special,
            }) => {
                out.reply(reply(h.ty, &body));
                if let Some(ev) = event {
                    out.event(ev);
                }
                fire(st, &changes);
                if let Some((name, d)) = special {
                    fire_special(st, name);
                    done = Some((name, d));
                }
            }
            Err(e) => out.reply(reply(
                MsgType::Error as u32,
                format!("{}\0", e.name()).as_bytes(),
            )),
        }
    }
    Ok(done)
}

/// Runs `input`, bytes as a client of domain `dom` would send them, through the daemon's
/// framing, parsing and request handling on a fresh tree, in memory (no sockets, no
/// threads), and returns every message the daemon would send back, replies and watch
/// events in order. Stops where the daemon would close the connection. What the fuzz
/// target and the property test of the wire protocol drive.
pub fn process_stream(input: &[u8], dom: DomId, quotas: Quotas) -> io::Result<Vec<Vec<u8>>> {
    let (near, _far) = UnixStream::pair()?;
    let out = Arc::new(Outbox::new(near, 0, 0, Arc::default()));
    let mut st = State {
        store: Store::with_limits(quotas.tree()),
        conns: HashMap::new(),
        domains: BTreeSet::from([0, dom]),
        next_tx: 1,
    };
    if dom != 0 {
        let home = format!("/local/domain/{dom}");
        let _ = st.store.write(0, &home, b"");
        let owner = Perm {
            dom,
            mode: store::Mode::None,
        };
        let _ = st.store.set_perms(0, &home, vec![owner]);
    }
    st.conns.insert(
        1,
        Conn {
            dom,
            watches: Vec::new(),
            txs: HashMap::new(),
            out: Arc::clone(&out),
        },
    );
    let mut payload = Box::new([0u8; PAYLOAD_MAX]);
    let mut r = input;
    let mut sent = Vec::new();
    while let Frame::Message(h) = read_frame(&mut r, &mut payload) {
        apply(&mut st, &quotas, 1, h, &payload[..h.len as usize])?;
        sent.extend(out.take_all());
    }
    Ok(sent)
}

struct Outcome {
    reply: Vec<u8>,
    changes: Vec<Change>,
    event: Option<Vec<u8>>,
    special: Option<(&'static str, DomId)>,
}

fn ok(reply: Vec<u8>) -> Result<Outcome, Errno> {
    Ok(Outcome {
        reply,
        changes: Vec::new(),
        event: None,
        special: None,
    })
}

fn ok_changes(changes: Vec<Change>) -> Result<Outcome, Errno> {
    Ok(Outcome {
        reply: b"OK\0".to_vec(),
        changes,
        event: None,
        special: None,
    })
}

fn one_arg(payload: &[u8]) -> Result<&str, Errno> {
    match split_args(payload)?[..] {
        [a] => Ok(a),
        _ => Err(Errno::EINVAL),
    }
}

fn parse_dom(s: &str) -> Result<DomId, Errno> {
    s.parse::<DomId>().map_err(|_| Errno::EINVAL)
}

/// Executes one request for connection `id` of domain `dom`.
fn dispatch(
    st: &mut State,
    q: &Quotas,
    id: u64,
    dom: DomId,
    h: &Header,
    payload: &[u8],
) -> Result<Outcome, Errno> {
    let ty = MsgType::from_code(h.ty).ok_or(Errno::ENOSYS)?;
    use MsgType::*;
    match ty {
        Read | Directory | DirectoryPart | GetPerms | Write | Mkdir | Rm | SetPerms => {
            data_op(st, q, id, dom, ty, h.tx_id, payload)
        }
        Watch => watch_op(st, q, id, dom, payload),
        Unwatch => unwatch_op(st, id, payload),
        ResetWatches => {
            let conn = st.conns.get_mut(&id).ok_or(Errno::EIO)?;
            conn.watches.clear();
            conn.txs.clear();
            ok(b"OK\0".to_vec())
        }
        TransactionStart => transaction_start_op(st, q, id, dom, h.tx_id),
        TransactionEnd => transaction_end_op(st, id, dom, h.tx_id, payload),
        GetDomainPath => {
            let d = parse_dom(one_arg(payload)?)?;
            ok(format!("/local/domain/{d}\0").into_bytes())
        }
        IsDomainIntroduced => {
            let d = parse_dom(one_arg(payload)?)?;
            ok(if st.domains.contains(&d) {
                b"T\0"
            } else {
                b"F\0"
            }
            .to_vec())
        }
        Introduce => introduce_op(st, dom, payload),
        Release => release_op(st, dom, payload),
        Control => Err(if dom == 0 {
            Errno::ENOSYS
        } else {
            Errno::EACCES
        }),
        WatchEvent | Error | Resume | SetTarget => Err(Errno::ENOSYS),
    }
}

/// `XS_WATCH`: registers a watch for connection `id` and queues its first event.
fn watch_op(
    st: &mut State,
    q: &Quotas,
    id: u64,
    dom: DomId,
    payload: &[u8],
) -> Result<Outcome, Errno> {
    let args = split_args(payload)?;
    let (Some(path), Some(token)) = (args.first(), args.get(1)) else {
        return Err(Errno::EINVAL);
    };
    let abs = canonical_for(q, dom, path, true)?;
    if dom != 0 && quota::over(q.watches, domain_count(st, dom, |c| c.watches.len()) + 1) {
        return Err(Errno::ENOSPC);
    }
    let conn = st.conns.get_mut(&id).ok_or(Errno::EIO)?;
    if conn
        .watches
        .iter()
        .any(|w| w.given == *path && w.token == *token)
    {
        return Err(Errno::EEXIST);
    }
    conn.watches.push(WatchReg {
        abs,
        given: path.to_string(),
        token: token.to_string(),
    });
    // The initial event, sent right after the reply.
    let ev = message(
        MsgType::WatchEvent as u32,
        0,
        0,
        format!("{path}\0{token}\0").as_bytes(),
    );
    Ok(Outcome {
        reply: b"OK\0".to_vec(),
        changes: Vec::new(),
        event: Some(ev),
        special: None,
    })
}

/// `XS_UNWATCH`: removes connection `id`'s watch of that path and token.
fn unwatch_op(st: &mut State, id: u64, payload: &[u8]) -> Result<Outcome, Errno> {
    let args = split_args(payload)?;
    let (Some(path), Some(token)) = (args.first(), args.get(1)) else {
        return Err(Errno::EINVAL);
    };
    let conn = st.conns.get_mut(&id).ok_or(Errno::EIO)?;
    let before = conn.watches.len();
    conn.watches
        .retain(|w| !(w.given == *path && w.token == *token));
    if conn.watches.len() == before {
        return Err(Errno::ENOENT);
    }
    ok(b"OK\0".to_vec())
}

/// `XS_TRANSACTION_START`: opens a transaction on connection `id` (none may be open on
/// the request: `tx_id` 0).
fn transaction_start_op(
    st: &mut State,
    q: &Quotas,
    id: u64,
    dom: DomId,
    tx_id: u32,
) -> Result<Outcome, Errno> {
    if tx_id != 0 {
        return Err(Errno::EBUSY);
    }
    let tx_id = st.next_tx;
    st.next_tx = st.next_tx.wrapping_add(1).max(1);
    if dom != 0 && quota::over(q.transactions, domain_count(st, dom, |c| c.txs.len()) + 1) {
        return Err(Errno::ENOSPC);
    }
    let conn = st.conns.get_mut(&id).ok_or(Errno::EIO)?;
    conn.txs.insert(
        tx_id,
        Tx {
            state: TxState::default(),
            spoilt: false,
        },
    );
    ok(format!("{tx_id}\0").into_bytes())
}

/// `XS_TRANSACTION_END`: commits (`T`) or abandons (`F`) connection `id`'s transaction
/// `tx_id`.
fn transaction_end_op(
    st: &mut State,
    id: u64,
    dom: DomId,
    tx_id: u32,
    payload: &[u8],
) -> Result<Outcome, Errno> {
    let commit = match one_arg(payload)? {
        "T" => true,
        "F" => false,
        _ => return Err(Errno::EINVAL),
    };
    let conn = st.conns.get_mut(&id).ok_or(Errno::EIO)?;
    let tx = conn.txs.remove(&tx_id).ok_or(Errno::ENOENT)?;
    if !commit {
        return ok(b"OK\0".to_vec());
    }
    if tx.spoilt {
        return Err(Errno::ENOSPC);
    }
    ok_changes(st.store.commit(dom, tx.state)?)
}

/// `XS_INTRODUCE` (dom0 only): a domain becomes known; fires `@introduceDomain` once.
fn introduce_op(st: &mut State, dom: DomId, payload: &[u8]) -> Result<Outcome, Errno> {
    if dom != 0 {
        return Err(Errno::EACCES);
    }
    let args = split_args(payload)?;
    let d = parse_dom(args.first().ok_or(Errno::EINVAL)?)?;
    if args.len() < 3 || d == 0 {
        return Err(Errno::EINVAL);
    }
    if !st.domains.insert(d) {
        return ok(b"OK\0".to_vec());
    }
    Ok(Outcome {
        reply: b"OK\0".to_vec(),
        changes: Vec::new(),
        event: None,
        special: Some(("@introduceDomain", d)),
    })
}

/// `XS_RELEASE` (dom0 only): a known domain is forgotten; fires `@releaseDomain`.
fn release_op(st: &mut State, dom: DomId, payload: &[u8]) -> Result<Outcome, Errno> {
    if dom != 0 {
        return Err(Errno::EACCES);
    }
    let d = parse_dom(one_arg(payload)?)?;
    if d == 0 || !st.domains.remove(&d) {
        return Err(Errno::ENOENT);
    }
    Ok(Outcome {
        reply: b"OK\0".to_vec(),
        changes: Vec::new(),
        event: None,
        special: Some(("@releaseDomain", d)),
    })
}

/// What all the connections of domain `dom` hold of something.
fn domain_count(st: &State, dom: DomId, what: impl Fn(&Conn) -> usize) -> usize {
    st.conns.values().filter(|c| c.dom == dom).map(what).sum()
}

/// [`canonical`], and the `path-max` quota for guests: the path's length not counting a
/// leading `/local/domain/<id>/` (C xenstored's rule).
fn canonical_for(q: &Quotas, dom: DomId, path: &str, special: bool) -> Result<String, Errno> {
    let abs = canonical(dom, path, special)?;
    if dom != 0 && q.path_max != 0 {
        let local = abs
            .strip_prefix("/local/domain/")
            .and_then(|rest| {
                let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
                rest[digits..].strip_prefix('/').filter(|_| digits > 0)
            })
            .unwrap_or(&abs);
        if quota::over(q.path_max, local.len()) {
            return Err(Errno::EINVAL);
        }
    }
    Ok(abs)
}

/// Operations on nodes, on the committed tree or in a transaction's view of it.
fn data_op(
    st: &mut State,
    q: &Quotas,
    id: u64,
    dom: DomId,
    ty: MsgType,
    tx_id: u32,
    payload: &[u8],
) -> Result<Outcome, Errno> {
    let req = NodeRequest::parse(ty, payload)?;
    let path = canonical_for(q, dom, req.path, false)?;
    if tx_id == 0 {
        return node_op(&mut st.store, dom, ty, &path, &req);
    }
    let State { store, conns, .. } = st;
    let conn = conns.get_mut(&id).ok_or(Errno::EIO)?;
    let tx = conn.txs.get_mut(&tx_id).ok_or(Errno::ENOENT)?;
    if tx.spoilt {
        return Err(Errno::ENOSPC);
    }
    let outcome = node_op(&mut TxView::new(store, &mut tx.state), dom, ty, &path, &req);
    if dom != 0 && quota::over(q.transaction_nodes, tx.state.nodes()) {
        // C xenstored's `transaction-nodes`: ENOSPC, and what was done is not trusted.
        tx.spoilt = true;
        return Err(Errno::ENOSPC);
    }
    let mut outcome = outcome?;
    // Inside a transaction no watch fires until the commit, once per node changed.
    tx.state.record(std::mem::take(&mut outcome.changes));
    Ok(outcome)
}

/// A node request's arguments: WRITE is `path|value` with a raw value; the others are
/// NUL-terminated strings.
struct NodeRequest<'a> {
    path: &'a str,
    value: &'a [u8],
    rest: Vec<&'a str>,
}

impl<'a> NodeRequest<'a> {
    fn parse(ty: MsgType, payload: &'a [u8]) -> Result<NodeRequest<'a>, Errno> {
        if ty == MsgType::Write {
            let nul = payload.iter().position(|b| *b == 0).ok_or(Errno::EINVAL)?;
            let path = std::str::from_utf8(&payload[..nul]).map_err(|_| Errno::EINVAL)?;
            return Ok(NodeRequest {
                path,
                value: &payload[nul + 1..],
                rest: Vec::new(),
            });
        }
        let args = split_args(payload)?;
        let (first, rest) = args.split_first().ok_or(Errno::EINVAL)?;
        Ok(NodeRequest {
            path: first,
            value: &[],
            rest: rest.to_vec(),
        })
    }
}

fn zero_terminated<T: std::fmt::Display>(items: &[T]) -> Vec<u8> {
    items
        .iter()
        .map(|c| format!("{c}\0"))
        .collect::<String>()
        .into_bytes()
}

/// Executes one node request on `tree`.
fn node_op(
    tree: &mut impl Tree,
    dom: DomId,
    ty: MsgType,
    path: &str,
    req: &NodeRequest<'_>,
) -> Result<Outcome, Errno> {
    use MsgType::*;
    match ty {
        Read => ok(tree.read(dom, path)?),
        GetPerms => ok(zero_terminated(&tree.get_perms(dom, path)?)),
        Directory => ok(zero_terminated(&tree.directory(dom, path)?)),
        DirectoryPart => {
            let off: usize = req
                .rest
                .first()
                .ok_or(Errno::EINVAL)?
                .parse()
                .map_err(|_| Errno::EINVAL)?;
            let all = zero_terminated(&tree.directory(dom, path)?);
            let gen = tree.generation(path).unwrap_or(0);
            ok(directory_part(gen, &all, off)?)
        }
        Write => ok_changes(tree.write(dom, path, req.value)?),
        Mkdir => ok_changes(tree.mkdir(dom, path)?),
        Rm => ok_changes(tree.rm(dom, path)?),
        SetPerms => {
            let perms = req
                .rest
                .iter()
                .filter(|s| !s.is_empty())
                .map(|s| Perm::parse(s))
                .collect::<Result<Vec<_>, _>>()?;
            ok_changes(tree.set_perms(dom, path, perms)?)
        }
        _ => Err(Errno::EINVAL),
    }
}

/// `XS_DIRECTORY_PART`'s answer: the generation, then whole names from byte `off` of the
/// full list up to the payload limit, then an empty name if the list is done.
fn directory_part(gen: u64, all: &[u8], off: usize) -> Result<Vec<u8>, Errno> {
    let mut body = format!("{gen}\0").into_bytes();
    let tail = all.get(off..).ok_or(Errno::EINVAL)?;
    let room = PAYLOAD_MAX - body.len() - 1;
    let mut take = 0;
    for name in tail.split_inclusive(|b| *b == 0) {
        if take + name.len() > room {
            break;
        }
        take += name.len();
    }
    body.extend_from_slice(&tail[..take]);
    if take == tail.len() {
        body.push(0);
    }
    Ok(body)
}

fn under(path: &str, dir: &str) -> bool {
    dir == "/"
        || path == dir
        || (path.starts_with(dir) && path.as_bytes().get(dir.len()) == Some(&b'/'))
}

/// Sends watch events for `changes` to every connection whose watches match and who may
/// read the node.
fn fire(st: &State, changes: &[Change]) {
    // As C xenstored's fire_watches: a changed node fires the watches on it and on its
    // ancestors; a node removed below the one an XS_RM named fires only watches on itself.
    // One event per watch and node: the changes come one per node.
    let exact: HashSet<&str> = changes
        .iter()
        .filter(|c| c.exact)
        .map(|c| c.path.as_str())
        .collect();
    let subtree: Vec<&str> = changes
        .iter()
        .filter(|c| !c.exact)
        .map(|c| c.path.as_str())
        .collect();
    for conn in st.conns.values() {
        for w in conn.watches.iter().filter(|w| !w.abs.starts_with('@')) {
            let hits = subtree
                .iter()
                .copied()
                .filter(|p| under(p, &w.abs))
                .chain(exact.get(w.abs.as_str()).copied());
            for event_path in hits {
                if !can_see(&st.store, conn.dom, event_path) {
                    continue;
                }
                let shown = if w.given.starts_with('/') {
                    event_path
                } else {
                    let prefix = format!("/local/domain/{}/", conn.dom);
                    event_path
                        .strip_prefix(prefix.as_str())
                        .unwrap_or(event_path)
                };
                conn.out.event(message(
                    MsgType::WatchEvent as u32,
                    0,
                    0,
                    format!("{shown}\0{}\0", w.token).as_bytes(),
                ));
            }
        }
    }
}

/// Whether `dom` may learn that `path` changed: it may read the node, or, if it is gone,
/// its nearest existing ancestor.
fn can_see(store: &Store, dom: DomId, path: &str) -> bool {
    let mut p = path;
    loop {
        if store.exists(p) {
            return store.allowed(dom, p, Want::Read);
        }
        match p.rfind('/') {
            Some(0) => p = "/",
            Some(i) => p = &p[..i],
            None => return false,
        }
    }
}

/// `@introduceDomain` / `@releaseDomain` events go to dom0's connections only: they tell
/// of other domains (XSA-115; C xenstored gives the special nodes dom0-only permissions).
fn fire_special(st: &State, name: &str) {
    for conn in st.conns.values().filter(|c| c.dom == 0) {
        for w in conn.watches.iter().filter(|w| w.abs == name) {
            conn.out.event(message(
                MsgType::WatchEvent as u32,
                0,
                0,
                format!("{name}\0{}\0", w.token).as_bytes(),
            ));
        }
    }
}

fn introduce(shared: &Arc<Shared>, dom: DomId) -> io::Result<PathBuf> {
    let path = domain_socket(&shared.cfg, dom);
    let fresh = {
        let mut st = lock(shared)?;
        let fresh = st.domains.insert(dom);
        if fresh {
            fire_special(&st, "@introduceDomain");
        }
        fresh
    };
    let known = shared
        .sockets
        .lock()
        .map(|s| s.contains_key(&dom))
        .unwrap_or(false);
    if fresh || !known {
        listen(shared, dom, path.clone())?;
    }
    Ok(path)
}

fn release(shared: &Arc<Shared>, dom: DomId) {
    close_domain(shared, dom);
    if let Ok(mut st) = lock(shared) {
        // What the released domain owned goes, and it leaves every permission list
        // (XSA-322, XSA-419); its watches went with its connections.
        let changes = st.store.forget_domain(dom);
        fire(&st, &changes);
        if st.domains.remove(&dom) {
            fire_special(&st, "@releaseDomain");
        }
    }
}

fn close_domain(shared: &Arc<Shared>, dom: DomId) {
    if let Ok(st) = lock(shared) {
        for c in st.conns.values().filter(|c| c.dom == dom) {
            c.out.close();
        }
    }
    if let Ok(mut socks) = shared.sockets.lock() {
        if let Some(l) = socks.remove(&dom) {
            let _ = std::fs::remove_file(&l.path);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    /// A socket's file is there only once it listens: a connection to it right away is
    /// accepted, and no temporary name is left behind.
    #[test]
    fn a_socket_appears_only_once_it_listens() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.sock");
        let listener = bind_whole(&path).unwrap();
        assert!(UnixStream::connect(&path).is_ok());
        drop(listener);
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["s.sock"]);
    }

    /// The OS refusing a connection's thread closes that connection (counted), without a
    /// panic; the daemon serves the next one.
    #[test]
    fn a_refused_thread_closes_that_connection_only() {
        let dir = tempfile::tempdir().unwrap();
        let d = Xenstored::start(XenstoredConfig::in_dir(dir.path())).unwrap();
        d.shared.fail_spawns.store(1, Ordering::SeqCst);
        let mut refused = UnixStream::connect(d.socket()).unwrap();
        refused
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let mut b = [0u8; 1];
        assert_eq!(refused.read(&mut b).unwrap(), 0);
        assert_eq!(d.stats().spawn_failures, 1);
        assert_eq!(d.connections(), 0);
        let c = crate::xenstore::XsClient::connect(d.socket()).unwrap();
        use crate::xenstore::XenStore;
        c.write(0, "/after", b"1").unwrap();
        assert_eq!(d.connections(), 1);
    }

    /// An idle daemon's accept loops sleep until a client comes (they do not wake to look
    /// every few milliseconds), and a released domain's loop, and at shutdown every loop,
    /// ends at once rather than at its next guard wake-up.
    #[test]
    fn accept_loops_sleep_until_a_client_or_their_end() {
        let dir = tempfile::tempdir().unwrap();
        let d = Xenstored::start(XenstoredConfig::in_dir(dir.path())).unwrap();
        let guest = d.introduce(7).unwrap();
        let sh = Arc::clone(&d.shared);
        let idle = Duration::from_millis(300);
        let before = sh.accept_looks.load(Ordering::SeqCst);
        thread::sleep(idle);
        let looks = sh.accept_looks.load(Ordering::SeqCst) - before;
        // Two loops; at most one guard wake-up each in the idle time.
        assert!(looks <= 2, "{looks} looks in {idle:?} while idle");
        let _c = UnixStream::connect(&guest).unwrap();
        let t = std::time::Instant::now();
        while d.connections() == 0 && t.elapsed() < Duration::from_secs(5) {
            thread::yield_now();
        }
        assert_eq!(d.connections(), 1, "a client wakes its domain's loop");
        let t = std::time::Instant::now();
        d.release(7);
        while sh.accept_ends.load(Ordering::SeqCst) == 0 && t.elapsed() < ACCEPT_GUARD {
            thread::yield_now();
        }
        assert_eq!(
            sh.accept_ends.load(Ordering::SeqCst),
            1,
            "released: its loop ends"
        );
        assert!(
            t.elapsed() < ACCEPT_GUARD / 2,
            "ended only after {:?}",
            t.elapsed()
        );
        let t = std::time::Instant::now();
        d.shutdown();
        assert_eq!(sh.accept_ends.load(Ordering::SeqCst), 2);
        assert!(
            t.elapsed() < ACCEPT_GUARD / 2,
            "shut down in {:?}",
            t.elapsed()
        );
    }
}
