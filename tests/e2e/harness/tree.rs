//! A comparable description of a file tree, taken either from disk ([`Tree::snapshot`]) or from
//! an image's layers ([`Tree::from_layers`], the expected model), and a readable diff of two.
//!
//! What is compared: type, permission bits (setuid/setgid/sticky included), uid/gid, symlink
//! target, device major/minor, xattrs (except overlayfs' own `trusted.overlay.*`, which an
//! overlay mount never shows), sha256 of contents, mtimes ([`CompareOptions`]), and hardlink
//! identity (which visible paths share an inode). The tree's root directory itself is not
//! compared: its metadata belongs to whoever made the mount point or bundle.

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::{CString, OsStr};
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use super::tar_writer::{Entry, Kind};

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NodeKind {
    File {
        sha256: String,
        size: u64,
    },
    Dir,
    Symlink(Vec<u8>),
    Char(u32, u32),
    Block(u32, u32),
    Fifo,
    /// Sockets and anything else a snapshot may meet; never expected.
    Other,
}

impl NodeKind {
    fn name(&self) -> &'static str {
        match self {
            NodeKind::File { .. } => "file",
            NodeKind::Dir => "dir",
            NodeKind::Symlink(_) => "symlink",
            NodeKind::Char(..) => "char device",
            NodeKind::Block(..) => "block device",
            NodeKind::Fifo => "fifo",
            NodeKind::Other => "other",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Node {
    pub kind: NodeKind,
    /// `st_mode & 0o7777`.
    pub mode: u32,
    pub uid: u64,
    pub gid: u64,
    pub mtime: i64,
    pub xattrs: BTreeMap<String, Vec<u8>>,
    /// Identity of the inode: equal for paths that are hardlinks of each other.
    pub inode: u64,
}

/// Relative path (bytes, `/`-separated, no leading `/`) -> node. The root is not included.
#[derive(Clone, Debug, Default)]
pub struct Tree {
    pub nodes: BTreeMap<Vec<u8>, Node>,
}

/// What a comparison looks at beyond the always-compared fields.
#[derive(Clone, Copy, Debug)]
pub struct CompareOptions {
    /// Compare mtimes of regular files.
    pub file_mtimes: bool,
    /// Compare mtimes of directories, symlinks, devices and fifos as well.
    pub all_mtimes: bool,
}

impl Default for CompareOptions {
    fn default() -> Self {
        CompareOptions {
            file_mtimes: true,
            all_mtimes: true,
        }
    }
}

fn hash(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

/// Lists the xattrs of `path` without following a final symlink.
pub fn read_xattrs(path: &Path) -> io::Result<BTreeMap<String, Vec<u8>>> {
    let c = CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL in path"))?;
    let mut out = BTreeMap::new();
    // SAFETY: `c` is a valid NUL-terminated path; a null buffer with size 0 asks for the length.
    let len = unsafe { libc::llistxattr(c.as_ptr(), std::ptr::null_mut(), 0) };
    if len < 0 {
        let err = io::Error::last_os_error();
        // Filesystems without xattr support simply have none.
        if err.raw_os_error() == Some(libc::ENOTSUP) {
            return Ok(out);
        }
        return Err(err);
    }
    let mut names = vec![0u8; len as usize];
    // SAFETY: `names` is writable for `names.len()` bytes.
    let len = unsafe { libc::llistxattr(c.as_ptr(), names.as_mut_ptr().cast(), names.len()) };
    if len < 0 {
        return Err(io::Error::last_os_error());
    }
    names.truncate(len as usize);
    for name in names.split(|b| *b == 0).filter(|n| !n.is_empty()) {
        let name_str = String::from_utf8_lossy(name).into_owned();
        if name_str.starts_with("trusted.overlay.") || name_str == "security.selinux" {
            continue;
        }
        let cname = CString::new(name).expect("xattr names have no NUL");
        // SAFETY: valid C strings; null buffer asks for the size.
        let vlen = unsafe { libc::lgetxattr(c.as_ptr(), cname.as_ptr(), std::ptr::null_mut(), 0) };
        if vlen < 0 {
            return Err(io::Error::last_os_error());
        }
        let mut value = vec![0u8; vlen as usize];
        // SAFETY: `value` is writable for its length.
        let vlen = unsafe {
            libc::lgetxattr(
                c.as_ptr(),
                cname.as_ptr(),
                value.as_mut_ptr().cast(),
                value.len(),
            )
        };
        if vlen < 0 {
            return Err(io::Error::last_os_error());
        }
        value.truncate(vlen as usize);
        out.insert(name_str, value);
    }
    Ok(out)
}

impl Tree {
    /// Walks `root` (not following symlinks) and describes everything below it.
    pub fn snapshot(root: &Path) -> io::Result<Tree> {
        Tree::snapshot_excluding(root, &[])
    }

    /// Like [`Tree::snapshot`], skipping the given top-level-relative paths (and their subtrees).
    pub fn snapshot_excluding(root: &Path, exclude: &[&str]) -> io::Result<Tree> {
        let mut tree = Tree::default();
        let exclude: Vec<&[u8]> = exclude.iter().map(|e| e.as_bytes()).collect();
        walk(root, Vec::new(), &exclude, &mut tree)?;
        Ok(tree)
    }

    /// The merged view an image defines, applying its layers in order with OCI semantics:
    /// within a layer, whiteouts (`.wh.x`, `.wh..wh..opq`) apply to the lower layers, then the
    /// entries in archive order, a later entry for a path replacing an earlier one; a non-dir
    /// replaces whatever was there (a whole directory included); a dir entry over an existing
    /// dir updates its metadata and keeps its children. Fixtures are expected to name every
    /// parent directory explicitly (as docker's layers do).
    pub fn from_layers<'a>(layers: impl IntoIterator<Item = &'a [Entry]>) -> Tree {
        let mut tree = Tree::default();
        let mut next_inode = 1u64;
        for entries in layers {
            for e in entries {
                let path = normalize(&e.path);
                let (parent, base) = split(&path);
                if base == b".wh..wh..opq" {
                    tree.remove_children(parent);
                } else if let Some(name) = base.strip_prefix(b".wh.") {
                    tree.remove(&join(parent, name));
                }
            }
            for e in entries {
                let path = normalize(&e.path);
                let base = split(&path).1;
                if base.starts_with(b".wh.") {
                    continue;
                }
                let kind = match &e.kind {
                    Kind::File(d) => NodeKind::File {
                        sha256: hash(d),
                        size: d.len() as u64,
                    },
                    Kind::Dir => NodeKind::Dir,
                    Kind::Symlink(t) => NodeKind::Symlink(t.clone()),
                    Kind::Char(a, b) => NodeKind::Char(*a, *b),
                    Kind::Block(a, b) => NodeKind::Block(*a, *b),
                    Kind::Fifo => NodeKind::Fifo,
                    Kind::Hardlink(target) => {
                        let target = normalize(target);
                        let node = tree.nodes.get(&target).cloned().unwrap_or_else(|| {
                            panic!(
                                "fixture hardlink {} to missing {}",
                                String::from_utf8_lossy(&path),
                                String::from_utf8_lossy(&target)
                            )
                        });
                        tree.remove(&path);
                        tree.nodes.insert(path, node);
                        continue;
                    }
                };
                let is_dir = kind == NodeKind::Dir;
                let existing_dir =
                    matches!(tree.nodes.get(&path), Some(n) if n.kind == NodeKind::Dir);
                if !(is_dir && existing_dir) {
                    tree.remove(&path);
                }
                let mode = if matches!(kind, NodeKind::Symlink(_)) {
                    0o777
                } else {
                    e.mode & 0o7777
                };
                tree.nodes.insert(
                    path,
                    Node {
                        kind,
                        mode,
                        uid: e.uid,
                        gid: e.gid,
                        mtime: e.mtime as i64,
                        xattrs: e.xattrs.iter().cloned().collect(),
                        inode: next_inode,
                    },
                );
                next_inode += 1;
            }
        }
        tree
    }

    fn remove(&mut self, path: &[u8]) {
        self.nodes.remove(path);
        self.remove_children(path);
    }

    fn remove_children(&mut self, dir: &[u8]) {
        let mut prefix = dir.to_vec();
        if !prefix.is_empty() {
            prefix.push(b'/');
        }
        self.nodes
            .retain(|p, _| !(p.starts_with(&prefix) && p.len() > prefix.len()));
    }

    /// Sets of visible paths sharing an inode (only sets of two or more).
    pub fn hardlink_groups(&self) -> BTreeSet<BTreeSet<String>> {
        let mut by_inode: BTreeMap<u64, BTreeSet<String>> = BTreeMap::new();
        for (p, n) in &self.nodes {
            if matches!(n.kind, NodeKind::Dir) {
                continue;
            }
            by_inode.entry(n.inode).or_default().insert(show(p));
        }
        by_inode.into_values().filter(|s| s.len() > 1).collect()
    }

    pub fn get(&self, path: &str) -> Option<&Node> {
        self.nodes.get(path.as_bytes())
    }

    /// Differences between `self` (expected) and `actual`, one readable line each.
    pub fn diff(&self, actual: &Tree, opts: CompareOptions) -> Vec<String> {
        let mut out = Vec::new();
        for (p, e) in &self.nodes {
            let Some(a) = actual.nodes.get(p) else {
                out.push(format!("missing: {} ({})", show(p), e.kind.name()));
                continue;
            };
            let p = show(p);
            if std::mem::discriminant(&e.kind) != std::mem::discriminant(&a.kind) {
                out.push(format!(
                    "{p}: type: expected {}, got {}",
                    e.kind.name(),
                    a.kind.name()
                ));
                continue;
            }
            match (&e.kind, &a.kind) {
                (NodeKind::Symlink(x), NodeKind::Symlink(y)) if x != y => out.push(format!(
                    "{p}: symlink target: expected {:?}, got {:?}",
                    String::from_utf8_lossy(x),
                    String::from_utf8_lossy(y)
                )),
                (
                    NodeKind::File {
                        sha256: x,
                        size: xs,
                    },
                    NodeKind::File {
                        sha256: y,
                        size: ys,
                    },
                ) if x != y => out.push(format!(
                    "{p}: content: expected {xs} bytes sha256 {}, got {ys} bytes sha256 {}",
                    &x[..12],
                    &y[..12]
                )),
                (k1, k2) if k1 != k2 => {
                    out.push(format!("{p}: expected {k1:?}, got {k2:?}"));
                }
                _ => {}
            }
            if !matches!(e.kind, NodeKind::Symlink(_)) && e.mode != a.mode {
                out.push(format!(
                    "{p}: mode: expected {:#o}, got {:#o}",
                    e.mode, a.mode
                ));
            }
            if (e.uid, e.gid) != (a.uid, a.gid) {
                out.push(format!(
                    "{p}: owner: expected {}:{}, got {}:{}",
                    e.uid, e.gid, a.uid, a.gid
                ));
            }
            if e.xattrs != a.xattrs {
                out.push(format!(
                    "{p}: xattrs: expected {}, got {}",
                    show_xattrs(&e.xattrs),
                    show_xattrs(&a.xattrs)
                ));
            }
            let compare_mtime =
                opts.all_mtimes || (opts.file_mtimes && matches!(e.kind, NodeKind::File { .. }));
            if compare_mtime && e.mtime != a.mtime {
                out.push(format!("{p}: mtime: expected {}, got {}", e.mtime, a.mtime));
            }
        }
        for (p, a) in &actual.nodes {
            if !self.nodes.contains_key(p) {
                out.push(format!("unexpected: {} ({})", show(p), a.kind.name()));
            }
        }
        let (eg, ag) = (self.hardlink_groups(), actual.hardlink_groups());
        for g in eg.difference(&ag) {
            out.push(format!("hardlink group missing: {g:?}"));
        }
        for g in ag.difference(&eg) {
            out.push(format!("unexpected hardlink group: {g:?}"));
        }
        out
    }

    /// Panics with every difference listed when `actual` is not what `self` expects.
    pub fn assert_matches(&self, actual: &Tree, opts: CompareOptions, what: &str) {
        let d = self.diff(actual, opts);
        assert!(
            d.is_empty(),
            "{what}: {} difference(s):\n  {}",
            d.len(),
            d.join("\n  ")
        );
    }
}

fn show_xattrs(x: &BTreeMap<String, Vec<u8>>) -> String {
    let parts: Vec<String> = x
        .iter()
        .map(|(k, v)| match std::str::from_utf8(v) {
            Ok(s) if !s.contains('\0') => format!("{k}={s:?}"),
            _ => format!("{k}=0x{}", hex::encode(v)),
        })
        .collect();
    format!("{{{}}}", parts.join(", "))
}

/// A path for messages.
pub fn show(p: &[u8]) -> String {
    String::from_utf8_lossy(p).into_owned()
}

/// Strips leading `/` and `./` and trailing `/` (fixtures for the exact tests are not hostile).
fn normalize(p: &[u8]) -> Vec<u8> {
    let mut p = p;
    loop {
        if let Some(r) = p.strip_prefix(b"./") {
            p = r;
        } else if let Some(r) = p.strip_prefix(b"/") {
            p = r;
        } else {
            break;
        }
    }
    while let Some(r) = p.strip_suffix(b"/") {
        p = r;
    }
    p.to_vec()
}

fn split(p: &[u8]) -> (&[u8], &[u8]) {
    match p.iter().rposition(|b| *b == b'/') {
        Some(i) => (&p[..i], &p[i + 1..]),
        None => (&[], p),
    }
}

fn join(dir: &[u8], name: &[u8]) -> Vec<u8> {
    if dir.is_empty() {
        name.to_vec()
    } else {
        [dir, b"/", name].concat()
    }
}

fn walk(dir: &Path, rel: Vec<u8>, exclude: &[&[u8]], tree: &mut Tree) -> io::Result<()> {
    let rd = std::fs::read_dir(dir).map_err(|e| annotate(e, dir, "reading directory"))?;
    let mut names: Vec<_> = rd
        .map(|e| e.map(|e| e.file_name()))
        .collect::<io::Result<_>>()
        .map_err(|e| annotate(e, dir, "reading directory"))?;
    names.sort();
    for name in names {
        let path = dir.join(&name);
        let r = join(&rel, name.as_bytes());
        if exclude.contains(&r.as_slice()) {
            continue;
        }
        let md = std::fs::symlink_metadata(&path).map_err(|e| annotate(e, &path, "lstat"))?;
        let ft = md.file_type();
        let kind = if ft.is_dir() {
            NodeKind::Dir
        } else if ft.is_file() {
            let data = std::fs::read(&path).map_err(|e| annotate(e, &path, "reading"))?;
            NodeKind::File {
                sha256: hash(&data),
                size: data.len() as u64,
            }
        } else if ft.is_symlink() {
            let t = std::fs::read_link(&path).map_err(|e| annotate(e, &path, "readlink"))?;
            NodeKind::Symlink(t.as_os_str().as_bytes().to_vec())
        } else if ft.is_char_device() {
            let rdev = md.rdev();
            NodeKind::Char(libc::major(rdev), libc::minor(rdev))
        } else if ft.is_block_device() {
            let rdev = md.rdev();
            NodeKind::Block(libc::major(rdev), libc::minor(rdev))
        } else if ft.is_fifo() {
            NodeKind::Fifo
        } else {
            NodeKind::Other
        };
        let xattrs = read_xattrs(&path).map_err(|e| annotate(e, &path, "reading xattrs"))?;
        tree.nodes.insert(
            r.clone(),
            Node {
                kind,
                mode: md.mode() & 0o7777,
                uid: md.uid() as u64,
                gid: md.gid() as u64,
                mtime: md.mtime(),
                xattrs,
                inode: md.ino(),
            },
        );
        if ft.is_dir() {
            walk(&path, r, exclude, tree)?;
        }
    }
    Ok(())
}

fn annotate(e: io::Error, path: &Path, what: &str) -> io::Error {
    io::Error::new(e.kind(), format!("{what} {}: {e}", path.display()))
}

/// A path under `root` given as bytes relative to it.
pub fn under(root: &Path, rel: &str) -> PathBuf {
    root.join(OsStr::new(rel))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn model_applies_whiteouts_opaque_dirs_and_replacements() {
        let l1 = vec![
            Entry::dir("d"),
            Entry::file("d/a", b"1"),
            Entry::dir("o"),
            Entry::file("o/x", b"x"),
            Entry::dir("f2d"),
            Entry::file("f2d/c", b"c"),
            Entry::file("h", b"h"),
            Entry::hardlink("h2", "h"),
        ];
        let l2 = vec![
            Entry::dir("d"),
            Entry::whiteout("d", "a"),
            Entry::dir("o"),
            Entry::opaque("o"),
            Entry::file("o/y", b"y"),
            Entry::file("f2d", b"now a file"),
        ];
        let t = Tree::from_layers([l1.as_slice(), l2.as_slice()]);
        let paths: Vec<String> = t.nodes.keys().map(|p| show(p)).collect();
        assert_eq!(paths, ["d", "f2d", "h", "h2", "o", "o/y"]);
        assert_eq!(t.hardlink_groups().len(), 1);
    }
}
