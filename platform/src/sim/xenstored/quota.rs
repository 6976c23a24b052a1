//! Per-domain limits and the counters that show them at work.
//!
//! The names and defaults are C xenstored's (`tools/xenstored/domain.c`, its `-Q
//! <name>=<value>` option and the older single-letter options). Dom0 is exempt from them, as
//! there, except for the output queue bound, which protects the daemon itself. A value of 0
//! disables a limit. Where C xenstored refuses once a count would *reach* its quota, this
//! daemon allows the quota itself: `watches = 128` means 128 watches, not 127.

use std::sync::atomic::{AtomicU64, Ordering};

use super::store::TreeLimits;

/// Whether `value` is over `limit` (0: no limit).
pub(crate) fn over(limit: usize, value: usize) -> bool {
    limit != 0 && value > limit
}

/// Per-domain limits of the embedded xenstored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quotas {
    /// `nodes` (`-E`/`--entry-nb`): nodes a guest may own. Exceeding it: `ENOSPC`.
    pub nodes: usize,
    /// `watches` (`-W`/`--watch-nb`): watches of all a guest's connections. `ENOSPC`.
    pub watches: usize,
    /// `transactions` (`-t`/`--transaction`): open transactions of all a guest's
    /// connections. `ENOSPC`.
    pub transactions: usize,
    /// `transaction-nodes`: distinct nodes one transaction may touch (what bounds its
    /// recorded reads and writes). `ENOSPC`, and the transaction can only be aborted.
    pub transaction_nodes: usize,
    /// `node-permissions` (`-A`/`--perm-nb`): entries of one node's permission list, the
    /// owner's included. `ENOSPC`.
    pub node_permissions: usize,
    /// `node-size` (`-S`/`--entry-size`): bytes of one node (16-byte header, 8 per
    /// permission, value, children's names with their NULs). `ENOSPC`.
    pub node_size: usize,
    /// `path-max` (`-M`/`--path-max`): characters of a path, not counting a leading
    /// `/local/domain/<id>/`. `EINVAL`, as C xenstored's canonicalisation answers.
    pub path_max: usize,
    /// `outstanding`: replies queued to a guest's connection and not yet written. At the
    /// limit the daemon stops reading that connection's requests until the client reads (C
    /// xenstored stops reading the guest's ring the same way); no error.
    pub outstanding: usize,
    /// Connections one guest may hold at once (netstage's own: C xenstored has one ring per
    /// guest). A connection over it is closed at once.
    pub connections: usize,
    /// Bytes queued to one connection (any domain's) that does not read: over it the
    /// connection is closed (netstage's own; C xenstored's `memory` quota of 2.5 MB per
    /// guest drops watch events instead).
    pub queued_bytes: usize,
    /// Messages queued to one connection that does not read: over it the connection is
    /// closed (netstage's own, see `queued_bytes`).
    pub queued_messages: usize,
}

/// Default of [`Quotas::watches`] (C xenstored's).
pub const DEFAULT_WATCHES: usize = 128;
/// Default of [`Quotas::transactions`] (C xenstored's).
pub const DEFAULT_TRANSACTIONS: usize = 10;
/// Default of [`Quotas::queued_bytes`].
pub const DEFAULT_QUEUED_BYTES: usize = 1 << 20;

impl Default for Quotas {
    fn default() -> Quotas {
        Quotas {
            nodes: 1000,
            watches: DEFAULT_WATCHES,
            transactions: DEFAULT_TRANSACTIONS,
            transaction_nodes: 1024,
            node_permissions: 5,
            node_size: 2048,
            path_max: super::wire::REL_PATH_MAX,
            outstanding: 20,
            connections: 8,
            queued_bytes: DEFAULT_QUEUED_BYTES,
            queued_messages: 4096,
        }
    }
}

impl Quotas {
    /// No limits at all except the output queue's (for tests of other bounds).
    pub fn unlimited() -> Quotas {
        Quotas {
            nodes: 0,
            watches: 0,
            transactions: 0,
            transaction_nodes: 0,
            node_permissions: 0,
            node_size: 0,
            path_max: 0,
            outstanding: 0,
            connections: 0,
            ..Quotas::default()
        }
    }

    /// The quotas' names, as `--quota NAME=N` takes them (C xenstored's where it has one).
    pub const NAMES: [&'static str; 11] = [
        "nodes",
        "watches",
        "transactions",
        "transaction-nodes",
        "node-permissions",
        "node-size",
        "path-max",
        "outstanding",
        "connections",
        "queued-bytes",
        "queued-messages",
    ];

    /// Sets the quota named `name` ([`Quotas::NAMES`]) to `value` (0: no limit, except for
    /// `queued-bytes` and `queued-messages`, which are always bounded and take at least 1).
    /// Fails naming what is wrong.
    pub fn set(&mut self, name: &str, value: usize) -> Result<(), String> {
        let field = match name {
            "nodes" => &mut self.nodes,
            "watches" => &mut self.watches,
            "transactions" => &mut self.transactions,
            "transaction-nodes" => &mut self.transaction_nodes,
            "node-permissions" => &mut self.node_permissions,
            "node-size" => &mut self.node_size,
            "path-max" => &mut self.path_max,
            "outstanding" => &mut self.outstanding,
            "connections" => &mut self.connections,
            "queued-bytes" | "queued-messages" if value == 0 => {
                return Err(format!(
                    "{name} cannot be 0: the output queue is always bounded"
                ))
            }
            "queued-bytes" => &mut self.queued_bytes,
            "queued-messages" => &mut self.queued_messages,
            _ => {
                return Err(format!(
                    "no quota named {name:?}; the quotas are {}",
                    Quotas::NAMES.join(", ")
                ))
            }
        };
        *field = value;
        Ok(())
    }

    /// Sets a quota from `NAME=N` (see [`Quotas::set`]).
    pub fn set_from(&mut self, spec: &str) -> Result<(), String> {
        let (name, value) = spec
            .split_once('=')
            .ok_or_else(|| format!("{spec:?} is not NAME=N"))?;
        let value = value
            .parse::<usize>()
            .map_err(|e| format!("{spec:?}: {value:?} is not a count: {e}"))?;
        self.set(name, value)
    }

    /// The limits the tree itself enforces.
    pub(crate) fn tree(&self) -> TreeLimits {
        TreeLimits {
            nodes: self.nodes,
            node_permissions: self.node_permissions,
            node_size: self.node_size,
        }
    }
}

/// What the daemon refused or dropped to stay within its bounds (a snapshot).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct XenstoredStats {
    /// Connections closed at once because their guest already held
    /// [`Quotas::connections`].
    pub connections_refused: u64,
    /// Connections closed because their output queue overflowed.
    pub queue_overflows: u64,
    /// Times a connection's requests were left unread because it had
    /// [`Quotas::outstanding`] replies queued.
    pub outstanding_stalls: u64,
    /// Watch events not queued because an identical one was still queued (C xenstored
    /// drops such duplicates too).
    pub events_coalesced: u64,
    /// Watch events not sent because they would not fit the payload limit.
    pub events_oversized: u64,
    /// Connections closed because a thread for them could not be started.
    pub spawn_failures: u64,
}

/// The live counters behind [`XenstoredStats`].
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) connections_refused: AtomicU64,
    pub(crate) queue_overflows: AtomicU64,
    pub(crate) outstanding_stalls: AtomicU64,
    pub(crate) events_coalesced: AtomicU64,
    pub(crate) events_oversized: AtomicU64,
    pub(crate) spawn_failures: AtomicU64,
}

impl Counters {
    /// Counts one.
    pub(crate) fn bump(c: &AtomicU64) {
        c.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn snapshot(&self) -> XenstoredStats {
        let r = |c: &AtomicU64| c.load(Ordering::Relaxed);
        XenstoredStats {
            connections_refused: r(&self.connections_refused),
            queue_overflows: r(&self.queue_overflows),
            outstanding_stalls: r(&self.outstanding_stalls),
            events_coalesced: r(&self.events_coalesced),
            events_oversized: r(&self.events_oversized),
            spawn_failures: r(&self.spawn_failures),
        }
    }
}

#[cfg(test)]
mod quota_names {
    use super::*;

    #[test]
    fn every_quota_is_set_by_its_name_and_bad_ones_are_named() {
        let mut q = Quotas::default();
        for (i, name) in Quotas::NAMES.iter().enumerate() {
            q.set(name, 100 + i).unwrap();
        }
        assert_eq!(
            (q.nodes, q.watches, q.transactions, q.transaction_nodes),
            (100, 101, 102, 103)
        );
        assert_eq!(
            (q.node_permissions, q.node_size, q.path_max, q.outstanding),
            (104, 105, 106, 107)
        );
        assert_eq!(
            (q.connections, q.queued_bytes, q.queued_messages),
            (108, 109, 110)
        );
        q.set_from("nodes=0").unwrap();
        assert_eq!(q.nodes, 0);
        assert!(q
            .set_from("bogus=1")
            .unwrap_err()
            .contains("no quota named \"bogus\""));
        assert!(q.set_from("nodes").unwrap_err().contains("is not NAME=N"));
        assert!(q
            .set_from("nodes=-1")
            .unwrap_err()
            .contains("is not a count"));
        assert!(q
            .set_from("queued-bytes=0")
            .unwrap_err()
            .contains("always bounded"));
    }
}
