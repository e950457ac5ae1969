//! The merged file tree of an image: layers applied in order to an in-memory tree.
//!
//! File contents never live here: a regular file points at an [`Extent`] of a spool file that
//! `layer` wrote while reading the layer, so memory stays proportional to the number of
//! entries, not to the image size.
//!
//! Rules (the OCI image spec's layer semantics, made safe):
//! - Entry paths are normalised: a leading `/` is dropped (tar's usual neutralisation), `.` and
//!   empty components are skipped, `..` pops a component, and a `..` above the root is rejected
//!   ([`EntryProblem::EscapesRoot`]).
//! - Parent directories are looked up in the tree, never on the host. A parent that is a symlink
//!   is resolved inside the image, with the image root as `/` (absolute targets start at the image
//!   root, `..` stops at it, at most 40 links): a write through a symlink can only land inside the
//!   image. The final component is never followed: an entry replaces a symlink of the same name.
//! - Hardlink targets are normalised the same way, must already exist (in this layer or a lower
//!   one), and must not be directories.
//! - Whiteouts hide lower layers only: `.wh.NAME` removes `NAME` unless this layer wrote it;
//!   `.wh..wh..opq` removes everything lower layers put under the directory, at any depth. Both are
//!   independent of where the marker sits in the layer's tar. Other `.wh..wh.` names (aufs
//!   metadata) are ignored.

use std::collections::BTreeMap;

/// Index of a node in the tree's arena.
pub type NodeId = usize;

/// Where a regular file's bytes are: `len` bytes at `offset` in spool file `spool`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Extent {
    pub spool: u32,
    pub offset: u64,
    pub len: u64,
}

/// Ownership, permissions and times of an entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Meta {
    /// Permission bits including setuid, setgid and sticky (`0o7777`).
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    /// Seconds since the epoch.
    pub mtime: i64,
}

impl Meta {
    pub const ROOT_DIR: Meta = Meta {
        mode: 0o755,
        uid: 0,
        gid: 0,
        mtime: 0,
    };
}

/// What an entry is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    Dir(BTreeMap<Vec<u8>, NodeId>),
    /// `link_group`: files created as hard links of each other share a group id.
    File {
        data: Extent,
        link_group: Option<u32>,
    },
    Symlink(Vec<u8>),
    CharDevice {
        major: u32,
        minor: u32,
    },
    BlockDevice {
        major: u32,
        minor: u32,
    },
    Fifo,
}

#[derive(Debug, Clone)]
pub struct Node {
    pub meta: Meta,
    pub kind: Kind,
    /// The highest layer that wrote this node or wrote something below it.
    last_layer: usize,
    /// Extended attributes seen in the layer (kept only to report what a format drops).
    pub xattrs: u32,
}

/// One entry of a layer, as read from its tar.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Op {
    /// The raw path from the tar header.
    pub path: Vec<u8>,
    pub meta: Meta,
    pub kind: OpKind,
    pub xattrs: u32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OpKind {
    Dir,
    File(Extent),
    Symlink(Vec<u8>),
    /// A hard link to the raw path in the tar header.
    Hardlink(Vec<u8>),
    CharDevice {
        major: u32,
        minor: u32,
    },
    BlockDevice {
        major: u32,
        minor: u32,
    },
    Fifo,
}

/// Why an entry was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EntryProblem {
    #[error("its path climbs above the image root with '..'")]
    EscapesRoot,
    #[error("its hard link target {0:?} climbs above the image root with '..'")]
    HardlinkEscapesRoot(String),
    #[error("its hard link target {0:?} does not exist in this or a lower layer")]
    HardlinkTargetMissing(String),
    #[error("its hard link target {0:?} is a directory")]
    HardlinkToDirectory(String),
    #[error("a parent of it, {0:?}, is not a directory")]
    ParentNotDirectory(String),
    #[error("resolving a symlink in its parent path took more than 40 links (a loop?)")]
    SymlinkLoop,
    #[error("a path component is longer than 255 bytes")]
    NameTooLong,
    #[error("the path is longer than 4096 bytes or nests deeper than 2048 directories")]
    PathTooLong,
    #[error("the image root can only be a directory")]
    RootNotDirectory,
    #[error("a whiteout must name an entry (got {0:?})")]
    BadWhiteout(String),
    #[error("the image has more than {0} entries")]
    TooManyEntries(usize),
}

const MAX_SYMLINK_HOPS: usize = 40;
const MAX_NAME: usize = 255;
const MAX_PATH: usize = 4096;
/// Deepest directory nesting, reached through symlinks or not (PATH_MAX allows ~2048).
const MAX_DEPTH: usize = 2048;
const WHITEOUT: &[u8] = b".wh.";
const META_PREFIX: &[u8] = b".wh..wh.";
const OPAQUE: &[u8] = b".wh..wh..opq";

/// The merged tree.
#[derive(Debug)]
pub struct Tree {
    nodes: Vec<Option<Node>>,
    live: usize,
    max_entries: usize,
    next_link_group: u32,
}

fn lossy(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Splits and normalises a tar path. `Ok(vec![])` is the root.
pub fn normalize(raw: &[u8]) -> Result<Vec<Vec<u8>>, EntryProblem> {
    if raw.len() > MAX_PATH {
        return Err(EntryProblem::PathTooLong);
    }
    let mut out: Vec<Vec<u8>> = Vec::new();
    for c in raw.split(|&b| b == b'/') {
        match c {
            b"" | b"." => {}
            b".." => {
                out.pop().ok_or(EntryProblem::EscapesRoot)?;
            }
            c if c.len() > MAX_NAME => return Err(EntryProblem::NameTooLong),
            c => out.push(c.to_vec()),
        }
    }
    Ok(out)
}

impl Tree {
    pub fn new(max_entries: usize) -> Tree {
        let root = Node {
            meta: Meta::ROOT_DIR,
            kind: Kind::Dir(BTreeMap::new()),
            last_layer: 0,
            xattrs: 0,
        };
        Tree {
            nodes: vec![Some(root)],
            live: 1,
            max_entries,
            next_link_group: 0,
        }
    }

    pub const ROOT: NodeId = 0;

    pub fn node(&self, id: NodeId) -> &Node {
        self.nodes[id].as_ref().expect("live node id")
    }

    fn node_mut(&mut self, id: NodeId) -> &mut Node {
        self.nodes[id].as_mut().expect("live node id")
    }

    /// Number of entries, the root included.
    pub fn len(&self) -> usize {
        self.live
    }

    pub fn is_empty(&self) -> bool {
        self.live == 0
    }

    fn children(&self, id: NodeId) -> Option<&BTreeMap<Vec<u8>, NodeId>> {
        match &self.node(id).kind {
            Kind::Dir(c) => Some(c),
            _ => None,
        }
    }

    fn child(&self, dir: NodeId, name: &[u8]) -> Option<NodeId> {
        self.children(dir)?.get(name).copied()
    }

    /// Looks up a path without following any symlink (for tests and tools).
    pub fn lookup(&self, path: &str) -> Option<&Node> {
        let mut cur = Self::ROOT;
        for c in normalize(path.as_bytes()).ok()? {
            cur = self.child(cur, &c)?;
        }
        Some(self.node(cur))
    }

    fn alloc(&mut self, node: Node) -> Result<NodeId, EntryProblem> {
        if self.live >= self.max_entries {
            return Err(EntryProblem::TooManyEntries(self.max_entries));
        }
        self.live += 1;
        self.nodes.push(Some(node));
        Ok(self.nodes.len() - 1)
    }

    fn remove_subtree(&mut self, id: NodeId) {
        let mut stack = vec![id];
        while let Some(id) = stack.pop() {
            if let Some(node) = self.nodes[id].take() {
                self.live -= 1;
                if let Kind::Dir(children) = node.kind {
                    stack.extend(children.into_values());
                }
            }
        }
    }

    fn detach(&mut self, dir: NodeId, name: &[u8]) {
        let removed = match &mut self.node_mut(dir).kind {
            Kind::Dir(c) => c.remove(name),
            _ => None,
        };
        if let Some(id) = removed {
            self.remove_subtree(id);
        }
    }

    fn insert_child(&mut self, dir: NodeId, name: Vec<u8>, id: NodeId) {
        if let Kind::Dir(c) = &mut self.node_mut(dir).kind {
            c.insert(name, id);
        }
    }

    /// Resolves a directory path inside the image, following symlinks with the image root as `/`.
    /// Missing directories are created (as `mkdir -p` would) when `create` is set; otherwise a
    /// missing one yields `Ok(None)`.
    fn resolve_dir(
        &mut self,
        comps: &[Vec<u8>],
        layer: usize,
        create: bool,
    ) -> Result<Option<NodeId>, EntryProblem> {
        let mut hops = 0;
        // A work list of components still to walk; symlink targets are spliced in front.
        let mut todo: Vec<Vec<u8>> = comps.iter().rev().cloned().collect();
        let mut stack: Vec<NodeId> = vec![Self::ROOT];
        while let Some(c) = todo.pop() {
            if stack.len() > MAX_DEPTH {
                return Err(EntryProblem::PathTooLong);
            }
            let cur = *stack.last().expect("stack holds the root");
            if c == b".." {
                if stack.len() > 1 {
                    stack.pop();
                }
                continue;
            }
            if c.is_empty() || c == b"." {
                continue;
            }
            match self.child(cur, &c) {
                None if !create => return Ok(None),
                None => {
                    let node = Node {
                        meta: Meta::ROOT_DIR,
                        kind: Kind::Dir(BTreeMap::new()),
                        last_layer: layer,
                        xattrs: 0,
                    };
                    let id = self.alloc(node)?;
                    self.insert_child(cur, c, id);
                    stack.push(id);
                }
                Some(id) => match &self.node(id).kind {
                    Kind::Dir(_) => stack.push(id),
                    Kind::Symlink(target) => {
                        hops += 1;
                        if hops > MAX_SYMLINK_HOPS {
                            return Err(EntryProblem::SymlinkLoop);
                        }
                        if target.first() == Some(&b'/') {
                            stack.truncate(1);
                        }
                        if target.len() > MAX_PATH {
                            return Err(EntryProblem::PathTooLong);
                        }
                        let target = target.clone();
                        todo.extend(target.split(|&b| b == b'/').rev().map(<[u8]>::to_vec));
                    }
                    _ => return Err(EntryProblem::ParentNotDirectory(lossy(&c))),
                },
            }
        }
        if create {
            for &id in &stack {
                let n = self.node_mut(id);
                n.last_layer = n.last_layer.max(layer);
            }
        }
        Ok(stack.last().copied())
    }

    /// Removes everything lower layers put under `dir`, keeping what `layer` wrote.
    fn make_opaque(&mut self, dir: NodeId, layer: usize) {
        let Some(children) = self.children(dir) else {
            return;
        };
        let entries: Vec<(Vec<u8>, NodeId)> =
            children.iter().map(|(k, v)| (k.clone(), *v)).collect();
        for (name, id) in entries {
            let node = self.node(id);
            if node.last_layer < layer {
                self.detach(dir, &name);
            } else if matches!(node.kind, Kind::Dir(_)) {
                self.make_opaque(id, layer);
            }
        }
    }

    /// Applies one entry of layer `layer` (layers are numbered from 1, in order).
    pub fn apply(&mut self, layer: usize, op: Op) -> Result<(), EntryProblem> {
        let mut comps = normalize(&op.path)?;
        let Some(name) = comps.pop() else {
            // The image root itself (`./`): only its metadata.
            if op.kind != OpKind::Dir {
                return Err(EntryProblem::RootNotDirectory);
            }
            let root = self.node_mut(Self::ROOT);
            root.meta = op.meta;
            root.last_layer = layer;
            return Ok(());
        };

        if let Some(hidden) = name.strip_prefix(WHITEOUT) {
            return self.whiteout(&comps, &name, hidden, layer);
        }

        // Resolve a hard link's target before the entry replaces anything (it may name itself).
        let link_source = match &op.kind {
            OpKind::Hardlink(target) => Some(self.hardlink_source(target)?),
            _ => None,
        };
        let parent = self.resolve_dir(&comps, layer, true)?.expect("created");
        let existing = self.child(parent, &name);

        let kind = match op.kind {
            OpKind::Dir => {
                if let Some(id) = existing
                    && matches!(self.node(id).kind, Kind::Dir(_))
                {
                    let n = self.node_mut(id);
                    n.meta = op.meta;
                    n.last_layer = layer;
                    n.xattrs = op.xattrs;
                    return Ok(());
                }
                Kind::Dir(BTreeMap::new())
            }
            OpKind::File(data) => Kind::File {
                data,
                link_group: None,
            },
            OpKind::Symlink(target) => Kind::Symlink(target),
            OpKind::CharDevice { major, minor } => Kind::CharDevice { major, minor },
            OpKind::BlockDevice { major, minor } => Kind::BlockDevice { major, minor },
            OpKind::Fifo => Kind::Fifo,
            OpKind::Hardlink(_) => {
                let src = link_source.expect("resolved above");
                if existing == Some(src) {
                    return Ok(()); // a link to itself changes nothing
                }
                let group = match &self.node(src).kind {
                    Kind::File {
                        link_group: Some(g),
                        ..
                    } => *g,
                    _ => {
                        let g = self.next_link_group;
                        self.next_link_group += 1;
                        if let Kind::File { link_group, .. } = &mut self.node_mut(src).kind {
                            *link_group = Some(g);
                        }
                        g
                    }
                };
                let src_node = self.node(src).clone();
                let kind = match src_node.kind {
                    Kind::File { data, .. } => Kind::File {
                        data,
                        link_group: Some(group),
                    },
                    other => other,
                };
                if existing.is_some() {
                    self.detach(parent, &name);
                }
                let id = self.alloc(Node {
                    meta: src_node.meta,
                    kind,
                    last_layer: layer,
                    xattrs: src_node.xattrs,
                })?;
                self.insert_child(parent, name, id);
                return Ok(());
            }
        };
        if existing.is_some() {
            self.detach(parent, &name);
        }
        let id = self.alloc(Node {
            meta: op.meta,
            kind,
            last_layer: layer,
            xattrs: op.xattrs,
        })?;
        self.insert_child(parent, name, id);
        Ok(())
    }

    fn hardlink_source(&mut self, target: &[u8]) -> Result<NodeId, EntryProblem> {
        let mut comps = normalize(target).map_err(|e| match e {
            EntryProblem::EscapesRoot => EntryProblem::HardlinkEscapesRoot(lossy(target)),
            e => e,
        })?;
        let missing = || EntryProblem::HardlinkTargetMissing(lossy(target));
        let name = comps
            .pop()
            .ok_or_else(|| EntryProblem::HardlinkToDirectory(lossy(target)))?;
        let dir = self
            .resolve_dir(&comps, 0, false)
            .map_err(|_| missing())?
            .ok_or_else(missing)?;
        let id = self.child(dir, &name).ok_or_else(missing)?;
        if matches!(self.node(id).kind, Kind::Dir(_)) {
            return Err(EntryProblem::HardlinkToDirectory(lossy(target)));
        }
        Ok(id)
    }

    fn whiteout(
        &mut self,
        comps: &[Vec<u8>],
        name: &[u8],
        hidden: &[u8],
        layer: usize,
    ) -> Result<(), EntryProblem> {
        if name == OPAQUE {
            if let Some(dir) = self.resolve_dir(comps, layer, false)? {
                self.make_opaque(dir, layer);
            }
            return Ok(());
        }
        if name.starts_with(META_PREFIX) {
            return Ok(()); // aufs bookkeeping (.wh..wh.plnk, .wh..wh.aufs): not content
        }
        if hidden.is_empty() || hidden == b"." || hidden == b".." {
            return Err(EntryProblem::BadWhiteout(lossy(name)));
        }
        let Some(dir) = self.resolve_dir(comps, layer, false)? else {
            return Ok(());
        };
        let Some(id) = self.child(dir, hidden) else {
            return Ok(());
        };
        let node = self.node(id);
        if node.last_layer < layer {
            self.detach(dir, hidden);
        } else if matches!(node.kind, Kind::Dir(_)) {
            // This layer both removed and recreated the directory: only its own entries remain.
            self.make_opaque(id, layer);
        }
        Ok(())
    }

    /// Visits every entry depth-first, parents before children, names in byte order (the
    /// order squashfs wants). `path` is `/`-joined without a leading slash; the root is `""`.
    pub fn walk(&self, mut visit: impl FnMut(&[u8], &Node)) {
        // Iterative: a hostile image can nest directories thousands deep.
        let mut path: Vec<u8> = Vec::new();
        // (node, length of `path` to restore before visiting it, name to append)
        let mut stack: Vec<(NodeId, usize, &[u8])> = vec![(Self::ROOT, 0, b"")];
        while let Some((id, restore, name)) = stack.pop() {
            path.truncate(restore);
            if !name.is_empty() {
                if !path.is_empty() {
                    path.push(b'/');
                }
                path.extend_from_slice(name);
            }
            let node = self.node(id);
            visit(&path, node);
            if let Kind::Dir(children) = &node.kind {
                let len = path.len();
                for (name, &child) in children.iter().rev() {
                    stack.push((child, len, name));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests;
