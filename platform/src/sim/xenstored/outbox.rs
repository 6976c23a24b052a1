//! One connection's output queue: replies and watch events waiting for the writer thread.
//!
//! Bounded in bytes and in messages (a client that does not read is disconnected, not
//! buffered for without end); identical watch events still queued are coalesced, as C
//! xenstored's `send_event` does; the number of queued replies is what the reader waits on
//! for the `outstanding` quota. Each message is held once: the set of queued events shares
//! the queue's copy, so the byte bound counts every byte a connection pins.

use std::collections::{HashSet, VecDeque};
use std::io::Write;
use std::os::unix::net::UnixStream;
use std::sync::{Arc, Condvar, Mutex};

use super::quota::Counters;
use super::wire::{HEADER_LEN, PAYLOAD_MAX};

#[derive(Default)]
struct Queue {
    /// The messages, in order, and whether each is a watch event.
    msgs: VecDeque<(Arc<Vec<u8>>, bool)>,
    /// Bytes of `msgs`.
    bytes: usize,
    replies: usize,
    /// The watch events in `msgs`: the same allocations, not copies.
    events: HashSet<Arc<Vec<u8>>>,
    closed: bool,
}

pub(crate) struct Outbox {
    q: Mutex<Queue>,
    cv: Condvar,
    stream: UnixStream,
    max_bytes: usize,
    max_msgs: usize,
    stats: Arc<Counters>,
}

impl Outbox {
    pub(crate) fn new(
        stream: UnixStream,
        max_bytes: usize,
        max_msgs: usize,
        stats: Arc<Counters>,
    ) -> Outbox {
        Outbox {
            q: Mutex::new(Queue::default()),
            cv: Condvar::new(),
            stream,
            max_bytes,
            max_msgs,
            stats,
        }
    }

    /// Queues a reply.
    pub(crate) fn reply(&self, msg: Vec<u8>) {
        self.push(msg, false);
    }

    /// Queues a watch event unless an identical one is still queued, or it would not fit
    /// the payload limit (C xenstored's `send_event` does not send those either: a deep
    /// path under a watch with a long token).
    pub(crate) fn event(&self, msg: Vec<u8>) {
        if msg.len() > HEADER_LEN + PAYLOAD_MAX {
            Counters::bump(&self.stats.events_oversized);
            return;
        }
        self.push(msg, true);
    }

    /// A connection whose queue would overflow is closed.
    fn push(&self, msg: Vec<u8>, event: bool) {
        let Ok(mut g) = self.q.lock() else { return };
        if g.closed {
            return;
        }
        if event && g.events.contains(&msg) {
            Counters::bump(&self.stats.events_coalesced);
            return;
        }
        let over = |limit: usize, v: usize| limit != 0 && v > limit;
        if over(self.max_bytes, g.bytes + msg.len()) || over(self.max_msgs, g.msgs.len() + 1) {
            Counters::bump(&self.stats.queue_overflows);
            *g = Queue {
                closed: true,
                ..Queue::default()
            };
            let _ = self.stream.shutdown(std::net::Shutdown::Both);
        } else {
            g.bytes += msg.len();
            let msg = Arc::new(msg);
            if event {
                g.events.insert(Arc::clone(&msg));
            } else {
                g.replies += 1;
            }
            g.msgs.push_back((msg, event));
        }
        self.cv.notify_all();
    }

    /// Takes every queued message (for [`super::process_stream`], which has no writer).
    pub(crate) fn take_all(&self) -> Vec<Vec<u8>> {
        let Ok(mut g) = self.q.lock() else {
            return Vec::new();
        };
        let closed = g.closed;
        let Queue { msgs, events, .. } = std::mem::take(&mut *g);
        *g = Queue {
            closed,
            ..Queue::default()
        };
        // The set's references go first, so each message is moved out, not copied.
        drop(events);
        msgs.into_iter()
            .map(|(m, _)| Arc::unwrap_or_clone(m))
            .collect()
    }

    pub(crate) fn close(&self) {
        if let Ok(mut g) = self.q.lock() {
            g.closed = true;
        }
        let _ = self.stream.shutdown(std::net::Shutdown::Both);
        self.cv.notify_all();
    }

    /// Waits while `limit` replies (0: no limit) are queued; false once the connection is
    /// closed.
    pub(crate) fn wait_below(&self, limit: usize) -> bool {
        let Ok(mut g) = self.q.lock() else {
            return false;
        };
        if limit != 0 && g.replies >= limit && !g.closed {
            Counters::bump(&self.stats.outstanding_stalls);
        }
        while limit != 0 && g.replies >= limit && !g.closed {
            g = match self.cv.wait(g) {
                Ok(g) => g,
                Err(_) => return false,
            };
        }
        !g.closed
    }

    /// The writer thread's loop: sends queued messages until the connection closes.
    pub(crate) fn write_all(&self, mut stream: UnixStream) {
        loop {
            let msg = {
                let Ok(mut g) = self.q.lock() else { return };
                loop {
                    if let Some((m, event)) = g.msgs.pop_front() {
                        g.bytes -= m.len();
                        if event {
                            g.events.remove(&*m);
                        } else {
                            g.replies -= 1;
                        }
                        self.cv.notify_all();
                        break m;
                    }
                    if g.closed {
                        return;
                    }
                    g = match self.cv.wait(g) {
                        Ok(g) => g,
                        Err(_) => return,
                    };
                }
            };
            if stream.write_all(&msg).is_err() {
                self.close();
                return;
            }
        }
    }
}
