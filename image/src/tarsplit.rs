//! Tar-split: what it takes to re-create a layer's uncompressed tar, byte for byte, from its
//! unpacked directory, so that `slate save` can export an image whose layers still hash to the
//! config's `diff_ids` (and so keep the image's config digest, its identity) without keeping
//! the layer blobs themselves. Docker and containers/storage keep the same kind of record
//! (`tar-split.json.gz`) for the same reason.
//!
//! While a layer is unpacked, [`Recording`] sits between the decompressed stream and the tar
//! parser and logs every byte it passes, except the data of regular files: for those the log
//! only says "`size` bytes of the file at `path`", and the bytes are read back from the
//! layer directory when the tar is re-created. Everything else is logged verbatim: headers,
//! PAX and long-name records, padding, the data of entries that do not become regular files
//! (GNU sparse files, a whiteout or global PAX header with content), the end-of-archive
//! blocks and anything after them. The log is a zstd-compressed sequence of records
//! (`layers/<chain>/tar-split.zst`):
//!
//! ```text
//! magic "slate-tar-split/2\n"
//! 'R' u32le len, len bytes                    raw stream bytes
//! 'F' u64le size, u64le label, u32le len, path
//!                                             `size` bytes of a regular file: the one kept
//!                                             aside as `tar-split.kept/<label>` if there is
//!                                             one, else `path` (layer-relative) in `diff/`
//! 'E' u64le total                             end: the tar is `total` bytes long
//! ```
//!
//! Logs of version 1 (older slate) have no label; they read as if nothing was kept aside.
//!
//! # A path written twice
//!
//! Tar lets a layer write a path more than once (a file, then the same file again, or a
//! directory or symlink in its place, or a directory above it replaced). The unpacker leaves
//! the last entry, as `tar -x` does, but the tar still holds the earlier entry's bytes,
//! and `diff/` alone can no longer give them back. So just before the unpacker removes a
//! non-empty regular file it asks the recorder to keep it aside in `tar-split.kept/`, named by
//! its inode number, which is also the label of the file's `F` record. File content never
//! changes after the unpacker wrote it (files are created with `O_EXCL`, never written
//! through a hardlink), so the kept file is exactly what the earlier entry wrote. It is
//! renamed there when the name being removed is the file's last one; while other hardlinks of
//! the layer still name it, it is copied instead (a rename would leave them a link count one
//! too high inside the container) and the last of those names is later renamed over the copy.
//! Every inode kept aside thus stays alive until the layer is removed, so no file created
//! later in the same unpack gets its number: a label names one file. Labels are only names,
//! not checked against inode numbers on save, so a store copied elsewhere still saves.
//!
//! This costs no memory at all (the decision needs only the file at hand, no table of paths)
//! and on disk only the overwritten content, which the layer's recorded size already counts
//! (it sums every regular file the tar holds).
//!
//! # Bounds
//!
//! Nothing in the log is limited: memory stays constant whatever the layer holds (the log
//! streams through a 64 KiB buffer into a zstd encoder with a 128 KiB window), and on disk
//! the verbatim part is at most the tar's own bytes outside regular files, compressed: no
//! more than a layer could put in regular files, and counted by the store's size budget.
//! The log is abandoned (the layer just cannot be saved; pulling and running are
//! unaffected) only if the tar parser and the log fall out of step, or a file cannot be
//! kept aside (the disk is full).
//!
//! [`Reassembly`] reads the log back. File data is opened below the layer directory (or the
//! kept directory) without following any symlink (a later entry of the same layer may have
//! replaced a file by a link to the host's `/etc/shadow`), must still be a regular file of
//! the logged size, and the whole re-created stream is hashed: a stream whose digest is not
//! the layer's diff id fails the read, so a layer changed on disk can never be exported as
//! the original.

use std::cell::RefCell;
use std::fs::File;
use std::io::{self, BufReader, BufWriter, Read, Write};
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

use crate::digest::{Digest, Sha256};

/// File name of the log inside a layer's directory.
pub const FILE_NAME: &str = "tar-split.zst";
/// Directory inside a layer's directory that holds the regular files a later entry of the
/// layer removed (see the module docs).
pub const KEPT_DIR: &str = "tar-split.kept";
const MAGIC_V1: &[u8] = b"slate-tar-split/1\n";
const MAGIC: &[u8] = b"slate-tar-split/2\n";
/// Raw bytes are gathered up to this size before a record is written.
const RAW_CHUNK: usize = 64 << 10;
/// A path in the log longer than this is corrupt (PATH_MAX is 4096).
const MAX_PATH: u32 = 4096;

/// The recording state shared by [`Recording`] (which sees the bytes) and the unpacker
/// (which knows where each file's data starts, which entries become regular files, and when
/// one is about to be removed).
pub(crate) struct Recorder {
    out: Option<zstd::stream::write::Encoder<'static, BufWriter<File>>>,
    path: PathBuf,
    /// Bytes of the stream seen so far.
    pos: u64,
    /// Bytes still to leave out of the log (the data of the current regular file).
    skip: u64,
    raw: Vec<u8>,
    /// Size of the current regular file, whose `F` record is written once the unpacker says
    /// which file (label) holds its data; its path is in `pending_path`.
    pending: Option<u64>,
    pending_path: Vec<u8>,
    /// The kept directory, once something was kept aside.
    kept: Option<OwnedFd>,
    /// Why the log was given up, if it was.
    abandoned: Option<&'static str>,
}

impl Recorder {
    /// Starts a log at `path` (a new file); files are kept aside in [`KEPT_DIR`] beside it.
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
            pending: None,
            pending_path: Vec::new(),
            kept: None,
            abandoned: None,
        })
    }

    /// Whether the log is still being written (and files must still be kept aside).
    pub(crate) fn recording(&self) -> bool {
        self.out.is_some()
    }

    fn seen(&mut self, mut bytes: &[u8]) -> io::Result<()> {
        self.pos += bytes.len() as u64;
        let k = usize::try_from(self.skip).map_or(bytes.len(), |s| s.min(bytes.len()));
        self.skip -= k as u64;
        bytes = &bytes[k..];
        if self.out.is_none() || bytes.is_empty() {
            return Ok(());
        }
        if self.pending.is_some() {
            // Bytes after a file's data before the unpacker reported the file: its record
            // would come after them.
            self.abandon("stream position out of step");
            return Ok(());
        }
        self.raw.extend_from_slice(bytes);
        if self.raw.len() >= RAW_CHUNK {
            self.flush_raw()?;
        }
        Ok(())
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
    /// left out of the log (the unpacker then reports the file with [`Recorder::file_done`]);
    /// without, they are logged verbatim.
    pub(crate) fn entry_data(
        &mut self,
        data_at: u64,
        size: u64,
        path: Option<&[u8]>,
    ) -> io::Result<()> {
        if self.out.is_none() || size == 0 {
            return Ok(());
        }
        let Some(path) = path else {
            return Ok(());
        };
        if data_at != self.pos || path.len() as u64 > u64::from(MAX_PATH) {
            // The parser read past the header (never seen with the tar crate): the data
            // cannot be told apart from the rest any more.
            self.abandon("stream position out of step");
            return Ok(());
        }
        self.flush_raw()?;
        self.pending = Some(size);
        self.pending_path.clear();
        self.pending_path.extend_from_slice(path);
        self.skip = size;
        Ok(())
    }

    /// The unpacker is done with the entry last given to [`Recorder::entry_data`]:
    /// `label` is the inode number of the regular file it wrote, `None` if it wrote none.
    pub(crate) fn file_done(&mut self, label: Option<u64>) -> io::Result<()> {
        let Some(size) = self.pending.take() else {
            return Ok(());
        };
        let Some(label) = label else {
            self.abandon("a logged file was not written");
            return Ok(());
        };
        if let Some(out) = self.out.as_mut() {
            out.write_all(b"F")?;
            out.write_all(&size.to_le_bytes())?;
            out.write_all(&label.to_le_bytes())?;
            out.write_all(&(self.pending_path.len() as u32).to_le_bytes())?;
            out.write_all(&self.pending_path)?;
        }
        Ok(())
    }

    /// The directory files are kept aside in, created on first use.
    pub(crate) fn kept_dir(&mut self) -> io::Result<&OwnedFd> {
        if self.kept.is_none() {
            let path = self.kept_path();
            std::os::unix::fs::DirBuilderExt::mode(&mut std::fs::DirBuilder::new(), 0o700)
                .create(&path)?;
            self.kept = Some(crate::unpack::open_layer_dir(&path)?);
        }
        match &self.kept {
            Some(fd) => Ok(fd),
            None => Err(io::ErrorKind::NotFound.into()),
        }
    }

    fn kept_path(&self) -> PathBuf {
        self.path.with_file_name(KEPT_DIR)
    }

    /// The parser is done: the rest of the stream (end-of-archive blocks, padding, any
    /// trailing bytes) is read through `rest` and logged verbatim, then the log is closed.
    /// Returns whether a usable log was written.
    pub(crate) fn finish(&mut self, mut rest: impl Read) -> io::Result<bool> {
        let mut buf = [0u8; 8192];
        loop {
            let n = match rest.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            self.seen(&buf[..n])?;
        }
        if self.pending.is_some() {
            self.abandon("a logged file was not written");
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

    /// Gives the log up: the layer will not be saveable. Removes what was written for it.
    pub(crate) fn abandon(&mut self, why: &'static str) {
        if self.out.take().is_some() {
            tracing::debug!(log = %self.path.display(), why, "tar-split log abandoned: this layer cannot be saved");
            self.abandoned = Some(why);
            self.raw = Vec::new();
            self.pending = None;
            self.remove_files();
        }
    }

    fn remove_files(&mut self) {
        let _ = std::fs::remove_file(&self.path);
        if self.kept.take().is_some() {
            // Only regular files that this process put there.
            let _ = std::fs::remove_dir_all(self.kept_path());
        }
    }
}

impl Drop for Recorder {
    fn drop(&mut self) {
        // Not finished (the unpack failed): no half log may stay beside a layer.
        if self.out.take().is_some() {
            self.remove_files();
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
    #[error("layer {diff_id} has no tar-split record (it was stored by an older slate, or unpacking it could not keep one); remove the image and pull it again to save it")]
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

/// An open log and whether its `F` records carry labels (version 2).
struct Log {
    r: LogReader,
    labels: bool,
}

fn open_log(layer_dir: &Path, diff_id: &Digest) -> Result<Log, SplitError> {
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
    let labels = match &magic[..] {
        m if m == MAGIC => true,
        m if m == MAGIC_V1 => false,
        _ => {
            return Err(SplitError::Corrupt {
                diff_id: diff_id.clone(),
                reason: "unknown format",
            })
        }
    };
    Ok(Log { r: log, labels })
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
    let Log { r: mut log, labels } = open_log(layer_dir, diff_id)?;
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
                if labels {
                    read_u64(&mut log).map_err(io)?;
                }
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
    let io = |source| SplitError::Io {
        diff_id: diff_id.clone(),
        source,
    };
    let diff = crate::unpack::open_layer_dir(&layer_dir.join("diff")).map_err(io)?;
    let kept = match crate::unpack::open_layer_dir(&layer_dir.join(KEPT_DIR)) {
        Ok(fd) => Some(fd),
        Err(e) if e.kind() == io::ErrorKind::NotFound => None,
        Err(e) => return Err(io(e)),
    };
    let r = Reassembly::new(
        layer_dir,
        diff_id,
        diff,
        kept,
        crate::unpack::open_file_in_layer,
    )?;
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
    log: Log,
    diff: OwnedFd,
    kept: Option<OwnedFd>,
    diff_id: Digest,
    part: Part,
    hasher: Sha256,
    open: OpenInLayer,
    /// Scratch for labels as file names.
    name: String,
}

impl Reassembly {
    fn new(
        layer_dir: &Path,
        diff_id: &Digest,
        diff: OwnedFd,
        kept: Option<OwnedFd>,
        open: OpenInLayer,
    ) -> Result<Reassembly, SplitError> {
        Ok(Reassembly {
            log: open_log(layer_dir, diff_id)?,
            diff,
            kept,
            diff_id: diff_id.clone(),
            part: Part::Start,
            hasher: Sha256::new(),
            open,
            name: String::new(),
        })
    }

    fn corrupt(&self, what: &str) -> io::Error {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("layer {}: {what}", self.diff_id),
        )
    }

    /// The file that holds the data of an `F` record: the one kept aside under its label,
    /// if any, else the one at its path.
    fn open_data(&mut self, label: Option<u64>, path: &[u8]) -> io::Result<File> {
        if let (Some(kept), Some(label)) = (&self.kept, label) {
            use std::fmt::Write as _;
            self.name.clear();
            let _ = write!(self.name, "{label}");
            match (self.open)(kept, self.name.as_bytes()) {
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                other => return other,
            }
        }
        (self.open)(&self.diff, path)
    }

    fn next_part(&mut self) -> io::Result<()> {
        let mut tag = [0u8];
        self.log.r.read_exact(&mut tag)?;
        self.part = match tag[0] {
            b'R' => Part::Raw(u64::from(read_u32(&mut self.log.r)?)),
            b'F' => {
                let size = read_u64(&mut self.log.r)?;
                let label = if self.log.labels {
                    Some(read_u64(&mut self.log.r)?)
                } else {
                    None
                };
                let n = read_u32(&mut self.log.r)?;
                if n > MAX_PATH {
                    return Err(self.corrupt("corrupt tar-split record"));
                }
                let mut path = vec![0u8; n as usize];
                self.log.r.read_exact(&mut path)?;
                let file = self.open_data(label, &path).map_err(|e| {
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
                read_u64(&mut self.log.r)?;
                let actual = self.hasher.clone().finish();
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
                    let n = self.log.r.read(&mut buf[..want])?;
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

    /// A tar built entry by entry with the tar crate (which writes what it is given,
    /// duplicates included).
    struct Tar(tar::Builder<Vec<u8>>);

    impl Tar {
        fn new() -> Tar {
            Tar(tar::Builder::new(Vec::new()))
        }
        fn entry(&mut self, kind: tar::EntryType, path: &str, link: &str, data: &[u8]) {
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(kind);
            h.set_mode(if kind == tar::EntryType::Directory {
                0o755
            } else {
                0o644
            });
            h.set_mtime(1_700_000_000);
            h.set_size(data.len() as u64);
            if link.is_empty() {
                self.0.append_data(&mut h, path, data).unwrap();
            } else {
                self.0.append_link(&mut h, path, link).unwrap();
            }
        }
        fn file(&mut self, path: &str, data: &[u8]) {
            self.entry(tar::EntryType::Regular, path, "", data);
        }
        fn dir(&mut self, path: &str) {
            self.entry(tar::EntryType::Directory, path, "", b"");
        }
        fn symlink(&mut self, path: &str, target: &str) {
            self.entry(tar::EntryType::Symlink, path, target, b"");
        }
        fn hardlink(&mut self, path: &str, target: &str) {
            self.entry(tar::EntryType::Link, path, target, b"");
        }
        fn finish(self) -> Vec<u8> {
            self.0.into_inner().unwrap()
        }
    }

    /// Records `data`, asserts that a log was kept and that it re-creates `data` exactly.
    fn round_trip(data: &[u8]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        assert!(record(data, dir.path()), "no log was kept");
        let again = reread(dir.path(), &Digest::of(data)).unwrap();
        assert!(again == data, "re-created tar differs");
        dir
    }

    fn nlink(path: &Path) -> u64 {
        std::os::unix::fs::MetadataExt::nlink(&std::fs::symlink_metadata(path).unwrap())
    }

    #[test]
    fn a_path_written_twice_is_re_created_with_both_contents() {
        let mut t = Tar::new();
        t.file("dup", b"first\n");
        t.file("other", b"other\n");
        t.file("dup", b"second, longer\n");
        t.file("dup", b"third\n");
        let dir = round_trip(&t.finish());
        // On disk the last entry wins; the earlier ones are kept aside, outside diff/.
        assert_eq!(
            std::fs::read(dir.path().join("diff/dup")).unwrap(),
            b"third\n"
        );
        let kept = std::fs::read_dir(dir.path().join(KEPT_DIR))
            .unwrap()
            .count();
        assert_eq!(kept, 2);
    }

    #[test]
    fn files_replaced_by_other_kinds_are_re_created() {
        let mut t = Tar::new();
        // A file replaced by a directory, a symlink, a hardlink, a device-less fifo.
        t.file("f2d", b"was a file\n");
        t.dir("f2d/");
        t.file("f2d/inner", b"inner\n");
        t.file("f2l", b"was a file too\n");
        t.symlink("f2l", "/etc/shadow");
        t.file("f2h", b"replaced by a link\n");
        t.hardlink("f2h", "f2d/inner");
        t.file("f2p", b"replaced by a fifo\n");
        t.entry(tar::EntryType::Fifo, "f2p", "", b"");
        // A directory of files replaced by a file, and one by a symlink.
        t.dir("d2f/");
        t.dir("d2f/sub/");
        t.file("d2f/sub/a", b"a\n");
        t.file("d2f/b", b"b\n");
        t.file("d2f", b"now a file\n");
        t.dir("d2l/");
        t.file("d2l/c", b"c\n");
        t.symlink("d2l", "d2f");
        // A directory replacing a directory keeps its files (nothing to keep aside).
        t.dir("same/");
        t.file("same/kept", b"stays\n");
        t.dir("same/");
        let dir = round_trip(&t.finish());
        let diff = dir.path().join("diff");
        assert!(diff.join("f2d").is_dir());
        assert!(diff.join("f2l").is_symlink());
        assert_eq!(std::fs::read(diff.join("f2h")).unwrap(), b"inner\n");
        assert_eq!(std::fs::read(diff.join("d2f")).unwrap(), b"now a file\n");
        assert!(diff.join("d2l").is_symlink());
        assert_eq!(std::fs::read(diff.join("same/kept")).unwrap(), b"stays\n");
    }

    #[test]
    fn hardlinks_of_a_replaced_file_keep_their_link_count() {
        let mut t = Tar::new();
        t.file("orig", b"shared content\n");
        t.hardlink("alias", "orig");
        t.hardlink("alias2", "orig");
        // The first name goes: the other two still name the content.
        t.file("orig", b"new orig\n");
        let data = t.finish();
        let dir = round_trip(&data);
        let diff = dir.path().join("diff");
        assert_eq!(nlink(&diff.join("alias")), 2, "alias and alias2 only");
        assert_eq!(nlink(&diff.join("orig")), 1);

        // Then the other names go, in turn: the content is copied once, and the last name
        // moves over the copy; it stays re-creatable all along.
        let mut t = Tar::new();
        t.file("orig", b"shared content\n");
        t.hardlink("alias", "orig");
        t.hardlink("alias2", "orig");
        t.file("orig", b"new orig\n");
        t.file("alias", b"new alias\n");
        let dir = round_trip(&t.finish());
        assert_eq!(nlink(&dir.path().join("diff/alias2")), 1);
        t = Tar::new();
        t.file("orig", b"shared content\n");
        t.hardlink("alias", "orig");
        t.hardlink("alias2", "orig");
        t.file("orig", b"new orig\n");
        t.file("alias", b"new alias\n");
        t.symlink("alias2", "orig");
        // New files now: none may take the label of the content kept aside.
        for i in 0..64 {
            t.file(&format!("more{i}"), format!("{i}\n").as_bytes());
        }
        t.hardlink("more0", "orig");
        let dir = round_trip(&t.finish());
        let kept = std::fs::read_dir(dir.path().join(KEPT_DIR))
            .unwrap()
            .count();
        assert_eq!(kept, 2, "the shared content once, the first more0 once");
    }

    #[test]
    fn data_outside_regular_files_is_kept_whatever_its_size() {
        // More than 4 MiB (what a log once held at most) in a GNU sparse file's data, in a
        // whiteout's and a directory's data (tar allows them, nothing reads them), and after
        // the end-of-archive blocks.
        let big: Vec<u8> = (0..(5u32 << 20)).map(|i| (i % 251) as u8).collect();
        let mut b = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::GNUSparse);
        h.set_mode(0o644);
        h.set_size(big.len() as u64);
        {
            let gnu = h.as_gnu_mut().unwrap();
            let octal = |field: &mut [u8], v: u64| {
                let s = format!("{:0width$o}", v, width = field.len() - 1);
                field[..s.len()].copy_from_slice(s.as_bytes());
            };
            octal(&mut gnu.sparse[0].offset, 1 << 30);
            octal(&mut gnu.sparse[0].numbytes, big.len() as u64);
            octal(&mut gnu.realsize, (1 << 30) + big.len() as u64);
        }
        h.set_path("sparse").unwrap();
        h.set_cksum();
        b.append(&h, &big[..]).unwrap();
        for (kind, path) in [
            (tar::EntryType::Regular, "etc/.wh.gone"),
            (tar::EntryType::Directory, "dir/"),
        ] {
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(kind);
            h.set_mode(0o755);
            h.set_size(1 << 20);
            b.append_data(&mut h, path, &big[..1 << 20]).unwrap();
        }
        let mut data = b.into_inner().unwrap();
        data.extend_from_slice(&big);
        let dir = round_trip(&data);
        let sparse = std::fs::symlink_metadata(dir.path().join("diff/sparse")).unwrap();
        assert_eq!(sparse.len(), (1 << 30) + big.len() as u64);
    }

    #[test]
    fn a_file_that_cannot_be_kept_aside_abandons_the_log_but_not_the_layer() {
        let mut t = Tar::new();
        t.file("dup", b"first\n");
        t.file("dup", b"second\n");
        let data = t.finish();
        let dir = tempfile::tempdir().unwrap();
        // Something in the way of the kept directory.
        std::fs::write(dir.path().join(KEPT_DIR), b"in the way").unwrap();
        assert!(!record(&data, dir.path()));
        assert_eq!(
            std::fs::read(dir.path().join("diff/dup")).unwrap(),
            b"second\n"
        );
        let err = reassemble(dir.path(), &Digest::of(&data)).err().unwrap();
        assert!(matches!(err, SplitError::Missing { .. }), "{err}");
    }

    #[test]
    fn a_failed_unpack_leaves_no_log_and_nothing_kept() {
        let mut t = Tar::new();
        t.file("dup", b"first\n");
        t.file("dup", b"second\n");
        t.hardlink("broken", "missing");
        let data = t.finish();
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("diff")).unwrap();
        let rec = RefCell::new(Recorder::create(&dir.path().join(FILE_NAME)).unwrap());
        assert!(
            crate::unpack::unpack_recorded(&data[..], &dir.path().join("diff"), Some(&rec))
                .is_err()
        );
        drop(rec);
        assert!(!dir.path().join(FILE_NAME).exists());
        assert!(!dir.path().join(KEPT_DIR).exists());
    }

    #[test]
    fn version_1_logs_still_read() {
        // What an older slate wrote for this layer: `F` records without a label.
        let mut t = Tar::new();
        t.dir("etc/");
        t.file("etc/hostname", b"slate\n");
        let data = t.finish();
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("diff")).unwrap();
        crate::unpack::unpack(&data[..], &dir.path().join("diff")).unwrap();
        let mut log = Vec::from(MAGIC_V1);
        let raw = |log: &mut Vec<u8>, bytes: &[u8]| {
            log.push(b'R');
            log.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
            log.extend_from_slice(bytes);
        };
        raw(&mut log, &data[..1024]); // etc/ and etc/hostname's headers
        log.push(b'F');
        log.extend_from_slice(&6u64.to_le_bytes());
        log.extend_from_slice(&12u32.to_le_bytes());
        log.extend_from_slice(b"etc/hostname");
        raw(&mut log, &data[1024 + 6..]);
        log.push(b'E');
        log.extend_from_slice(&(data.len() as u64).to_le_bytes());
        std::fs::write(
            dir.path().join(FILE_NAME),
            zstd::stream::encode_all(&log[..], 1).unwrap(),
        )
        .unwrap();
        assert!(reread(dir.path(), &Digest::of(&data)).unwrap() == data);
    }

    const PATHS: &[&str] = &["a", "b", "a/x", "a/y", "b/x", "a/x/z"];

    #[derive(Clone, Copy, PartialEq)]
    enum Was {
        File,
        Dir,
        Other,
    }

    /// What the unpacker lays down, closely enough to leave out entries it would refuse (a
    /// parent that is no directory, a hardlink to nothing or to a directory), so that the
    /// generated layers unpack and the test is about re-creating them.
    #[derive(Default)]
    struct Model(std::collections::BTreeMap<String, Was>);

    impl Model {
        fn parents_ok(&mut self, path: &str) -> bool {
            let mut at = String::new();
            let parts: Vec<&str> = path.split('/').collect();
            for part in &parts[..parts.len() - 1] {
                if !at.is_empty() {
                    at.push('/');
                }
                at.push_str(part);
                match self.0.get(&at) {
                    None | Some(Was::Dir) => {}
                    Some(_) => return false,
                }
            }
            true
        }
        fn put(&mut self, path: &str, was: Was) {
            let mut at = String::new();
            for part in path.split('/') {
                if !at.is_empty() {
                    at.push('/');
                }
                at.push_str(part);
                self.0.entry(at.clone()).or_insert(Was::Dir);
            }
            if was != Was::Dir {
                let below = format!("{path}/");
                self.0.retain(|p, _| !p.starts_with(&below));
            }
            self.0.insert(path.to_string(), was);
        }
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig { cases: 256, ..Default::default() })]

        /// Whatever a layer overwrites, and however: it re-creates exactly.
        #[test]
        fn any_overwriting_layer_is_re_created_exactly(
            entries in proptest::collection::vec(
                (0u8..9, 0usize..PATHS.len(), 0usize..PATHS.len()),
                1..20,
            ),
        ) {
            let mut t = Tar::new();
            let mut m = Model::default();
            for (n, &(kind, p, q)) in entries.iter().enumerate() {
                let (path, other) = (PATHS[p], PATHS[q]);
                if !m.parents_ok(path) {
                    continue;
                }
                let content = format!("entry {n} at {path}\n");
                match kind {
                    0..=2 => {
                        t.file(path, content.as_bytes());
                        m.put(path, Was::File);
                    }
                    3 => {
                        // Empty or short: empty files have no data to keep.
                        t.file(path, &content.as_bytes()[..n % 2]);
                        m.put(path, Was::File);
                    }
                    4 => {
                        t.dir(&format!("{path}/"));
                        if m.0.get(path) != Some(&Was::Dir) {
                            m.put(path, Was::Dir);
                        }
                    }
                    5 => {
                        t.symlink(path, other);
                        m.put(path, Was::Other);
                    }
                    6 => match m.0.get(other) {
                        // Not below the path it replaces: that goes first.
                        Some(Was::File) | Some(Was::Other)
                            if other != path && !other.starts_with(&format!("{path}/")) =>
                        {
                            let was = m.0[other];
                            t.hardlink(path, other);
                            m.put(path, was);
                        }
                        _ => continue,
                    },
                    7 => {
                        t.entry(tar::EntryType::Fifo, path, "", b"");
                        m.put(path, Was::Other);
                    }
                    _ => {
                        let (parent, name) = match path.rsplit_once('/') {
                            Some((d, f)) => (format!("{d}/"), f),
                            None => (String::new(), path),
                        };
                        t.file(&format!("{parent}.wh.{name}"), b"");
                        if !m.0.contains_key(path) {
                            m.put(path, Was::Other);
                        }
                    }
                }
            }
            let data = t.finish();
            let dir = tempfile::tempdir().unwrap();
            std::fs::create_dir(dir.path().join("diff")).unwrap();
            let rec = RefCell::new(Recorder::create(&dir.path().join(FILE_NAME)).unwrap());
            let unpacked =
                crate::unpack::unpack_recorded(&data[..], &dir.path().join("diff"), Some(&rec));
            drop(rec);
            proptest::prop_assert!(unpacked.is_ok(), "{:?}", unpacked.err());
            proptest::prop_assert!(dir.path().join(FILE_NAME).exists(), "no log kept");
            let again = reread(dir.path(), &Digest::of(&data)).unwrap();
            proptest::prop_assert!(again == data, "re-created tar differs");
        }
    }

    #[test]
    fn a_huge_tail_is_kept_too() {
        let data = sample_tar(8 << 20);
        let dir = round_trip(&data);
        // Zeros compress to next to nothing.
        let log = std::fs::metadata(dir.path().join(FILE_NAME)).unwrap().len();
        assert!(log < 64 << 10, "log is {log} bytes");
    }
}
