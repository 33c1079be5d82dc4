//! Tar-split: what it takes to re-create a layer's uncompressed tar, byte for byte, from its
//! unpacked directory, so that `slate save` can export an image whose layers still hash to the
//! config's `diff_ids` (and so keep the image's config digest, its identity) without keeping
//! the layer blobs themselves. Docker and containers/storage keep the same kind of record
//! (`tar-split.json.gz`) for the same reason.
//!
//! While a layer is unpacked, [`Recording`] sits between the decompressed stream and the tar
//! parser and logs every byte it passes, except the data of regular files: for those the log
//! only says "`size` bytes of the file at `path`", and the bytes are read back from the
//! layer directory when the tar is re-created. Headers, PAX and long-name records, padding,
//! the end-of-archive blocks and anything after them are logged verbatim. The log is a
//! zstd-compressed sequence of records (`layers/<chain>/tar-split.zst`):
//!
//! ```text
//! magic "slate-tar-split/1\n"
//! 'R' u32le len, len bytes       raw stream bytes
//! 'F' u64le size, u32le len, path  `size` bytes of the regular file `path` (layer-relative)
//! 'E' u64le total                end: the tar is `total` bytes long
//! ```
//!
//! The log is abandoned (the layer just cannot be saved; pulling and running are unaffected)
//! when more than [`INLINE_LIMIT`] bytes of data would have to be kept verbatim: the data of
//! entries that do not become regular files (a whiteout with content, a global PAX header)
//! and what follows the end-of-archive marker. That bounds the log of a hostile layer.
//!
//! [`Reassembly`] reads the log back. File data is opened below the layer directory without
//! following any symlink (a later entry of the same layer may have replaced a file by a
//! link to the host's `/etc/shadow`), must still be a regular file of the logged size, and
//! the whole re-created stream is hashed: a stream whose digest is not the layer's diff id
//! fails the read, so a layer changed on disk can never be exported as the original.

use std::cell::RefCell;
use std::collections::HashSet;
use std::fs::File;
use std::hash::Hasher;
use std::io::{self, BufReader, BufWriter, Read, Write};
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

use sha2::{Digest as _, Sha256};

use crate::digest::Digest;

/// File name of the log inside a layer's directory.
pub const FILE_NAME: &str = "tar-split.zst";
const MAGIC: &[u8] = b"slate-tar-split/1\n";
/// Verbatim bytes beyond headers and padding that one layer's log may hold.
pub const INLINE_LIMIT: u64 = 4 << 20;
/// Raw bytes are gathered up to this size before a record is written.
const RAW_CHUNK: usize = 64 << 10;
/// A path in the log longer than this is corrupt (PATH_MAX is 4096).
const MAX_PATH: u32 = 4096;

/// The recording state shared by [`Recording`] (which sees the bytes) and the unpacker
/// (which knows where each file's data starts and which entries become regular files).
pub(crate) struct Recorder {
    out: Option<zstd::stream::write::Encoder<'static, BufWriter<File>>>,
    path: PathBuf,
    /// Bytes of the stream seen so far.
    pos: u64,
    /// Bytes still to leave out of the log (the data of the current regular file).
    skip: u64,
    raw: Vec<u8>,
    /// Verbatim data bytes beyond headers (see [`INLINE_LIMIT`]).
    inline: u64,
    /// Bytes of the current entry's data that are logged verbatim.
    inline_pending: u64,
    /// Why the log was given up, if it was.
    abandoned: Option<&'static str>,
    /// Hashes of the paths logged as files: a path written twice in one layer (legal in
    /// tar) would read back its last content for both, so such a layer is not saveable.
    files: HashSet<u64>,
}

impl Recorder {
    /// Starts a log at `path` (a new file).
    pub(crate) fn create(path: &Path) -> io::Result<Recorder> {
        let file = File::create(path)?;
        // Level 1 and a 128 KiB window: the log is mostly tar headers, which compress well
        // anyway, and a pull runs one encoder per layer at once, so its memory counts.
        let mut out = zstd::stream::write::Encoder::new(BufWriter::new(file), 1)?;
        out.window_log(17)?;
        out.write_all(MAGIC)?;
        Ok(Recorder {
            out: Some(out),
            path: path.to_path_buf(),
            pos: 0,
            skip: 0,
            raw: Vec::with_capacity(RAW_CHUNK),
            inline: 0,
            inline_pending: 0,
            abandoned: None,
            files: HashSet::new(),
        })
    }

    fn seen(&mut self, mut bytes: &[u8]) -> io::Result<()> {
        self.pos += bytes.len() as u64;
        let k = usize::try_from(self.skip).map_or(bytes.len(), |s| s.min(bytes.len()));
        self.skip -= k as u64;
        bytes = &bytes[k..];
        if self.out.is_none() || bytes.is_empty() {
            return Ok(());
        }
        if self.inline_pending > 0 {
            let n = self.inline_pending.min(bytes.len() as u64);
            self.inline_pending -= n;
            self.count_inline(n);
        }
        self.raw.extend_from_slice(bytes);
        if self.raw.len() >= RAW_CHUNK {
            self.flush_raw()?;
        }
        Ok(())
    }

    fn count_inline(&mut self, n: u64) {
        self.inline += n;
        if self.inline > INLINE_LIMIT {
            self.abandon("too much data outside regular files");
        }
    }

    fn flush_raw(&mut self) -> io::Result<()> {
        if let Some(out) = self.out.as_mut() {
            for chunk in self.raw.chunks(u32::MAX as usize) {
                out.write_all(b"R")?;
                out.write_all(&(chunk.len() as u32).to_le_bytes())?;
                out.write_all(chunk)?;
            }
        }
        self.raw.clear();
        Ok(())
    }

    /// The entry whose header was just read has `size` bytes of data starting at `data_at`:
    /// with `path` (layer-relative) they are a regular file the unpacker writes, and are
    /// left out of the log; without, they are logged verbatim (and count against the limit).
    pub(crate) fn entry_data(
        &mut self,
        data_at: u64,
        size: u64,
        path: Option<&[u8]>,
    ) -> io::Result<()> {
        if self.out.is_none() || size == 0 {
            return Ok(());
        }
        let path = match path {
            Some(p) if data_at == self.pos && p.len() as u64 <= MAX_PATH as u64 => p,
            Some(_) => {
                // The parser read past the header (never seen with the tar crate): the
                // data cannot be told apart from the rest any more.
                self.abandon("stream position out of step");
                return Ok(());
            }
            None => {
                self.inline_pending = size;
                return Ok(());
            }
        };
        let mut h = std::hash::DefaultHasher::new();
        h.write(path);
        if !self.files.insert(h.finish()) {
            self.abandon("a path is written twice in the layer");
            return Ok(());
        }
        self.flush_raw()?;
        if let Some(out) = self.out.as_mut() {
            out.write_all(b"F")?;
            out.write_all(&size.to_le_bytes())?;
            out.write_all(&(path.len() as u32).to_le_bytes())?;
            out.write_all(path)?;
        }
        self.skip = size;
        Ok(())
    }

    /// The parser is done: the rest of the stream (end-of-archive blocks, padding, any
    /// trailing bytes) is read through `rest` and logged verbatim, then the log is closed.
    /// Returns whether a usable log was written.
    pub(crate) fn finish(&mut self, mut rest: impl Read) -> io::Result<bool> {
        let mut buf = [0u8; 8192];
        let start = self.pos;
        loop {
            let n = match rest.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            self.seen(&buf[..n])?;
            if self.pos - start > INLINE_LIMIT {
                self.abandon("too much data after the end of the archive");
                // The caller drains the rest for the digests; nothing more to log.
                break;
            }
        }
        self.flush_raw()?;
        let Some(mut out) = self.out.take() else {
            return Ok(false);
        };
        out.write_all(b"E")?;
        out.write_all(&self.pos.to_le_bytes())?;
        out.finish()?.flush()?;
        Ok(true)
    }

    fn abandon(&mut self, why: &'static str) {
        if self.out.take().is_some() {
            tracing::debug!(log = %self.path.display(), why, "tar-split log abandoned: this layer cannot be saved");
            self.abandoned = Some(why);
            self.raw = Vec::new();
            self.files = HashSet::new();
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

impl Drop for Recorder {
    fn drop(&mut self) {
        // Not finished (the unpack failed): no half log may stay beside a layer.
        if self.out.take().is_some() {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// A reader that shows every byte it passes to the [`Recorder`], if there is one.
pub(crate) struct Recording<'a, R> {
    pub(crate) inner: R,
    pub(crate) recorder: Option<&'a RefCell<Recorder>>,
}

impl<R: Read> Read for Recording<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        if let Some(r) = self.recorder {
            r.borrow_mut().seen(&buf[..n])?;
        }
        Ok(n)
    }
}

/// Why a layer cannot be re-created.
#[derive(Debug, thiserror::Error)]
pub enum SplitError {
    #[error("layer {diff_id} has no tar-split record (it was stored by an older slate or holds data slate does not keep); remove the image and pull it again to save it")]
    Missing { diff_id: Digest },
    #[error("tar-split record of layer {diff_id} is corrupt: {reason}")]
    Corrupt {
        diff_id: Digest,
        reason: &'static str,
    },
    #[error("reading tar-split record of layer {diff_id}")]
    Io {
        diff_id: Digest,
        #[source]
        source: io::Error,
    },
}

type LogReader = zstd::stream::read::Decoder<'static, BufReader<File>>;

fn open_log(layer_dir: &Path, diff_id: &Digest) -> Result<LogReader, SplitError> {
    let path = layer_dir.join(FILE_NAME);
    let file = match File::open(&path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err(SplitError::Missing {
                diff_id: diff_id.clone(),
            })
        }
        Err(source) => {
            return Err(SplitError::Io {
                diff_id: diff_id.clone(),
                source,
            })
        }
    };
    let io = |source| SplitError::Io {
        diff_id: diff_id.clone(),
        source,
    };
    let mut log = zstd::stream::read::Decoder::new(file).map_err(io)?;
    let mut magic = [0u8; MAGIC.len()];
    log.read_exact(&mut magic).map_err(io)?;
    if magic != MAGIC {
        return Err(SplitError::Corrupt {
            diff_id: diff_id.clone(),
            reason: "unknown format",
        });
    }
    Ok(log)
}

fn read_u32(r: &mut impl Read) -> io::Result<u32> {
    let mut b = [0u8; 4];
    r.read_exact(&mut b)?;
    Ok(u32::from_le_bytes(b))
}

fn read_u64(r: &mut impl Read) -> io::Result<u64> {
    let mut b = [0u8; 8];
    r.read_exact(&mut b)?;
    Ok(u64::from_le_bytes(b))
}

/// Length of the tar that the layer's log re-creates (a scan of the log, no file data read).
pub fn tar_size(layer_dir: &Path, diff_id: &Digest) -> Result<u64, SplitError> {
    let mut log = open_log(layer_dir, diff_id)?;
    let io = |source| SplitError::Io {
        diff_id: diff_id.clone(),
        source,
    };
    let mut total = 0u64;
    loop {
        let mut tag = [0u8];
        log.read_exact(&mut tag).map_err(io)?;
        match tag[0] {
            b'R' => {
                let n = read_u32(&mut log).map_err(io)?;
                io::copy(&mut (&mut log).take(u64::from(n)), &mut io::sink()).map_err(io)?;
                total += u64::from(n);
            }
            b'F' => {
                total += read_u64(&mut log).map_err(io)?;
                let n = read_u32(&mut log).map_err(io)?;
                io::copy(&mut (&mut log).take(u64::from(n)), &mut io::sink()).map_err(io)?;
            }
            b'E' => {
                let end = read_u64(&mut log).map_err(io)?;
                if end != total {
                    return Err(SplitError::Corrupt {
                        diff_id: diff_id.clone(),
                        reason: "length does not add up",
                    });
                }
                return Ok(total);
            }
            _ => {
                return Err(SplitError::Corrupt {
                    diff_id: diff_id.clone(),
                    reason: "unknown record",
                })
            }
        }
    }
}

/// Opens a regular file of the layer without following symlinks (see the module docs).
pub(crate) type OpenInLayer = fn(&OwnedFd, &[u8]) -> io::Result<File>;

/// The original tar of the layer stored in `layer_dir` (`layers/<chain>/`), and its length.
pub fn reassemble(layer_dir: &Path, diff_id: &Digest) -> Result<(Reassembly, u64), SplitError> {
    let size = tar_size(layer_dir, diff_id)?;
    let diff = crate::unpack::open_layer_dir(&layer_dir.join("diff")).map_err(|source| {
        SplitError::Io {
            diff_id: diff_id.clone(),
            source,
        }
    })?;
    let r = Reassembly::new(layer_dir, diff_id, diff, crate::unpack::open_file_in_layer)?;
    Ok((r, size))
}

enum Part {
    Start,
    Raw(u64),
    File(File, u64),
    Done,
}

/// The layer's original tar, re-created from its log and directory, as a reader. Its last
/// read fails with `InvalidData` if the bytes do not hash to the layer's diff id.
pub struct Reassembly {
    log: LogReader,
    diff: OwnedFd,
    diff_id: Digest,
    part: Part,
    hasher: Sha256,
    open: OpenInLayer,
}

impl Reassembly {
    fn new(
        layer_dir: &Path,
        diff_id: &Digest,
        diff: OwnedFd,
        open: OpenInLayer,
    ) -> Result<Reassembly, SplitError> {
        Ok(Reassembly {
            log: open_log(layer_dir, diff_id)?,
            diff,
            diff_id: diff_id.clone(),
            part: Part::Start,
            hasher: Sha256::new(),
            open,
        })
    }

    fn corrupt(&self, what: &str) -> io::Error {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("layer {}: {what}", self.diff_id),
        )
    }

    fn next_part(&mut self) -> io::Result<()> {
        let mut tag = [0u8];
        self.log.read_exact(&mut tag)?;
        self.part = match tag[0] {
            b'R' => Part::Raw(u64::from(read_u32(&mut self.log)?)),
            b'F' => {
                let size = read_u64(&mut self.log)?;
                let n = read_u32(&mut self.log)?;
                if n > MAX_PATH {
                    return Err(self.corrupt("corrupt tar-split record"));
                }
                let mut path = vec![0u8; n as usize];
                self.log.read_exact(&mut path)?;
                let file = (self.open)(&self.diff, &path).map_err(|e| {
                    io::Error::new(
                        e.kind(),
                        format!(
                            "layer {}: file {:?} is gone or changed: {e}",
                            self.diff_id,
                            String::from_utf8_lossy(&path)
                        ),
                    )
                })?;
                let len = file.metadata()?.len();
                if len != size {
                    return Err(self.corrupt(&format!(
                        "file {:?} is {len} bytes, the layer had {size}",
                        String::from_utf8_lossy(&path)
                    )));
                }
                Part::File(file, size)
            }
            b'E' => {
                read_u64(&mut self.log)?;
                let actual = Digest::from_hasher(self.hasher.clone());
                if actual != self.diff_id {
                    return Err(self.corrupt(&format!(
                        "re-created tar has digest {actual}: the layer's files were changed on disk"
                    )));
                }
                Part::Done
            }
            _ => return Err(self.corrupt("corrupt tar-split record")),
        };
        Ok(())
    }
}

impl Read for Reassembly {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            let n = match &mut self.part {
                Part::Done => return Ok(0),
                Part::Start | Part::Raw(0) | Part::File(_, 0) => {
                    self.next_part()?;
                    continue;
                }
                Part::Raw(left) => {
                    let want = usize::try_from(*left).map_or(buf.len(), |l| l.min(buf.len()));
                    let n = self.log.read(&mut buf[..want])?;
                    if n == 0 {
                        return Err(io::ErrorKind::UnexpectedEof.into());
                    }
                    *left -= n as u64;
                    n
                }
                Part::File(f, left) => {
                    let want = usize::try_from(*left).map_or(buf.len(), |l| l.min(buf.len()));
                    let n = f.read(&mut buf[..want])?;
                    if n == 0 {
                        return Err(io::ErrorKind::UnexpectedEof.into());
                    }
                    *left -= n as u64;
                    n
                }
            };
            self.hasher.update(&buf[..n]);
            return Ok(n);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A layer with what real layers hold: nested files, a long name (GNU or PAX record),
    /// a symlink, a hardlink, an empty file, a whiteout, PAX xattrs, and the padding that
    /// `tar` adds to fill its last record.
    fn sample_tar(trailing: usize) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        let mut dir = tar::Header::new_gnu();
        dir.set_entry_type(tar::EntryType::Directory);
        dir.set_mode(0o755);
        dir.set_size(0);
        b.append_data(&mut dir, "etc/", io::empty()).unwrap();
        let file = |b: &mut tar::Builder<Vec<u8>>, path: &str, data: &[u8]| {
            let mut h = tar::Header::new_gnu();
            h.set_mode(0o644);
            h.set_size(data.len() as u64);
            b.append_data(&mut h, path, data).unwrap();
        };
        file(&mut b, "etc/hostname", b"slate\n");
        file(&mut b, "etc/empty", b"");
        let long = format!("usr/{}/lib.so", "x".repeat(150));
        file(&mut b, &long, &vec![7u8; 100_000]);
        file(&mut b, "etc/.wh.gone", b"");
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Symlink);
        h.set_size(0);
        b.append_link(&mut h, "etc/link", "/etc/shadow").unwrap();
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Link);
        h.set_size(0);
        b.append_link(&mut h, "etc/hard", "etc/hostname").unwrap();
        b.append_pax_extensions([("SCHILY.xattr.user.k", b"v".as_slice())])
            .unwrap();
        file(&mut b, "etc/xattr", b"with xattr");
        let mut out = b.into_inner().unwrap();
        out.extend(std::iter::repeat_n(0u8, trailing));
        out
    }

    fn record(data: &[u8], dir: &Path) -> bool {
        std::fs::create_dir(dir.join("diff")).unwrap();
        let rec = RefCell::new(Recorder::create(&dir.join(FILE_NAME)).unwrap());
        crate::unpack::unpack_recorded(data, &dir.join("diff"), Some(&rec)).unwrap();
        dir.join(FILE_NAME).exists()
    }

    fn reread(dir: &Path, diff_id: &Digest) -> io::Result<Vec<u8>> {
        let (mut r, size) = reassemble(dir, diff_id).map_err(io::Error::other)?;
        let mut out = Vec::new();
        r.read_to_end(&mut out)?;
        assert_eq!(out.len() as u64, size);
        Ok(out)
    }

    #[test]
    fn recreates_the_tar_byte_for_byte() {
        let data = sample_tar(7 * 512);
        let dir = tempfile::tempdir().unwrap();
        assert!(record(&data, dir.path()));
        let again = reread(dir.path(), &Digest::of(&data)).unwrap();
        assert!(again == data, "re-created tar differs");
        // The log holds headers, not file data.
        let log = std::fs::metadata(dir.path().join(FILE_NAME)).unwrap().len();
        assert!(log < 4096, "log is {log} bytes");
    }

    #[test]
    fn a_changed_file_fails_the_digest() {
        let data = sample_tar(0);
        let dir = tempfile::tempdir().unwrap();
        assert!(record(&data, dir.path()));
        // Same size, other bytes: only the digest can tell.
        std::fs::write(dir.path().join("diff/etc/hostname"), b"evil!\n").unwrap();
        let err = reread(dir.path(), &Digest::of(&data)).unwrap_err();
        assert!(err.to_string().contains("changed on disk"), "{err}");
    }

    #[test]
    fn a_file_replaced_by_a_symlink_is_not_followed() {
        let data = sample_tar(0);
        let dir = tempfile::tempdir().unwrap();
        assert!(record(&data, dir.path()));
        let secret = dir.path().join("secret");
        std::fs::write(&secret, b"host secret").unwrap();
        let victim = dir.path().join("diff/etc/hostname");
        std::fs::remove_file(&victim).unwrap();
        std::os::unix::fs::symlink(&secret, &victim).unwrap();
        let err = reread(dir.path(), &Digest::of(&data)).unwrap_err();
        assert!(err.to_string().contains("etc/hostname"), "{err}");
        // Same through a symlinked parent directory.
        std::fs::remove_file(&victim).unwrap();
        let etc = dir.path().join("diff/etc");
        std::fs::rename(&etc, dir.path().join("etc-real")).unwrap();
        std::os::unix::fs::symlink(dir.path().join("etc-real"), &etc).unwrap();
        assert!(reread(dir.path(), &Digest::of(&data)).is_err());
    }

    #[test]
    fn a_file_replaced_by_a_special_file_is_not_opened() {
        let data = sample_tar(0);
        let dir = tempfile::tempdir().unwrap();
        assert!(record(&data, dir.path()));
        let victim = dir.path().join("diff/etc/hostname");
        std::fs::remove_file(&victim).unwrap();
        nix::unistd::mkfifo(&victim, nix::sys::stat::Mode::from_bits_truncate(0o644)).unwrap();
        let err = reread(dir.path(), &Digest::of(&data)).unwrap_err();
        assert!(err.to_string().contains("not a regular file"), "{err}");
    }

    #[test]
    fn a_path_written_twice_makes_the_layer_unsaveable() {
        let mut b = tar::Builder::new(Vec::new());
        for data in [&b"first\n"[..], &b"second\n"[..]] {
            let mut h = tar::Header::new_gnu();
            h.set_mode(0o644);
            h.set_size(data.len() as u64);
            b.append_data(&mut h, "dup", data).unwrap();
        }
        let data = b.into_inner().unwrap();
        let dir = tempfile::tempdir().unwrap();
        assert!(!record(&data, dir.path()));
        assert_eq!(
            std::fs::read(dir.path().join("diff/dup")).unwrap(),
            b"second\n"
        );
    }

    #[test]
    fn a_huge_tail_abandons_the_log_but_not_the_layer() {
        let data = sample_tar(INLINE_LIMIT as usize + 4096);
        let dir = tempfile::tempdir().unwrap();
        assert!(!record(&data, dir.path()));
        assert!(dir.path().join("diff/etc/hostname").is_file());
        let err = reassemble(dir.path(), &Digest::of(&data)).err().unwrap();
        assert!(matches!(err, SplitError::Missing { .. }), "{err}");
    }
}
