//! A gate between threads that hand packets to a queue and the queue's owner, so that
//! closing the queue can count every packet: after [`Gate::close`] returns, no sender is
//! inside and none will enter, so what the queue holds then is all it will ever hold.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

/// Open until closed; senders enter it around each hand-over.
#[derive(Debug, Default)]
pub struct Gate {
    closed: AtomicBool,
    inside: AtomicUsize,
}

/// A sender inside the gate; it leaves when this is dropped.
#[derive(Debug)]
pub struct Inside<'a>(&'a Gate);

impl Drop for Inside<'_> {
    fn drop(&mut self) {
        self.0.inside.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Gate {
    /// An open gate.
    pub fn new() -> Gate {
        Gate::default()
    }

    /// Enters, unless the gate is closed.
    pub fn enter(&self) -> Option<Inside<'_>> {
        // SeqCst here and in `close`: either the closer sees this sender inside, or this
        // sender sees the gate closed.
        self.inside.fetch_add(1, Ordering::SeqCst);
        let inside = Inside(self);
        (!self.closed.load(Ordering::SeqCst)).then_some(inside)
    }

    /// Closes the gate and waits until every sender inside has left.
    pub fn close(&self) {
        self.closed.store(true, Ordering::SeqCst);
        while self.inside.load(Ordering::SeqCst) > 0 {
            std::thread::yield_now();
        }
    }

    /// Whether the gate is closed.
    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::SeqCst)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicU64;
    use std::sync::Arc;

    /// Senders count what they hand over while inside; after `close`, the count no longer
    /// moves.
    #[test]
    fn nothing_enters_after_close() {
        let gate = Arc::new(Gate::new());
        let handed = Arc::new(AtomicU64::new(0));
        let senders: Vec<_> = (0..4)
            .map(|_| {
                let (g, h) = (Arc::clone(&gate), Arc::clone(&handed));
                std::thread::spawn(move || {
                    while let Some(_in) = g.enter() {
                        h.fetch_add(1, Ordering::SeqCst);
                    }
                })
            })
            .collect();
        std::thread::sleep(std::time::Duration::from_millis(20));
        gate.close();
        let at_close = handed.load(Ordering::SeqCst);
        for s in senders {
            s.join().unwrap();
        }
        assert_eq!(handed.load(Ordering::SeqCst), at_close);
        assert!(gate.enter().is_none());
    }
}
