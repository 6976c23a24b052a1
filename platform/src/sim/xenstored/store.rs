//! The XenStore tree: nodes with values and permissions, xenstored's permission rules,
//! generation counts for transaction conflict detection.

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet, HashMap};

use super::quota::over;
use super::wire::Errno;
use crate::DomId;

/// Access a permission entry grants.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// `n`: no access.
    None,
    /// `r`: read.
    Read,
    /// `w`: write.
    Write,
    /// `b`: both.
    Both,
}

/// One permission entry: `<mode><domid>`, e.g. `r5`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Perm {
    /// The domain.
    pub dom: DomId,
    /// What it may do.
    pub mode: Mode,
}

impl Perm {
    /// Parses `r5`, `w0`, `b3`, `n1`.
    pub fn parse(s: &str) -> Result<Perm, Errno> {
        let mut c = s.chars();
        let mode = match c.next() {
            Some('n') => Mode::None,
            Some('r') => Mode::Read,
            Some('w') => Mode::Write,
            Some('b') => Mode::Both,
            _ => return Err(Errno::EINVAL),
        };
        let dom = c.as_str().parse::<DomId>().map_err(|_| Errno::EINVAL)?;
        Ok(Perm { dom, mode })
    }
}

impl std::fmt::Display for Perm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let m = match self.mode {
            Mode::None => 'n',
            Mode::Read => 'r',
            Mode::Write => 'w',
            Mode::Both => 'b',
        };
        write!(f, "{m}{}", self.dom)
    }
}

/// What an operation needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Want {
    /// Read access.
    Read,
    /// Write access.
    Write,
    /// Ownership (or dom0).
    Owner,
}

/// One node: value, permissions, children, generation.
#[derive(Debug, Clone)]
pub struct Node {
    value: Vec<u8>,
    perms: Vec<Perm>,
    children: BTreeSet<String>,
    /// The children's names with their NULs: what a listing costs.
    child_bytes: usize,
    gen: u64,
}

impl Node {
    /// The node's size as C xenstored's `node-size` quota counts it.
    fn size(&self) -> usize {
        16 + 8 * self.perms.len() + self.value.len() + self.child_bytes
    }
}

/// A node changed by an operation (for watches).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    /// Absolute path of the node.
    pub path: String,
    /// Whether the node (and its subtree) was removed.
    pub removed: bool,
    /// Whether only watches set on this very node fire (a node removed below the one an
    /// `XS_RM` named), rather than those on it and its ancestors.
    pub exact: bool,
}

/// What one unprivileged domain may do to the tree (C xenstored's `nodes`,
/// `node-permissions` and `node-size` quotas; 0 disables one). Dom0 is exempt, as in C
/// xenstored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TreeLimits {
    /// Nodes the domain may own.
    pub nodes: usize,
    /// Permission entries of one node, the owner's included.
    pub node_permissions: usize,
    /// Bytes of one node as C xenstored counts them: a 16-byte header, 8 bytes per
    /// permission, the value, and each child's name with its NUL.
    pub node_size: usize,
}

impl TreeLimits {
    /// No limits (what a tree without a daemon's quotas uses).
    pub const NONE: TreeLimits = TreeLimits {
        nodes: 0,
        node_permissions: 0,
        node_size: 0,
    };
}

fn parent(path: &str) -> Option<&str> {
    if path == "/" {
        return None;
    }
    match path.rfind('/') {
        Some(0) => Some("/"),
        Some(i) => Some(&path[..i]),
        None => None,
    }
}

fn basename(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or(path)
}

/// The tree.
#[derive(Debug, Clone)]
pub struct Store {
    nodes: HashMap<String, Node>,
    gen: u64,
    owned: HashMap<DomId, usize>,
    limits: TreeLimits,
}

impl Default for Store {
    fn default() -> Self {
        Store::new()
    }
}

impl Store {
    /// A store with `/`, `/local` and `/local/domain`, owned by dom0 and readable by nobody
    /// else.
    pub fn new() -> Store {
        Store::with_limits(TreeLimits::NONE)
    }

    /// A new store whose unprivileged domains are held to `limits`.
    pub fn with_limits(limits: TreeLimits) -> Store {
        let mut s = Store {
            nodes: HashMap::new(),
            gen: 0,
            owned: HashMap::new(),
            limits,
        };
        let p0 = vec![Perm {
            dom: 0,
            mode: Mode::None,
        }];
        s.nodes.insert(
            "/".into(),
            Node {
                value: Vec::new(),
                perms: p0.clone(),
                children: BTreeSet::new(),
                child_bytes: 0,
                gen: 0,
            },
        );
        for p in ["/local", "/local/domain"] {
            let _ = s.create_one(p, p0.clone());
        }
        s
    }
}

impl Store {
    /// Forgets released domain `dom`, as C xenstored does since XSA-322 and XSA-419: every
    /// node it owns goes, with the subtree below it, and every other node's permissions
    /// lose their entries for it, so a new domain given the same id inherits nothing of
    /// the old one's and nothing it made outside its directory outlives it uncounted.
    /// Returns the changes (for watches). Dom0 is never forgotten.
    pub fn forget_domain(&mut self, dom: DomId) -> Vec<Change> {
        if dom == 0 {
            return Vec::new();
        }
        let mut owned: Vec<String> = self
            .nodes
            .iter()
            .filter(|(p, n)| *p != "/" && n.perms.first().is_some_and(|o| o.dom == dom))
            .map(|(p, _)| p.clone())
            .collect();
        // Parents first: a node already gone with its parent's subtree is skipped.
        owned.sort_by_key(|p| p.len());
        let mut changes = Vec::new();
        for p in owned {
            if self.exists(&p) {
                changes.extend(self.rm(0, &p).unwrap_or_default());
            }
        }
        let named: Vec<String> = self
            .nodes
            .iter()
            .filter(|(_, n)| n.perms.iter().skip(1).any(|q| q.dom == dom))
            .map(|(p, _)| p.clone())
            .collect();
        for p in named {
            let g = self.next_gen();
            if let Some(n) = self.nodes.get_mut(&p) {
                // The owner is not `dom` (its nodes went above), so it stays first.
                n.perms.retain(|q| q.dom != dom);
                n.gen = g;
            }
            changes.push(Change {
                path: p,
                removed: false,
                exact: true,
            });
        }
        changes
    }
}

impl NodeMap for Store {
    fn node(&self, path: &str) -> Option<&Node> {
        self.nodes.get(path)
    }

    fn node_mut(&mut self, path: &str) -> Option<&mut Node> {
        self.nodes.get_mut(path)
    }

    fn put(&mut self, path: &str, node: Node) {
        self.nodes.insert(path.to_string(), node);
    }

    fn take(&mut self, path: &str) -> Option<Node> {
        self.nodes.remove(path)
    }

    fn next_gen(&mut self) -> u64 {
        self.gen += 1;
        self.gen
    }

    fn owned(&self, dom: DomId) -> usize {
        self.owned.get(&dom).copied().unwrap_or(0)
    }

    fn add_owned(&mut self, dom: DomId, delta: isize) {
        let c = self.owned.entry(dom).or_default();
        *c = c.saturating_add_signed(delta);
    }

    fn limits(&self) -> TreeLimits {
        self.limits
    }
}

/// Where an operation's nodes live: the committed tree ([`Store`]) or a transaction's view
/// of it ([`TxView`]). [`Tree`]'s operations are written once over this.
pub trait NodeMap {
    /// The node at `path`.
    fn node(&self, path: &str) -> Option<&Node>;
    /// The node at `path`, to change it.
    fn node_mut(&mut self, path: &str) -> Option<&mut Node>;
    /// Stores a node at `path`.
    fn put(&mut self, path: &str, node: Node);
    /// Removes the node at `path`.
    fn take(&mut self, path: &str) -> Option<Node>;
    /// A fresh generation count.
    fn next_gen(&mut self) -> u64;
    /// Nodes `dom` owns.
    fn owned(&self, dom: DomId) -> usize;
    /// Counts `delta` more nodes as owned by `dom`.
    fn add_owned(&mut self, dom: DomId, delta: isize);
    /// The limits unprivileged domains are held to.
    fn limits(&self) -> TreeLimits;
}

/// The XenStore operations with xenstored's permission rules and quotas, over any
/// [`NodeMap`].
pub trait Tree: NodeMap {
    /// The generation of `path` (`None` if absent): what a transaction compares.
    fn generation(&self, path: &str) -> Option<u64> {
        self.node(path).map(|n| n.gen)
    }

    /// Whether `path` exists.
    fn exists(&self, path: &str) -> bool {
        self.node(path).is_some()
    }

    #[doc(hidden)]
    fn create_one(&mut self, path: &str, perms: Vec<Perm>) -> Result<(), Errno> {
        let g = self.next_gen();
        let par = parent(path).ok_or(Errno::EINVAL)?;
        let pn = self.node_mut(par).ok_or(Errno::ENOENT)?;
        if pn.children.insert(basename(path).to_string()) {
            pn.child_bytes += basename(path).len() + 1;
        }
        pn.gen = g;
        if let Some(owner) = perms.first() {
            self.add_owned(owner.dom, 1);
        }
        self.put(
            path,
            Node {
                value: Vec::new(),
                perms,
                children: BTreeSet::new(),
                child_bytes: 0,
                gen: g,
            },
        );
        Ok(())
    }

    /// Whether `dom` may access `path` (which must exist) as `want`. Dom0 may do anything.
    fn allowed(&self, dom: DomId, path: &str, want: Want) -> bool {
        if dom == 0 {
            return true;
        }
        let Some(n) = self.node(path) else {
            return false;
        };
        match want {
            Want::Owner => n.perms.first().is_some_and(|o| o.dom == dom),
            Want::Read => matches!(mode_for(&n.perms, dom), Mode::Read | Mode::Both),
            Want::Write => matches!(mode_for(&n.perms, dom), Mode::Write | Mode::Both),
        }
    }

    #[doc(hidden)]
    fn check(&self, dom: DomId, path: &str, want: Want) -> Result<&Node, Errno> {
        let n = self.node(path).ok_or(Errno::ENOENT)?;
        if self.allowed(dom, path, want) {
            Ok(n)
        } else {
            Err(Errno::EACCES)
        }
    }

    /// `XS_READ`.
    fn read(&self, dom: DomId, path: &str) -> Result<Vec<u8>, Errno> {
        Ok(self.check(dom, path, Want::Read)?.value.clone())
    }

    /// `XS_DIRECTORY`: child names.
    fn directory(&self, dom: DomId, path: &str) -> Result<Vec<String>, Errno> {
        Ok(self
            .check(dom, path, Want::Read)?
            .children
            .iter()
            .cloned()
            .collect())
    }

    /// `XS_GET_PERMS`.
    fn get_perms(&self, dom: DomId, path: &str) -> Result<Vec<Perm>, Errno> {
        Ok(self.check(dom, path, Want::Read)?.perms.clone())
    }

    /// Creates `path` and any missing ancestors, checking write access on the nearest
    /// existing ancestor. New nodes inherit that ancestor's permissions, owned by the
    /// creator unless it is dom0 (xenstored's rule). Returns the created paths.
    #[doc(hidden)]
    fn ensure(&mut self, dom: DomId, path: &str) -> Result<Vec<String>, Errno> {
        if self.exists(path) {
            return Ok(Vec::new());
        }
        let mut missing = vec![path.to_string()];
        let mut anc = parent(path).ok_or(Errno::EINVAL)?;
        while !self.exists(anc) {
            missing.push(anc.to_string());
            anc = parent(anc).ok_or(Errno::EINVAL)?;
        }
        if !self.allowed(dom, anc, Want::Write) {
            return Err(Errno::EACCES);
        }
        let mut perms = self.node(anc).map(|n| n.perms.clone()).unwrap_or_default();
        if dom != 0 {
            // The creator owns the new nodes; it needs no entry of its own besides.
            match perms.first_mut() {
                Some(o) => o.dom = dom,
                None => perms.push(Perm {
                    dom,
                    mode: Mode::None,
                }),
            }
            let mut i = 1;
            while i < perms.len() {
                if perms[i].dom == dom {
                    perms.remove(i);
                } else {
                    i += 1;
                }
            }
        }
        if dom != 0 {
            self.check_growth(dom, anc, &missing, perms.len())?;
        }
        missing.reverse();
        for p in &missing {
            self.create_one(p, perms.clone())?;
        }
        Ok(missing)
    }

    /// The `nodes` and `node-size` quotas for creating `missing` (the new path first, then
    /// its missing ancestors) below the existing `anc`, each new node with `nperms` entries.
    #[doc(hidden)]
    fn check_growth(
        &self,
        dom: DomId,
        anc: &str,
        missing: &[String],
        nperms: usize,
    ) -> Result<(), Errno> {
        let have = self.owned(dom);
        let top = missing.last().map_or("", |t| basename(t));
        let anc_size = self.node(anc).map_or(0, |n| n.size()) + top.len() + 1;
        // Each new node but the leaf has one child: the next component.
        let inner = missing
            .windows(2)
            .map(|w| 16 + 8 * nperms + basename(&w[0]).len() + 1);
        if over(self.limits().nodes, have + missing.len())
            || over(self.limits().node_size, anc_size)
            || inner
                .chain([16 + 8 * nperms])
                .any(|size| over(self.limits().node_size, size))
        {
            return Err(Errno::ENOSPC);
        }
        Ok(())
    }

    /// `XS_WRITE`: sets the value, creating the node and its parents as needed.
    fn write(&mut self, dom: DomId, path: &str, value: &[u8]) -> Result<Vec<Change>, Errno> {
        if dom != 0 {
            // The node's size with the new value (a new node: one permission, no children).
            let base = self.node(path).map_or(24, |n| n.size() - n.value.len());
            if over(self.limits().node_size, base + value.len()) {
                return Err(Errno::ENOSPC);
            }
        }
        let created = self.ensure(dom, path)?;
        if created.is_empty() && !self.allowed(dom, path, Want::Write) {
            return Err(Errno::EACCES);
        }
        let g = self.next_gen();
        let n = self.node_mut(path).ok_or(Errno::ENOENT)?;
        n.value = value.to_vec();
        n.gen = g;
        // As xenstored: one event for the written node; watchers of the implicitly created
        // parents see it as a change below them.
        drop(created);
        Ok(vec![Change {
            path: path.to_string(),
            removed: false,
            exact: false,
        }])
    }

    /// `XS_MKDIR`: creates the node if it does not exist.
    fn mkdir(&mut self, dom: DomId, path: &str) -> Result<Vec<Change>, Errno> {
        if self.exists(path) {
            self.check(dom, path, Want::Read)?;
            return Ok(Vec::new());
        }
        self.ensure(dom, path)?;
        Ok(vec![Change {
            path: path.to_string(),
            removed: false,
            exact: false,
        }])
    }

    /// `XS_RM`: removes the node and its subtree. Absent is fine unless the parent is absent
    /// too.
    fn rm(&mut self, dom: DomId, path: &str) -> Result<Vec<Change>, Errno> {
        if path == "/" {
            return Err(Errno::EINVAL);
        }
        if !self.exists(path) {
            return match parent(path) {
                Some(p) if self.exists(p) => Ok(Vec::new()),
                _ => Err(Errno::ENOENT),
            };
        }
        if !self.allowed(dom, path, Want::Write) {
            return Err(Errno::EACCES);
        }
        let mut removed = vec![Change {
            path: path.to_string(),
            removed: true,
            exact: false,
        }];
        let mut stack = vec![path.to_string()];
        while let Some(p) = stack.pop() {
            if let Some(n) = self.take(&p) {
                if let Some(o) = n.perms.first() {
                    self.add_owned(o.dom, -1);
                }
                if p != path {
                    // As C xenstored: each node below fires the watches set on it exactly.
                    removed.push(Change {
                        path: p.clone(),
                        removed: true,
                        exact: true,
                    });
                }
                for c in n.children {
                    stack.push(if p == "/" {
                        format!("/{c}")
                    } else {
                        format!("{p}/{c}")
                    });
                }
            }
        }
        let g = self.next_gen();
        if let Some(pn) = parent(path).and_then(|p| self.node_mut(p)) {
            if pn.children.remove(basename(path)) {
                pn.child_bytes -= basename(path).len() + 1;
            }
            pn.gen = g;
        }
        Ok(removed)
    }

    /// `XS_SET_PERMS`: only the owner (or dom0) may, and only dom0 may give a node away.
    fn set_perms(
        &mut self,
        dom: DomId,
        path: &str,
        perms: Vec<Perm>,
    ) -> Result<Vec<Change>, Errno> {
        if perms.is_empty() {
            return Err(Errno::EINVAL);
        }
        let n = self.check(dom, path, Want::Owner)?;
        if dom != 0
            && (over(self.limits().node_permissions, perms.len())
                || over(
                    self.limits().node_size,
                    n.size() + 8 * perms.len() - 8 * n.perms.len(),
                ))
        {
            return Err(Errno::ENOSPC);
        }
        let old_owner = n.perms.first().map(|p| p.dom);
        if dom != 0 && old_owner != Some(perms[0].dom) {
            return Err(Errno::EPERM);
        }
        let g = self.next_gen();
        if let Some(n) = self.node_mut(path) {
            n.perms = perms.clone();
            n.gen = g;
        }
        if let Some(o) = old_owner {
            self.add_owned(o, -1);
        }
        self.add_owned(perms[0].dom, 1);
        Ok(vec![Change {
            path: path.to_string(),
            removed: false,
            exact: false,
        }])
    }
}

impl<T: NodeMap + ?Sized> Tree for T {}

fn mode_for(perms: &[Perm], dom: DomId) -> Mode {
    match perms.first() {
        None => Mode::None,
        Some(owner) if owner.dom == dom => Mode::Both,
        Some(owner) => perms[1..]
            .iter()
            .find(|p| p.dom == dom)
            .map_or(owner.mode, |p| p.mode),
    }
}

/// A transaction's private state: the nodes it changed, and the generation each node it
/// looked at had in the committed tree when it first did (C xenstored's accessed-node list).
/// Nothing is copied at its start; at commit, an unchanged generation of every node it
/// looked at makes its view still the truth, and its changed nodes are put in place.
#[derive(Debug, Default)]
pub struct TxState {
    /// Changed nodes: `None` for removed.
    overlay: HashMap<String, Option<Node>>,
    /// First-seen committed generation (`None`: absent) of every node looked at.
    seen: RefCell<HashMap<String, Option<u64>>>,
    owned_delta: HashMap<DomId, isize>,
    /// Nodes changed, one entry per node (what fires watches at commit).
    changes: BTreeMap<String, (bool, bool)>,
    gen: u64,
}

impl TxState {
    /// Distinct nodes the transaction has touched (C xenstored's `transaction-nodes`).
    pub fn nodes(&self) -> usize {
        self.seen.borrow().len()
    }

    /// Records the changes of one operation, one entry per node: removed if any operation
    /// removed it, exact only if every change of it was exact.
    pub fn record(&mut self, changes: Vec<Change>) {
        for c in changes {
            let e = self.changes.entry(c.path).or_insert((false, true));
            e.0 |= c.removed;
            e.1 &= c.exact;
        }
    }
}

/// A transaction's view: the committed tree under the transaction's changes.
pub struct TxView<'a> {
    base: &'a Store,
    tx: &'a mut TxState,
}

impl<'a> TxView<'a> {
    /// The view of `tx` over `base`.
    pub fn new(base: &'a Store, tx: &'a mut TxState) -> TxView<'a> {
        TxView { base, tx }
    }

    fn saw(&self, path: &str) {
        let mut seen = self.tx.seen.borrow_mut();
        if !seen.contains_key(path) {
            seen.insert(path.to_string(), self.base.generation(path));
        }
    }
}

impl NodeMap for TxView<'_> {
    fn node(&self, path: &str) -> Option<&Node> {
        if let Some(n) = self.tx.overlay.get(path) {
            return n.as_ref();
        }
        self.saw(path);
        self.base.nodes.get(path)
    }

    fn node_mut(&mut self, path: &str) -> Option<&mut Node> {
        if !self.tx.overlay.contains_key(path) {
            self.saw(path);
            let n = self.base.nodes.get(path)?.clone();
            self.tx.overlay.insert(path.to_string(), Some(n));
        }
        self.tx.overlay.get_mut(path).and_then(Option::as_mut)
    }

    fn put(&mut self, path: &str, node: Node) {
        self.saw(path);
        self.tx.overlay.insert(path.to_string(), Some(node));
    }

    fn take(&mut self, path: &str) -> Option<Node> {
        let old = self.node(path).cloned();
        self.tx.overlay.insert(path.to_string(), None);
        old
    }

    fn next_gen(&mut self) -> u64 {
        self.tx.gen += 1;
        self.base.gen + self.tx.gen
    }

    fn owned(&self, dom: DomId) -> usize {
        let d = self.tx.owned_delta.get(&dom).copied().unwrap_or(0);
        self.base.owned(dom).saturating_add_signed(d)
    }

    fn add_owned(&mut self, dom: DomId, delta: isize) {
        *self.tx.owned_delta.entry(dom).or_default() += delta;
    }

    fn limits(&self) -> TreeLimits {
        self.base.limits
    }
}

impl Store {
    /// Commits transaction `tx` of domain `dom`: `EAGAIN` if a node it looked at changed
    /// since (the client redoes it), `ENOSPC` if the domain's nodes would now exceed its
    /// quota; otherwise its changes are put in place, in time proportional to what it
    /// touched, and the changed nodes are returned (one entry per node).
    pub fn commit(&mut self, dom: DomId, tx: TxState) -> Result<Vec<Change>, Errno> {
        if tx
            .seen
            .borrow()
            .iter()
            .any(|(p, g)| self.generation(p) != *g)
        {
            return Err(Errno::EAGAIN);
        }
        let grows = tx.owned_delta.get(&dom).copied().unwrap_or(0);
        if dom != 0
            && grows > 0
            && over(
                self.limits.nodes,
                self.owned(dom).saturating_add_signed(grows),
            )
        {
            return Err(Errno::ENOSPC);
        }
        for (p, n) in tx.overlay {
            match n {
                Some(mut n) => {
                    n.gen = self.next_gen();
                    self.nodes.insert(p, n);
                }
                None => {
                    self.nodes.remove(&p);
                }
            }
        }
        for (d, delta) in tx.owned_delta {
            self.add_owned(d, delta);
        }
        Ok(tx
            .changes
            .into_iter()
            .map(|(path, (removed, exact))| Change {
                path,
                removed,
                exact,
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Vec<Perm> {
        s.split(' ').map(|x| Perm::parse(x).unwrap()).collect()
    }

    #[test]
    fn permissions_follow_xenstored_rules() {
        let mut s = Store::new();
        s.write(0, "/local/domain/1", b"").unwrap();
        s.set_perms(0, "/local/domain/1", p("n1 r0")).unwrap();
        // Domain 1 owns its directory: it writes below it, new nodes are its own.
        s.write(1, "/local/domain/1/device/vif/0/state", b"1")
            .unwrap();
        assert_eq!(
            s.get_perms(1, "/local/domain/1/device").unwrap(),
            p("n1 r0")
        );
        // Domain 2 cannot read or write there.
        assert_eq!(
            s.read(2, "/local/domain/1/device/vif/0/state"),
            Err(Errno::EACCES)
        );
        assert_eq!(s.write(2, "/local/domain/1/x", b"1"), Err(Errno::EACCES));
        // Granting read to domain 2 on one node.
        s.set_perms(1, "/local/domain/1/device/vif/0/state", p("n1 r2"))
            .unwrap();
        assert_eq!(
            s.read(2, "/local/domain/1/device/vif/0/state").unwrap(),
            b"1"
        );
        assert_eq!(
            s.write(2, "/local/domain/1/device/vif/0/state", b"2"),
            Err(Errno::EACCES)
        );
        // Only dom0 gives nodes away; non-owners cannot change perms.
        assert_eq!(
            s.set_perms(1, "/local/domain/1/device", p("n2")),
            Err(Errno::EPERM)
        );
        assert_eq!(
            s.set_perms(2, "/local/domain/1/device", p("n2")),
            Err(Errno::EACCES)
        );
        // Guests cannot touch the root.
        assert_eq!(s.write(1, "/evil", b"1"), Err(Errno::EACCES));
        assert_eq!(s.rm(1, "/local"), Err(Errno::EACCES));
    }

    #[test]
    fn rm_and_directory() {
        let mut s = Store::new();
        s.write(0, "/a/b/c", b"x").unwrap();
        s.write(0, "/a/d", b"y").unwrap();
        assert_eq!(s.directory(0, "/a").unwrap(), vec!["b", "d"]);
        let ch = s.rm(0, "/a/b").unwrap();
        let got: Vec<(&str, bool, bool)> = ch
            .iter()
            .map(|c| (c.path.as_str(), c.removed, c.exact))
            .collect();
        assert_eq!(got, vec![("/a/b", true, false), ("/a/b/c", true, true)]);
        assert!(!s.exists("/a/b/c"));
        assert_eq!(s.directory(0, "/a").unwrap(), vec!["d"]);
        assert_eq!(s.rm(0, "/a/zz").unwrap(), vec![]);
        assert_eq!(s.rm(0, "/q/zz"), Err(Errno::ENOENT));
        assert_eq!(s.rm(0, "/"), Err(Errno::EINVAL));
        assert_eq!(s.read(0, "/a/b"), Err(Errno::ENOENT));
    }

    #[test]
    fn guests_have_a_node_quota() {
        let mut s = Store::with_limits(TreeLimits {
            nodes: 50,
            ..TreeLimits::NONE
        });
        s.write(0, "/local/domain/3", b"").unwrap();
        s.set_perms(0, "/local/domain/3", p("n3")).unwrap();
        let mut n = 0;
        let err = loop {
            match s.write(3, &format!("/local/domain/3/k{n}"), b"v") {
                Ok(_) => n += 1,
                Err(e) => break e,
            }
        };
        assert_eq!(err, Errno::ENOSPC);
        assert_eq!(n, 49); // the home directory is the 50th
        s.rm(3, "/local/domain/3/k0").unwrap();
        s.write(3, "/local/domain/3/again", b"v").unwrap();
    }
}
