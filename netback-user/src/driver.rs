//! The convenience layer over the queue API: a thread per queue that calls a
//! [`VifHandler`] for every packet the guest transmits and feeds the guest from a bounded
//! backlog that [`RxInjector`]s fill from any thread. It allocates an owned [`Packet`] per
//! packet handed to the handler; applications that must not allocate drive
//! [`BackQueue`]s themselves through a [`QueueDriver`].

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crossbeam_channel::{bounded, Receiver};
use netstage_fallback::{Packet, PacketBuf, PacketRef};

use crate::queue::{BackQueue, QueueFault, BURST};
use crate::{BackendPlatform, Metrics, QueueDriver, QueueInfo, RxInjector, VifHandler};

/// Drives each queue for a [`VifHandler`].
pub(crate) struct HandlerDriver {
    handler: Arc<dyn VifHandler>,
    backlog: usize,
    metrics: Arc<Metrics>,
    /// Per queue, the backlog's receiving end, taken by the queue's thread.
    backlogs: Mutex<Vec<Option<Receiver<Packet>>>>,
}

impl HandlerDriver {
    pub(crate) fn new(handler: Arc<dyn VifHandler>, backlog: usize, metrics: Arc<Metrics>) -> Self {
        HandlerDriver {
            handler,
            backlog: backlog.max(1),
            metrics,
            backlogs: Mutex::new(Vec::new()),
        }
    }

    fn take_backlog(&self, queue: u16) -> Option<Receiver<Packet>> {
        let mut b = self.backlogs.lock().ok()?;
        b.get_mut(usize::from(queue))?.take()
    }
}

impl<P: BackendPlatform> QueueDriver<P> for HandlerDriver {
    fn connected(&self, queues: &[QueueInfo]) {
        let mut receivers = Vec::with_capacity(queues.len());
        let mut injectors = Vec::with_capacity(queues.len());
        for q in queues {
            let (tx, rx) = bounded(self.backlog);
            receivers.push(Some(rx));
            injectors.push(RxInjector {
                queue: q.index,
                tx,
                wake: Arc::clone(&q.waker),
                metrics: Arc::clone(&self.metrics),
            });
        }
        if let Ok(mut b) = self.backlogs.lock() {
            *b = receivers;
        }
        self.handler.connected(injectors);
    }

    fn disconnected(&self, reason: &str) {
        self.handler.disconnected(reason);
    }

    fn run(&self, q: &mut BackQueue<P>) -> Result<(), QueueFault> {
        let Some(backlog) = self.take_backlog(q.index()) else {
            return Err(QueueFault(format!("queue {} has no backlog", q.index())));
        };
        let mut bufs = PacketBuf::pool(BURST);
        let mut pending: VecDeque<Packet> = VecDeque::with_capacity(BURST);
        while !q.stopped() {
            let got = q.recv_burst(&mut bufs)?;
            for b in &bufs[..got] {
                self.handler.tx_packet(q.index(), b.to_packet());
            }
            while pending.len() < BURST {
                match backlog.try_recv() {
                    Ok(p) => pending.push_back(p),
                    Err(_) => break,
                }
            }
            let sent = if pending.is_empty() {
                0
            } else {
                let refs: arrayvec::ArrayVec<PacketRef<'_>, BURST> =
                    pending.iter().map(Packet::packet_ref).collect();
                q.send_burst(&refs)?
            };
            pending.drain(..sent);
            if got == 0 && sent == 0 {
                q.wait(Some(Duration::from_millis(100)))?;
            }
        }
        Ok(())
    }
}
