//! The engine of `slate cp`: reads a file tree into a tar stream and lays a tar stream down
//! into a tree, where a tree is either the host or a running container's root filesystem.
//!
//! A container's root is an overlay mounted in the container's own mount namespace; the host
//! reaches it through `/proc/<pid>/root` of its PID 1. Everything in it is the container's to
//! shape: a hostile image or a process racing `cp` can plant `etc/passwd -> /host/etc/shadow`,
//! `dir -> /`, `../../..` or `/proc/self/root` anywhere. So, as docker does in its chroot but
//! without running anything inside the container:
//!
//! - **Every path is resolved inside the tree's root** by pathrs (`openat2` with
//!   `RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS`, or pathrs's own checked walk on kernels
//!   before 5.6): `/` and `..` stop at the container's root, absolute symlinks are taken
//!   relative to it, and `/proc/*/root`-style magic links are refused. Mounts inside the
//!   container (volumes, tmpfs) are crossed as the container sees them.
//! - **Nothing is written through a name that may be a symlink.** Only the parent directory
//!   is resolved by path; the last component is created under a temporary name with calls that
//!   never follow it (`O_CREAT | O_EXCL | O_NOFOLLOW`, `mkdirat`, `symlinkat`, `linkat`,
//!   `mknodat`), its owner, mode and times are set through the new descriptor (or with
//!   `AT_SYMLINK_NOFOLLOW`), and `renameat` puts it in place: a symlink standing there is
//!   replaced, never followed. No `*at` call here follows a final symlink: the kernel would
//!   resolve its target against *our* root, the host's.
//! - **Reading never opens a name.** A tree is walked by descriptors (`O_PATH | O_NOFOLLOW`
//!   per directory entry); only regular files are reopened for reading, through pathrs's
//!   checked `/proc/self/fd` reopen of that very inode, so a device node or FIFO swapped in
//!   is never opened (opening some devices does something), and symlinks come out as
//!   symlinks. The contents of procfs, sysfs and cgroupfs mounts are not walked.
//! - **A tar stream cannot reach outside its destination directory**: names are normalised
//!   (a leading `/` dropped, as docker does), any `..` fails the copy, hard link targets must
//!   lie below the destination, and a symlink laid down by the stream itself is never walked
//!   through by a later entry (`link -> /` then `link/etc/passwd` fails, as with GNU tar and
//!   bsdtar). Symlinks that were already there are followed, inside the root, as docker's
//!   chroot follows them. Device nodes are not created (a copy out of a hostile container
//!   must not leave a host disk's node on the host); setuid and setgid bits are dropped when
//!   a copy takes the invoking user's ownership.
//! - Descriptors are `O_CLOEXEC`, nothing is executed in the container and no library is
//!   loaded from it (CVE-2019-14271), and slate never joins its namespaces: a process in the
//!   container cannot see or ptrace the copy.

use std::cell::Cell;
use std::collections::{HashMap, HashSet};
use std::ffi::OsStr;
use std::fmt;
use std::fs::{File, Metadata};
use std::io::{self, Read, Seek, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;

use pathrs::flags::OpenFlags;
use pathrs::{HandleRef, Root};
use rustix::fs::{self as rfs, AtFlags, FileType, Gid, Mode, OFlags, Timespec, Timestamps, Uid};
use rustix::io::Errno;
use tar::EntryType;

/// Bytes of tar metadata (GNU long names, PAX records) allowed between two entries of a
/// stream `slate cp -` reads: the tar crate reads them into memory whole, and a 4 GiB long
/// name should not exhaust a Raspberry Pi's memory.
const HEADER_BUDGET: u64 = 4 << 20;
/// Longest path (and link target) accepted in a stream, as the kernel's `PATH_MAX`.
const PATH_MAX: usize = 4096;
/// Symlinks followed at the end of a destination path before giving up (docker's number).
const MAX_DEST_LINKS: usize = 10;
/// Kernel filesystems whose "files" are interfaces, not data: their mounts are copied as an
/// empty directory (docker cannot copy them at all).
const KERNEL_FS: &[i64] = &[
    0x9fa0,      // proc
    0x6265_6572, // sysfs
    0x0027_e0eb, // cgroup
    0x6367_7270, // cgroup2
];
const S_ISUID_GID: u32 = 0o6000;

/// Why a copy failed. Each message names the path and the tree it is in.
#[derive(Debug, thiserror::Error)]
pub enum CopyError {
    /// The source does not exist (docker's words).
    #[error("could not find the file {path} {place}")]
    NotFound { path: String, place: String },
    /// A copy docker refuses too (a directory onto a file, a file into a missing directory).
    #[error("{0}")]
    Refused(String),
    /// A tar entry that would reach outside the destination, or that is malformed.
    #[error("tar entry {entry:?}: {reason}")]
    Entry { entry: String, reason: String },
    /// A system call on a path of a tree failed.
    #[error("cannot {op} {path} {place}")]
    Io {
        op: &'static str,
        path: String,
        place: String,
        #[source]
        source: io::Error,
    },
    /// The tar stream could not be read or written.
    #[error("{0} the tar stream")]
    Stream(&'static str, #[source] io::Error),
}

impl CopyError {
    /// Whether this is the archive writer noticing that the reader went away (which then
    /// has the real error).
    pub fn is_broken_pipe(&self) -> bool {
        matches!(self, CopyError::Stream(_, e) if e.kind() == io::ErrorKind::BrokenPipe)
    }
}

/// How one uid or gid range of a user namespace maps (a line of `/proc/PID/uid_map`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct IdRange {
    inside: u32,
    outside: u32,
    count: u32,
}

/// A tree's user namespace mapping: tar streams carry ids as the container sees them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IdMap {
    /// Empty: the identity (the host, or a container without a user namespace).
    uids: Vec<IdRange>,
    gids: Vec<IdRange>,
}

/// The id the kernel shows for one that is not mapped (`/proc/sys/kernel/overflowuid`).
const OVERFLOW_ID: u32 = 65534;

impl IdMap {
    fn parse(text: &str) -> Vec<IdRange> {
        let ranges: Vec<IdRange> = text
            .lines()
            .filter_map(|l| {
                let mut f = l.split_whitespace().map(|x| x.parse::<u32>().ok());
                Some(IdRange {
                    inside: f.next()??,
                    outside: f.next()??,
                    count: f.next()??,
                })
            })
            .collect();
        // The initial namespace's map is the identity over everything: keep it implicit.
        let identity = ranges.len() == 1
            && ranges[0].inside == 0
            && ranges[0].outside == 0
            && ranges[0].count == u32::MAX;
        if identity {
            Vec::new()
        } else {
            ranges
        }
    }

    /// The mapping of process `pid`.
    fn of_pid(pid: i32) -> io::Result<IdMap> {
        Ok(IdMap {
            uids: IdMap::parse(&std::fs::read_to_string(format!("/proc/{pid}/uid_map"))?),
            gids: IdMap::parse(&std::fs::read_to_string(format!("/proc/{pid}/gid_map"))?),
        })
    }

    fn to_host(ranges: &[IdRange], id: u32) -> u32 {
        if ranges.is_empty() {
            return id;
        }
        ranges
            .iter()
            .find(|r| id >= r.inside && id - r.inside < r.count)
            .map_or(OVERFLOW_ID, |r| r.outside + (id - r.inside))
    }

    fn to_inside(ranges: &[IdRange], id: u32) -> u32 {
        if ranges.is_empty() {
            return id;
        }
        ranges
            .iter()
            .find(|r| id >= r.outside && id - r.outside < r.count)
            .map_or(OVERFLOW_ID, |r| r.inside + (id - r.outside))
    }
}

/// A root directory that every path of a copy is resolved inside.
#[derive(Debug)]
pub struct Tree {
    root: Root,
    ids: IdMap,
    /// "in container web" or "on the host", for messages.
    place: String,
}

impl Tree {
    /// The host's own filesystem.
    pub fn host() -> Result<Tree, CopyError> {
        let root = Root::open("/").map_err(|e| CopyError::Io {
            op: "open",
            path: "/".into(),
            place: "on the host".into(),
            source: pathrs_io(e),
        })?;
        Ok(Tree {
            root,
            ids: IdMap::default(),
            place: "on the host".into(),
        })
    }

    /// The root filesystem of the container whose PID 1 is `pid`, as that process sees it
    /// (its mounts included). The caller checks afterwards that `pid` is still that process.
    pub fn container(pid: i32, name: &str) -> Result<Tree, CopyError> {
        let place = format!("in container {name}");
        let io_err = |source| CopyError::Io {
            op: "open the root filesystem",
            path: format!("/proc/{pid}/root"),
            place: place.clone(),
            source,
        };
        // This one path is the host's own /proc, where following the magic link is the
        // point: it lands on the container's root directory, in its mount namespace.
        let fd = rfs::open(
            format!("/proc/{pid}/root").as_str(),
            OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| io_err(e.into()))?;
        let ids = IdMap::of_pid(pid).map_err(io_err)?;
        Ok(Tree {
            root: Root::from_fd(fd),
            ids,
            place,
        })
    }

    fn io(&self, op: &'static str, path: &[u8], source: io::Error) -> CopyError {
        CopyError::Io {
            op,
            path: show(path),
            place: self.place.clone(),
            source,
        }
    }

    /// Opens `path` (absolute, clean) inside the root as `O_PATH`; `follow` says whether a
    /// final symlink is followed (inside the root, as every other one on the way).
    fn resolve(&self, path: &[u8], follow: bool) -> io::Result<File> {
        let p = Path::new(OsStr::from_bytes(path));
        let mut tries = 0;
        loop {
            let r = if follow {
                self.root.resolve(p)
            } else {
                self.root.resolve_nofollow(p)
            };
            match r {
                Ok(h) => return Ok(File::from(OwnedFd::from(h))),
                // openat2 says EAGAIN when a rename or mount raced the lookup: look again.
                Err(e) if e.can_retry() && tries < 32 => tries += 1,
                Err(e) => return Err(pathrs_io(e)),
            }
        }
    }

    /// Opens the source of a copy. Symlinks on the way are followed (inside the root); the
    /// last component is followed only with `follow` (`-L`), or when the path ends in `/` or
    /// `/.`, as docker does.
    pub fn source(&self, spec: &PathSpec, follow: bool) -> Result<Source, CopyError> {
        let follow = follow || spec.dot || spec.slash;
        let fd = self.resolve(&spec.path, follow).map_err(|e| {
            if matches!(e.raw_os_error(), Some(libc::ENOENT)) {
                CopyError::NotFound {
                    path: show(&spec.path),
                    place: self.place.clone(),
                }
            } else {
                self.io("open", &spec.path, explain(e))
            }
        })?;
        let meta = fd.metadata().map_err(|e| self.io("stat", &spec.path, e))?;
        if (spec.dot || spec.slash) && !meta.is_dir() {
            return Err(self.io(
                "copy",
                &spec.path,
                io::Error::from_raw_os_error(libc::ENOTDIR),
            ));
        }
        let base = split_last(&spec.path).1.to_vec();
        Ok(Source {
            contents: spec.dot || base.is_empty(),
            fd,
            meta,
            base,
        })
    }

    /// What a destination path names, docker's way: symlinks at its end are followed (up
    /// to [`MAX_DEST_LINKS`], each target taken inside the root), so a dangling link makes
    /// its target the file to create; if nothing is there, the parent must be a directory.
    pub fn dest(&self, spec: &PathSpec) -> Result<Dest, CopyError> {
        let mut path = spec.path.clone();
        for _ in 0..=MAX_DEST_LINKS {
            let fd = match self.resolve(&path, false) {
                Ok(fd) => fd,
                Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {
                    let parent = split_last(&path).0.to_vec();
                    let dir = self
                        .resolve(&parent, true)
                        .and_then(|f| f.metadata())
                        .map_err(|e| self.io("copy into", &parent, explain(e)))?;
                    if !dir.is_dir() {
                        return Err(self.io(
                            "copy into",
                            &parent,
                            io::Error::from_raw_os_error(libc::ENOTDIR),
                        ));
                    }
                    return Ok(Dest {
                        path,
                        exists: false,
                        is_dir: false,
                        asserts_dir: spec.dot || spec.slash,
                    });
                }
                Err(e) => return Err(self.io("open", &path, explain(e))),
            };
            let meta = fd.metadata().map_err(|e| self.io("stat", &path, e))?;
            if !meta.file_type().is_symlink() {
                if (spec.dot || spec.slash) && !meta.is_dir() {
                    return Err(self.io(
                        "copy into",
                        &path,
                        io::Error::from_raw_os_error(libc::ENOTDIR),
                    ));
                }
                return Ok(Dest {
                    path,
                    exists: true,
                    is_dir: meta.is_dir(),
                    asserts_dir: spec.dot || spec.slash,
                });
            }
            let target = rfs::readlinkat(&fd, c"", Vec::new())
                .map_err(|e| self.io("read the symlink", &path, e.into()))?;
            let target = target.as_bytes();
            path = if target.starts_with(b"/") {
                clean_abs(target)
            } else {
                let mut joined = split_last(&path).0.to_vec();
                joined.push(b'/');
                joined.extend_from_slice(target);
                clean_abs(&joined)
            };
        }
        Err(CopyError::Refused(format!(
            "too many symlinks in {} {}",
            show(&spec.path),
            self.place
        )))
    }
}

/// pathrs's error as an `io::Error`, keeping the errno the callers look at.
fn pathrs_io(e: pathrs::error::Error) -> io::Error {
    match e.kind() {
        pathrs::error::ErrorKind::OsError(Some(n)) => io::Error::from_raw_os_error(n),
        _ => io::Error::other(e.to_string()),
    }
}

/// The errors a hostile path produces, said in words a user can act on.
fn explain(e: io::Error) -> io::Error {
    match e.raw_os_error() {
        Some(libc::ELOOP) => io::Error::other(
            "a symlink on the way loops or leads through /proc (refused: it could leave the container)",
        ),
        Some(libc::EXDEV) => {
            io::Error::other("the path leaves the container's root filesystem (refused)")
        }
        _ => e,
    }
}

/// A path as typed, made absolute and lexically clean, with what its end asserts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathSpec {
    /// Absolute, clean (`/a/b`, or `/`).
    pub path: Vec<u8>,
    /// It ends in `/.` (or is `.`): a directory's contents.
    pub dot: bool,
    /// It ends in `/`: must be a directory.
    pub slash: bool,
}

impl PathSpec {
    /// A path in a container: relative paths are relative to its root, as in docker.
    pub fn container(raw: &[u8]) -> PathSpec {
        let mut abs = b"/".to_vec();
        abs.extend_from_slice(raw);
        PathSpec::of(raw, &abs)
    }

    /// A path on the host: relative paths are relative to `cwd`.
    pub fn host(raw: &[u8], cwd: &Path) -> PathSpec {
        let abs = if raw.starts_with(b"/") {
            raw.to_vec()
        } else {
            let mut a = cwd.as_os_str().as_bytes().to_vec();
            a.push(b'/');
            a.extend_from_slice(raw);
            a
        };
        PathSpec::of(raw, &abs)
    }

    fn of(raw: &[u8], abs: &[u8]) -> PathSpec {
        let trimmed = trim_slashes(raw);
        PathSpec {
            path: clean_abs(abs),
            dot: trimmed == b"." || trimmed.ends_with(b"/."),
            slash: raw.ends_with(b"/") && !trimmed.is_empty(),
        }
    }
}

fn trim_slashes(p: &[u8]) -> &[u8] {
    let end = p.iter().rposition(|&b| b != b'/').map_or(0, |i| i + 1);
    &p[..end]
}

/// Lexically cleans an absolute path: `//a/./b/../c/` is `/a/c`; `..` stops at `/` (as the
/// kernel's in-root resolution does). Docker cleans typed paths the same way.
pub fn clean_abs(path: &[u8]) -> Vec<u8> {
    let mut parts: Vec<&[u8]> = Vec::new();
    for c in path.split(|&b| b == b'/') {
        match c {
            b"" | b"." => {}
            b".." => {
                parts.pop();
            }
            _ => parts.push(c),
        }
    }
    let mut out = Vec::with_capacity(path.len());
    for p in parts {
        out.push(b'/');
        out.extend_from_slice(p);
    }
    if out.is_empty() {
        out.push(b'/');
    }
    out
}

/// Splits a clean path (absolute or relative) into its parent and last component; the
/// parent of `/a` is `/`, of `a` is empty, and `/` has an empty last component.
fn split_last(path: &[u8]) -> (&[u8], &[u8]) {
    match path.iter().rposition(|&b| b == b'/') {
        Some(0) => (b"/", &path[1..]),
        Some(i) => (&path[..i], &path[i + 1..]),
        None => (b"", path),
    }
}

/// `dir` (absolute, clean) joined with `rel` (clean, relative, maybe empty).
fn join(dir: &[u8], rel: &[u8]) -> Vec<u8> {
    let mut out = dir.to_vec();
    if !rel.is_empty() {
        if out != b"/" {
            out.push(b'/');
        }
        out.extend_from_slice(rel);
    }
    out
}

fn show(path: &[u8]) -> String {
    String::from_utf8_lossy(path).into_owned()
}

/// The source of a copy, opened.
#[derive(Debug)]
pub struct Source {
    /// `O_PATH`, not following a final symlink unless asked.
    fd: File,
    meta: Metadata,
    /// The last component of the path as typed (empty for `/`).
    base: Vec<u8>,
    /// Only the directory's contents (`dir/.`, or `/`).
    contents: bool,
}

impl Source {
    pub fn is_dir(&self) -> bool {
        self.meta.is_dir()
    }

    /// The name of the copy's top entry when nothing renames it: the source's name, or `.`
    /// for a directory's contents.
    pub fn archive_name(&self) -> Vec<u8> {
        if self.contents && self.is_dir() {
            b".".to_vec()
        } else {
            self.base.clone()
        }
    }
}

/// The destination of a copy, as [`Tree::dest`] found it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dest {
    /// Absolute and clean, symlinks at its end followed.
    pub path: Vec<u8>,
    pub exists: bool,
    pub is_dir: bool,
    /// The path as typed ended in `/` or `/.`.
    asserts_dir: bool,
}

/// Where a copy's tar stream is laid down and under which top name (docker's
/// `PrepareArchiveCopy`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// The directory the stream is extracted into.
    pub dir: Vec<u8>,
    /// The name of the stream's top entry.
    pub top: Vec<u8>,
}

/// Decides where `src` goes for `dst`, with docker's rules: into an existing directory
/// under its own name (its contents, for `dir/.`); onto an existing file, replacing it;
/// to a missing path, under that path's name (a directory is created).
pub fn plan(src: &Source, dst: &Dest, place: &str) -> Result<Plan, CopyError> {
    let (parent, base) = split_last(&dst.path);
    if dst.exists && dst.is_dir {
        return Ok(Plan {
            dir: dst.path.clone(),
            top: src.archive_name(),
        });
    }
    if dst.exists && src.is_dir() {
        return Err(CopyError::Refused(format!(
            "cannot copy a directory onto the file {} {place}",
            show(&dst.path)
        )));
    }
    if !dst.exists && dst.asserts_dir && !src.is_dir() {
        return Err(CopyError::Refused(format!(
            "destination directory {} does not exist {place}",
            show(&dst.path)
        )));
    }
    Ok(Plan {
        dir: parent.to_vec(),
        top: base.to_vec(),
    })
}

/// Writes `src` as a tar stream whose top entry is named `top` (`.` for a directory's
/// contents), and returns the writer once the stream is complete.
pub fn write_archive<W: Write>(
    tree: &Tree,
    src: &Source,
    top: &[u8],
    out: W,
) -> Result<W, CopyError> {
    let mut w = Walker {
        tree,
        builder: tar::Builder::new(out),
        hardlinks: HashMap::new(),
    };
    w.add(src.fd.as_fd(), &src.meta, top, None)?;
    w.builder
        .into_inner()
        .map_err(|e| CopyError::Stream("writing", e))
}

struct Walker<'a, W: Write> {
    tree: &'a Tree,
    builder: tar::Builder<W>,
    /// (dev, ino) of files with more than one link already written, and their names.
    hardlinks: HashMap<(u64, u64), Vec<u8>>,
}

impl<W: Write> Walker<'_, W> {
    fn header(&self, meta: &Metadata, kind: EntryType) -> tar::Header {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(kind);
        h.set_mode(meta.mode() & 0o7777);
        h.set_uid(u64::from(IdMap::to_inside(&self.tree.ids.uids, meta.uid())));
        h.set_gid(u64::from(IdMap::to_inside(&self.tree.ids.gids, meta.gid())));
        h.set_mtime(u64::try_from(meta.mtime()).unwrap_or(0));
        h.set_size(0);
        h
    }

    fn stream_err(e: io::Error) -> CopyError {
        CopyError::Stream("writing", e)
    }

    /// Adds the object `fd` (`O_PATH`, not following) as `name`, and a directory's tree
    /// below it. `parent_dev` is the device of the directory it was found in.
    fn add(
        &mut self,
        fd: BorrowedFd<'_>,
        meta: &Metadata,
        name: &[u8],
        parent_dev: Option<u64>,
    ) -> Result<(), CopyError> {
        let path = Path::new(OsStr::from_bytes(name));
        let ft = meta.file_type();
        if ft.is_dir() {
            let mut h = self.header(meta, EntryType::Directory);
            let mut dir_name = name.to_vec();
            if !dir_name.ends_with(b"/") {
                dir_name.push(b'/');
            }
            self.builder
                .append_data(&mut h, OsStr::from_bytes(&dir_name), io::empty())
                .map_err(Self::stream_err)?;
            if parent_dev != Some(meta.dev()) && is_kernel_fs(fd) {
                return Ok(());
            }
            self.add_children(fd, meta, name)
        } else if ft.is_file() {
            if meta.nlink() > 1 {
                let key = (meta.dev(), meta.ino());
                if let Some(first) = self.hardlinks.get(&key) {
                    let mut h = self.header(meta, EntryType::Link);
                    let first = first.clone();
                    return self
                        .builder
                        .append_link(&mut h, path, OsStr::from_bytes(&first))
                        .map_err(Self::stream_err);
                }
                self.hardlinks.insert(key, name.to_vec());
            }
            // Reopened through pathrs's checked procfs: the very inode the walk found, not
            // whatever bears its name now; it was a regular file, so opening does nothing.
            let file = HandleRef::from_fd(fd)
                .reopen(OpenFlags::O_RDONLY)
                .map_err(|e| self.tree.io("read", name, pathrs_io(e)))?;
            let now = file.metadata().map_err(|e| self.tree.io("stat", name, e))?;
            if now.ino() != meta.ino() || now.dev() != meta.dev() || !now.is_file() {
                return Err(self.tree.io(
                    "read",
                    name,
                    io::Error::other("the file changed while it was opened"),
                ));
            }
            let mut h = self.header(meta, EntryType::Regular);
            h.set_size(meta.size());
            let data = Exact {
                inner: file,
                left: meta.size(),
            };
            self.builder
                .append_data(&mut h, path, data)
                .map_err(Self::stream_err)
        } else if ft.is_symlink() {
            let target = rfs::readlinkat(fd, c"", Vec::new())
                .map_err(|e| self.tree.io("read the symlink", name, e.into()))?;
            let mut h = self.header(meta, EntryType::Symlink);
            self.builder
                .append_link(&mut h, path, OsStr::from_bytes(target.as_bytes()))
                .map_err(Self::stream_err)
        } else if ft.is_fifo() || ft.is_char_device() || ft.is_block_device() {
            let kind = if ft.is_fifo() {
                EntryType::Fifo
            } else if ft.is_char_device() {
                EntryType::Char
            } else {
                EntryType::Block
            };
            let mut h = self.header(meta, kind);
            if !ft.is_fifo() {
                let dev = meta.rdev();
                h.set_device_major(rfs::major(dev))
                    .map_err(Self::stream_err)?;
                h.set_device_minor(rfs::minor(dev))
                    .map_err(Self::stream_err)?;
            }
            self.builder
                .append_data(&mut h, path, io::empty())
                .map_err(Self::stream_err)
        } else {
            // Sockets have no tar form (docker skips them too).
            tracing::debug!(name = %show(name), "skipping a socket");
            Ok(())
        }
    }

    fn add_children(
        &mut self,
        fd: BorrowedFd<'_>,
        meta: &Metadata,
        name: &[u8],
    ) -> Result<(), CopyError> {
        // "." of the directory we hold, not a name: the listing is of this very directory.
        let listing = rfs::openat(
            fd,
            c".",
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .and_then(rfs::Dir::new)
        .map_err(|e| self.tree.io("list", name, e.into()))?;
        let mut names = Vec::new();
        for e in listing {
            let e = e.map_err(|e| self.tree.io("list", name, e.into()))?;
            let n = e.file_name().to_bytes();
            if n != b"." && n != b".." {
                names.push(n.to_vec());
            }
        }
        // Sorted: the same tree gives the same stream.
        names.sort();
        for n in names {
            let child_name = if name == b"." {
                n.clone()
            } else {
                let mut c = trim_slashes(name).to_vec();
                c.push(b'/');
                c.extend_from_slice(&n);
                c
            };
            // One component, relative to the directory's descriptor, not followed: it cannot
            // lead anywhere but to this directory's own entry.
            let child = match rfs::openat(
                fd,
                n.as_slice(),
                OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                Mode::empty(),
            ) {
                Ok(c) => File::from(c),
                // Removed since it was listed.
                Err(Errno::NOENT) => continue,
                Err(e) => return Err(self.tree.io("open", &child_name, e.into())),
            };
            let cmeta = child
                .metadata()
                .map_err(|e| self.tree.io("stat", &child_name, e))?;
            self.add(child.as_fd(), &cmeta, &child_name, Some(meta.dev()))?;
        }
        Ok(())
    }
}

/// Whether `fd` is on procfs, sysfs or cgroupfs (see [`KERNEL_FS`]).
fn is_kernel_fs(fd: BorrowedFd<'_>) -> bool {
    rfs::fstatfs(fd).is_ok_and(|s| {
        #[allow(clippy::useless_conversion)] // f_type's width differs between ABIs
        let t = i64::from(s.f_type);
        KERNEL_FS.contains(&t)
    })
}

/// The id of the mount `fd` is on (`statx`, or its fdinfo before Linux 5.8).
fn mount_id(fd: BorrowedFd<'_>) -> Option<u64> {
    if let Ok(st) = rfs::statx(fd, c"", AtFlags::EMPTY_PATH, rfs::StatxFlags::MNT_ID) {
        if st.stx_mask & rfs::StatxFlags::MNT_ID.bits() != 0 {
            return Some(st.stx_mnt_id);
        }
    }
    let info = std::fs::read_to_string(format!("/proc/self/fdinfo/{}", fd.as_raw_fd())).ok()?;
    info.lines()
        .find_map(|l| l.strip_prefix("mnt_id:"))
        .and_then(|v| v.trim().parse().ok())
}

/// Exactly `left` bytes of `inner`: a file that shrank while it was read is padded with
/// zeros, one that grew is cut, so the tar header's size is always right.
struct Exact<R> {
    inner: R,
    left: u64,
}

impl<R: Read> Read for Exact<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let want = usize::try_from(self.left).map_or(buf.len(), |l| l.min(buf.len()));
        if want == 0 {
            return Ok(0);
        }
        let mut n = self.inner.read(&mut buf[..want])?;
        if n == 0 {
            buf[..want].fill(0);
            n = want;
        }
        self.left -= n as u64;
        Ok(n)
    }
}

/// Who owns what a copy lays down.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Owner {
    /// The stream's uid and gid (`-a`), mapped into the tree's user namespace.
    Keep,
    /// The tree's root (copies into a container, as docker does).
    Root,
    /// Whoever runs slate (copies out to the host): no chown, and no setuid or setgid bit
    /// on what the container handed over.
    Invoker,
}

/// Lays the tar stream `reader` down into the directory `dir` (absolute, clean) of `tree`.
pub fn extract<R: Read>(tree: &Tree, dir: &[u8], reader: R, owner: Owner) -> Result<(), CopyError> {
    let top = tree
        .resolve(dir, true)
        .and_then(|f| f.metadata())
        .map_err(|e| tree.io("copy into", dir, explain(e)))?;
    if !top.is_dir() {
        return Err(tree.io(
            "copy into",
            dir,
            io::Error::from_raw_os_error(libc::ENOTDIR),
        ));
    }
    let budget = Cell::new(HEADER_BUDGET);
    let mut archive = tar::Archive::new(Budgeted {
        inner: reader,
        budget: &budget,
    });
    let mut x = Extractor {
        tree,
        dir: dir.to_vec(),
        owner,
        links: HashSet::new(),
        dirs: Vec::new(),
        parent: None,
        tmp_seq: 0,
    };
    let mut entries = archive
        .entries()
        .map_err(|e| CopyError::Stream("reading", e))?;
    loop {
        // Only while the tar crate looks for the next entry is it reading metadata into
        // memory; file data streams through.
        budget.set(HEADER_BUDGET);
        let next = entries.next();
        budget.set(u64::MAX);
        let mut entry = match next {
            None => break,
            Some(Ok(e)) => e,
            Some(Err(e)) => return Err(CopyError::Stream("reading", e)),
        };
        x.entry(&mut entry)?;
        // Whatever of the entry's data was not read (a directory with a size), consumed
        // here, outside the metadata budget.
        io::copy(&mut entry, &mut io::sink()).map_err(|e| CopyError::Stream("reading", e))?;
    }
    x.restore_dir_times()
}

/// A reader that fails once `budget` bytes were read; see [`HEADER_BUDGET`].
struct Budgeted<'a, R> {
    inner: R,
    budget: &'a Cell<u64>,
}

impl<R: Read> Read for Budgeted<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let budget = self.budget.get();
        if budget == 0 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "tar metadata between two entries exceeds 4 MiB",
            ));
        }
        let len = usize::try_from(budget).map_or(buf.len(), |b| b.min(buf.len()));
        let n = self.inner.read(&mut buf[..len])?;
        self.budget.set(budget.saturating_sub(n as u64));
        Ok(n)
    }
}

/// An entry's metadata, PAX records over the header's fields.
struct Meta {
    mode: u32,
    uid: u64,
    gid: u64,
    mtime: Timespec,
}

impl Meta {
    fn of<R: Read>(entry: &mut tar::Entry<'_, R>) -> io::Result<Meta> {
        let h = entry.header();
        let mut m = Meta {
            mode: h.mode()? & 0o7777,
            uid: h.uid()?,
            gid: h.gid()?,
            mtime: Timespec {
                tv_sec: i64::try_from(h.mtime()?).unwrap_or(0),
                tv_nsec: 0,
            },
        };
        if let Some(exts) = entry.pax_extensions()? {
            for ext in exts {
                let ext = ext?;
                let v = std::str::from_utf8(ext.value_bytes()).unwrap_or("");
                match ext.key_bytes() {
                    b"uid" => m.uid = v.parse().unwrap_or(m.uid),
                    b"gid" => m.gid = v.parse().unwrap_or(m.gid),
                    b"mtime" => m.mtime = pax_time(v).unwrap_or(m.mtime),
                    _ => {}
                }
            }
        }
        Ok(m)
    }

    fn times(&self) -> Timestamps {
        Timestamps {
            last_access: self.mtime,
            last_modification: self.mtime,
        }
    }
}

/// A PAX time, `secs[.frac]`.
fn pax_time(v: &str) -> Option<Timespec> {
    let (s, f) = v.split_once('.').unwrap_or((v, ""));
    let tv_sec: i64 = s.parse().ok()?;
    let digits: String = f.chars().take(9).collect();
    let tv_nsec = if digits.is_empty() {
        0
    } else {
        format!("{digits:0<9}").parse().ok()?
    };
    Some(Timespec { tv_sec, tv_nsec })
}

/// Why a tar name is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BadName {
    DotDot,
    TooLong,
    Nul,
}

impl fmt::Display for BadName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            BadName::DotDot => "a `..` component would leave the destination",
            BadName::TooLong => "the name is longer than PATH_MAX",
            BadName::Nul => "the name holds a NUL byte",
        })
    }
}

/// Normalises a tar name to `a/b/c`, relative to the destination: a leading `/` is dropped
/// (docker does the same), empty and `.` components too; the empty result is the destination
/// itself. `..` is refused outright, even where it would stay inside (`a/../b`): resolving
/// it lexically would disagree with the kernel wherever `a` is a symlink.
fn normalize(raw: &[u8]) -> Result<Vec<u8>, BadName> {
    if raw.len() > PATH_MAX {
        return Err(BadName::TooLong);
    }
    if raw.contains(&0) {
        return Err(BadName::Nul);
    }
    let mut out = Vec::with_capacity(raw.len());
    for c in raw.split(|&b| b == b'/') {
        match c {
            b"" | b"." => continue,
            b".." => return Err(BadName::DotDot),
            _ => {}
        }
        if !out.is_empty() {
            out.push(b'/');
        }
        out.extend_from_slice(c);
    }
    Ok(out)
}

struct Extractor<'a> {
    tree: &'a Tree,
    /// The destination directory, absolute and clean.
    dir: Vec<u8>,
    owner: Owner,
    /// Names (relative to `dir`) of the symlinks this stream laid down: never walked through.
    links: HashSet<Vec<u8>>,
    /// Directories laid down, with their times, restored once their contents are written.
    dirs: Vec<(Vec<u8>, Timestamps)>,
    /// The last parent directory opened, by its name relative to `dir`.
    parent: Option<(Vec<u8>, File)>,
    tmp_seq: u64,
}

impl Extractor<'_> {
    fn entry_err(name: &[u8], reason: impl fmt::Display) -> CopyError {
        CopyError::Entry {
            entry: show(name),
            reason: reason.to_string(),
        }
    }

    fn entry<R: Read>(&mut self, entry: &mut tar::Entry<'_, R>) -> Result<(), CopyError> {
        let raw = entry.path_bytes().into_owned();
        let name = normalize(&raw).map_err(|r| Self::entry_err(&raw, r))?;
        let kind = entry.header().entry_type();
        let meta = Meta::of(entry).map_err(|e| CopyError::Stream("reading", e))?;
        if name.is_empty() {
            // The destination directory itself (`./`): docker leaves it as it is.
            if kind.is_dir() {
                return Ok(());
            }
            return Err(Self::entry_err(
                &raw,
                "cannot overwrite the destination directory with a non-directory",
            ));
        }
        self.check_links(&raw, &name)?;
        // Whatever this entry replaces may be the cached parent, or above it.
        if self
            .parent
            .as_ref()
            .is_some_and(|(p, _)| p.starts_with(&name))
        {
            self.parent = None;
        }
        let (parent_rel, base) = split_last(&name);
        let (parent_rel, base) = (parent_rel.to_vec(), base.to_vec());
        match kind {
            EntryType::Directory => self.directory(&parent_rel, &base, &name, &meta),
            EntryType::Regular | EntryType::Continuous => {
                self.file(&parent_rel, &base, &name, &meta, entry)
            }
            EntryType::Symlink => {
                let target = entry
                    .link_name_bytes()
                    .filter(|t| !t.is_empty())
                    .ok_or_else(|| Self::entry_err(&raw, "a symlink without a target"))?
                    .into_owned();
                if target.len() > PATH_MAX || target.contains(&0) {
                    return Err(Self::entry_err(&raw, "a symlink target that is not a path"));
                }
                self.symlink(&parent_rel, &base, &name, &meta, &target)
            }
            EntryType::Link => {
                let target = entry
                    .link_name_bytes()
                    .ok_or_else(|| Self::entry_err(&raw, "a hard link without a target"))?
                    .into_owned();
                self.hardlink(&parent_rel, &base, &name, &target)
            }
            EntryType::Fifo => self.fifo(&parent_rel, &base, &name, &meta),
            EntryType::Char | EntryType::Block => {
                tracing::warn!(
                    entry = %show(&raw),
                    "not copying a device node: slate cp does not create device files"
                );
                Ok(())
            }
            // The tar crate folds these into the entries they describe.
            EntryType::XGlobalHeader | EntryType::XHeader => Ok(()),
            other => Err(Self::entry_err(
                &raw,
                format!("unsupported entry type {:?}", other.as_byte() as char),
            )),
        }
    }

    /// Fails when a directory above `name` is a symlink this stream laid down.
    fn check_links(&self, raw: &[u8], name: &[u8]) -> Result<(), CopyError> {
        for (i, &b) in name.iter().enumerate() {
            if b == b'/' && self.links.contains(&name[..i]) {
                return Err(Self::entry_err(
                    raw,
                    format!(
                        "goes through the symlink {} laid down by the same stream (refused)",
                        show(&name[..i])
                    ),
                ));
            }
        }
        Ok(())
    }

    fn full(&self, rel: &[u8]) -> Vec<u8> {
        join(&self.dir, rel)
    }

    /// The parent directory `rel` (relative to the destination), created (0755, like tar's
    /// implied directories) when missing. Resolved inside the root: symlinks the tree
    /// already had are followed there; the stream's own were refused by [`Self::check_links`].
    fn parent(&mut self, rel: &[u8]) -> Result<BorrowedFd<'_>, CopyError> {
        let cached = matches!(&self.parent, Some((p, _)) if p == rel);
        if !cached {
            let path = self.full(rel);
            let fd = match self.tree.resolve(&path, true) {
                Ok(fd) => fd,
                Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {
                    let perm = std::os::unix::fs::PermissionsExt::from_mode(0o755);
                    let h = self
                        .tree
                        .root
                        .mkdir_all(Path::new(OsStr::from_bytes(&path)), &perm)
                        .map_err(|e| self.tree.io("create", &path, explain(pathrs_io(e))))?;
                    File::from(OwnedFd::from(h))
                }
                Err(e) => return Err(self.tree.io("open", &path, explain(e))),
            };
            let meta = fd.metadata().map_err(|e| self.tree.io("stat", &path, e))?;
            if !meta.is_dir() {
                return Err(self.tree.io(
                    "copy into",
                    &path,
                    io::Error::from_raw_os_error(libc::ENOTDIR),
                ));
            }
            self.parent = Some((rel.to_vec(), fd));
        }
        match &self.parent {
            Some((_, fd)) => Ok(fd.as_fd()),
            None => Err(CopyError::Refused("no parent directory".into())),
        }
    }

    fn owner_of(&self, meta: &Meta, name: &[u8]) -> Result<Option<(Uid, Gid)>, CopyError> {
        let ids = &self.tree.ids;
        let (uid, gid) = match self.owner {
            Owner::Invoker => return Ok(None),
            Owner::Root => (0, 0),
            Owner::Keep => (
                u32::try_from(meta.uid).map_err(|_| Self::entry_err(name, "uid out of range"))?,
                u32::try_from(meta.gid).map_err(|_| Self::entry_err(name, "gid out of range"))?,
            ),
        };
        Ok(Some((
            Uid::from_raw(IdMap::to_host(&ids.uids, uid)),
            Gid::from_raw(IdMap::to_host(&ids.gids, gid)),
        )))
    }

    /// The mode a non-directory gets: no setuid/setgid once the owner is not the stream's
    /// or the container's root (a container must not hand the host a setuid-root binary).
    fn file_mode(&self, meta: &Meta) -> Mode {
        let mut mode = meta.mode;
        if self.owner == Owner::Invoker {
            mode &= !S_ISUID_GID;
        }
        Mode::from_raw_mode(mode)
    }

    fn tmp_name(&mut self) -> Vec<u8> {
        self.tmp_seq += 1;
        format!(".slate-cp-{}-{}", std::process::id(), self.tmp_seq).into_bytes()
    }

    /// Runs `create` with fresh temporary names until one is free; returns the name used.
    fn create_tmp<T>(
        &mut self,
        name: &[u8],
        mut create: impl FnMut(&Self, &[u8]) -> rustix::io::Result<T>,
    ) -> Result<(Vec<u8>, T), CopyError> {
        for _ in 0..100 {
            let tmp = self.tmp_name();
            match create(self, &tmp) {
                Ok(t) => return Ok((tmp, t)),
                // Someone (a process in the container) has that name: another.
                Err(Errno::EXIST) => continue,
                Err(e) => return Err(self.tree.io("create", &self.full(name), e.into())),
            }
        }
        Err(self.tree.io(
            "create",
            &self.full(name),
            io::Error::other("no free temporary name"),
        ))
    }

    /// Removes a temporary name after a failure (not following it; best effort).
    fn drop_tmp(&mut self, parent_rel: &[u8], tmp: &[u8]) {
        if let Ok(p) = self.parent(parent_rel) {
            let _ = rfs::unlinkat(p, tmp, AtFlags::empty());
        }
    }

    /// Puts `tmp` in place of `base` in `parent_rel`: a non-directory there is replaced (not
    /// followed), a directory is refused as docker refuses it. `file` is the new regular
    /// file's descriptor, for a target that is a mount point (a volume of one file).
    ///
    /// Mount points are found by mount id, not by `rename` failing: a mount that exists only
    /// in the container's namespace does not make the host's `rename` fail with `EBUSY`, it
    /// makes the kernel detach it, and the container would lose its volume.
    fn replace(
        &mut self,
        parent_rel: &[u8],
        tmp: &[u8],
        base: &[u8],
        name: &[u8],
        file: Option<&mut File>,
    ) -> Result<(), CopyError> {
        let full = self.full(name);
        let place = self.tree.place.clone();
        let p = self.parent(parent_rel)?;
        let parent_mnt = mount_id(p);
        // One component, not followed; a mount on it is crossed, which is the point.
        let existing = match rfs::openat(
            p,
            base,
            OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        ) {
            Ok(fd) => Some(File::from(fd)),
            Err(Errno::NOENT) => None,
            Err(e) => {
                self.drop_tmp(parent_rel, tmp);
                return Err(self.tree.io("open", &full, e.into()));
            }
        };
        let mut in_place = None;
        if let Some(target) = existing {
            let meta = target.metadata();
            if meta.as_ref().is_ok_and(|m| m.is_dir()) {
                self.drop_tmp(parent_rel, tmp);
                return Err(CopyError::Refused(format!(
                    "cannot overwrite directory {} {place} with non-directory",
                    show(&full)
                )));
            }
            if mount_id(target.as_fd()) != parent_mnt {
                match (file, meta.is_ok_and(|m| m.is_file())) {
                    (Some(f), true) => in_place = Some((target, f)),
                    _ => {
                        self.drop_tmp(parent_rel, tmp);
                        return Err(CopyError::Refused(format!(
                            "cannot replace {} {place}: a mount point, and not a regular file \
                             to write into",
                            show(&full)
                        )));
                    }
                }
            }
        }
        if let Some((target, f)) = in_place {
            let r = self.overwrite_mounted(&target, &full, f);
            self.drop_tmp(parent_rel, tmp);
            return r;
        }
        let p = self.parent(parent_rel)?;
        match rfs::renameat(p, tmp, p, base) {
            Ok(()) => Ok(()),
            Err(e) => {
                self.drop_tmp(parent_rel, tmp);
                match e {
                    // Raced: a directory (or a mount, in our own namespace) appeared there.
                    Errno::ISDIR | Errno::NOTEMPTY | Errno::EXIST | Errno::BUSY => {
                        Err(CopyError::Refused(format!(
                            "cannot overwrite {} {place}: {}",
                            show(&full),
                            io::Error::from(e)
                        )))
                    }
                    e => Err(self.tree.io("create", &full, e.into())),
                }
            }
        }
    }

    /// Copies the data of `src` into the regular file `target` (`O_PATH`) that is mounted
    /// where a copy goes, in place: its owner, mode and times are the mount's business.
    fn overwrite_mounted(
        &self,
        target: &File,
        full: &[u8],
        src: &mut File,
    ) -> Result<(), CopyError> {
        let mut dst = HandleRef::from_fd(target.as_fd())
            .reopen(OpenFlags::O_WRONLY | OpenFlags::O_TRUNC)
            .map_err(|e| self.tree.io("write", full, pathrs_io(e)))?;
        src.rewind()
            .and_then(|()| io::copy(src, &mut dst))
            .map_err(|e| self.tree.io("write", full, e))?;
        Ok(())
    }

    fn directory(
        &mut self,
        parent_rel: &[u8],
        base: &[u8],
        name: &[u8],
        meta: &Meta,
    ) -> Result<(), CopyError> {
        let full = self.full(name);
        let p = self.parent(parent_rel)?;
        // 0700 until its owner and mode are set.
        match rfs::mkdirat(p, base, Mode::from_raw_mode(0o700)) {
            Ok(()) | Err(Errno::EXIST) => {}
            Err(e) => return Err(self.tree.io("create", &full, e.into())),
        }
        let fd = match rfs::openat(
            p,
            base,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        ) {
            Ok(fd) => fd,
            Err(Errno::NOTDIR) | Err(Errno::LOOP) => {
                return Err(CopyError::Refused(format!(
                    "cannot overwrite non-directory {} {} with directory",
                    show(&full),
                    self.tree.place
                )))
            }
            Err(e) => return Err(self.tree.io("open", &full, e.into())),
        };
        if let Some((uid, gid)) = self.owner_of(meta, name)? {
            rfs::fchown(&fd, Some(uid), Some(gid))
                .map_err(|e| self.tree.io("chown", &full, e.into()))?;
        }
        rfs::fchmod(&fd, Mode::from_raw_mode(meta.mode))
            .map_err(|e| self.tree.io("chmod", &full, e.into()))?;
        self.dirs.push((name.to_vec(), meta.times()));
        Ok(())
    }

    fn file<R: Read>(
        &mut self,
        parent_rel: &[u8],
        base: &[u8],
        name: &[u8],
        meta: &Meta,
        data: &mut R,
    ) -> Result<(), CopyError> {
        let full = self.full(name);
        self.parent(parent_rel)?;
        let (tmp, fd) = self.create_tmp(name, |x, tmp| {
            let p = match &x.parent {
                Some((_, p)) => p.as_fd(),
                None => return Err(Errno::BADF),
            };
            rfs::openat(
                p,
                tmp,
                OFlags::CREATE | OFlags::EXCL | OFlags::RDWR | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                Mode::from_raw_mode(0o600),
            )
        })?;
        let mut f = File::from(fd);
        let written = (|| {
            io::copy(data, &mut f).map_err(|e| CopyError::Stream("reading", e))?;
            if let Some((uid, gid)) = self.owner_of(meta, name)? {
                rfs::fchown(&f, Some(uid), Some(gid))
                    .map_err(|e| self.tree.io("chown", &full, e.into()))?;
            }
            // After chown, which clears setuid and setgid.
            rfs::fchmod(&f, self.file_mode(meta))
                .map_err(|e| self.tree.io("chmod", &full, e.into()))?;
            rfs::futimens(&f, &meta.times())
                .map_err(|e| self.tree.io("set times of", &full, e.into()))
        })();
        if let Err(e) = written {
            self.drop_tmp(parent_rel, &tmp);
            return Err(e);
        }
        self.replace(parent_rel, &tmp, base, name, Some(&mut f))?;
        self.links.remove(name);
        Ok(())
    }

    /// Sets owner and times of the temporary non-regular `tmp`, not following it.
    fn finish_tmp(
        &mut self,
        parent_rel: &[u8],
        tmp: &[u8],
        name: &[u8],
        meta: &Meta,
    ) -> Result<(), CopyError> {
        let full = self.full(name);
        let owner = self.owner_of(meta, name)?;
        let p = self.parent(parent_rel)?;
        let r = (|| {
            if let Some((uid, gid)) = owner {
                rfs::chownat(p, tmp, Some(uid), Some(gid), AtFlags::SYMLINK_NOFOLLOW)?;
            }
            rfs::utimensat(p, tmp, &meta.times(), AtFlags::SYMLINK_NOFOLLOW)
        })();
        if let Err(e) = r {
            self.drop_tmp(parent_rel, tmp);
            return Err(self.tree.io("set the owner of", &full, e.into()));
        }
        Ok(())
    }

    fn symlink(
        &mut self,
        parent_rel: &[u8],
        base: &[u8],
        name: &[u8],
        meta: &Meta,
        target: &[u8],
    ) -> Result<(), CopyError> {
        self.parent(parent_rel)?;
        let (tmp, ()) = self.create_tmp(name, |x, tmp| match &x.parent {
            Some((_, p)) => rfs::symlinkat(target, p, tmp),
            None => Err(Errno::BADF),
        })?;
        self.finish_tmp(parent_rel, &tmp, name, meta)?;
        self.replace(parent_rel, &tmp, base, name, None)?;
        self.links.insert(name.to_vec());
        Ok(())
    }

    fn hardlink(
        &mut self,
        parent_rel: &[u8],
        base: &[u8],
        name: &[u8],
        raw_target: &[u8],
    ) -> Result<(), CopyError> {
        // The target is named relative to the destination, as the entries are; it must be
        // below it, and not reached through the stream's own symlinks.
        let target = normalize(raw_target).map_err(|r| {
            Self::entry_err(name, format!("hard link target {}: {r}", show(raw_target)))
        })?;
        if target.is_empty() {
            return Err(Self::entry_err(
                name,
                "a hard link to the destination directory",
            ));
        }
        self.check_links(name, &target)?;
        let full_target = self.full(&target);
        let src = self.tree.resolve(&full_target, false).map_err(|e| {
            Self::entry_err(
                name,
                format!("hard link target {}: {}", show(raw_target), explain(e)),
            )
        })?;
        let smeta = src
            .metadata()
            .map_err(|e| self.tree.io("stat", &full_target, e))?;
        if smeta.is_dir() {
            return Err(Self::entry_err(name, "a hard link to a directory"));
        }
        self.parent(parent_rel)?;
        // AT_EMPTY_PATH links the very inode resolved above (root has the
        // CAP_DAC_READ_SEARCH it needs); no name is looked up again.
        let (tmp, ()) = self.create_tmp(name, |x, tmp| match &x.parent {
            Some((_, p)) => rfs::linkat(&src, c"", p, tmp, AtFlags::EMPTY_PATH),
            None => Err(Errno::BADF),
        })?;
        self.replace(parent_rel, &tmp, base, name, None)?;
        if smeta.file_type().is_symlink() {
            self.links.insert(name.to_vec());
        } else {
            self.links.remove(name);
        }
        Ok(())
    }

    /// A FIFO. Its mode is as given only because `slate cp` clears its umask: there is no
    /// chmod that does not follow a name, and a FIFO cannot be opened without blocking or
    /// risking a swapped-in device.
    fn fifo(
        &mut self,
        parent_rel: &[u8],
        base: &[u8],
        name: &[u8],
        meta: &Meta,
    ) -> Result<(), CopyError> {
        self.parent(parent_rel)?;
        let mode = self.file_mode(meta);
        let (tmp, ()) = self.create_tmp(name, |x, tmp| match &x.parent {
            Some((_, p)) => rfs::mknodat(p, tmp, FileType::Fifo, mode, 0),
            None => Err(Errno::BADF),
        })?;
        self.finish_tmp(parent_rel, &tmp, name, meta)?;
        self.replace(parent_rel, &tmp, base, name, None)?;
        self.links.remove(name);
        Ok(())
    }

    /// Sets the times of the directories laid down, deepest first, now that nothing is
    /// written into them any more.
    fn restore_dir_times(&mut self) -> Result<(), CopyError> {
        self.parent = None;
        for (name, times) in self.dirs.iter().rev() {
            let full = join(&self.dir, name);
            let fd = match self.tree.resolve(&full, false) {
                Ok(fd) => fd,
                // Gone (a process in the container removed it): nothing to restore.
                Err(e) if e.raw_os_error() == Some(libc::ENOENT) => continue,
                Err(e) => return Err(self.tree.io("open", &full, explain(e))),
            };
            // "." of the O_PATH descriptor: this very directory, if it still is one.
            let dir = match rfs::openat(
                &fd,
                c".",
                OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
                Mode::empty(),
            ) {
                Ok(d) => d,
                Err(Errno::NOTDIR) => continue,
                Err(e) => return Err(self.tree.io("open", &full, e.into())),
            };
            rfs::futimens(&dir, times)
                .map_err(|e| self.tree.io("set times of", &full, e.into()))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{symlink, PermissionsExt};

    use tar::{Builder, Header};

    impl Tree {
        /// A tree rooted at a host directory, standing in for a container's root.
        fn at(dir: &Path) -> Tree {
            Tree {
                root: Root::open(dir).expect("opening a test root"),
                ids: IdMap::default(),
                place: "in the test tree".into(),
            }
        }
    }

    /// A tar stream of hand-made entries: (name, kind, data or link target).
    fn stream(entries: &[(&str, EntryType, &str)]) -> Vec<u8> {
        let mut b = Builder::new(Vec::new());
        for (name, kind, data) in entries {
            let mut h = Header::new_gnu();
            h.set_entry_type(*kind);
            h.set_mode(if kind.is_dir() { 0o755 } else { 0o644 });
            h.set_mtime(1_600_000_000);
            h.set_uid(0);
            h.set_gid(0);
            // Names go in raw: the tar crate's own setters refuse `..` and absolute names,
            // which is what these streams are about.
            let raw = name.as_bytes();
            h.as_old_mut().name[..raw.len()].copy_from_slice(raw);
            match kind {
                EntryType::Symlink | EntryType::Link => {
                    let l = data.as_bytes();
                    h.as_old_mut().linkname[..l.len()].copy_from_slice(l);
                    h.set_size(0);
                    h.set_cksum();
                    b.append(&h, io::empty()).expect("appending");
                }
                _ => {
                    h.set_size(data.len() as u64);
                    h.set_cksum();
                    b.append(&h, data.as_bytes()).expect("appending");
                }
            }
        }
        b.into_inner().expect("finishing")
    }

    fn extract_into(root: &Path, dir: &str, tar: &[u8]) -> Result<(), CopyError> {
        std::fs::create_dir_all(root.join(dir.trim_start_matches('/'))).expect("mkdir");
        extract(&Tree::at(root), dir.as_bytes(), tar, Owner::Invoker)
    }

    #[test]
    fn typed_paths_are_cleaned_and_their_ends_kept() {
        let c = PathSpec::container(b"etc//x/../y/");
        assert_eq!(c.path, b"/etc/y");
        assert!(c.slash && !c.dot);
        let d = PathSpec::container(b"/srv/dir/.");
        assert_eq!(d.path, b"/srv/dir");
        assert!(d.dot);
        assert_eq!(PathSpec::container(b"../../..").path, b"/");
        assert_eq!(PathSpec::container(b"").path, b"/");
        let h = PathSpec::host(b"a/./b", Path::new("/work"));
        assert_eq!(h.path, b"/work/a/b");
        assert!(PathSpec::host(b".", Path::new("/work")).dot);
    }

    #[test]
    fn tar_names_are_normalised_and_dotdot_refused() {
        assert_eq!(normalize(b"/etc/x").expect("abs"), b"etc/x");
        assert_eq!(normalize(b"./a//b/").expect("dots"), b"a/b");
        assert_eq!(normalize(b"./").expect("top"), b"");
        assert_eq!(normalize(b"../x"), Err(BadName::DotDot));
        assert_eq!(normalize(b"a/../b"), Err(BadName::DotDot));
        assert_eq!(normalize(b"a/\0b"), Err(BadName::Nul));
    }

    #[test]
    fn id_maps_translate_both_ways() {
        let ranges = IdMap::parse("0 100000 65536\n");
        assert_eq!(IdMap::to_host(&ranges, 0), 100000);
        assert_eq!(IdMap::to_host(&ranges, 70000), OVERFLOW_ID);
        assert_eq!(IdMap::to_inside(&ranges, 101000), 1000);
        assert!(IdMap::parse("         0          0 4294967295\n").is_empty());
    }

    #[test]
    fn a_tree_round_trips_with_modes_links_and_times() {
        let src = tempfile::tempdir().expect("tempdir");
        let dst = tempfile::tempdir().expect("tempdir");
        let d = src.path().join("d");
        std::fs::create_dir_all(d.join("sub")).expect("mkdir");
        std::fs::write(d.join("sub/f"), "data").expect("write");
        std::fs::set_permissions(d.join("sub/f"), PermissionsExt::from_mode(0o751)).expect("chmod");
        std::fs::hard_link(d.join("sub/f"), d.join("hard")).expect("link");
        symlink("../../outside", d.join("sub/rel")).expect("symlink");
        std::fs::set_permissions(d.join("sub"), PermissionsExt::from_mode(0o705)).expect("chmod");

        let st = Tree::at(src.path());
        let source = st
            .source(&PathSpec::container(b"d"), false)
            .expect("source");
        let tar = write_archive(&st, &source, &source.archive_name(), Vec::new()).expect("tar");
        extract(&Tree::at(dst.path()), b"/", tar.as_slice(), Owner::Invoker).expect("extract");

        let out = dst.path().join("d");
        assert_eq!(
            std::fs::read_to_string(out.join("sub/f")).expect("read"),
            "data"
        );
        let m = std::fs::metadata(out.join("sub/f")).expect("stat");
        assert_eq!(m.mode() & 0o7777, 0o751);
        assert_eq!(
            std::fs::metadata(out.join("sub")).expect("stat").mode() & 0o7777,
            0o705
        );
        assert_eq!(
            std::fs::read_link(out.join("sub/rel")).expect("readlink"),
            Path::new("../../outside")
        );
        assert_eq!(
            std::fs::metadata(out.join("hard")).expect("stat").ino(),
            m.ino(),
            "the hard link is kept"
        );
        let orig = std::fs::metadata(d.join("sub/f")).expect("stat");
        assert_eq!(m.mtime(), orig.mtime());
        assert_eq!(
            std::fs::metadata(out.join("sub")).expect("stat").mtime(),
            std::fs::metadata(d.join("sub")).expect("stat").mtime(),
            "directory times are restored after their contents"
        );
    }

    #[test]
    fn dotdot_entries_fail_and_write_nothing_outside() {
        let t = tempfile::tempdir().expect("tempdir");
        let root = t.path().join("root");
        let tar = stream(&[("../../escape", EntryType::Regular, "x")]);
        let e = extract_into(&root, "/dst", &tar).expect_err("refused");
        assert!(e.to_string().contains(".."), "{e}");
        assert!(!t.path().join("escape").exists());
    }

    #[test]
    fn absolute_entries_land_below_the_destination() {
        let t = tempfile::tempdir().expect("tempdir");
        let root = t.path().join("root");
        let tar = stream(&[("/abs-entry", EntryType::Regular, "x")]);
        extract_into(&root, "/dst", &tar).expect("extract");
        assert!(root.join("dst/abs-entry").is_file());
        assert!(!root.join("abs-entry").exists());
    }

    #[test]
    fn a_streams_own_symlink_is_never_walked_through() {
        for target in ["/", "../../..", "/proc/self/root", "."] {
            let t = tempfile::tempdir().expect("tempdir");
            let root = t.path().join("root");
            let tar = stream(&[
                ("link", EntryType::Symlink, target),
                ("link/pwned", EntryType::Regular, "x"),
            ]);
            let e = extract_into(&root, "/dst", &tar).expect_err("refused");
            assert!(e.to_string().contains("symlink link"), "{target}: {e}");
            assert!(!root.join("pwned").exists() && !root.join("dst/pwned").exists());
        }
    }

    #[test]
    fn hard_links_must_stay_below_the_destination() {
        let t = tempfile::tempdir().expect("tempdir");
        let root = t.path().join("root");
        std::fs::create_dir_all(root.join("etc")).expect("mkdir");
        std::fs::write(root.join("etc/passwd"), "root").expect("write");
        for target in ["../etc/passwd", "/etc/passwd"] {
            let tar = stream(&[("h", EntryType::Link, target)]);
            extract_into(&root, "/dst", &tar).expect_err("refused");
            assert!(!root.join("dst/h").exists(), "{target}");
        }
        let tar = stream(&[
            ("l", EntryType::Symlink, "/etc"),
            ("h", EntryType::Link, "l/passwd"),
        ]);
        extract_into(&root, "/dst", &tar).expect_err("through the stream's symlink");
        assert_eq!(
            std::fs::metadata(root.join("etc/passwd"))
                .expect("stat")
                .nlink(),
            1
        );
    }

    #[test]
    fn symlinks_already_there_are_followed_inside_the_root_only() {
        let t = tempfile::tempdir().expect("tempdir");
        let root = t.path().join("root");
        std::fs::create_dir_all(root.join("dst")).expect("mkdir");
        let marker = t.path().join("marker");
        std::fs::write(&marker, "host").expect("write");
        // An absolute link to the host's own marker, and one to the host's temp dir.
        symlink(&marker, root.join("dst/file")).expect("symlink");
        symlink(t.path(), root.join("dst/dir")).expect("symlink");
        // What that absolute link names inside the root.
        let inside = root.join(t.path().strip_prefix("/").expect("absolute"));
        std::fs::create_dir_all(&inside).expect("mkdir");
        let name = format!("new-{}", std::process::id());
        let tar = stream(&[
            ("file", EntryType::Regular, "replaced"),
            (&format!("dir/{name}"), EntryType::Regular, "x"),
        ]);
        extract_into(&root, "/dst", &tar).expect("extract");
        assert_eq!(std::fs::read_to_string(&marker).expect("read"), "host");
        assert!(
            std::fs::symlink_metadata(root.join("dst/file"))
                .expect("stat")
                .is_file(),
            "the symlink is replaced, not written through"
        );
        assert!(
            !t.path().join(&name).exists(),
            "written through a symlink out"
        );
        assert!(
            inside.join(&name).is_file(),
            "the link is followed inside the root"
        );
    }

    #[test]
    fn sources_resolve_inside_the_root() {
        let t = tempfile::tempdir().expect("tempdir");
        let root = t.path().join("root");
        std::fs::create_dir_all(&root).expect("mkdir");
        let marker = t.path().join("marker");
        std::fs::write(&marker, "host").expect("write");
        symlink(t.path(), root.join("dir")).expect("symlink");
        symlink("../../../../../../..", root.join("up")).expect("symlink");
        let tree = Tree::at(&root);
        // The host's marker seen from inside the root: through `dir` (an absolute link to
        // the host's temp dir) and through `up` (a relative one climbing above the root).
        let rel = t.path().strip_prefix("/").expect("absolute").join("marker");
        for via in ["/dir/marker".to_string(), format!("/up/{}", rel.display())] {
            let r = tree.source(&PathSpec::container(via.as_bytes()), true);
            assert!(matches!(r, Err(CopyError::NotFound { .. })), "{via}: {r:?}");
        }
        let r = tree.source(&PathSpec::container(b"/dir"), true);
        assert!(
            matches!(r, Err(CopyError::NotFound { .. })),
            "-L on a link out: {r:?}"
        );
    }

    #[test]
    fn docker_refusals() {
        let t = tempfile::tempdir().expect("tempdir");
        let root = t.path().join("root");
        std::fs::create_dir_all(root.join("dst/d")).expect("mkdir");
        std::fs::write(root.join("dst/f"), "x").expect("write");
        let e = extract_into(&root, "/dst", &stream(&[("d", EntryType::Regular, "x")]))
            .expect_err("file over dir");
        assert!(e.to_string().contains("cannot overwrite directory"), "{e}");
        let e = extract_into(&root, "/dst", &stream(&[("f", EntryType::Directory, "")]))
            .expect_err("dir over file");
        assert!(
            e.to_string().contains("cannot overwrite non-directory"),
            "{e}"
        );

        let tree = Tree::at(&root);
        let dir = tree
            .source(&PathSpec::container(b"/dst/d"), false)
            .expect("src");
        let file = tree
            .source(&PathSpec::container(b"/dst/f"), false)
            .expect("src");
        let onto_file = tree.dest(&PathSpec::container(b"/dst/f")).expect("dest");
        plan(&dir, &onto_file, "here").expect_err("directory onto a file");
        let missing_dir = tree.dest(&PathSpec::container(b"/dst/new/")).expect("dest");
        plan(&file, &missing_dir, "here").expect_err("file into a missing directory");
        let p = plan(&dir, &missing_dir, "here").expect("a directory to a new name");
        assert_eq!(
            (p.dir.as_slice(), p.top.as_slice()),
            (&b"/dst"[..], &b"new"[..])
        );
        let into = tree.dest(&PathSpec::container(b"/dst/d")).expect("dest");
        let p = plan(&file, &into, "here").expect("into a directory");
        assert_eq!(
            (p.dir.as_slice(), p.top.as_slice()),
            (&b"/dst/d"[..], &b"f"[..])
        );
        let contents = tree
            .source(&PathSpec::container(b"/dst/d/."), false)
            .expect("src");
        assert_eq!(plan(&contents, &into, "here").expect("contents").top, b".");
        tree.dest(&PathSpec::container(b"/nope/x"))
            .expect_err("the parent must exist");
    }

    #[test]
    fn a_dangling_destination_link_names_its_target_inside_the_root() {
        let t = tempfile::tempdir().expect("tempdir");
        let root = t.path().join("root");
        std::fs::create_dir_all(root.join("tmp")).expect("mkdir");
        symlink("/tmp/target", root.join("link")).expect("symlink");
        let d = Tree::at(&root)
            .dest(&PathSpec::container(b"/link"))
            .expect("dest");
        assert_eq!(d.path, b"/tmp/target");
        assert!(!d.exists);
    }

    #[test]
    fn the_invoker_gets_no_setuid_bits() {
        let t = tempfile::tempdir().expect("tempdir");
        let root = t.path().join("root");
        let mut b = Builder::new(Vec::new());
        let mut h = Header::new_gnu();
        h.set_entry_type(EntryType::Regular);
        h.set_mode(0o4755);
        h.set_uid(0);
        h.set_gid(0);
        h.set_size(1);
        b.append_data(&mut h, "suid", &b"x"[..]).expect("append");
        let tar = b.into_inner().expect("finish");
        extract_into(&root, "/dst", &tar).expect("extract");
        let m = std::fs::metadata(root.join("dst/suid")).expect("stat");
        assert_eq!(m.mode() & 0o7777, 0o755);
    }

    #[test]
    fn oversized_metadata_is_refused() {
        let t = tempfile::tempdir().expect("tempdir");
        let root = t.path().join("root");
        let mut b = Builder::new(Vec::new());
        let mut h = Header::new_gnu();
        h.set_entry_type(EntryType::GNULongName);
        h.set_size(HEADER_BUDGET + 1024);
        h.set_cksum();
        b.append(&h, io::repeat(b'a').take(HEADER_BUDGET + 1024))
            .expect("append");
        let tar = b.into_inner().expect("finish");
        let e = extract_into(&root, "/dst", &tar).expect_err("refused");
        assert!(format!("{e:#}").contains("stream"), "{e}");
    }
}
