//! Safe layer unpacking: one layer's tar stream into its own directory, which later becomes one
//! overlayfs lower dir (each layer is unpacked alone, never on top of the layers below it).
//!
//! # What it guarantees
//! - **Nothing outside `dest` is created, changed or removed**, whatever the stream holds. Names
//!   are normalised lexically first (absolute names are taken relative to the layer root, `.` and
//!   empty components dropped) and any `..` component fails the layer. Then every path is resolved
//!   from a descriptor of `dest`, one directory at a time, **never following a symlink**
//!   (`openat2` with `RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS`, or `openat` with
//!   `O_NOFOLLOW | O_DIRECTORY` per component where `openat2` is missing). The last component is
//!   created with calls that do not follow it either (`O_CREAT | O_EXCL | O_NOFOLLOW`, `mkdirat`,
//!   `symlinkat`, `mknodat`, `linkat` without `AT_SYMLINK_FOLLOW`), and metadata is set through
//!   the new descriptor or with `AT_SYMLINK_NOFOLLOW`. So a symlink laid down by an earlier entry
//!   (`a -> /`, `b -> ../../..`) can never be walked through: an entry that tries fails the layer
//!   with an error naming it. This is the class of CVE-2014-6407 (docker: escapes through
//!   symlinks and hardlinks in layer extraction) and CVE-2021-32760 (containerd: chmod through a
//!   symlink outside the target directory).
//! - Hardlink targets are resolved the same way, inside the layer only.
//! - OCI whiteouts become overlayfs whiteouts: `dir/.wh.name` a character device 0/0 at
//!   `dir/name`, `dir/.wh..wh..opq` the xattr `trusted.overlay.opaque=y` on `dir`. The `.wh.`
//!   entries themselves are never written. As the OCI image spec says, a whiteout only hides what
//!   lower layers hold: a path this layer itself lays down stays (a directory is then made opaque,
//!   because the whiteout removed the lower one). `trusted.overlay.*` xattrs in the stream itself
//!   are dropped: overlayfs metadata (redirects, metacopy, origin) comes only from whiteouts.
//! - Owners are numeric (header, overridden by PAX `uid`/`gid`), never looked up by name. Modes
//!   are applied after `chown` (which clears setuid/setgid) and xattrs after that (`chown` also
//!   drops `security.capability`). Directory times are restored last, after their children.
//! - With a tar-split recorder (as pulls have), a regular file that a later entry removes is
//!   moved (or copied) into the recorder's own directory beside `dest` rather than deleted, so
//!   that `slate save` can still re-create the earlier entry (see [`crate::tarsplit`]). Its
//!   name there is its inode number, never a name from the stream.
//! - Memory stays bounded: tar metadata (GNU long names, PAX records, sparse maps) between two
//!   entries may not exceed [`HEADER_BUDGET`] bytes, and file data streams through one reused
//!   buffer.
//!
//! On error `dest` holds a partial layer; the caller throws it away (nothing is committed until a
//! layer is whole). The caller also drains the stream after this returns, so digests cover it all.

mod sys;
#[cfg(test)]
mod tests;

use std::cell::{Cell, RefCell};
use std::ffi::{CStr, CString};
use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{AtFlags, OFlag};
use nix::sys::stat::{self, FchmodatFlags, Mode, SFlag, UtimensatFlags};
use nix::sys::time::TimeSpec;
use nix::unistd::{self, Gid, Uid, UnlinkatFlags};
use tar::EntryType;

use crate::tarsplit::{Recorder, Recording};

/// Large-file `stat`: see [`fstatat_nofollow`].
type FileStat = libc::stat64;

/// Bytes of tar metadata (headers, GNU long names, PAX records, sparse maps) allowed between two
/// entries. The tar crate reads long names and PAX records into memory whole; without a bound a
/// hostile header announcing a 4 GiB long name would exhaust a Raspberry Pi's memory.
pub const HEADER_BUDGET: u64 = 4 << 20;

/// Size of the one buffer file data is copied through.
const COPY_BUF: usize = 128 * 1024;
/// Longest path (and symlink target) accepted, as the kernel's `PATH_MAX`.
const PATH_MAX: usize = 4096;
/// Longest path component accepted, as the kernel's `NAME_MAX`.
const NAME_MAX: usize = 255;

const WHITEOUT_PREFIX: &[u8] = b".wh.";
/// aufs-era metadata names (`.wh..wh.plnk` ...): skipped, like containerd and moby do.
const WHITEOUT_META_PREFIX: &[u8] = b".wh..wh.";
const WHITEOUT_OPAQUE: &[u8] = b".wh..wh..opq";
const OPAQUE_XATTR: &CStr = c"trusted.overlay.opaque";
const OVERLAY_XATTR_PREFIX: &[u8] = b"trusted.overlay.";
const PAX_XATTR_PREFIX: &[u8] = b"SCHILY.xattr.";

/// What one [`unpack`] did.
#[derive(Debug, Default, Clone)]
pub struct UnpackStats {
    /// Tar members laid down (GNU long-name, PAX and PAX global header members not counted).
    pub entries: u64,
    /// Regular-file bytes written (the logical size, holes of sparse files included).
    pub bytes: u64,
}

/// Why a layer could not be unpacked. Every variant about an entry names it (lossily decoded).
#[derive(Debug, thiserror::Error)]
pub enum UnpackError {
    /// The layer directory itself could not be opened.
    #[error("opening layer directory {}", path.display())]
    Dest {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// The stream could not be read or is not a well-formed tar (bad checksum, truncated,
    /// oversized metadata). Errors of the underlying reader arrive here too.
    #[error("reading layer tar stream")]
    Tar(#[source] io::Error),
    /// The entry tries to reach outside the layer directory: `..`, a symlink in its path, a
    /// hardlink or whiteout pointing out, or replacing the layer root.
    #[error("layer entry {entry:?}: {reason}")]
    Hostile { entry: String, reason: &'static str },
    /// The entry is malformed or cannot be laid down (missing hardlink target, a file where its
    /// parent directory should be, absurd header fields).
    #[error("layer entry {entry:?}: {reason}")]
    Invalid { entry: String, reason: &'static str },
    /// The entry has a tar type slate does not unpack (e.g. GNU volume labels).
    #[error("layer entry {entry:?}: unsupported entry type {}", type_name(*kind))]
    Unsupported { entry: String, kind: u8 },
    /// A system call on the layer directory failed.
    #[error("layer entry {entry:?}: {op}")]
    Io {
        entry: String,
        op: &'static str,
        #[source]
        source: io::Error,
    },
    /// An extended attribute could not be set.
    #[error("layer entry {entry:?}: setting extended attribute {name:?}")]
    Xattr {
        entry: String,
        name: String,
        #[source]
        source: io::Error,
    },
}

fn type_name(kind: u8) -> String {
    if kind.is_ascii_graphic() {
        format!("'{}'", kind as char)
    } else {
        format!("{kind:#04x}")
    }
}

/// Unpacks one layer tar stream into `dest`, an existing empty directory that will become an
/// overlayfs lower dir. See the module documentation for what is guaranteed.
pub fn unpack<R: Read>(reader: R, dest: &Path) -> Result<UnpackStats, UnpackError> {
    unpack_recorded(reader, dest, None)
}

/// [`unpack`], logging with `recorder` what it takes to re-create the tar later (see
/// [`crate::tarsplit`]). With a recorder the stream is read to its end, past the
/// end-of-archive marker, and a regular file that a later entry removes is first kept aside
/// by the recorder (in its own directory beside `dest`, under a name the layer does not
/// choose).
pub(crate) fn unpack_recorded<R: Read>(
    reader: R,
    dest: &Path,
    recorder: Option<&RefCell<Recorder>>,
) -> Result<UnpackStats, UnpackError> {
    let root = sys::open_dest(dest).map_err(|e| UnpackError::Dest {
        path: dest.to_path_buf(),
        source: e.into(),
    })?;
    let budget = Cell::new(HEADER_BUDGET);
    let mut archive = tar::Archive::new(Budgeted {
        inner: Recording {
            inner: reader,
            recorder,
        },
        budget: &budget,
    });
    let mut entries = archive.entries().map_err(UnpackError::Tar)?;
    let mut u = Unpacker {
        root,
        cache: ParentCache::default(),
        buf: vec![0; COPY_BUF],
        name: Vec::new(),
        path: Vec::new(),
        link: Vec::new(),
        scratch: Vec::new(),
        dirs: DirTimes::default(),
        stats: UnpackStats::default(),
        recorder,
        created: None,
    };
    loop {
        // Only while the tar crate looks for the next entry is it reading metadata into memory;
        // file data (read by us, through one buffer) is not limited.
        budget.set(HEADER_BUDGET);
        let next = entries.next();
        budget.set(u64::MAX);
        let mut entry = match next {
            None => break,
            Some(Ok(entry)) => entry,
            Some(Err(e)) => return Err(UnpackError::Tar(e)),
        };
        if let Some(r) = recorder {
            record_entry(&mut r.borrow_mut(), &entry, &mut u.scratch)?;
        }
        u.entry(&mut entry)?;
        // Whatever the entry's data was (a directory with a size, a global PAX header), consume
        // it here so that the budget above only ever covers metadata.
        drain(&mut entry, &mut u.buf)?;
        if let Some(r) = recorder {
            r.borrow_mut()
                .file_done(u.created.take())
                .map_err(UnpackError::Tar)?;
        }
    }
    u.restore_dir_times()?;
    if let Some(r) = recorder {
        let rest = archive.into_inner().inner.inner;
        r.borrow_mut().finish(rest).map_err(UnpackError::Tar)?;
    }
    Ok(u.stats)
}

/// Opens a layer directory for [`open_file_in_layer`].
pub(crate) fn open_layer_dir(dir: &Path) -> io::Result<OwnedFd> {
    sys::open_dest(dir).map_err(io::Error::from)
}

/// Opens the regular file `path` (layer-relative, as normalised) below the layer directory
/// `root` for reading, following no symlink on the way: the layer's own links may point
/// anywhere on the host.
pub(crate) fn open_file_in_layer(root: &OwnedFd, path: &[u8]) -> io::Result<File> {
    let (parent, name) = split_last(path);
    let dir = if parent.is_empty() {
        None
    } else {
        Some(walk(root.as_fd(), parent, false).map_err(|e| match e {
            WalkError::Sys(e) => io::Error::from(e),
            WalkError::Missing => io::ErrorKind::NotFound.into(),
            WalkError::Symlink | WalkError::NotDir => {
                io::Error::other("a parent directory was replaced")
            }
        })?)
    };
    let dir = dir.as_ref().map_or(root.as_fd(), |d| d.as_fd());
    // Type first, without opening: a layer may have replaced the file by a device node,
    // and opening some devices does something (a watchdog, a tape rewind, a modem line).
    let st = fstatat_nofollow(dir, name)?;
    if file_type(&st) != SFlag::S_IFREG {
        return Err(io::Error::other("not a regular file"));
    }
    let fd = sys::openat(
        dir,
        name,
        OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_NONBLOCK,
        Mode::empty(),
    )?;
    let file = File::from(fd);
    let md = file.metadata()?;
    // Layers do not change once committed; this only makes the check and the open agree.
    if !md.is_file() || md.ino() != st.st_ino || md.dev() != st.st_dev {
        return Err(io::Error::other("the file changed while it was opened"));
    }
    Ok(file)
}

/// Tells the recorder where the entry's data is and whether it becomes a regular file of
/// the layer (whose bytes are then read back from the layer, not logged).
fn record_entry<R: Read>(
    recorder: &mut Recorder,
    entry: &tar::Entry<'_, R>,
    scratch: &mut Vec<u8>,
) -> Result<(), UnpackError> {
    let kind = entry.header().entry_type();
    let raw = entry.path_bytes();
    // As the unpacker decides: a v7 directory (trailing slash) and whiteouts are no files.
    let is_file = matches!(kind, EntryType::Regular | EntryType::Continuous)
        && raw.last() != Some(&b'/')
        && normalize(&raw, scratch).is_ok()
        && !split_last(scratch).1.starts_with(b".wh.");
    drop(raw);
    // A GNU sparse entry stores fewer bytes than its logical size; the header says how many.
    let stored = if kind == EntryType::GNUSparse {
        entry.header().entry_size().map_err(UnpackError::Tar)?
    } else {
        entry.size()
    };
    recorder
        .entry_data(
            entry.raw_file_position(),
            stored,
            is_file.then_some(scratch.as_slice()),
        )
        .map_err(UnpackError::Tar)
}

/// A reader that fails once `budget` bytes were read; see [`HEADER_BUDGET`]. Also bounds
/// the tar metadata of image archives (`archive.rs`).
pub(crate) struct Budgeted<'a, R> {
    pub(crate) inner: R,
    pub(crate) budget: &'a Cell<u64>,
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

/// Why a lexical path is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BadPath {
    Escapes,
    DotDot,
    TooLong,
    ComponentTooLong,
    Nul,
}

/// Normalises a tar name into `out` as `a/b/c` (no leading, trailing or double slashes, no `.`),
/// relative to the layer root. The empty result is the root itself. `..` is refused outright,
/// even where it would stay inside (`a/../b`): layer builders never write it, and resolving it
/// lexically would disagree with the kernel wherever `a` is a symlink.
fn normalize(raw: &[u8], out: &mut Vec<u8>) -> Result<(), BadPath> {
    out.clear();
    if raw.len() > PATH_MAX {
        return Err(BadPath::TooLong);
    }
    if raw.contains(&0) {
        return Err(BadPath::Nul);
    }
    let mut depth = 0usize;
    for comp in raw.split(|&b| b == b'/') {
        match comp {
            b"" | b"." => continue,
            b".." if depth == 0 => return Err(BadPath::Escapes),
            b".." => return Err(BadPath::DotDot),
            _ => {}
        }
        if comp.len() > NAME_MAX {
            return Err(BadPath::ComponentTooLong);
        }
        if !out.is_empty() {
            out.push(b'/');
        }
        out.extend_from_slice(comp);
        depth += 1;
    }
    Ok(())
}

/// Splits a normalised path into its parent and last component.
fn split_last(path: &[u8]) -> (&[u8], &[u8]) {
    match path.iter().rposition(|&b| b == b'/') {
        Some(i) => (&path[..i], &path[i + 1..]),
        None => (&[], path),
    }
}

/// Why a directory path could not be opened.
#[derive(Debug)]
enum WalkError {
    /// A component is a symlink: following it could lead anywhere.
    Symlink,
    /// A component exists but is not a directory.
    NotDir,
    /// A component does not exist (only when not creating).
    Missing,
    Sys(Errno),
}

/// Flags for directories used only as the base of `*at` calls. `O_PATH` needs no read
/// permission and does not run the filesystem's open.
const DIR_PATH: OFlag = OFlag::O_PATH
    .union(OFlag::O_DIRECTORY)
    .union(OFlag::O_NOFOLLOW);
/// Flags for directories whose own metadata is set (fchown, fsetxattr need a real descriptor).
const DIR_RDONLY: OFlag = OFlag::O_RDONLY
    .union(OFlag::O_DIRECTORY)
    .union(OFlag::O_NOFOLLOW);

/// Opens the directory `path` (normalised, non-empty) below `root` without following any
/// symlink, creating missing components (mode 0755, root-owned, like `tar` does for implied
/// parents) when `create` is set.
fn walk(root: BorrowedFd<'_>, path: &[u8], create: bool) -> Result<OwnedFd, WalkError> {
    // Fast path: one syscall for the whole path. Any failure (missing component, a symlink) falls
    // through to the walk below, which is the authority: it creates what is missing and says
    // precisely what is wrong.
    if let Some(Ok(fd)) = sys::openat2_beneath(root, path, DIR_PATH) {
        return Ok(fd);
    }
    let mut cur: Option<OwnedFd> = None;
    for comp in path.split(|&b| b == b'/') {
        let dir = cur.as_ref().map_or(root, |fd| fd.as_fd());
        let next = match sys::openat(dir, comp, DIR_PATH, Mode::empty()) {
            Ok(fd) => fd,
            Err(Errno::ENOENT) if create => {
                mkdir_implied(dir, comp).map_err(WalkError::Sys)?;
                sys::openat(dir, comp, DIR_PATH, Mode::empty())
                    .map_err(|e| classify(dir, comp, e))?
            }
            Err(Errno::ENOENT) => return Err(WalkError::Missing),
            Err(e) => return Err(classify(dir, comp, e)),
        };
        cur = Some(next);
    }
    cur.ok_or(WalkError::Missing)
}

/// Turns a failed `O_NOFOLLOW | O_DIRECTORY` open into the reason: symlink or non-directory.
fn classify(dir: BorrowedFd<'_>, name: &[u8], err: Errno) -> WalkError {
    if !matches!(err, Errno::ELOOP | Errno::ENOTDIR) {
        return WalkError::Sys(err);
    }
    match fstatat_nofollow(dir, name) {
        Ok(st) if file_type(&st) == SFlag::S_IFLNK => WalkError::Symlink,
        Ok(_) => WalkError::NotDir,
        Err(e) => WalkError::Sys(e),
    }
}

/// Creates a directory the stream implies but does not list (`a/b` without `a/`).
fn mkdir_implied(dir: BorrowedFd<'_>, name: &[u8]) -> Result<(), Errno> {
    stat::mkdirat(Some(dir.as_raw_fd()), name, Mode::from_bits_truncate(0o755))?;
    // mkdirat is subject to the process umask; the implied mode should not be. `name` is the
    // directory just created by this process, not a symlink, so following is moot.
    stat::fchmodat(
        Some(dir.as_raw_fd()),
        name,
        Mode::from_bits_truncate(0o755),
        FchmodatFlags::FollowSymlink,
    )
}

/// `lstat` of `name` in `dir`, through `fstatat64`: on 32-bit glibc (armv7) nix's `fstatat`
/// has a 32-bit `st_size` and `st_ino` and fails with `EOVERFLOW` on a file over 2 GiB or a
/// filesystem with 64-bit inode numbers.
fn fstatat_nofollow(dir: BorrowedFd<'_>, name: &[u8]) -> Result<FileStat, Errno> {
    let name = std::ffi::CString::new(name).map_err(|_| Errno::EINVAL)?;
    let mut st = std::mem::MaybeUninit::<FileStat>::uninit();
    // SAFETY: `name` is NUL-terminated and `st` a valid, writable stat64 buffer that is read
    // only when the call succeeded (and so filled it).
    let ret = unsafe {
        libc::fstatat64(
            dir.as_raw_fd(),
            name.as_ptr(),
            st.as_mut_ptr(),
            libc::AT_SYMLINK_NOFOLLOW,
        )
    };
    Errno::result(ret)?;
    // SAFETY: fstatat64 succeeded, so `st` is initialised.
    Ok(unsafe { st.assume_init() })
}

/// `fstat` of an open descriptor, through `fstat64` for the reason given at
/// [`fstatat_nofollow`].
fn fstat(fd: BorrowedFd<'_>) -> Result<FileStat, Errno> {
    let mut st = std::mem::MaybeUninit::<FileStat>::uninit();
    // SAFETY: `fd` is an open descriptor borrowed for the call and `st` a valid, writable
    // stat64 buffer that is read only when the call succeeded (and so filled it).
    let ret = unsafe { libc::fstat64(fd.as_raw_fd(), st.as_mut_ptr()) };
    Errno::result(ret)?;
    // SAFETY: fstat64 succeeded, so `st` is initialised.
    Ok(unsafe { st.assume_init() })
}

/// The permission bits of `st`, setuid, setgid and sticky included.
fn mode_bits(st: &FileStat) -> libc::mode_t {
    st.st_mode & 0o7777
}

/// Gives the open file or directory `fd`, which `st` describes as created, the entry's owner
/// and mode, calling `fchown` and `fchmod` only where they change something (most entries of
/// most layers are root's and are created with their mode already). `st` must describe an
/// inode without setuid, setgid or capabilities to lose, as `chown` would take them: one
/// this unpack just made, or a directory (which `chown` leaves its setgid bit).
fn fix_owner_and_mode(
    fd: BorrowedFd<'_>,
    st: &FileStat,
    meta: &Meta,
    cx: &Cx<'_>,
) -> Result<(), UnpackError> {
    let chown = st.st_uid != meta.uid.as_raw() || st.st_gid != meta.gid.as_raw();
    if chown {
        unistd::fchown(fd.as_raw_fd(), Some(meta.uid), Some(meta.gid))
            .map_err(cx.io("changing owner"))?;
    }
    // After a chown, always: it may have cleared bits that `st` still shows.
    if chown || mode_bits(st) != meta.mode.bits() {
        stat::fchmod(fd.as_raw_fd(), meta.mode).map_err(cx.io("changing mode"))?;
    }
    Ok(())
}

/// Whether the entry carries extended attributes to set (`SCHILY.xattr.*` PAX records).
fn has_xattrs<R: Read>(entry: &mut tar::Entry<'_, R>) -> Result<bool, UnpackError> {
    let Some(exts) = entry.pax_extensions().map_err(UnpackError::Tar)? else {
        return Ok(false);
    };
    for ext in exts {
        let ext = ext.map_err(UnpackError::Tar)?;
        if ext.key_bytes().starts_with(PAX_XATTR_PREFIX) {
            return Ok(true);
        }
    }
    Ok(false)
}

fn file_type(st: &FileStat) -> SFlag {
    SFlag::from_bits_truncate(st.st_mode & SFlag::S_IFMT.bits())
}

/// An overlayfs whiteout: a character device with device number 0/0.
fn is_whiteout(st: &FileStat) -> bool {
    file_type(st) == SFlag::S_IFCHR && st.st_rdev == 0
}

/// The tar-split recorder, if the unpack keeps one: regular files are kept aside for it
/// before they are removed.
type Keep<'a> = Option<&'a RefCell<Recorder>>;

/// Removes whatever is at `dir/name` (a directory with all it holds), if anything. Only ever
/// called for the path of the current entry, which is inside the layer.
fn remove(dir: BorrowedFd<'_>, name: &[u8], keep: Keep<'_>) -> Result<(), Errno> {
    if keep_aside(keep, dir, name) {
        return Ok(());
    }
    match unistd::unlinkat(Some(dir.as_raw_fd()), name, UnlinkatFlags::NoRemoveDir) {
        Ok(()) | Err(Errno::ENOENT) => Ok(()),
        Err(Errno::EISDIR) => remove_tree(dir, name, keep),
        Err(e) => Err(e),
    }
}

/// Removes the directory `dir/name` and everything below it, through descriptors only.
fn remove_tree(dir: BorrowedFd<'_>, name: &[u8], keep: Keep<'_>) -> Result<(), Errno> {
    let fd = sys::openat(dir, name, DIR_RDONLY, Mode::empty())?;
    // Names first, removal after: deleting while readdir is still iterating may skip entries.
    let mut names: Vec<CString> = Vec::new();
    {
        let copy = fd.try_clone().map_err(|_| Errno::EMFILE)?;
        let mut listing = nix::dir::Dir::from(copy)?;
        for item in listing.iter() {
            let item = item?;
            let child = item.file_name();
            if child != c"." && child != c".." {
                names.push(child.to_owned());
            }
        }
    }
    for child in &names {
        let bytes = child.as_bytes();
        if keep_aside(keep, fd.as_fd(), bytes) {
            continue;
        }
        match unistd::unlinkat(Some(fd.as_raw_fd()), bytes, UnlinkatFlags::NoRemoveDir) {
            Ok(()) => {}
            Err(Errno::EISDIR) => remove_tree(fd.as_fd(), bytes, keep)?,
            Err(e) => return Err(e),
        }
    }
    unistd::unlinkat(Some(dir.as_raw_fd()), name, UnlinkatFlags::RemoveDir)
}

/// Runs `op`; if something is already at `dir/name`, removes it and runs `op` once more. Used for
/// every non-directory entry: a later entry for the same path replaces the earlier one.
fn replacing<T>(
    dir: BorrowedFd<'_>,
    name: &[u8],
    keep: Keep<'_>,
    mut op: impl FnMut() -> Result<T, Errno>,
) -> Result<T, Errno> {
    match op() {
        Err(Errno::EEXIST) => {
            remove(dir, name, keep)?;
            op()
        }
        r => r,
    }
}

/// Before a regular file is removed (a later entry takes its path, or the path of a
/// directory above it), keeps it aside for the tar-split log: the earlier entry's bytes are
/// still part of the layer's tar (see [`crate::tarsplit`]). Returns whether `dir/name` is
/// gone (renamed into the kept directory). A failure gives the log up, not the unpack.
fn keep_aside(keep: Keep<'_>, dir: BorrowedFd<'_>, name: &[u8]) -> bool {
    let Some(recorder) = keep else {
        return false;
    };
    let mut r = recorder.borrow_mut();
    if !r.recording() {
        return false;
    }
    match keep_file(&mut r, dir, name) {
        Ok(gone) => gone,
        Err(e) => {
            tracing::debug!(error = %e, "cannot keep a replaced file aside");
            r.abandon("a replaced file could not be kept aside");
            false
        }
    }
}

fn keep_file(r: &mut Recorder, dir: BorrowedFd<'_>, name: &[u8]) -> io::Result<bool> {
    let st = match fstatat_nofollow(dir, name) {
        Ok(st) => st,
        // Nothing there (or nothing to look at): the removal itself says what is wrong.
        Err(_) => return Ok(false),
    };
    // An empty file has no data in the log to re-create.
    if file_type(&st) != SFlag::S_IFREG || st.st_size == 0 {
        return Ok(false);
    }
    let kept = r.kept_dir()?;
    // The inode number: what the file's `F` record calls it (its label).
    let label = st.st_ino.to_string();
    let label = label.as_bytes();
    let last = st.st_nlink <= 1;
    match fstatat_nofollow(kept.as_fd(), label) {
        // Its only name, or the last of several (whose content was copied when the first one
        // went): the file itself moves, over the copy if there is one.
        Ok(_) | Err(Errno::ENOENT) if last => {
            nix::fcntl::renameat(Some(dir.as_raw_fd()), name, Some(kept.as_raw_fd()), label)?;
            Ok(true)
        }
        // Other hardlinks still name it: moving it would show them a link count one too
        // high inside the container, so its content is copied.
        Err(Errno::ENOENT) => {
            let from = sys::openat(
                dir,
                name,
                OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_NONBLOCK,
                Mode::empty(),
            )?;
            let to = sys::openat(
                kept.as_fd(),
                label,
                OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW,
                Mode::from_bits_truncate(0o600),
            )?;
            io::copy(&mut File::from(from), &mut File::from(to))?;
            Ok(false)
        }
        // Copied already, when another of its names went.
        Ok(_) => Ok(false),
        Err(e) => Err(e.into()),
    }
}

/// A numeric header field, with an empty one (all NUL or spaces) read as 0, as Go's
/// `archive/tar` (which builds most layers, and reads them in docker and containerd) does; the
/// tar crate calls it an error.
fn numeric<T>(parsed: io::Result<T>, raw: &[u8], zero: T) -> io::Result<T> {
    match parsed {
        Err(_) if raw.iter().all(|&b| b == 0 || b == b' ') => Ok(zero),
        other => other,
    }
}

/// Ownership, permissions and times of one entry.
struct Meta {
    uid: Uid,
    gid: Gid,
    mode: Mode,
    atime: TimeSpec,
    mtime: TimeSpec,
}

/// Parses a PAX time (`1700000000`, `1700000000.5`, `-1.25`) into seconds and nanoseconds.
fn parse_pax_time(value: &[u8]) -> Option<(i64, i64)> {
    let (negative, digits) = match value.strip_prefix(b"-") {
        Some(rest) => (true, rest),
        None => (false, value),
    };
    let (int, frac) = match digits.iter().position(|&b| b == b'.') {
        Some(i) => (&digits[..i], &digits[i + 1..]),
        None => (digits, &[][..]),
    };
    if int.is_empty() || !int.iter().all(u8::is_ascii_digit) {
        return None;
    }
    if !frac.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let secs: i64 = std::str::from_utf8(int).ok()?.parse().ok()?;
    let mut nanos: i64 = 0;
    for i in 0..9 {
        nanos = nanos * 10 + frac.get(i).map_or(0, |d| i64::from(d - b'0'));
    }
    if !negative {
        Some((secs, nanos))
    } else if nanos == 0 {
        Some((-secs, 0))
    } else {
        Some((-secs - 1, 1_000_000_000 - nanos))
    }
}

/// A `TimeSpec`, clamped to what `time_t` holds (32 bits on armv7).
#[allow(clippy::unnecessary_cast, clippy::useless_conversion)]
fn timespec(secs: i64, nanos: i64) -> TimeSpec {
    let min = i64::from(libc::time_t::MIN);
    let max = i64::from(libc::time_t::MAX);
    TimeSpec::new(secs.clamp(min, max) as libc::time_t, nanos as _)
}

/// State of one unpack. Buffers are reused from entry to entry.
struct Unpacker<'r> {
    root: OwnedFd,
    cache: ParentCache,
    buf: Vec<u8>,
    /// The current entry's name as the stream spells it, for error messages.
    name: Vec<u8>,
    /// The current entry's normalised path.
    path: Vec<u8>,
    /// The current entry's normalised hardlink target, or raw symlink target.
    link: Vec<u8>,
    /// Scratch space for NUL-terminated names.
    scratch: Vec<u8>,
    dirs: DirTimes,
    stats: UnpackStats,
    recorder: Keep<'r>,
    /// Inode number of the regular file the current entry wrote, for the recorder.
    created: Option<u64>,
}

/// The parent directory of the previous entry, kept open: layers list a directory's entries
/// together, so most entries need no walk at all.
///
/// Soundness: the descriptor is *taken out* for each entry ([`ParentCache::take`]) and put back
/// only after it, and an entry only ever removes its own path, never its parent. So an entry
/// that removes a directory can never leave a descriptor of that directory cached behind it.
#[derive(Default)]
struct ParentCache {
    path: Vec<u8>,
    fd: Option<OwnedFd>,
}

impl ParentCache {
    /// The descriptor of directory `parent` (non-empty), from the cache or by a walk.
    fn take(
        &mut self,
        root: BorrowedFd<'_>,
        parent: &[u8],
        create: bool,
    ) -> Result<OwnedFd, WalkError> {
        if let Some(fd) = self.fd.take() {
            if self.path == parent {
                return Ok(fd);
            }
        }
        let fd = walk(root, parent, create)?;
        self.path.clear();
        self.path.extend_from_slice(parent);
        Ok(fd)
    }

    fn put_back(&mut self, fd: OwnedFd) {
        self.fd = Some(fd);
    }
}

/// Directory times to set once all entries are down (creating a child changes its parent's
/// mtime). Paths live in one arena to avoid an allocation per directory.
#[derive(Default)]
struct DirTimes {
    arena: Vec<u8>,
    list: Vec<(usize, usize, TimeSpec, TimeSpec)>,
}

/// Where extended attributes go.
enum XattrTarget<'a> {
    /// A regular file or directory, open.
    Fd(BorrowedFd<'a>),
    /// A symlink, device or fifo: never opened (opening a device or fifo has side effects), so
    /// set by path `/proc/self/fd/<dir>/<name>` with `lsetxattr`: the kernel resolves the verified
    /// directory descriptor and does not follow `name`.
    At(BorrowedFd<'a>, &'a [u8]),
}

/// Error constructors that name the current entry.
/// Marks `dir` opaque for overlayfs (`trusted.overlay.opaque=y`): the lower layers' entries
/// of that directory do not show through.
fn set_opaque(dir: BorrowedFd<'_>, cx: &Cx<'_>) -> Result<(), UnpackError> {
    sys::fsetxattr(dir, OPAQUE_XATTR, b"y").map_err(|e| UnpackError::Xattr {
        entry: cx.entry(),
        name: "trusted.overlay.opaque".into(),
        source: e.into(),
    })
}

struct Cx<'a>(&'a [u8]);

impl Cx<'_> {
    fn entry(&self) -> String {
        String::from_utf8_lossy(self.0).into_owned()
    }
    fn hostile(&self, reason: &'static str) -> UnpackError {
        UnpackError::Hostile {
            entry: self.entry(),
            reason,
        }
    }
    fn invalid(&self, reason: &'static str) -> UnpackError {
        UnpackError::Invalid {
            entry: self.entry(),
            reason,
        }
    }
    fn io(&self, op: &'static str) -> impl FnOnce(Errno) -> UnpackError + '_ {
        move |e| UnpackError::Io {
            entry: self.entry(),
            op,
            source: e.into(),
        }
    }
    fn io_err(&self, op: &'static str) -> impl FnOnce(io::Error) -> UnpackError + '_ {
        move |source| UnpackError::Io {
            entry: self.entry(),
            op,
            source,
        }
    }
    fn path(&self, bad: BadPath) -> UnpackError {
        match bad {
            BadPath::Escapes => self.hostile("path escapes the layer root"),
            BadPath::DotDot => self.hostile("path contains a \"..\" component"),
            BadPath::TooLong => self.invalid("path is longer than PATH_MAX"),
            BadPath::ComponentTooLong => self.invalid("path component is longer than NAME_MAX"),
            BadPath::Nul => self.invalid("path contains a NUL byte"),
        }
    }
    fn link(&self, bad: BadPath) -> UnpackError {
        match bad {
            BadPath::Escapes => self.hostile("hardlink target escapes the layer root"),
            BadPath::DotDot => self.hostile("hardlink target contains a \"..\" component"),
            BadPath::TooLong => self.invalid("hardlink target is longer than PATH_MAX"),
            BadPath::ComponentTooLong => {
                self.invalid("hardlink target component is longer than NAME_MAX")
            }
            BadPath::Nul => self.invalid("hardlink target contains a NUL byte"),
        }
    }
    fn walk(&self, err: WalkError) -> UnpackError {
        match err {
            WalkError::Symlink => self.hostile("a parent directory is a symlink"),
            WalkError::NotDir => self.invalid("a parent directory is not a directory"),
            WalkError::Missing => self.invalid("a parent directory does not exist"),
            WalkError::Sys(e) => self.io("opening parent directory")(e),
        }
    }
    fn malformed(&self, field: &'static str) -> impl FnOnce(io::Error) -> UnpackError + '_ {
        move |_| self.invalid(field)
    }
}

impl Unpacker<'_> {
    /// Lays down one entry.
    fn entry<R: Read>(&mut self, entry: &mut tar::Entry<'_, R>) -> Result<(), UnpackError> {
        let kind = entry.header().entry_type();
        if kind == EntryType::XGlobalHeader {
            // pax global headers carry archive-wide defaults (comments, charset) that no layer
            // builder relies on; they name no file.
            return Ok(());
        }
        self.stats.entries += 1;
        self.name.clear();
        self.name.extend_from_slice(&entry.path_bytes());
        let mut path = std::mem::take(&mut self.path);
        let result = self.apply(entry, kind, &mut path);
        self.path = path;
        result
    }

    fn apply<R: Read>(
        &mut self,
        entry: &mut tar::Entry<'_, R>,
        kind: EntryType,
        path: &mut Vec<u8>,
    ) -> Result<(), UnpackError> {
        let cx = Cx(&self.name);
        normalize(&self.name, path).map_err(|bad| cx.path(bad))?;
        let (parent, base) = split_last(path);

        if base.starts_with(WHITEOUT_PREFIX) {
            return self.whiteout(parent, base);
        }

        // Old (v7) archives mark directories only by a trailing slash.
        let old_dir = matches!(kind, EntryType::Regular | EntryType::Continuous)
            && self.name.last() == Some(&b'/');
        let meta = self.meta(entry)?;
        match kind {
            EntryType::Directory => self.directory(entry, path, &meta),
            _ if old_dir => self.directory(entry, path, &meta),
            EntryType::Regular | EntryType::Continuous | EntryType::GNUSparse => {
                self.file(entry, parent, base, &meta, kind == EntryType::GNUSparse)
            }
            EntryType::Symlink => self.symlink(entry, parent, base, &meta),
            EntryType::Link => self.hardlink(entry, parent, base),
            EntryType::Char | EntryType::Block | EntryType::Fifo => {
                self.node(entry, kind, parent, base, &meta)
            }
            other => Err(UnpackError::Unsupported {
                entry: Cx(&self.name).entry(),
                kind: other.as_byte(),
            }),
        }
    }

    /// Reads owner, mode and times from the header and its PAX records.
    fn meta<R: Read>(&self, entry: &mut tar::Entry<'_, R>) -> Result<Meta, UnpackError> {
        let cx = Cx(&self.name);
        let header = entry.header();
        let raw = header.as_old();
        // The tar crate has already applied PAX `uid`/`gid` to the header.
        let uid =
            numeric(header.uid(), &raw.uid, 0).map_err(cx.malformed("malformed uid in header"))?;
        let gid =
            numeric(header.gid(), &raw.gid, 0).map_err(cx.malformed("malformed gid in header"))?;
        let mode = numeric(header.mode(), &raw.mode, 0)
            .map_err(cx.malformed("malformed mode in header"))?;
        let mtime = numeric(header.mtime(), &raw.mtime, 0)
            .map_err(cx.malformed("malformed mtime in header"))?;
        let uid = u32::try_from(uid).map_err(|_| cx.invalid("uid does not fit 32 bits"))?;
        let gid = u32::try_from(gid).map_err(|_| cx.invalid("gid does not fit 32 bits"))?;
        let mut mtime = (i64::try_from(mtime).unwrap_or(i64::MAX), 0);
        let mut atime = None;
        if let Some(exts) = entry.pax_extensions().map_err(UnpackError::Tar)? {
            for ext in exts {
                let ext = ext.map_err(UnpackError::Tar)?;
                match ext.key_bytes() {
                    b"mtime" => {
                        if let Some(t) = parse_pax_time(ext.value_bytes()) {
                            mtime = t;
                        }
                    }
                    b"atime" => atime = parse_pax_time(ext.value_bytes()),
                    _ => {}
                }
            }
        }
        let atime = atime.unwrap_or(mtime);
        Ok(Meta {
            uid: Uid::from_raw(uid),
            gid: Gid::from_raw(gid),
            mode: Mode::from_bits_truncate((mode & 0o7777) as libc::mode_t),
            atime: timespec(atime.0, atime.1),
            mtime: timespec(mtime.0, mtime.1),
        })
    }

    fn directory<R: Read>(
        &mut self,
        entry: &mut tar::Entry<'_, R>,
        path: &[u8],
        meta: &Meta,
    ) -> Result<(), UnpackError> {
        let Unpacker {
            root,
            cache,
            scratch,
            dirs,
            name,
            recorder,
            ..
        } = self;
        let cx = Cx(name);
        let (parent, base) = split_last(path);
        let mut was_whiteout = false;
        // Made with the wanted permission bits (less the umask), so that the owner and mode
        // usually need no call at all: see `fix_owner_and_mode`.
        let create_mode = Mode::from_bits_truncate(meta.mode.bits() & 0o777);
        let (st, pfd) = if path.is_empty() {
            // `./`: the layer root's own metadata.
            let st = fstat(root.as_fd()).map_err(cx.io("inspecting the layer root"))?;
            (st, None)
        } else {
            let pfd = take_parent(cache, root.as_fd(), parent, true, &cx)?;
            let pdir = pfd.as_ref().map_or(root.as_fd(), |fd| fd.as_fd());
            let at = Some(pdir.as_raw_fd());
            match stat::mkdirat(at, base, create_mode) {
                Ok(()) => {}
                Err(Errno::EEXIST) => {
                    let st =
                        fstatat_nofollow(pdir, base).map_err(cx.io("inspecting existing path"))?;
                    // A directory replacing a directory keeps it (and what this layer put in
                    // it) and only updates its metadata; anything else is replaced.
                    if file_type(&st) != SFlag::S_IFDIR {
                        was_whiteout = is_whiteout(&st);
                        remove(pdir, base, *recorder).map_err(cx.io("removing existing path"))?;
                        stat::mkdirat(at, base, create_mode)
                            .map_err(cx.io("creating directory"))?;
                    }
                }
                Err(e) => return Err(cx.io("creating directory")(e)),
            }
            // What is there now (this process's own work directory: nothing else changes it
            // meanwhile). Only a look: nothing is followed, and anything but a directory is
            // refused by the open below.
            let st = fstatat_nofollow(pdir, base).map_err(cx.io("inspecting directory"))?;
            (st, pfd)
        };
        let owner_ok = st.st_uid == meta.uid.as_raw() && st.st_gid == meta.gid.as_raw();
        let mode_ok = mode_bits(&st) == meta.mode.bits();
        if file_type(&st) != SFlag::S_IFDIR
            || !owner_ok
            || !mode_ok
            || was_whiteout
            || has_xattrs(entry)?
        {
            let dir = if path.is_empty() {
                root.try_clone()
                    .map_err(cx.io_err("opening the layer root"))?
            } else {
                let pdir = pfd.as_ref().map_or(root.as_fd(), |fd| fd.as_fd());
                sys::openat(pdir, base, DIR_RDONLY, Mode::empty())
                    .map_err(|e| cx.walk(classify(pdir, base, e)))?
            };
            fix_owner_and_mode(dir.as_fd(), &st, meta, &cx)?;
            apply_xattrs(entry, &XattrTarget::Fd(dir.as_fd()), scratch, &cx)?;
            if was_whiteout {
                // This layer deleted the lower directory (whiteout) and then made a new one:
                // the lower one's contents must not show through.
                set_opaque(dir.as_fd(), &cx)?;
            }
        }
        let start = dirs.arena.len();
        dirs.arena.extend_from_slice(path);
        dirs.list
            .push((start, dirs.arena.len(), meta.atime, meta.mtime));
        if let Some(fd) = pfd {
            cache.put_back(fd);
        }
        Ok(())
    }

    fn file<R: Read>(
        &mut self,
        entry: &mut tar::Entry<'_, R>,
        parent: &[u8],
        base: &[u8],
        meta: &Meta,
        sparse: bool,
    ) -> Result<(), UnpackError> {
        let Unpacker {
            root,
            cache,
            scratch,
            buf,
            stats,
            name,
            recorder,
            created,
            ..
        } = self;
        let cx = Cx(name);
        if base.is_empty() {
            return Err(cx.hostile("entry would replace the layer root"));
        }
        let pfd = take_parent(cache, root.as_fd(), parent, true, &cx)?;
        let pdir = pfd.as_ref().map_or(root.as_fd(), |fd| fd.as_fd());
        // Created with the wanted permission bits but never setuid, setgid or sticky: those
        // only come with `fix_owner_and_mode`, after the owner, so a setuid file is never
        // briefly someone else's. Usually (files of root, umask 022) the mode and owner it is
        // created with are the wanted ones and need no further call.
        let flags = OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW;
        let create_mode = Mode::from_bits_truncate(meta.mode.bits() & 0o777);
        let fd = replacing(pdir, base, *recorder, || {
            sys::openat(pdir, base, flags, create_mode)
        })
        .map_err(cx.io("creating file"))?;
        let mut file = File::from(fd);
        // What it was created as (umask applied, the group perhaps a setgid parent's); the
        // recorder also names the file by its inode (see `keep_aside`).
        let st = fstat(file.as_fd()).map_err(cx.io("inspecting file"))?;
        if recorder.is_some() {
            *created = Some(st.st_ino);
        }
        let written = copy_data(entry, &mut file, buf, sparse, &cx)?;
        stats.bytes += written;
        // Order matters: chown clears setuid/setgid and drops security.capability, so mode and
        // xattrs come after it; writing data would clear them too, so data comes first.
        fix_owner_and_mode(file.as_fd(), &st, meta, &cx)?;
        apply_xattrs(entry, &XattrTarget::Fd(file.as_fd()), scratch, &cx)?;
        stat::futimens(file.as_raw_fd(), &meta.atime, &meta.mtime)
            .map_err(cx.io("setting times"))?;
        if let Some(fd) = pfd {
            cache.put_back(fd);
        }
        Ok(())
    }

    fn symlink<R: Read>(
        &mut self,
        entry: &mut tar::Entry<'_, R>,
        parent: &[u8],
        base: &[u8],
        meta: &Meta,
    ) -> Result<(), UnpackError> {
        let Unpacker {
            root,
            cache,
            scratch,
            link,
            name,
            recorder,
            ..
        } = self;
        let cx = Cx(name);
        if base.is_empty() {
            return Err(cx.hostile("entry would replace the layer root"));
        }
        // The target is stored as is: it is only ever interpreted inside the container's root,
        // and this unpacker never follows it.
        link.clear();
        match entry.link_name_bytes() {
            Some(target) => link.extend_from_slice(&target),
            None => return Err(cx.invalid("symlink has no target")),
        }
        if link.is_empty() {
            return Err(cx.invalid("symlink has no target"));
        }
        if link.len() > PATH_MAX {
            return Err(cx.invalid("symlink target is longer than PATH_MAX"));
        }
        if link.contains(&0) {
            return Err(cx.invalid("symlink target contains a NUL byte"));
        }
        let pfd = take_parent(cache, root.as_fd(), parent, true, &cx)?;
        let pdir = pfd.as_ref().map_or(root.as_fd(), |fd| fd.as_fd());
        let target = &link[..];
        replacing(pdir, base, *recorder, || {
            unistd::symlinkat(target, Some(pdir.as_raw_fd()), base)
        })
        .map_err(cx.io("creating symlink"))?;
        unistd::fchownat(
            Some(pdir.as_raw_fd()),
            base,
            Some(meta.uid),
            Some(meta.gid),
            AtFlags::AT_SYMLINK_NOFOLLOW,
        )
        .map_err(cx.io("changing owner"))?;
        // No chmod: symlink modes mean nothing on Linux, and chmod would follow the link.
        apply_xattrs(entry, &XattrTarget::At(pdir, base), scratch, &cx)?;
        stat::utimensat(
            Some(pdir.as_raw_fd()),
            base,
            &meta.atime,
            &meta.mtime,
            UtimensatFlags::NoFollowSymlink,
        )
        .map_err(cx.io("setting times"))?;
        if let Some(fd) = pfd {
            cache.put_back(fd);
        }
        Ok(())
    }

    fn hardlink<R: Read>(
        &mut self,
        entry: &mut tar::Entry<'_, R>,
        parent: &[u8],
        base: &[u8],
    ) -> Result<(), UnpackError> {
        let Unpacker {
            root,
            cache,
            link,
            name,
            recorder,
            ..
        } = self;
        let cx = Cx(name);
        if base.is_empty() {
            return Err(cx.hostile("entry would replace the layer root"));
        }
        let raw = match entry.link_name_bytes() {
            Some(raw) => raw,
            None => return Err(cx.invalid("hardlink has no target")),
        };
        normalize(&raw, link).map_err(|bad| cx.link(bad))?;
        drop(raw);
        if link.is_empty() {
            return Err(cx.hostile("hardlink target is the layer root"));
        }
        let (tparent, tbase) = split_last(link);
        if tparent == parent && tbase == base {
            // A link to itself: GNU tar writes these for files it met twice. Nothing to do.
            return Ok(());
        }
        // The target's directory gets its own descriptor (it is usually not the cached one).
        let tdir = if tparent.is_empty() {
            None
        } else {
            Some(walk(root.as_fd(), tparent, false).map_err(|e| match e {
                WalkError::Symlink => cx.hostile("hardlink target path goes through a symlink"),
                WalkError::NotDir => {
                    cx.invalid("hardlink target path goes through a non-directory")
                }
                WalkError::Missing => cx.invalid("hardlink target does not exist"),
                WalkError::Sys(e) => cx.io("opening hardlink target directory")(e),
            })?)
        };
        let tdir_fd = tdir.as_ref().map_or(root.as_fd(), |fd| fd.as_fd());
        let pfd = take_parent(cache, root.as_fd(), parent, true, &cx)?;
        let pdir = pfd.as_ref().map_or(root.as_fd(), |fd| fd.as_fd());
        let link = || {
            // Flags 0: if the target is itself a symlink, the link is to the symlink, which is
            // never followed.
            unistd::linkat(
                Some(tdir_fd.as_raw_fd()),
                tbase,
                Some(pdir.as_raw_fd()),
                base,
                AtFlags::empty(),
            )
        };
        match link() {
            Ok(()) => {}
            Err(Errno::EEXIST) => {
                let existing =
                    fstatat_nofollow(pdir, base).map_err(cx.io("inspecting existing path"))?;
                let target = fstatat_nofollow(tdir_fd, tbase);
                let same = match target {
                    Ok(t) => t.st_dev == existing.st_dev && t.st_ino == existing.st_ino,
                    Err(_) => false,
                };
                if !same {
                    remove(pdir, base, *recorder).map_err(cx.io("removing existing path"))?;
                    link().map_err(|e| hardlink_error(&cx, e))?;
                }
            }
            Err(e) => return Err(hardlink_error(&cx, e)),
        }
        if let Some(fd) = pfd {
            cache.put_back(fd);
        }
        Ok(())
    }

    fn node<R: Read>(
        &mut self,
        entry: &mut tar::Entry<'_, R>,
        kind: EntryType,
        parent: &[u8],
        base: &[u8],
        meta: &Meta,
    ) -> Result<(), UnpackError> {
        let Unpacker {
            root,
            cache,
            scratch,
            name,
            recorder,
            ..
        } = self;
        let cx = Cx(name);
        if base.is_empty() {
            return Err(cx.hostile("entry would replace the layer root"));
        }
        let (sflag, dev) = match kind {
            EntryType::Fifo => (SFlag::S_IFIFO, 0),
            _ => {
                let header = entry.header();
                let (raw_major, raw_minor) = match (header.as_gnu(), header.as_ustar()) {
                    (Some(gnu), _) => (&gnu.dev_major[..], &gnu.dev_minor[..]),
                    (None, Some(ustar)) => (&ustar.dev_major[..], &ustar.dev_minor[..]),
                    (None, None) => (&[][..], &[][..]),
                };
                let major = numeric(header.device_major(), raw_major, Some(0))
                    .map_err(cx.malformed("malformed device major number"))?;
                let minor = numeric(header.device_minor(), raw_minor, Some(0))
                    .map_err(cx.malformed("malformed device minor number"))?;
                let (major, minor) = match (major, minor) {
                    (Some(major), Some(minor)) => (major, minor),
                    _ => return Err(cx.invalid("device entry without device numbers")),
                };
                let sflag = if kind == EntryType::Char {
                    SFlag::S_IFCHR
                } else {
                    SFlag::S_IFBLK
                };
                (sflag, stat::makedev(major.into(), minor.into()))
            }
        };
        let pfd = take_parent(cache, root.as_fd(), parent, true, &cx)?;
        let pdir = pfd.as_ref().map_or(root.as_fd(), |fd| fd.as_fd());
        let at = Some(pdir.as_raw_fd());
        replacing(pdir, base, *recorder, || {
            stat::mknodat(at, base, sflag, Mode::from_bits_truncate(0o600), dev)
        })
        .map_err(cx.io("creating device node or fifo"))?;
        unistd::fchownat(
            at,
            base,
            Some(meta.uid),
            Some(meta.gid),
            AtFlags::AT_SYMLINK_NOFOLLOW,
        )
        .map_err(cx.io("changing owner"))?;
        // `base` is the node this process just made, not a symlink, so following is moot; a
        // non-following fchmodat needs Linux 6.6.
        stat::fchmodat(at, base, meta.mode, FchmodatFlags::FollowSymlink)
            .map_err(cx.io("changing mode"))?;
        apply_xattrs(entry, &XattrTarget::At(pdir, base), scratch, &cx)?;
        stat::utimensat(
            at,
            base,
            &meta.atime,
            &meta.mtime,
            UtimensatFlags::NoFollowSymlink,
        )
        .map_err(cx.io("setting times"))?;
        if let Some(fd) = pfd {
            cache.put_back(fd);
        }
        Ok(())
    }

    /// `parent/.wh.name` and `parent/.wh..wh..opq`.
    fn whiteout(&mut self, parent: &[u8], base: &[u8]) -> Result<(), UnpackError> {
        let Unpacker {
            root, cache, name, ..
        } = self;
        let cx = Cx(name);
        if base == WHITEOUT_OPAQUE {
            let dir = open_dir(cache, root.as_fd(), parent, &cx)?;
            return set_opaque(dir.as_fd(), &cx);
        }
        if base.starts_with(WHITEOUT_META_PREFIX) {
            return Ok(());
        }
        let name = &base[WHITEOUT_PREFIX.len()..];
        match name {
            b"" => return Err(cx.invalid("whiteout names no file")),
            b"." | b".." => return Err(cx.hostile("whiteout names a path outside its directory")),
            _ => {}
        }
        let pfd = take_parent(cache, root.as_fd(), parent, true, &cx)?;
        let pdir = pfd.as_ref().map_or(root.as_fd(), |fd| fd.as_fd());
        match fstatat_nofollow(pdir, name) {
            Err(Errno::ENOENT) => {
                // Mode 0, root-owned, as overlayfs itself makes them.
                stat::mknodat(
                    Some(pdir.as_raw_fd()),
                    name,
                    SFlag::S_IFCHR,
                    Mode::empty(),
                    0,
                )
                .map_err(cx.io("creating whiteout"))?;
            }
            Ok(st) if file_type(&st) == SFlag::S_IFDIR => {
                // This layer has its own `name/`; the whiteout deletes only the lower one, so
                // what stays is this layer's directory alone: opaque.
                let dir = sys::openat(pdir, name, DIR_RDONLY, Mode::empty())
                    .map_err(cx.io("opening directory"))?;
                set_opaque(dir.as_fd(), &cx)?;
            }
            // This layer's own file (or an earlier whiteout) already hides the lower path.
            Ok(_) => {}
            Err(e) => return Err(cx.io("inspecting existing path")(e)),
        }
        if let Some(fd) = pfd {
            cache.put_back(fd);
        }
        Ok(())
    }

    /// Sets every directory's times, now that nothing will be created in them any more. A
    /// directory that a later entry replaced (or made unreachable) is skipped.
    fn restore_dir_times(&mut self) -> Result<(), UnpackError> {
        let dirs = std::mem::take(&mut self.dirs);
        for &(start, end, atime, mtime) in &dirs.list {
            let path = &dirs.arena[start..end];
            let cx = Cx(path);
            if path.is_empty() {
                stat::futimens(self.root.as_raw_fd(), &atime, &mtime)
                    .map_err(cx.io("setting directory times"))?;
                continue;
            }
            let (parent, base) = split_last(path);
            let pfd = if parent.is_empty() {
                self.cache.fd = None;
                None
            } else {
                match self.cache.take(self.root.as_fd(), parent, false) {
                    Ok(fd) => Some(fd),
                    Err(WalkError::Sys(e)) => return Err(cx.io("opening parent directory")(e)),
                    Err(_) => continue,
                }
            };
            let pdir = pfd.as_ref().map_or(self.root.as_fd(), |fd| fd.as_fd());
            match fstatat_nofollow(pdir, base) {
                Ok(st) if file_type(&st) == SFlag::S_IFDIR => {
                    stat::utimensat(
                        Some(pdir.as_raw_fd()),
                        base,
                        &atime,
                        &mtime,
                        UtimensatFlags::NoFollowSymlink,
                    )
                    .map_err(cx.io("setting directory times"))?;
                }
                Ok(_) | Err(Errno::ENOENT) => {}
                Err(e) => return Err(cx.io("inspecting directory")(e)),
            }
            if let Some(fd) = pfd {
                self.cache.put_back(fd);
            }
        }
        Ok(())
    }
}

/// The descriptor of the parent directory `parent` of the current entry; `None` for the layer
/// root. The caller puts it back into the cache when the entry is done.
fn take_parent(
    cache: &mut ParentCache,
    root: BorrowedFd<'_>,
    parent: &[u8],
    create: bool,
    cx: &Cx<'_>,
) -> Result<Option<OwnedFd>, UnpackError> {
    if parent.is_empty() {
        // Drop a cached descriptor: this entry may remove the directory it refers to.
        cache.fd = None;
        return Ok(None);
    }
    cache
        .take(root, parent, create)
        .map(Some)
        .map_err(|e| cx.walk(e))
}

/// Opens (creating it and its parents if missing) the directory `path` itself for reading,
/// never through a symlink.
fn open_dir(
    cache: &mut ParentCache,
    root: BorrowedFd<'_>,
    path: &[u8],
    cx: &Cx<'_>,
) -> Result<OwnedFd, UnpackError> {
    if path.is_empty() {
        return root
            .try_clone_to_owned()
            .map_err(cx.io_err("opening the layer root"));
    }
    let (parent, base) = split_last(path);
    let pfd = take_parent(cache, root, parent, true, cx)?;
    let pdir = pfd.as_ref().map_or(root, |fd| fd.as_fd());
    let dir = match sys::openat(pdir, base, DIR_RDONLY, Mode::empty()) {
        Ok(fd) => fd,
        Err(Errno::ENOENT) => {
            mkdir_implied(pdir, base).map_err(cx.io("creating directory"))?;
            sys::openat(pdir, base, DIR_RDONLY, Mode::empty())
                .map_err(|e| cx.walk(classify(pdir, base, e)))?
        }
        Err(e) => return Err(cx.walk(classify(pdir, base, e))),
    };
    if let Some(fd) = pfd {
        cache.put_back(fd);
    }
    Ok(dir)
}

fn hardlink_error(cx: &Cx<'_>, e: Errno) -> UnpackError {
    match e {
        Errno::ENOENT => cx.invalid("hardlink target does not exist"),
        Errno::EPERM => cx.invalid("hardlink target is a directory"),
        e => cx.io("creating hardlink")(e),
    }
}

/// Copies the entry's data into `file` through `buf`. For GNU sparse entries, all-zero chunks
/// become holes again rather than written zeros (spares SD cards). Returns the bytes of the file.
fn copy_data<R: Read>(
    entry: &mut tar::Entry<'_, R>,
    file: &mut File,
    buf: &mut [u8],
    sparse: bool,
    cx: &Cx<'_>,
) -> Result<u64, UnpackError> {
    let expected = entry.size();
    let mut total: u64 = 0;
    let mut hole: u64 = 0;
    loop {
        let n = match entry.read(buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(UnpackError::Tar(e)),
        };
        let chunk = &buf[..n];
        total += n as u64;
        if sparse && chunk.iter().all(|&b| b == 0) {
            hole += n as u64;
            continue;
        }
        if hole > 0 {
            let skip = i64::try_from(hole).map_err(|_| cx.invalid("sparse hole too large"))?;
            file.seek(SeekFrom::Current(skip))
                .map_err(cx.io_err("writing file data"))?;
            hole = 0;
        }
        file.write_all(chunk)
            .map_err(cx.io_err("writing file data"))?;
    }
    if hole > 0 {
        file.set_len(total)
            .map_err(cx.io_err("writing file data"))?;
    }
    if total != expected {
        // The tar crate reads data through `Take`, which ends quietly at end of stream.
        return Err(UnpackError::Tar(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            format!("stream ends inside entry {:?}", cx.entry()),
        )));
    }
    Ok(total)
}

/// Reads whatever is left of the entry's data.
fn drain<R: Read>(entry: &mut tar::Entry<'_, R>, buf: &mut [u8]) -> Result<(), UnpackError> {
    loop {
        match entry.read(buf) {
            Ok(0) => return Ok(()),
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(UnpackError::Tar(e)),
        }
    }
}

/// Applies the entry's `SCHILY.xattr.*` PAX records.
fn apply_xattrs<R: Read>(
    entry: &mut tar::Entry<'_, R>,
    target: &XattrTarget<'_>,
    scratch: &mut Vec<u8>,
    cx: &Cx<'_>,
) -> Result<(), UnpackError> {
    let exts = match entry.pax_extensions().map_err(UnpackError::Tar)? {
        Some(exts) => exts,
        None => return Ok(()),
    };
    // Built on first use: most symlinks and devices have no xattrs.
    let mut proc_path: Option<CString> = None;
    for ext in exts {
        let ext = ext.map_err(UnpackError::Tar)?;
        let name = match ext.key_bytes().strip_prefix(PAX_XATTR_PREFIX) {
            Some(name) => name,
            None => continue,
        };
        // overlayfs reads trusted.overlay.* (redirect, metacopy, origin, opaque) as structure;
        // a layer must not forge them. Opaque directories come from `.wh..wh..opq` only.
        if name.starts_with(OVERLAY_XATTR_PREFIX) {
            continue;
        }
        scratch.clear();
        scratch.extend_from_slice(name);
        scratch.push(0);
        let cname = CStr::from_bytes_with_nul(scratch)
            .map_err(|_| cx.invalid("extended attribute name contains a NUL byte"))?;
        let value = ext.value_bytes();
        let result = match target {
            XattrTarget::Fd(fd) => sys::fsetxattr(*fd, cname, value),
            XattrTarget::At(dir, base) => {
                if proc_path.is_none() {
                    let mut p = format!("/proc/self/fd/{}/", dir.as_raw_fd()).into_bytes();
                    p.extend_from_slice(base);
                    proc_path =
                        Some(CString::new(p).map_err(|_| cx.invalid("path contains a NUL byte"))?);
                }
                match &proc_path {
                    Some(p) => sys::lsetxattr(p, cname, value),
                    None => Ok(()),
                }
            }
        };
        match result {
            Ok(()) => {}
            // The kernel refuses user.* xattrs on symlinks and devices (EPERM), and some
            // filesystems have none (EOPNOTSUPP): such an attribute cannot exist there at all,
            // so it is not an error of the layer. Others (security.capability!) must not be
            // dropped silently.
            Err(Errno::EPERM | Errno::EOPNOTSUPP) if name.starts_with(b"user.") => {}
            Err(e) => {
                return Err(UnpackError::Xattr {
                    entry: cx.entry(),
                    name: String::from_utf8_lossy(name).into_owned(),
                    source: e.into(),
                })
            }
        }
    }
    Ok(())
}
