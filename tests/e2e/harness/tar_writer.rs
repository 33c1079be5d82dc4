//! A small tar writer for fixtures that must contain exactly the bytes a test intends.
//!
//! The `tar` crate's `Builder` refuses hostile names (`../x`) and decides on its own how to encode
//! long names. Fixtures need both: hostile layers for the path-safety tests and a choice between
//! PAX (`path=`/`linkpath=` records) and GNU (`././@LongLink`) long names. So entries are written
//! here from raw `tar::Header` blocks: names go straight into the header fields, and every entry
//! is described by an [`Entry`] that the expected-tree model reads as well.

use tar::{EntryType, Header};

/// What kind of file an entry creates.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Kind {
    File(Vec<u8>),
    Dir,
    Symlink(Vec<u8>),
    /// Hardlink to the (tar-relative) path given.
    Hardlink(Vec<u8>),
    Char(u32, u32),
    Block(u32, u32),
    Fifo,
}

/// How a name longer than the 100-byte header field is encoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LongNames {
    /// A PAX extended header (`x`) with `path=` / `linkpath=` records.
    Pax,
    /// GNU `L` / `K` pseudo-entries named `././@LongLink`.
    Gnu,
}

/// One tar entry, as written and as modelled.
#[derive(Clone, Debug)]
pub struct Entry {
    /// The raw name in the archive, exactly as written (may be hostile).
    pub path: Vec<u8>,
    pub kind: Kind,
    /// Permission bits including setuid/setgid/sticky.
    pub mode: u32,
    pub uid: u64,
    pub gid: u64,
    pub mtime: u64,
    /// Extended attributes, written as PAX `SCHILY.xattr.<name>` records.
    pub xattrs: Vec<(String, Vec<u8>)>,
    pub long_names: LongNames,
    /// A name for the ustar header field that differs from `path`; `path` then always goes in
    /// a PAX or GNU long-name record, which readers must prefer (the classic way to slip a
    /// hostile name past a check that looks only at the header).
    pub decoy: Option<Vec<u8>>,
}

/// A fixed, recognisable mtime so that the mtime a store shows can be compared.
pub const DEFAULT_MTIME: u64 = 1_700_000_000;

impl Entry {
    fn new(path: impl AsRef<[u8]>, kind: Kind, mode: u32) -> Entry {
        Entry {
            path: path.as_ref().to_vec(),
            kind,
            mode,
            uid: 0,
            gid: 0,
            mtime: DEFAULT_MTIME,
            xattrs: Vec::new(),
            long_names: LongNames::Pax,
            decoy: None,
        }
    }
    pub fn file(path: impl AsRef<[u8]>, data: impl AsRef<[u8]>) -> Entry {
        Entry::new(path, Kind::File(data.as_ref().to_vec()), 0o644)
    }
    pub fn dir(path: impl AsRef<[u8]>) -> Entry {
        Entry::new(path, Kind::Dir, 0o755)
    }
    pub fn symlink(path: impl AsRef<[u8]>, target: impl AsRef<[u8]>) -> Entry {
        Entry::new(path, Kind::Symlink(target.as_ref().to_vec()), 0o777)
    }
    pub fn hardlink(path: impl AsRef<[u8]>, target: impl AsRef<[u8]>) -> Entry {
        Entry::new(path, Kind::Hardlink(target.as_ref().to_vec()), 0o644)
    }
    pub fn char_dev(path: impl AsRef<[u8]>, major: u32, minor: u32) -> Entry {
        Entry::new(path, Kind::Char(major, minor), 0o666)
    }
    pub fn block_dev(path: impl AsRef<[u8]>, major: u32, minor: u32) -> Entry {
        Entry::new(path, Kind::Block(major, minor), 0o660)
    }
    pub fn fifo(path: impl AsRef<[u8]>) -> Entry {
        Entry::new(path, Kind::Fifo, 0o644)
    }
    /// An OCI whiteout for `name` inside `dir` ("" for the layer root).
    pub fn whiteout(dir: &str, name: &str) -> Entry {
        let path = if dir.is_empty() {
            format!(".wh.{name}")
        } else {
            format!("{dir}/.wh.{name}")
        };
        Entry::file(path, b"")
    }
    /// The OCI opaque marker for `dir`.
    pub fn opaque(dir: &str) -> Entry {
        Entry::file(format!("{dir}/.wh..wh..opq"), b"")
    }
    pub fn mode(mut self, mode: u32) -> Entry {
        self.mode = mode;
        self
    }
    pub fn owner(mut self, uid: u64, gid: u64) -> Entry {
        self.uid = uid;
        self.gid = gid;
        self
    }
    pub fn mtime(mut self, mtime: u64) -> Entry {
        self.mtime = mtime;
        self
    }
    pub fn xattr(mut self, name: &str, value: impl AsRef<[u8]>) -> Entry {
        self.xattrs
            .push((name.to_string(), value.as_ref().to_vec()));
        self
    }
    /// Puts `name` in the header and the real path in a long-name record.
    pub fn decoy_name(mut self, name: impl AsRef<[u8]>) -> Entry {
        self.decoy = Some(name.as_ref().to_vec());
        self
    }
    pub fn gnu_long_names(mut self) -> Entry {
        self.long_names = LongNames::Gnu;
        self
    }
}

/// Writes `entries` as a complete tar archive (with the two zero end blocks).
pub fn write_tar(entries: &[Entry]) -> Vec<u8> {
    let mut out = Vec::new();
    for e in entries {
        write_entry(&mut out, e);
    }
    out.extend_from_slice(&[0u8; 1024]);
    out
}

/// An empty layer: just the end-of-archive blocks.
pub fn empty_tar() -> Vec<u8> {
    vec![0u8; 1024]
}

fn pad(out: &mut Vec<u8>) {
    let rem = out.len() % 512;
    if rem != 0 {
        out.resize(out.len() + 512 - rem, 0);
    }
}

/// One PAX record: "<len> <key>=<value>\n", where <len> counts the whole record itself.
fn pax_record(key: &str, value: &[u8]) -> Vec<u8> {
    let body = key.len() + value.len() + 3; // ' ', '=', '\n'
    let mut len = body + 1;
    while len != body + len.to_string().len() {
        len = body + len.to_string().len();
    }
    let mut rec = format!("{len} {key}=").into_bytes();
    rec.extend_from_slice(value);
    rec.push(b'\n');
    assert_eq!(rec.len(), len, "pax record length");
    rec
}

fn put_name(field: &mut [u8; 100], name: &[u8]) {
    let n = name.len().min(100);
    field[..n].copy_from_slice(&name[..n]);
}

fn raw_header(gnu: bool, name: &[u8], ty: EntryType, size: u64) -> Header {
    let mut h = if gnu {
        Header::new_gnu()
    } else {
        Header::new_ustar()
    };
    put_name(&mut h.as_old_mut().name, name);
    h.set_entry_type(ty);
    h.set_size(size);
    h.set_mode(0o644);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(0);
    h
}

fn push_block(out: &mut Vec<u8>, mut h: Header, data: &[u8]) {
    h.set_cksum();
    out.extend_from_slice(h.as_bytes());
    out.extend_from_slice(data);
    pad(out);
}

fn write_entry(out: &mut Vec<u8>, e: &Entry) {
    let link: Option<&[u8]> = match &e.kind {
        Kind::Symlink(t) | Kind::Hardlink(t) => Some(t),
        _ => None,
    };
    let gnu = e.long_names == LongNames::Gnu;
    let mut pax = Vec::new();
    for (name, value) in &e.xattrs {
        pax.extend(pax_record(&format!("SCHILY.xattr.{name}"), value));
    }
    if e.path.len() > 100 || e.decoy.is_some() {
        if gnu {
            let mut data = e.path.clone();
            data.push(0);
            let h = raw_header(
                true,
                b"././@LongLink",
                EntryType::GNULongName,
                data.len() as u64,
            );
            push_block(out, h, &data);
        } else {
            pax.extend(pax_record("path", &e.path));
        }
    }
    if let Some(target) = link.filter(|t| t.len() > 100) {
        if gnu {
            let mut data = target.to_vec();
            data.push(0);
            let h = raw_header(
                true,
                b"././@LongLink",
                EntryType::GNULongLink,
                data.len() as u64,
            );
            push_block(out, h, &data);
        } else {
            pax.extend(pax_record("linkpath", target));
        }
    }
    if !pax.is_empty() {
        let h = raw_header(
            false,
            b"./PaxHeaders/entry",
            EntryType::XHeader,
            pax.len() as u64,
        );
        push_block(out, h, &pax);
    }

    let (ty, data): (EntryType, &[u8]) = match &e.kind {
        Kind::File(d) => (EntryType::Regular, d),
        Kind::Dir => (EntryType::Directory, &[]),
        Kind::Symlink(_) => (EntryType::Symlink, &[]),
        Kind::Hardlink(_) => (EntryType::Link, &[]),
        Kind::Char(..) => (EntryType::Char, &[]),
        Kind::Block(..) => (EntryType::Block, &[]),
        Kind::Fifo => (EntryType::Fifo, &[]),
    };
    let header_name = e.decoy.as_deref().unwrap_or(&e.path);
    let mut h = raw_header(gnu, header_name, ty, data.len() as u64);
    h.set_mode(e.mode);
    h.set_uid(e.uid);
    h.set_gid(e.gid);
    h.set_mtime(e.mtime);
    if let Some(target) = link {
        put_name(&mut h.as_old_mut().linkname, target);
    }
    if let Kind::Char(major, minor) | Kind::Block(major, minor) = e.kind {
        h.set_device_major(major)
            .expect("device major on a ustar/gnu header");
        h.set_device_minor(minor)
            .expect("device minor on a ustar/gnu header");
    }
    push_block(out, h, data);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pax_record_length_counts_itself() {
        assert_eq!(pax_record("a", b"b"), b"6 a=b\n".to_vec());
        // 9 bytes plus a 1-digit length would be 10, which needs 2 digits: 11.
        assert_eq!(pax_record("a", b"vvvvv"), b"11 a=vvvvv\n".to_vec());
        let r = pax_record("path", &[b'x'; 95]);
        assert_eq!(r.len(), 105);
        assert!(r.starts_with(b"105 path="));
    }

    #[test]
    fn the_tar_crate_reads_long_names_back() {
        let long = format!("d/{}", "n".repeat(150));
        let target = format!("/{}", "t".repeat(120));
        let tar = write_tar(&[
            Entry::file(&long, b"pax"),
            Entry::symlink("s", &target).gnu_long_names(),
            Entry::file("x", b"1").xattr("user.k", b"v"),
        ]);
        let mut ar = tar::Archive::new(&tar[..]);
        let mut seen = Vec::new();
        for e in ar.entries().expect("entries") {
            let mut e = e.expect("entry");
            let link = e.link_name_bytes().map(|l| l.into_owned());
            let xattr_count = e
                .pax_extensions()
                .expect("pax")
                .map(|x| x.count())
                .unwrap_or(0);
            seen.push((e.path_bytes().into_owned(), link, xattr_count));
        }
        assert_eq!(seen[0].0, long.as_bytes());
        assert_eq!(seen[1].1.as_deref(), Some(target.as_bytes()));
        assert_eq!(seen[2].2, 1);
    }

    #[test]
    fn long_name_records_override_a_decoy_header_name() {
        for e in [
            Entry::file("../pax", b"").decoy_name("harmless"),
            Entry::file("../gnu", b"")
                .decoy_name("harmless")
                .gnu_long_names(),
        ] {
            let tar = write_tar(std::slice::from_ref(&e));
            assert!(tar.windows(8).any(|w| w == b"harmless"));
            let mut ar = tar::Archive::new(&tar[..]);
            let first = ar.entries().expect("entries").next().expect("one entry");
            assert_eq!(&*first.expect("entry").path_bytes(), &e.path[..]);
        }
    }
}
