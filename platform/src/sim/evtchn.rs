//! Event channels of the emulated hypervisor: a table of ports per domain in a shared file,
//! a pending word per port that doubles as a futex, and counters both ends can read.

use std::sync::atomic::Ordering;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use netstage_ring::{SharedMem, SharedU32, SharedU64};

use super::{DomInner, Foreign, SimDomain, Stats};
use crate::sim::CostMode;
use crate::{sys, DomId, EventChannels, EventPort, EventStats, PlatformError, Port, Result};

const HEADER: usize = 64;
const PORT_SIZE: usize = 64;

const STATE: usize = 0;
const REMOTE_DOM: usize = 4;
const REMOTE_PORT: usize = 8;
const PENDING: usize = 12;
const WAITERS: usize = 16;
const SENT: usize = 24;
const RECEIVED: usize = 32;
const BLOCKED: usize = 40;

/// Bits of the pending word: an event from the peer, a local wake-up.
const PEER_EVENT: u32 = 1;
const LOCAL_WAKE: u32 = 2;

/// Port states (`ECS_*` in Xen).
const ECS_FREE: u32 = 0;
const ECS_UNBOUND: u32 = 1;
const ECS_INTERDOMAIN: u32 = 2;

pub(super) fn table_len(ports: u32) -> usize {
    HEADER + ports as usize * PORT_SIZE
}

pub(super) fn init_table(t: &SharedMem, ports: u32) -> Result<()> {
    t.word(0)?.store(ports, Ordering::Release)?;
    Ok(())
}

pub(super) fn table_ports(t: &SharedMem) -> Result<u32> {
    let n = t.word(0)?.load(Ordering::Acquire);
    if table_len(n) > t.len() {
        return Err(PlatformError::Invalid(format!(
            "event-channel table claims {n} ports but holds {} bytes",
            t.len()
        )));
    }
    Ok(n)
}

/// The words of one port.
#[derive(Debug, Clone)]
struct PortWords {
    state: SharedU32,
    remote_dom: SharedU32,
    remote_port: SharedU32,
    pending: SharedU32,
    waiters: SharedU32,
    sent: SharedU64,
    received: SharedU64,
    blocked: SharedU64,
}

impl PortWords {
    fn at(t: &SharedMem, port: Port) -> Result<PortWords> {
        let b = HEADER + port as usize * PORT_SIZE;
        Ok(PortWords {
            state: t.word(b + STATE)?,
            remote_dom: t.word(b + REMOTE_DOM)?,
            remote_port: t.word(b + REMOTE_PORT)?,
            pending: t.word(b + PENDING)?,
            waiters: t.word(b + WAITERS)?,
            sent: t.word64(b + SENT)?,
            received: t.word64(b + RECEIVED)?,
            blocked: t.word64(b + BLOCKED)?,
        })
    }

    fn reset(&self) -> Result<()> {
        for w in [&self.remote_port, &self.pending, &self.waiters] {
            w.store(0, Ordering::Relaxed)?;
        }
        for w in [&self.sent, &self.received, &self.blocked] {
            w.store(0, Ordering::Relaxed)?;
        }
        Ok(())
    }
}

/// Claims a free port of table `t` (ports 1..n), leaving it unbound for `remote`.
fn claim(t: &SharedMem, ports: u32, remote: DomId, dom: DomId) -> Result<(Port, PortWords)> {
    for p in 1..ports {
        let w = PortWords::at(t, p)?;
        if w.state
            .compare_exchange(ECS_FREE, ECS_UNBOUND, Ordering::AcqRel, Ordering::Relaxed)?
            .is_ok()
        {
            w.reset()?;
            w.remote_dom.store(u32::from(remote), Ordering::Release)?;
            return Ok((p, w));
        }
    }
    Err(PlatformError::Exhausted {
        what: "event-channel ports",
        dom,
        detail: format!("all {ports} ports in use (raise DomainConfig::ports)"),
    })
}

/// A bound port of the emulated platform. Closed (and the remote end left unbound, as on
/// Xen) when dropped.
pub struct SimPort {
    dom: Arc<DomInner>,
    port: Port,
    words: PortWords,
    /// The remote end, once known: its domain and port words.
    remote: OnceLock<(Arc<Foreign>, PortWords)>,
}

impl std::fmt::Debug for SimPort {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimPort")
            .field("dom", &self.dom.id)
            .field("port", &self.port)
            .finish()
    }
}

impl SimPort {
    /// The remote end if the channel is connected.
    fn remote(&self) -> Result<Option<&(Arc<Foreign>, PortWords)>> {
        if let Some(r) = self.remote.get() {
            return Ok(Some(r));
        }
        if self.words.state.load(Ordering::Acquire) != ECS_INTERDOMAIN {
            return Ok(None);
        }
        let rdom = self.words.remote_dom.load(Ordering::Acquire);
        let rport = self.words.remote_port.load(Ordering::Acquire);
        let rdom = DomId::try_from(rdom)
            .map_err(|_| PlatformError::Event(format!("corrupt remote domain {rdom}")))?;
        let f = self.dom.foreign(rdom)?;
        if rport == 0 || rport >= f.ports {
            return Err(PlatformError::Event(format!(
                "port {} is bound to invalid port {rport} of domain {rdom}",
                self.port
            )));
        }
        let w = PortWords::at(&f.evtchn, rport)?;
        Ok(Some(self.remote.get_or_init(|| (f, w))))
    }

    /// Consumes the pending word: `(anything pending, an event from the peer among it)`.
    fn take_pending(&self) -> Result<(bool, bool)> {
        // Read before writing: spinning on a shared line must not bounce it between cores.
        if self.words.pending.load(Ordering::Acquire) == 0 {
            return Ok((false, false));
        }
        let v = self.words.pending.swap(0, Ordering::AcqRel)?;
        if v & PEER_EVENT != 0 {
            self.words.received.fetch_add(1, Ordering::Relaxed)?;
        }
        Ok((v != 0, v & PEER_EVENT != 0))
    }
}

impl EventPort for SimPort {
    fn port(&self) -> Port {
        self.port
    }

    fn notify(&self) -> Result<()> {
        self.words.sent.fetch_add(1, Ordering::Relaxed)?;
        self.dom.charge(|m| m.call_ns);
        let kernel = self.dom.cfg.cost == CostMode::Kernel;
        let Some((_, r)) = self.remote()? else {
            // An unbound port drops the event, as Xen does.
            return Ok(());
        };
        r.pending.fetch_or(PEER_EVENT, Ordering::SeqCst)?;
        // In `kernel` mode every notify is a system call, as EVTCHNOP_send is a hypercall;
        // otherwise only a sleeping waiter costs one.
        if kernel || r.waiters.load(Ordering::SeqCst) > 0 {
            Stats::add(&self.dom.stats.kernel_crossings, 1);
            sys::futex_wake(&r.pending, u32::MAX);
        }
        Ok(())
    }

    fn poll(&self) -> Result<bool> {
        Ok(self.take_pending()?.0)
    }

    fn wait(&self, timeout: Option<Duration>) -> Result<bool> {
        let start = Instant::now();
        let spin = self.dom.cfg.spin_before_block;
        let spin_until = timeout.map_or(start + spin, |t| (start + t).min(start + spin));
        if crate::spin_until(spin_until, || -> Result<bool> {
            Ok(self.take_pending()?.0)
        })? {
            return Ok(true);
        }
        self.block(timeout.map(|t| t.saturating_sub(start.elapsed())))
    }

    fn spin(&self) -> Duration {
        self.dom.cfg.spin_before_block
    }

    fn block(&self, timeout: Option<Duration>) -> Result<bool> {
        let deadline = timeout.map(|t| Instant::now() + t);
        self.words.waiters.fetch_add(1, Ordering::SeqCst)?;
        let mut slept = false;
        let got = loop {
            if self.take_pending()?.0 {
                break true;
            }
            let left = match deadline {
                Some(d) => match d.checked_duration_since(Instant::now()) {
                    Some(left) if !left.is_zero() => Some(left),
                    _ => break false,
                },
                None => None,
            };
            slept = true;
            sys::futex_wait(&self.words.pending, 0, left);
        };
        self.words.waiters.fetch_sub(1, Ordering::SeqCst)?;
        if slept {
            self.words.blocked.fetch_add(1, Ordering::Relaxed)?;
        }
        Ok(got)
    }

    fn prepare(&self) -> Result<()> {
        self.remote().map(|_| ())
    }

    fn wake(&self) -> Result<()> {
        self.words.pending.fetch_or(LOCAL_WAKE, Ordering::SeqCst)?;
        if self.words.waiters.load(Ordering::SeqCst) > 0 {
            sys::futex_wake(&self.words.pending, u32::MAX);
        }
        Ok(())
    }

    fn stats(&self) -> EventStats {
        EventStats {
            sent: self.words.sent.load(Ordering::Relaxed),
            received: self.words.received.load(Ordering::Relaxed),
            blocked: self.words.blocked.load(Ordering::Relaxed),
        }
    }
}

impl Drop for SimPort {
    fn drop(&mut self) {
        // Closing an interdomain port leaves the remote end unbound (ECS_UNBOUND), as
        // EVTCHNOP_close does; its notifications are then dropped. Only while this port is
        // still bound and the remote end still names it: a port whose connection the peer
        // already closed must not unbind the next connection made on the same numbers.
        let bound = self.words.state.load(Ordering::Acquire) == ECS_INTERDOMAIN;
        if let (true, Ok(Some((_, r)))) = (bound, self.remote()) {
            let ours = r.remote_dom.load(Ordering::Acquire) == u32::from(self.dom.id)
                && r.remote_port.load(Ordering::Acquire) == self.port;
            if ours {
                let _ = r.state.compare_exchange(
                    ECS_INTERDOMAIN,
                    ECS_UNBOUND,
                    Ordering::AcqRel,
                    Ordering::Relaxed,
                );
            }
        }
        let _ = self.words.state.store(ECS_FREE, Ordering::Release);
    }
}

impl EventChannels for SimDomain {
    type Port = SimPort;

    fn alloc_unbound(&self, remote: DomId) -> Result<SimPort> {
        let d = &self.inner;
        let (port, words) = claim(&d.evtchn, d.cfg.ports, remote, d.id)?;
        d.charge(|m| m.call_ns);
        Ok(SimPort {
            dom: Arc::clone(&self.inner),
            port,
            words,
            remote: OnceLock::new(),
        })
    }

    fn bind_interdomain(&self, remote: DomId, remote_port: Port) -> Result<SimPort> {
        let d = &self.inner;
        let f = d.foreign(remote)?;
        if remote_port == 0 || remote_port >= f.ports {
            return Err(PlatformError::Event(format!(
                "domain {remote} has no port {remote_port} (it has {} ports)",
                f.ports
            )));
        }
        let rw = PortWords::at(&f.evtchn, remote_port)?;
        if rw.state.load(Ordering::Acquire) != ECS_UNBOUND
            || rw.remote_dom.load(Ordering::Acquire) != u32::from(d.id)
        {
            return Err(PlatformError::Event(format!(
                "port {remote_port} of domain {remote} is not allocated unbound for domain {}",
                d.id
            )));
        }
        let (port, words) = claim(&d.evtchn, d.cfg.ports, remote, d.id)?;
        words.remote_port.store(remote_port, Ordering::Release)?;
        rw.remote_port.store(port, Ordering::Release)?;
        if rw
            .state
            .compare_exchange(
                ECS_UNBOUND,
                ECS_INTERDOMAIN,
                Ordering::AcqRel,
                Ordering::Acquire,
            )?
            .is_err()
        {
            words.state.store(ECS_FREE, Ordering::Release)?;
            return Err(PlatformError::Event(format!(
                "port {remote_port} of domain {remote} was bound or closed concurrently"
            )));
        }
        words.state.store(ECS_INTERDOMAIN, Ordering::Release)?;
        d.charge(|m| m.call_ns);
        Ok(SimPort {
            dom: Arc::clone(&self.inner),
            port,
            words,
            remote: OnceLock::from((f, rw)),
        })
    }
}
