//! Tests of the layer unpacker. They run as root (owners, device nodes, `trusted.*` xattrs).
//!
//! Every test unpacks into `T/dest` next to a canary directory `T/canary`; hostile tests check
//! that the canary (and the rest of `T`) is exactly as it was and that nothing appeared outside
//! `dest`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use super::*;

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use proptest::prelude::*;
use tar::{EntryType, Header};

// ---------------------------------------------------------------------------------------------
// Building layers

/// A layer tar built in memory.
struct Layer {
    b: tar::Builder<Vec<u8>>,
}

/// Per-entry header fields; defaults: root-owned, mode 0644 (0755 for directories), mtime 1000.
#[derive(Clone)]
struct Opts {
    mode: u32,
    uid: u64,
    gid: u64,
    mtime: u64,
}

impl Default for Opts {
    fn default() -> Self {
        Opts {
            mode: 0o644,
            uid: 0,
            gid: 0,
            mtime: 1000,
        }
    }
}

fn opts(mode: u32) -> Opts {
    Opts {
        mode,
        ..Opts::default()
    }
}

/// A GNU header whose name (and link name) bytes are written as given: the tar crate's
/// `set_path` refuses the hostile names these tests need.
fn raw_header(name: &[u8], link: &[u8], kind: EntryType, size: u64, o: &Opts) -> Header {
    let mut h = Header::new_gnu();
    {
        let old = h.as_old_mut();
        assert!(name.len() <= old.name.len() && link.len() <= old.linkname.len());
        old.name[..name.len()].copy_from_slice(name);
        old.linkname[..link.len()].copy_from_slice(link);
    }
    h.set_entry_type(kind);
    h.set_size(size);
    h.set_mode(o.mode);
    h.set_uid(o.uid);
    h.set_gid(o.gid);
    h.set_mtime(o.mtime);
    h.set_cksum();
    h
}

impl Layer {
    fn new() -> Self {
        Layer {
            b: tar::Builder::new(Vec::new()),
        }
    }

    /// Appends an entry with raw name bytes; names over 100 bytes get a GNU long-name member,
    /// link names over 100 bytes a GNU long-link member.
    fn raw(&mut self, name: &[u8], link: &[u8], kind: EntryType, data: &[u8], o: &Opts) {
        let mut short_name = name;
        if name.len() > 100 {
            self.gnu_long(EntryType::GNULongName, name);
            short_name = &name[..100];
        }
        let mut short_link = link;
        if link.len() > 100 {
            self.gnu_long(EntryType::GNULongLink, link);
            short_link = &link[..100];
        }
        let h = raw_header(short_name, short_link, kind, data.len() as u64, o);
        self.b.append(&h, data).unwrap();
    }

    fn gnu_long(&mut self, kind: EntryType, value: &[u8]) {
        let mut data = value.to_vec();
        data.push(0);
        let h = raw_header(
            b"././@LongLink",
            b"",
            kind,
            data.len() as u64,
            &Opts::default(),
        );
        self.b.append(&h, &data[..]).unwrap();
    }

    fn pax(&mut self, records: &[(&str, &[u8])]) {
        self.b
            .append_pax_extensions(records.iter().map(|(k, v)| (*k, *v)))
            .unwrap();
    }

    fn dir(&mut self, name: &str, o: &Opts) {
        self.raw(name.as_bytes(), b"", EntryType::Directory, b"", o);
    }
    fn file(&mut self, name: &str, data: &[u8], o: &Opts) {
        self.raw(name.as_bytes(), b"", EntryType::Regular, data, o);
    }
    fn symlink(&mut self, name: &str, target: &str) {
        self.raw(
            name.as_bytes(),
            target.as_bytes(),
            EntryType::Symlink,
            b"",
            &opts(0o777),
        );
    }
    fn hardlink(&mut self, name: &str, target: &str) {
        self.raw(
            name.as_bytes(),
            target.as_bytes(),
            EntryType::Link,
            b"",
            &Opts::default(),
        );
    }
    fn device(&mut self, name: &str, kind: EntryType, major: u32, minor: u32, o: &Opts) {
        let mut h = raw_header(name.as_bytes(), b"", kind, 0, o);
        h.set_device_major(major).unwrap();
        h.set_device_minor(minor).unwrap();
        h.set_cksum();
        self.b.append(&h, &b""[..]).unwrap();
    }

    fn finish(self) -> Vec<u8> {
        self.b.into_inner().unwrap()
    }
}

// ---------------------------------------------------------------------------------------------
// The playground: T/canary and T/dest

struct Fixture {
    _tmp: tempfile::TempDir,
    top: PathBuf,
    dest: PathBuf,
    canary: PathBuf,
    before: BTreeMap<PathBuf, String>,
}

impl Fixture {
    fn new() -> Self {
        let tmp = tempfile::tempdir().unwrap();
        let top = tmp.path().to_path_buf();
        let canary = top.join("canary");
        let dest = top.join("dest");
        fs::create_dir(&canary).unwrap();
        fs::create_dir(&dest).unwrap();
        fs::write(canary.join("passwd"), b"root:x:0:0\n").unwrap();
        fs::create_dir(canary.join("sub")).unwrap();
        fs::write(canary.join("sub/file"), b"canary").unwrap();
        let mut f = Fixture {
            _tmp: tmp,
            top,
            dest,
            canary,
            before: BTreeMap::new(),
        };
        f.before = f.outside();
        f
    }

    fn unpack(&self, layer: &[u8]) -> Result<UnpackStats, UnpackError> {
        unpack(layer, &self.dest)
    }

    /// Everything under T except `dest`'s contents, with the metadata an escape could change.
    fn outside(&self) -> BTreeMap<PathBuf, String> {
        let mut map = BTreeMap::new();
        snapshot(&self.top, &self.top, &self.dest, &mut map);
        map
    }

    /// Asserts that nothing outside `dest` was created, changed or removed.
    fn assert_untouched(&self) {
        assert_eq!(
            self.outside(),
            self.before,
            "something outside dest changed"
        );
    }

    fn p(&self, rel: &str) -> PathBuf {
        self.dest.join(rel)
    }

    /// The canary's absolute path without its leading slash, for names that go through `/`.
    fn canary_from_slash(&self) -> String {
        self.canary
            .to_str()
            .unwrap()
            .trim_start_matches('/')
            .to_string()
    }
}

fn snapshot(top: &Path, dir: &Path, dest: &Path, map: &mut BTreeMap<PathBuf, String>) {
    for item in fs::read_dir(dir).unwrap() {
        let path = item.unwrap().path();
        if path == dest {
            // dest's own times change with every entry; its contents are the layer's.
            continue;
        }
        let md = fs::symlink_metadata(&path).unwrap();
        let mut desc = format!(
            "mode={:o} uid={} gid={} mtime={} nlink={} xattr={:?}",
            md.mode(),
            md.uid(),
            md.gid(),
            md.mtime(),
            md.nlink(),
            xattr_names(&path),
        );
        if md.is_file() {
            desc.push_str(&format!(" data={:?}", fs::read(&path).unwrap()));
        }
        if md.file_type().is_symlink() {
            desc.push_str(&format!(" link={:?}", fs::read_link(&path).unwrap()));
        }
        map.insert(path.strip_prefix(top).unwrap().to_path_buf(), desc);
        if md.is_dir() {
            snapshot(top, &path, dest, map);
        }
    }
}

fn cpath(path: &Path) -> CString {
    CString::new(path.as_os_str().as_encoded_bytes()).unwrap()
}

/// The value of xattr `name` on `path` (not following a symlink), if set.
fn xattr(path: &Path, name: &str) -> Option<Vec<u8>> {
    let p = cpath(path);
    let n = CString::new(name).unwrap();
    let mut buf = vec![0u8; 4096];
    // SAFETY: both strings are NUL-terminated and `buf` is a live buffer of the given length.
    let len =
        unsafe { libc::lgetxattr(p.as_ptr(), n.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    if len < 0 {
        return None;
    }
    buf.truncate(len as usize);
    Some(buf)
}

fn xattr_names(path: &Path) -> Vec<String> {
    let p = cpath(path);
    let mut buf = vec![0u8; 4096];
    // SAFETY: `p` is NUL-terminated and `buf` is a live buffer of the given length.
    let len = unsafe { libc::llistxattr(p.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    if len <= 0 {
        return Vec::new();
    }
    buf.truncate(len as usize);
    let mut names: Vec<String> = buf
        .split(|&b| b == 0)
        .filter(|n| !n.is_empty())
        .map(|n| String::from_utf8_lossy(n).into_owned())
        .collect();
    names.sort();
    names
}

fn lstat(path: &Path) -> fs::Metadata {
    fs::symlink_metadata(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn is_whiteout_at(path: &Path) -> bool {
    let md = lstat(path);
    md.file_type().is_char_device() && md.rdev() == 0
}

/// A tree listing of `dest`: relative path -> kind, for exact comparisons.
fn tree(dest: &Path) -> Vec<String> {
    let mut map = BTreeMap::new();
    snapshot(dest, dest, Path::new("/nonexistent"), &mut map);
    map.keys()
        .map(|k| {
            let md = lstat(&dest.join(k));
            let ft = md.file_type();
            let kind = if ft.is_dir() {
                "dir"
            } else if ft.is_symlink() {
                "symlink"
            } else if ft.is_char_device() {
                "char"
            } else if ft.is_block_device() {
                "block"
            } else if ft.is_fifo() {
                "fifo"
            } else {
                "file"
            };
            format!("{} {kind}", k.display())
        })
        .collect()
}

/// A version 2 `security.capability` value granting CAP_NET_RAW, effective.
fn cap_net_raw() -> Vec<u8> {
    let mut v = Vec::new();
    for word in [0x0200_0001u32, 1 << 13, 0, 0, 0] {
        v.extend_from_slice(&word.to_le_bytes());
    }
    v
}

/// Runs `test` with `openat2` and again with the component-by-component walk that kernels
/// before 5.6 (or seccomp profiles refusing `openat2`) get.
fn both_walks(test: impl Fn()) {
    test();
    sys::WITHOUT_OPENAT2.with(|w| w.set(true));
    test();
    sys::WITHOUT_OPENAT2.with(|w| w.set(false));
}

fn expect_hostile(f: &Fixture, layer: &[u8], entry: &str) -> String {
    let err = f.unpack(layer).expect_err("hostile layer was accepted");
    let msg = err.to_string();
    assert!(
        msg.contains(&format!("layer entry {entry:?}")),
        "error does not name {entry:?}: {msg}"
    );
    f.assert_untouched();
    msg
}

// ---------------------------------------------------------------------------------------------
// Faithful unpacking

#[test]
fn unpacks_every_type_with_metadata() {
    both_walks(|| {
        let f = Fixture::new();
        let mut l = Layer::new();
        l.dir(
            "./",
            &Opts {
                mode: 0o755,
                mtime: 5000,
                ..Opts::default()
            },
        );
        l.dir(
            "etc/",
            &Opts {
                mode: 0o750,
                uid: 0,
                gid: 42,
                mtime: 2000,
            },
        );
        l.file("etc/hostname", b"slate\n", &opts(0o644));
        l.dir(
            "tmp/",
            &Opts {
                mode: 0o1777,
                mtime: 3000,
                ..Opts::default()
            },
        );
        l.dir("bin/", &opts(0o755));
        l.file(
            "bin/su",
            b"#!su",
            &Opts {
                mode: 0o4755,
                uid: 0,
                gid: 0,
                mtime: 1234,
            },
        );
        l.file(
            "bin/wall",
            b"#!wall",
            &Opts {
                mode: 0o2755,
                uid: 1000,
                gid: 5,
                mtime: 1234,
            },
        );
        l.symlink("bin/sh", "busybox");
        l.symlink("etc/abs", "/etc/hostname");
        l.hardlink("bin/su2", "bin/su");
        l.hardlink("bin/su3", "./bin/su2");
        l.dir("dev/", &opts(0o755));
        l.device("dev/null", EntryType::Char, 1, 3, &opts(0o666));
        l.device("dev/loop0", EntryType::Block, 7, 0, &opts(0o660));
        l.device("dev/pipe", EntryType::Fifo, 0, 0, &opts(0o600));
        // Owned by someone else, and mode applied after chown, so setuid survives.
        l.file(
            "home/user/prog",
            b"x",
            &Opts {
                mode: 0o6711,
                uid: 1001,
                gid: 1002,
                mtime: 99,
            },
        );
        let stats = f.unpack(&l.finish()).unwrap();
        assert_eq!(stats.entries, 16);
        assert_eq!(stats.bytes, 6 + 4 + 6 + 1);

        assert_eq!(
            tree(&f.dest),
            [
                "bin dir",
                "bin/sh symlink",
                "bin/su file",
                "bin/su2 file",
                "bin/su3 file",
                "bin/wall file",
                "dev dir",
                "dev/loop0 block",
                "dev/null char",
                "dev/pipe fifo",
                "etc dir",
                "etc/abs symlink",
                "etc/hostname file",
                "home dir",
                "home/user dir",
                "home/user/prog file",
                "tmp dir",
            ]
        );

        let root = lstat(&f.dest);
        assert_eq!(root.mode() & 0o7777, 0o755);
        assert_eq!(root.mtime(), 5000);

        let etc = lstat(&f.p("etc"));
        assert_eq!((etc.mode() & 0o7777, etc.uid(), etc.gid()), (0o750, 0, 42));
        assert_eq!(
            etc.mtime(),
            2000,
            "directory mtime restored after its children"
        );
        assert_eq!(lstat(&f.p("tmp")).mode() & 0o7777, 0o1777);

        let su = lstat(&f.p("bin/su"));
        assert_eq!(su.mode() & 0o7777, 0o4755);
        assert_eq!(su.mtime(), 1234);
        assert_eq!(fs::read(f.p("bin/su")).unwrap(), b"#!su");
        let wall = lstat(&f.p("bin/wall"));
        assert_eq!(
            (wall.mode() & 0o7777, wall.uid(), wall.gid()),
            (0o2755, 1000, 5)
        );
        let prog = lstat(&f.p("home/user/prog"));
        assert_eq!(
            (prog.mode() & 0o7777, prog.uid(), prog.gid()),
            (0o6711, 1001, 1002)
        );
        // Implied parents: 0755 root.
        let home = lstat(&f.p("home"));
        assert_eq!((home.mode() & 0o7777, home.uid()), (0o755, 0));

        assert_eq!(
            fs::read_link(f.p("bin/sh")).unwrap(),
            PathBuf::from("busybox")
        );
        assert_eq!(
            fs::read_link(f.p("etc/abs")).unwrap(),
            PathBuf::from("/etc/hostname")
        );
        assert_eq!(lstat(&f.p("bin/sh")).mtime(), 1000);

        assert_eq!(lstat(&f.p("bin/su2")).ino(), su.ino());
        assert_eq!(lstat(&f.p("bin/su3")).ino(), su.ino());
        assert_eq!(lstat(&f.p("bin/su")).nlink(), 3);

        let null = lstat(&f.p("dev/null"));
        assert!(null.file_type().is_char_device());
        assert_eq!(null.rdev(), stat::makedev(1, 3));
        assert_eq!(null.mode() & 0o7777, 0o666);
        let loop0 = lstat(&f.p("dev/loop0"));
        assert!(loop0.file_type().is_block_device());
        assert_eq!(loop0.rdev(), stat::makedev(7, 0));
        assert_eq!(loop0.mode() & 0o7777, 0o660);
        assert_eq!(lstat(&f.p("dev/pipe")).mode() & 0o7777, 0o600);
        f.assert_untouched();
    });
}

/// The unpacker skips `fchown`/`fchmod` where an entry is created with its owner and mode
/// already: these are the cases where it is not.
#[test]
fn owner_and_mode_are_set_where_creation_does_not_give_them() {
    let f = Fixture::new();
    let mut l = Layer::new();
    // A setgid directory of group 42: what is created in it takes group 42 (and a directory
    // the setgid bit too), which entries of root's group must not keep.
    l.dir(
        "srv/",
        &Opts {
            mode: 0o2775,
            gid: 42,
            ..Opts::default()
        },
    );
    l.file("srv/root-file", b"r", &opts(0o644));
    l.dir("srv/root-dir/", &opts(0o755));
    l.file(
        "srv/group-file",
        b"g",
        &Opts {
            mode: 0o640,
            gid: 42,
            ..Opts::default()
        },
    );
    // Modes a umask of 022 takes bits from, and no bits at all.
    l.file("shared", b"w", &opts(0o666));
    l.dir("open/", &opts(0o777));
    l.file("none", b"n", &opts(0));
    l.dir("closed/", &opts(0));
    // A directory listed again keeps what is in it and takes the later metadata.
    l.dir("again/", &opts(0o755));
    l.file("again/inside", b"i", &opts(0o644));
    l.dir(
        "again/",
        &Opts {
            mode: 0o750,
            uid: 7,
            gid: 8,
            ..Opts::default()
        },
    );
    f.unpack(&l.finish()).unwrap();

    let get = |rel: &str| {
        let md = lstat(&f.p(rel));
        (md.mode() & 0o7777, md.uid(), md.gid())
    };
    assert_eq!(get("srv"), (0o2775, 0, 42));
    assert_eq!(get("srv/root-file"), (0o644, 0, 0));
    assert_eq!(
        get("srv/root-dir"),
        (0o755, 0, 0),
        "no inherited setgid bit"
    );
    assert_eq!(get("srv/group-file"), (0o640, 0, 42));
    assert_eq!(get("shared"), (0o666, 0, 0));
    assert_eq!(get("open"), (0o777, 0, 0));
    assert_eq!(get("none"), (0, 0, 0));
    assert_eq!(get("closed"), (0, 0, 0));
    assert_eq!(get("again"), (0o750, 7, 8));
    assert_eq!(fs::read(f.p("again/inside")).unwrap(), b"i");
    f.assert_untouched();
}

#[test]
fn applies_pax_xattrs_owner_and_time() {
    let f = Fixture::new();
    let mut l = Layer::new();
    let cap = cap_net_raw();
    l.pax(&[
        ("SCHILY.xattr.security.capability", &cap[..]),
        ("SCHILY.xattr.user.note", b"hello"),
        ("SCHILY.xattr.trusted.tag", b"t"),
        // Forged overlayfs metadata is dropped.
        ("SCHILY.xattr.trusted.overlay.redirect", b"/etc"),
        ("uid", b"3000000"),
        ("gid", b"3000001"),
        ("mtime", b"1700000000.25"),
    ]);
    l.file("bin/ping", b"ping", &opts(0o4755));
    l.pax(&[
        ("SCHILY.xattr.trusted.dir", b"d"),
        ("SCHILY.xattr.trusted.overlay.opaque", b"y"),
    ]);
    l.dir("data/", &opts(0o700));
    // user.* cannot exist on a symlink: skipped, not an error; trusted.* can.
    l.pax(&[
        ("SCHILY.xattr.user.x", b"1"),
        ("SCHILY.xattr.trusted.link", b"l"),
    ]);
    l.symlink("data/link", "../bin/ping");
    l.pax(&[("SCHILY.xattr.trusted.dev", b"v")]);
    l.device("data/null", EntryType::Char, 1, 3, &opts(0o666));
    f.unpack(&l.finish()).unwrap();

    let ping = f.p("bin/ping");
    let md = lstat(&ping);
    assert_eq!((md.uid(), md.gid()), (3_000_000, 3_000_001));
    assert_eq!(md.mode() & 0o7777, 0o4755);
    assert_eq!((md.mtime(), md.mtime_nsec()), (1_700_000_000, 250_000_000));
    assert_eq!(xattr(&ping, "security.capability"), Some(cap));
    assert_eq!(xattr(&ping, "user.note").as_deref(), Some(&b"hello"[..]));
    assert_eq!(xattr(&ping, "trusted.tag").as_deref(), Some(&b"t"[..]));
    assert_eq!(xattr(&ping, "trusted.overlay.redirect"), None);

    let data = f.p("data");
    assert_eq!(xattr(&data, "trusted.dir").as_deref(), Some(&b"d"[..]));
    assert_eq!(xattr(&data, "trusted.overlay.opaque"), None);
    let link = f.p("data/link");
    assert_eq!(xattr(&link, "trusted.link").as_deref(), Some(&b"l"[..]));
    assert_eq!(xattr(&link, "user.x"), None);
    assert_eq!(
        xattr(&f.p("data/null"), "trusted.dev").as_deref(),
        Some(&b"v"[..])
    );
    f.assert_untouched();
}

#[test]
fn whiteouts_become_overlay_whiteouts() {
    both_walks(|| {
        let f = Fixture::new();
        let mut l = Layer::new();
        l.dir("etc/", &opts(0o755));
        l.file("etc/.wh.passwd", b"", &Opts::default());
        l.file(".wh.toplevel", b"", &Opts::default());
        // Opaque marker for a listed directory, and for one the layer does not list.
        l.dir("var/", &opts(0o755));
        l.file("var/.wh..wh..opq", b"", &Opts::default());
        l.file("var/kept", b"k", &Opts::default());
        l.file("opt/app/.wh..wh..opq", b"", &Opts::default());
        // aufs metadata: skipped.
        l.file("etc/.wh..wh.plnk", b"", &Opts::default());
        // The whiteout's parent is implied.
        l.file("usr/lib/.wh.libfoo.so", b"", &Opts::default());
        f.unpack(&l.finish()).unwrap();

        assert_eq!(
            tree(&f.dest),
            [
                "etc dir",
                "etc/passwd char",
                "opt dir",
                "opt/app dir",
                "toplevel char",
                "usr dir",
                "usr/lib dir",
                "usr/lib/libfoo.so char",
                "var dir",
                "var/kept file",
            ]
        );
        for w in ["etc/passwd", "toplevel", "usr/lib/libfoo.so"] {
            assert!(is_whiteout_at(&f.p(w)), "{w}");
        }
        assert_eq!(
            xattr(&f.p("var"), "trusted.overlay.opaque").as_deref(),
            Some(&b"y"[..])
        );
        assert_eq!(
            xattr(&f.p("opt/app"), "trusted.overlay.opaque").as_deref(),
            Some(&b"y"[..])
        );
        assert_eq!(xattr(&f.p("opt"), "trusted.overlay.opaque"), None);
        f.assert_untouched();
    });
}

#[test]
fn whiteouts_hide_only_lower_layers() {
    // OCI: "Files that are present in the same layer as a whiteout file can only be hidden by
    // whiteout files in subsequent layers."
    let f = Fixture::new();
    let mut l = Layer::new();
    l.file("a/file", b"mine", &Opts::default());
    l.file("a/.wh.file", b"", &Opts::default());
    l.dir("a/dir/", &opts(0o755));
    l.file("a/dir/child", b"c", &Opts::default());
    l.file("a/.wh.dir", b"", &Opts::default());
    // Whiteout first, then a new directory at that path: the lower one must not show through.
    l.file("b/.wh.newdir", b"", &Opts::default());
    l.dir("b/newdir/", &opts(0o755));
    // Whiteout first, then a file: the file replaces the whiteout.
    l.file("b/.wh.newfile", b"", &Opts::default());
    l.file("b/newfile", b"new", &Opts::default());
    f.unpack(&l.finish()).unwrap();

    assert_eq!(fs::read(f.p("a/file")).unwrap(), b"mine");
    assert_eq!(fs::read(f.p("a/dir/child")).unwrap(), b"c");
    assert_eq!(
        xattr(&f.p("a/dir"), "trusted.overlay.opaque").as_deref(),
        Some(&b"y"[..])
    );
    assert!(lstat(&f.p("b/newdir")).is_dir());
    assert_eq!(
        xattr(&f.p("b/newdir"), "trusted.overlay.opaque").as_deref(),
        Some(&b"y"[..])
    );
    assert_eq!(fs::read(f.p("b/newfile")).unwrap(), b"new");
}

#[test]
fn later_entries_replace_earlier_ones() {
    both_walks(|| {
        let f = Fixture::new();
        let mut l = Layer::new();
        // Same file twice.
        l.file("twice", b"first", &Opts::default());
        l.file("twice", b"second", &opts(0o600));
        // A directory with children replaced by a file.
        l.dir("d2f/", &opts(0o755));
        l.dir("d2f/sub/", &opts(0o755));
        l.file("d2f/sub/x", b"x", &Opts::default());
        l.file("d2f", b"now a file", &Opts::default());
        // A file replaced by a directory.
        l.file("f2d", b"file", &Opts::default());
        l.dir("f2d/", &opts(0o711));
        l.file("f2d/inner", b"i", &Opts::default());
        // A directory replacing a directory keeps its contents and takes the new metadata.
        l.dir("keep/", &opts(0o755));
        l.file("keep/child", b"c", &Opts::default());
        l.dir(
            "keep/",
            &Opts {
                mode: 0o700,
                uid: 7,
                gid: 8,
                mtime: 4242,
            },
        );
        // A symlink replaced by a file and a directory: replaced, never written through.
        l.symlink("l2f", "../canary/passwd");
        l.file("l2f", b"plain", &Opts::default());
        l.symlink("l2d", "../canary");
        l.dir("l2d/", &opts(0o777));
        // A hardlink replaced by a file leaves the other name alone.
        l.file("orig", b"orig", &Opts::default());
        l.hardlink("alias", "orig");
        l.file("alias", b"alias", &Opts::default());
        f.unpack(&l.finish()).unwrap();

        assert_eq!(fs::read(f.p("twice")).unwrap(), b"second");
        assert_eq!(lstat(&f.p("twice")).mode() & 0o7777, 0o600);
        assert_eq!(fs::read(f.p("d2f")).unwrap(), b"now a file");
        assert!(lstat(&f.p("f2d")).is_dir());
        assert_eq!(lstat(&f.p("f2d")).mode() & 0o7777, 0o711);
        assert_eq!(fs::read(f.p("f2d/inner")).unwrap(), b"i");
        let keep = lstat(&f.p("keep"));
        assert_eq!(
            (keep.mode() & 0o7777, keep.uid(), keep.gid(), keep.mtime()),
            (0o700, 7, 8, 4242)
        );
        assert_eq!(fs::read(f.p("keep/child")).unwrap(), b"c");
        assert!(lstat(&f.p("l2f")).is_file());
        assert_eq!(fs::read(f.p("l2f")).unwrap(), b"plain");
        assert!(lstat(&f.p("l2d")).is_dir());
        assert_eq!(fs::read(f.p("orig")).unwrap(), b"orig");
        assert_eq!(fs::read(f.p("alias")).unwrap(), b"alias");
        f.assert_untouched();
    });
}

#[test]
fn long_names_gnu_and_pax() {
    both_walks(|| {
        let f = Fixture::new();
        let deep = format!("{}/{}", "d".repeat(120), "f".repeat(150));
        let target = format!("/{}/{}", "t".repeat(200), "x");
        let mut l = Layer::new();
        // GNU long name and long link name.
        l.file(&deep, b"gnu", &Opts::default());
        l.raw(
            b"gnu-link",
            target.as_bytes(),
            EntryType::Symlink,
            b"",
            &Opts::default(),
        );
        l.hardlink("hard", &deep);
        // PAX path and linkpath override the header's names.
        let pax_name = format!("p/{}", "q".repeat(180));
        l.pax(&[("path", pax_name.as_bytes())]);
        l.file("ignored-short-name", b"pax", &Opts::default());
        let pax_target = format!("../{}", "r".repeat(150));
        l.pax(&[("linkpath", pax_target.as_bytes())]);
        l.symlink("pax-link", "ignored");
        f.unpack(&l.finish()).unwrap();

        assert_eq!(fs::read(f.p(&deep)).unwrap(), b"gnu");
        assert_eq!(
            fs::read_link(f.p("gnu-link")).unwrap(),
            PathBuf::from(&target)
        );
        assert_eq!(lstat(&f.p("hard")).ino(), lstat(&f.p(&deep)).ino());
        assert_eq!(fs::read(f.p(&pax_name)).unwrap(), b"pax");
        assert!(!f.p("ignored-short-name").exists());
        assert_eq!(
            fs::read_link(f.p("pax-link")).unwrap(),
            PathBuf::from(&pax_target)
        );
        f.assert_untouched();
    });
}

#[test]
fn absolute_and_dotted_names_stay_inside() {
    both_walks(|| {
        let f = Fixture::new();
        let mut l = Layer::new();
        l.file("/etc/abs", b"a", &Opts::default());
        l.file("./etc/dot", b"d", &Opts::default());
        l.file("etc//./double", b"s", &Opts::default());
        l.dir("/", &opts(0o755));
        f.unpack(&l.finish()).unwrap();
        assert_eq!(
            tree(&f.dest),
            ["etc dir", "etc/abs file", "etc/dot file", "etc/double file"]
        );
        f.assert_untouched();
    });
}

#[test]
fn empty_layers() {
    let f = Fixture::new();
    let stats = f.unpack(&[][..]).unwrap();
    assert_eq!((stats.entries, stats.bytes), (0, 0));
    let stats = f.unpack(&Layer::new().finish()[..]).unwrap();
    assert_eq!((stats.entries, stats.bytes), (0, 0));
    assert!(tree(&f.dest).is_empty());
}

#[test]
fn large_file_goes_through_the_buffer_whole() {
    let f = Fixture::new();
    let data: Vec<u8> = (0..(3 * COPY_BUF + 17)).map(|i| (i % 251) as u8).collect();
    let mut l = Layer::new();
    l.file("big", &data, &Opts::default());
    let stats = f.unpack(&l.finish()).unwrap();
    assert_eq!(stats.bytes, data.len() as u64);
    assert_eq!(fs::read(f.p("big")).unwrap(), data);
}

#[test]
fn gnu_sparse_file() {
    let f = Fixture::new();
    // One 512-byte data block at offset 1 MiB; real size 1 MiB + 1024.
    let real = (1u64 << 20) + 1024;
    let mut h = raw_header(b"sparse", b"", EntryType::GNUSparse, 512, &opts(0o644));
    {
        let gnu = h.as_gnu_mut().unwrap();
        let octal = |field: &mut [u8], v: u64| {
            let s = format!("{:0width$o}", v, width = field.len() - 1);
            field[..s.len()].copy_from_slice(s.as_bytes());
        };
        octal(&mut gnu.sparse[0].offset, 1 << 20);
        octal(&mut gnu.sparse[0].numbytes, 512);
        // GNU tar ends the map with an empty block at the real size.
        octal(&mut gnu.sparse[1].offset, real);
        octal(&mut gnu.sparse[1].numbytes, 0);
        octal(&mut gnu.realsize, real);
    }
    h.set_cksum();
    let mut l = Layer::new();
    l.b.append(&h, &[b'x'; 512][..]).unwrap();
    let stats = f.unpack(&l.finish()).unwrap();
    assert_eq!(stats.bytes, real);
    let data = fs::read(f.p("sparse")).unwrap();
    assert_eq!(data.len() as u64, real);
    assert!(data[..1 << 20].iter().all(|&b| b == 0));
    assert!(data[1 << 20..(1 << 20) + 512].iter().all(|&b| b == b'x'));
    assert!(data[(1 << 20) + 512..].iter().all(|&b| b == 0));
    // Holes stay holes: far less than 1 MiB allocated.
    assert!(lstat(&f.p("sparse")).blocks() * 512 < 1 << 19);
}

#[test]
fn empty_numeric_fields_read_as_zero() {
    // Some writers leave uid, gid and mtime all NUL; Go's archive/tar reads them as 0.
    let f = Fixture::new();
    let mut h = Header::new_gnu();
    h.as_old_mut().name[..4].copy_from_slice(b"file");
    h.set_entry_type(EntryType::Regular);
    h.set_size(2);
    h.set_mode(0o640);
    h.set_cksum();
    let mut l = Layer::new();
    l.b.append(&h, &b"hi"[..]).unwrap();
    f.unpack(&l.finish()).unwrap();
    let md = lstat(&f.p("file"));
    assert_eq!(
        (md.uid(), md.gid(), md.mtime(), md.mode() & 0o7777),
        (0, 0, 0, 0o640)
    );
}

#[test]
fn truncated_stream_is_an_error() {
    let f = Fixture::new();
    let mut l = Layer::new();
    l.file("f", &[7u8; 4096], &Opts::default());
    let layer = l.finish();
    let err = f.unpack(&layer[..512 + 1000]).unwrap_err();
    assert!(matches!(err, UnpackError::Tar(_)), "{err:?}");
}

#[test]
fn error_messages_name_the_entry() {
    let f = Fixture::new();
    let mut l = Layer::new();
    l.file("../x", b"x", &Opts::default());
    let err = f.unpack(&l.finish()).unwrap_err();
    assert_eq!(
        err.to_string(),
        "layer entry \"../x\": path escapes the layer root"
    );
}

// ---------------------------------------------------------------------------------------------
// Hostile layers

#[test]
fn hostile_dotdot() {
    both_walks(|| {
        for name in [
            "../x",
            "a/../../x",
            "./../canary/pwned",
            "a/b/../../../canary/x",
        ] {
            let f = Fixture::new();
            let mut l = Layer::new();
            l.file(name, b"pwned", &Opts::default());
            expect_hostile(&f, &l.finish(), name);
        }
        // Even `..` that would stay inside is refused.
        let f = Fixture::new();
        let mut l = Layer::new();
        l.dir("a/", &opts(0o755));
        l.file("a/../b", b"b", &Opts::default());
        let msg = expect_hostile(&f, &l.finish(), "a/../b");
        assert!(msg.contains(".."), "{msg}");
    });
}

#[test]
fn hostile_dotdot_in_long_names() {
    both_walks(|| {
        let f = Fixture::new();
        let name = format!("{}/../../../canary/pwned", "a".repeat(110));
        let mut l = Layer::new();
        l.file(&name, b"pwned", &Opts::default());
        expect_hostile(&f, &l.finish(), &name);

        let f = Fixture::new();
        let mut l = Layer::new();
        l.pax(&[("path", b"../canary/pwned")]);
        l.file("innocent", b"pwned", &Opts::default());
        expect_hostile(&f, &l.finish(), "../canary/pwned");
    });
}

#[test]
fn hostile_symlink_to_root_then_through_it() {
    both_walks(|| {
        let f = Fixture::new();
        let through = format!("a/{}/pwned", f.canary_from_slash());
        let mut l = Layer::new();
        l.symlink("a", "/");
        l.file(&through, b"pwned", &Opts::default());
        let msg = expect_hostile(&f, &l.finish(), &through);
        assert!(msg.contains("symlink"), "{msg}");

        // The same through a directory entry, a symlink, a device and a hardlink.
        let dir = format!("a/{}/newdir/", f.canary_from_slash());
        let mut l = Layer::new();
        l.symlink("a", "/");
        l.dir(&dir, &opts(0o777));
        expect_hostile(&f, &l.finish(), &dir);
    });
}

#[test]
fn hostile_symlink_dotdot_then_through_it() {
    both_walks(|| {
        let f = Fixture::new();
        // `b -> ../../..` from T/dest is T's grandparent; name the canary from there.
        let up = f.top.parent().unwrap().parent().unwrap();
        let rel = f.canary.strip_prefix(up).unwrap();
        let through = format!("b/{}/pwned", rel.display());
        let mut l = Layer::new();
        l.symlink("b", "../../..");
        l.file(&through, b"pwned", &Opts::default());
        expect_hostile(&f, &l.finish(), &through);

        // Simpler variants, with a relative symlink deeper in the tree.
        let f = Fixture::new();
        let mut l = Layer::new();
        l.dir("x/", &opts(0o755));
        l.symlink("x/up", "../..");
        l.file("x/up/canary/sub/file", b"pwned", &Opts::default());
        expect_hostile(&f, &l.finish(), "x/up/canary/sub/file");

        let f = Fixture::new();
        let mut l = Layer::new();
        l.symlink("c", "../canary");
        l.symlink("c/passwd", "/etc/shadow");
        expect_hostile(&f, &l.finish(), "c/passwd");
    });
}

#[test]
fn hostile_symlink_chain_and_intermediate() {
    both_walks(|| {
        // A symlink in the middle of the path, pointing at another symlink.
        let f = Fixture::new();
        let mut l = Layer::new();
        l.symlink("one", "two");
        l.symlink("two", "../canary");
        l.dir("d/", &opts(0o755));
        l.symlink("d/e", "../one");
        l.file("d/e/sub/file", b"pwned", &Opts::default());
        expect_hostile(&f, &l.finish(), "d/e/sub/file");
    });
}

#[test]
fn hostile_hardlinks() {
    both_walks(|| {
        let f = Fixture::new();
        let mut l = Layer::new();
        l.hardlink("h", "../canary/passwd");
        let msg = expect_hostile(&f, &l.finish(), "h");
        assert!(msg.contains("hardlink"), "{msg}");

        // An absolute target is inside the layer too: there is no such file here.
        let f = Fixture::new();
        let abs = f.canary.join("passwd");
        let mut l = Layer::new();
        l.hardlink("h", abs.to_str().unwrap());
        expect_hostile(&f, &l.finish(), "h");
        assert_eq!(lstat(&abs).nlink(), 1);

        // Through a symlink laid down earlier.
        let f = Fixture::new();
        let mut l = Layer::new();
        l.symlink("s", f.canary.to_str().unwrap());
        l.hardlink("h", "s/passwd");
        let msg = expect_hostile(&f, &l.finish(), "h");
        assert!(msg.contains("symlink"), "{msg}");
        assert_eq!(lstat(&f.canary.join("passwd")).nlink(), 1);

        // A hardlink to a symlink links the symlink itself, which is harmless.
        let f = Fixture::new();
        let mut l = Layer::new();
        l.symlink("s", f.canary.join("passwd").to_str().unwrap());
        l.hardlink("h", "s");
        f.unpack(&l.finish()).unwrap();
        assert!(lstat(&f.p("h")).file_type().is_symlink());
        assert_eq!(lstat(&f.canary.join("passwd")).nlink(), 1);
        f.assert_untouched();
    });
}

#[test]
fn hostile_whiteouts() {
    both_walks(|| {
        let f = Fixture::new();
        let mut l = Layer::new();
        l.file("../.wh.canary", b"", &Opts::default());
        expect_hostile(&f, &l.finish(), "../.wh.canary");

        for name in ["a/.wh..", "a/.wh..."] {
            let f = Fixture::new();
            let mut l = Layer::new();
            l.file(name, b"", &Opts::default());
            expect_hostile(&f, &l.finish(), name);
        }

        // Through a symlink: neither a whiteout nor an opaque marker lands in the canary.
        let f = Fixture::new();
        let mut l = Layer::new();
        l.symlink("s", f.canary.to_str().unwrap());
        l.file("s/.wh.passwd", b"", &Opts::default());
        expect_hostile(&f, &l.finish(), "s/.wh.passwd");

        let f = Fixture::new();
        let mut l = Layer::new();
        l.symlink("s", f.canary.to_str().unwrap());
        l.file("s/.wh..wh..opq", b"", &Opts::default());
        expect_hostile(&f, &l.finish(), "s/.wh..wh..opq");
        assert_eq!(xattr(&f.canary, "trusted.overlay.opaque"), None);

        let f = Fixture::new();
        let mut l = Layer::new();
        l.symlink("s", "../canary");
        l.file("s/sub/.wh..wh..opq", b"", &Opts::default());
        expect_hostile(&f, &l.finish(), "s/sub/.wh..wh..opq");
    });
}

#[test]
fn hostile_entries_replacing_the_root() {
    both_walks(|| {
        for kind in [EntryType::Regular, EntryType::Symlink, EntryType::Fifo] {
            let f = Fixture::new();
            let mut l = Layer::new();
            l.raw(b".", b"/", kind, b"", &Opts::default());
            let err = f.unpack(&l.finish()).unwrap_err();
            assert!(matches!(err, UnpackError::Hostile { .. }), "{err:?}");
            f.assert_untouched();
        }
        let f = Fixture::new();
        let mut l = Layer::new();
        l.hardlink("x", "/");
        expect_hostile(&f, &l.finish(), "x");
    });
}

#[test]
fn absurd_headers() {
    // A path longer than PATH_MAX.
    let f = Fixture::new();
    let long = "a/".repeat(2100) + "f";
    let mut l = Layer::new();
    l.file(&long, b"", &Opts::default());
    let err = f.unpack(&l.finish()).unwrap_err();
    assert!(matches!(err, UnpackError::Invalid { .. }), "{err:?}");

    // A component longer than NAME_MAX.
    let f = Fixture::new();
    let long = "n".repeat(300);
    let mut l = Layer::new();
    l.file(&long, b"", &Opts::default());
    let err = f.unpack(&l.finish()).unwrap_err();
    assert!(matches!(err, UnpackError::Invalid { .. }), "{err:?}");

    // A GNU long name of 5 MiB is refused before it is read whole.
    let f = Fixture::new();
    let mut l = Layer::new();
    l.gnu_long(EntryType::GNULongName, &vec![b'a'; 5 << 20]);
    l.file("x", b"", &Opts::default());
    let err = f.unpack(&l.finish()).unwrap_err();
    assert!(matches!(err, UnpackError::Tar(_)), "{err:?}");

    // A NUL byte inside a PAX path.
    let f = Fixture::new();
    let mut l = Layer::new();
    l.pax(&[("path", b"a\0b")]);
    l.file("x", b"", &Opts::default());
    let err = f.unpack(&l.finish()).unwrap_err();
    assert!(matches!(err, UnpackError::Invalid { .. }), "{err:?}");

    // An unknown entry type.
    let f = Fixture::new();
    let mut l = Layer::new();
    l.raw(b"vol", b"", EntryType::new(b'V'), b"", &Opts::default());
    let err = f.unpack(&l.finish()).unwrap_err();
    assert_eq!(
        err.to_string(),
        "layer entry \"vol\": unsupported entry type 'V'"
    );
    f.assert_untouched();
}

#[test]
fn parent_that_is_a_file_is_refused() {
    both_walks(|| {
        let f = Fixture::new();
        let mut l = Layer::new();
        l.file("f", b"", &Opts::default());
        l.file("f/child", b"", &Opts::default());
        let err = f.unpack(&l.finish()).unwrap_err();
        assert!(err.to_string().contains("\"f/child\""), "{err}");
        f.assert_untouched();
    });
}

// ---------------------------------------------------------------------------------------------
// Property: whatever the names and symlinks, nothing outside dest changes.

#[derive(Debug, Clone)]
enum Op {
    Dir(Vec<String>),
    File(Vec<String>),
    Symlink(Vec<String>, String),
    Hardlink(Vec<String>, Vec<String>),
    Whiteout(Vec<String>),
    Opaque(Vec<String>),
    Fifo(Vec<String>),
}

/// Path components; `CANARY` expands to the canary's absolute path without the leading slash,
/// so that a name through a symlink to `/` would reach the canary.
fn component() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("a".to_string()),
        Just("b".to_string()),
        Just("l".to_string()),
        Just("..".to_string()),
        Just(".".to_string()),
        Just(String::new()),
        Just("canary".to_string()),
        Just("sub".to_string()),
        Just("CANARY".to_string()),
    ]
}

fn name() -> impl Strategy<Value = Vec<String>> {
    prop::collection::vec(component(), 1..5)
}

fn link_target() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("/".to_string()),
        Just("..".to_string()),
        Just("../..".to_string()),
        Just("../../..".to_string()),
        Just("../canary".to_string()),
        Just("a".to_string()),
        Just("l".to_string()),
        Just("CANARY".to_string()),
        Just("/CANARY".to_string()),
        Just("/CANARY/sub".to_string()),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        name().prop_map(Op::Dir),
        name().prop_map(Op::File),
        (name(), link_target()).prop_map(|(n, t)| Op::Symlink(n, t)),
        (name(), name()).prop_map(|(n, t)| Op::Hardlink(n, t)),
        name().prop_map(Op::Whiteout),
        name().prop_map(Op::Opaque),
        name().prop_map(Op::Fifo),
    ]
}

fn join(parts: &[String], canary: &str) -> String {
    parts
        .iter()
        .map(|p| if p == "CANARY" { canary } else { p.as_str() })
        .collect::<Vec<_>>()
        .join("/")
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn nothing_escapes_dest(
        ops in prop::collection::vec(op(), 1..12),
        leading_slash in any::<bool>(),
        without_openat2 in any::<bool>(),
    ) {
        sys::WITHOUT_OPENAT2.with(|w| w.set(without_openat2));
        let f = Fixture::new();
        let canary = f.canary_from_slash();
        let abs_canary = f.canary.to_str().unwrap().to_string();
        let fix = |s: String| if leading_slash { format!("/{s}") } else { s };
        let mut l = Layer::new();
        for op in &ops {
            match op {
                Op::Dir(n) => l.dir(&fix(join(n, &canary)), &opts(0o777)),
                Op::File(n) => l.file(&fix(join(n, &canary)), b"pwned", &opts(0o4777)),
                Op::Symlink(n, t) => {
                    let t = t.replace("/CANARY", &abs_canary).replace("CANARY", &canary);
                    l.symlink(&fix(join(n, &canary)), &t)
                }
                Op::Hardlink(n, t) => l.hardlink(&fix(join(n, &canary)), &join(t, &canary)),
                Op::Whiteout(n) => {
                    let mut n = n.clone();
                    if let Some(last) = n.last_mut() {
                        *last = format!(".wh.{last}");
                    }
                    l.file(&fix(join(&n, &canary)), b"", &Opts::default())
                }
                Op::Opaque(n) => {
                    let mut n = n.clone();
                    n.push(".wh..wh..opq".to_string());
                    l.file(&fix(join(&n, &canary)), b"", &Opts::default())
                }
                Op::Fifo(n) => l.device(&fix(join(n, &canary)), EntryType::Fifo, 0, 0, &opts(0o777)),
            }
        }
        // Names over 100 bytes become GNU long-name members, so any name is representable.
        let _ = f.unpack(&l.finish());
        prop_assert_eq!(f.outside(), f.before.clone());
    }
}
