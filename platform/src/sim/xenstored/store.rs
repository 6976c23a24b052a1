//! The XenStore tree: nodes with values and permissions, xenstored's permission rules,
//! generation counts for transaction conflict detection.

use std::collections::{BTreeSet, HashMap};

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

#[derive(Debug, Clone)]
struct Node {
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
    /// Whether the node and its subtree were removed.
    pub removed: bool,
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

    fn bump(&mut self) -> u64 {
        self.gen += 1;
        self.gen
    }

    /// The generation of `path` (`None` if absent): what a transaction compares.
    pub fn generation(&self, path: &str) -> Option<u64> {
        self.nodes.get(path).map(|n| n.gen)
    }

    /// Whether `path` exists.
    pub fn exists(&self, path: &str) -> bool {
        self.nodes.contains_key(path)
    }

    fn create_one(&mut self, path: &str, perms: Vec<Perm>) -> Result<(), Errno> {
        let g = self.bump();
        let par = parent(path).ok_or(Errno::EINVAL)?;
        let pn = self.nodes.get_mut(par).ok_or(Errno::ENOENT)?;
        if pn.children.insert(basename(path).to_string()) {
            pn.child_bytes += basename(path).len() + 1;
        }
        pn.gen = g;
        if let Some(owner) = perms.first() {
            *self.owned.entry(owner.dom).or_default() += 1;
        }
        self.nodes.insert(
            path.to_string(),
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

    /// Whether `dom` may access `path` (which must exist) as `want`. Dom0 may do anything.
    pub fn allowed(&self, dom: DomId, path: &str, want: Want) -> bool {
        if dom == 0 {
            return true;
        }
        let Some(n) = self.nodes.get(path) else {
            return false;
        };
        match want {
            Want::Owner => n.perms.first().is_some_and(|o| o.dom == dom),
            Want::Read => matches!(Self::mode_for(&n.perms, dom), Mode::Read | Mode::Both),
            Want::Write => matches!(Self::mode_for(&n.perms, dom), Mode::Write | Mode::Both),
        }
    }

    fn check(&self, dom: DomId, path: &str, want: Want) -> Result<&Node, Errno> {
        let n = self.nodes.get(path).ok_or(Errno::ENOENT)?;
        if self.allowed(dom, path, want) {
            Ok(n)
        } else {
            Err(Errno::EACCES)
        }
    }

    /// `XS_READ`.
    pub fn read(&self, dom: DomId, path: &str) -> Result<Vec<u8>, Errno> {
        Ok(self.check(dom, path, Want::Read)?.value.clone())
    }

    /// `XS_DIRECTORY`: child names.
    pub fn directory(&self, dom: DomId, path: &str) -> Result<Vec<String>, Errno> {
        Ok(self
            .check(dom, path, Want::Read)?
            .children
            .iter()
            .cloned()
            .collect())
    }

    /// `XS_GET_PERMS`.
    pub fn get_perms(&self, dom: DomId, path: &str) -> Result<Vec<Perm>, Errno> {
        Ok(self.check(dom, path, Want::Read)?.perms.clone())
    }

    /// The paths an operation on `path` depends on: the path and its missing ancestors up to
    /// and including the nearest existing one.
    pub fn dependencies(&self, path: &str) -> Vec<String> {
        let mut v = vec![path.to_string()];
        let mut p = path;
        while !self.exists(p) {
            match parent(p) {
                Some(q) => {
                    v.push(q.to_string());
                    p = q;
                }
                None => break,
            }
        }
        if let Some(q) = parent(path) {
            if !v.iter().any(|x| x == q) {
                v.push(q.to_string());
            }
        }
        v
    }

    /// Creates `path` and any missing ancestors, checking write access on the nearest
    /// existing ancestor. New nodes inherit that ancestor's permissions, owned by the
    /// creator unless it is dom0 (xenstored's rule). Returns the created paths.
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
        let mut perms = self
            .nodes
            .get(anc)
            .map(|n| n.perms.clone())
            .unwrap_or_default();
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
    fn check_growth(
        &self,
        dom: DomId,
        anc: &str,
        missing: &[String],
        nperms: usize,
    ) -> Result<(), Errno> {
        let have = self.owned.get(&dom).copied().unwrap_or(0);
        let top = missing.last().map_or("", |t| basename(t));
        let anc_size = self.nodes.get(anc).map_or(0, |n| n.size()) + top.len() + 1;
        // Each new node but the leaf has one child: the next component.
        let inner = missing
            .windows(2)
            .map(|w| 16 + 8 * nperms + basename(&w[0]).len() + 1);
        if over(self.limits.nodes, have + missing.len())
            || over(self.limits.node_size, anc_size)
            || inner
                .chain([16 + 8 * nperms])
                .any(|size| over(self.limits.node_size, size))
        {
            return Err(Errno::ENOSPC);
        }
        Ok(())
    }

    /// `XS_WRITE`: sets the value, creating the node and its parents as needed.
    pub fn write(&mut self, dom: DomId, path: &str, value: &[u8]) -> Result<Vec<Change>, Errno> {
        if dom != 0 {
            // The node's size with the new value (a new node: one permission, no children).
            let base = self
                .nodes
                .get(path)
                .map_or(24, |n| n.size() - n.value.len());
            if over(self.limits.node_size, base + value.len()) {
                return Err(Errno::ENOSPC);
            }
        }
        let created = self.ensure(dom, path)?;
        if created.is_empty() && !self.allowed(dom, path, Want::Write) {
            return Err(Errno::EACCES);
        }
        let g = self.bump();
        let n = self.nodes.get_mut(path).ok_or(Errno::ENOENT)?;
        n.value = value.to_vec();
        n.gen = g;
        // As xenstored: one event for the written node; watchers of the implicitly created
        // parents see it as a change below them.
        drop(created);
        Ok(vec![Change {
            path: path.to_string(),
            removed: false,
        }])
    }

    /// `XS_MKDIR`: creates the node if it does not exist.
    pub fn mkdir(&mut self, dom: DomId, path: &str) -> Result<Vec<Change>, Errno> {
        if self.exists(path) {
            self.check(dom, path, Want::Read)?;
            return Ok(Vec::new());
        }
        self.ensure(dom, path)?;
        Ok(vec![Change {
            path: path.to_string(),
            removed: false,
        }])
    }

    /// `XS_RM`: removes the node and its subtree. Absent is fine unless the parent is absent
    /// too.
    pub fn rm(&mut self, dom: DomId, path: &str) -> Result<Vec<Change>, Errno> {
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
        let mut stack = vec![path.to_string()];
        while let Some(p) = stack.pop() {
            if let Some(n) = self.nodes.remove(&p) {
                if let Some(o) = n.perms.first() {
                    if let Some(c) = self.owned.get_mut(&o.dom) {
                        *c = c.saturating_sub(1);
                    }
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
        let g = self.bump();
        if let Some(pn) = parent(path).and_then(|p| self.nodes.get_mut(p)) {
            if pn.children.remove(basename(path)) {
                pn.child_bytes -= basename(path).len() + 1;
            }
            pn.gen = g;
        }
        Ok(vec![Change {
            path: path.to_string(),
            removed: true,
        }])
    }

    /// `XS_SET_PERMS`: only the owner (or dom0) may, and only dom0 may give a node away.
    pub fn set_perms(
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
            && (over(self.limits.node_permissions, perms.len())
                || over(
                    self.limits.node_size,
                    n.size() + 8 * perms.len() - 8 * n.perms.len(),
                ))
        {
            return Err(Errno::ENOSPC);
        }
        let old_owner = n.perms.first().map(|p| p.dom);
        if dom != 0 && old_owner != Some(perms[0].dom) {
            return Err(Errno::EPERM);
        }
        let g = self.bump();
        if let Some(n) = self.nodes.get_mut(path) {
            n.perms = perms.clone();
            n.gen = g;
        }
        if let Some(o) = old_owner {
            if let Some(c) = self.owned.get_mut(&o) {
                *c = c.saturating_sub(1);
            }
        }
        *self.owned.entry(perms[0].dom).or_default() += 1;
        Ok(vec![Change {
            path: path.to_string(),
            removed: false,
        }])
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
        assert_eq!(s.rm(0, "/a/b").unwrap().len(), 1);
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
