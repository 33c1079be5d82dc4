//! Container logs: what a detached container writes to stdout and stderr, kept in size-capped,
//! rotated files under the store (`<root>/containers/<id>/container.log`, `.1`, `.2`...), or sent
//! to the systemd journal, or dropped.
//!
//! Files use the CRI log format (what kubelet and containerd write), one record per line:
//! `<RFC 3339 time with ns> <stdout|stderr> <F|P> <text>`; `P` marks a piece of a line longer
//! than [`MAX_LINE`] (or cut by the container's exit), continued by the next record. Times make
//! `--since` and `--timestamps` possible; the stream tag sends each line back where it came from.
//!
//! Flash-friendly: appends only, no fsync per line, and at most `max_files` files of
//! `max_size` bytes each (rotation renames, it never copies).

use std::fs::{self, File};
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::MetadataExt as _;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context};

use crate::state::{self, LogDriver};

/// The longest piece written as one record; longer lines are split into `P` records.
pub const MAX_LINE: usize = 16 * 1024;

/// The journal's native protocol socket.
pub const JOURNAL_SOCKET: &str = "/run/systemd/journal/socket";

const LOG_NAME: &str = "container.log";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    Stdout,
    Stderr,
}

impl Stream {
    fn tag(self) -> &'static str {
        match self {
            Stream::Stdout => "stdout",
            Stream::Stderr => "stderr",
        }
    }
}

/// Where the supervisor writes.
#[derive(Debug)]
pub enum Sink {
    None,
    File(FileLog),
    Journal(Journal),
}

impl Sink {
    /// Opens the sink of a container.
    pub fn open(r: &state::Record) -> anyhow::Result<Sink> {
        Ok(match r.log_driver {
            LogDriver::None => Sink::None,
            LogDriver::File => {
                Sink::File(FileLog::open(&r.log_dir, r.log_max_size, r.log_max_files)?)
            }
            LogDriver::Journald => Sink::Journal(Journal::connect(&r.id, &r.name)?),
        })
    }

    fn record(&mut self, stream: Stream, partial: bool, text: &[u8]) {
        let res = match self {
            Sink::None => Ok(()),
            Sink::File(f) => f.write_record(stream, partial, text),
            Sink::Journal(j) => j.send(stream, text),
        };
        // A full disk or a journal that went away must not kill the container: drop the line.
        if let Err(e) = res {
            tracing::debug!(error = %e, "dropping a log line");
        }
    }

    /// A line from the supervisor itself (restarts, failures), on stderr.
    pub fn note(&mut self, text: &str) {
        self.record(Stream::Stderr, false, format!("slate: {text}").as_bytes());
    }
}

/// Size-capped, rotated log files.
#[derive(Debug)]
pub struct FileLog {
    dir: PathBuf,
    max_size: u64,
    max_files: u32,
    file: File,
    size: u64,
}

impl FileLog {
    pub fn open(dir: &Path, max_size: u64, max_files: u32) -> anyhow::Result<FileLog> {
        fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        let path = dir.join(LOG_NAME);
        let file = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .with_context(|| format!("cannot open {}", path.display()))?;
        let size = file.metadata().map(|m| m.len()).unwrap_or(0);
        Ok(FileLog {
            dir: dir.to_path_buf(),
            max_size: max_size.max(1024),
            max_files: max_files.max(1),
            file,
            size,
        })
    }

    fn write_record(&mut self, stream: Stream, partial: bool, text: &[u8]) -> std::io::Result<()> {
        let (s, n) = state::now();
        let mut rec = Vec::with_capacity(text.len() + 48);
        rec.extend_from_slice(state::rfc3339(s, n).as_bytes());
        rec.push(b' ');
        rec.extend_from_slice(stream.tag().as_bytes());
        rec.extend_from_slice(if partial { b" P " } else { b" F " });
        rec.extend_from_slice(text);
        rec.push(b'\n');
        if self.size > 0 && self.size + rec.len() as u64 > self.max_size {
            self.rotate()?;
        }
        self.file.write_all(&rec)?;
        self.size += rec.len() as u64;
        Ok(())
    }

    /// `container.log` -> `.1` -> `.2`...; the oldest beyond `max_files` is dropped.
    fn rotate(&mut self) -> std::io::Result<()> {
        let name = |i: u32| {
            if i == 0 {
                self.dir.join(LOG_NAME)
            } else {
                self.dir.join(format!("{LOG_NAME}.{i}"))
            }
        };
        let last = self.max_files - 1;
        if last == 0 {
            // One file only: start it over.
            self.file.set_len(0)?;
            self.size = 0;
            return Ok(());
        }
        let _ = fs::remove_file(name(last));
        for i in (0..last).rev() {
            match fs::rename(name(i), name(i + 1)) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
        self.file = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(name(0))?;
        self.size = 0;
        Ok(())
    }
}

/// The systemd journal, spoken to directly over its datagram socket (no libsystemd).
#[derive(Debug)]
pub struct Journal {
    sock: UnixDatagram,
    fields: Vec<u8>,
}

impl Journal {
    pub fn connect(id: &str, name: &str) -> anyhow::Result<Journal> {
        if !Path::new(JOURNAL_SOCKET).exists() {
            bail!("--log-driver journald: {JOURNAL_SOCKET} does not exist (is systemd-journald running?)");
        }
        let sock = UnixDatagram::unbound().context("cannot create a datagram socket")?;
        sock.connect(JOURNAL_SOCKET)
            .with_context(|| format!("cannot connect to {JOURNAL_SOCKET}"))?;
        let fields = format!(
            "SYSLOG_IDENTIFIER={name}\nCONTAINER_NAME={name}\nCONTAINER_ID={}\nCONTAINER_ID_FULL={id}\n",
            &id[..id.len().min(12)]
        )
        .into_bytes();
        Ok(Journal { sock, fields })
    }

    fn send(&mut self, stream: Stream, text: &[u8]) -> std::io::Result<()> {
        let mut msg = self.fields.clone();
        msg.extend_from_slice(match stream {
            Stream::Stdout => b"PRIORITY=6\n",
            Stream::Stderr => b"PRIORITY=3\n",
        });
        // The binary-safe form: the name, a newline, the length as 64-bit little endian, the
        // bytes, a newline (the text may hold anything the app wrote).
        msg.extend_from_slice(b"MESSAGE\n");
        msg.extend_from_slice(&(text.len() as u64).to_le_bytes());
        msg.extend_from_slice(text);
        msg.push(b'\n');
        self.sock.send(&msg).map(|_| ())
    }
}

/// Splits one stream's bytes into records.
#[derive(Debug)]
pub struct Lines {
    stream: Stream,
    pending: Vec<u8>,
}

impl Lines {
    pub fn new(stream: Stream) -> Lines {
        Lines {
            stream,
            pending: Vec::new(),
        }
    }

    /// Feeds bytes read from the stream; complete lines go to the sink.
    pub fn feed(&mut self, data: &[u8], sink: &mut Sink) {
        let mut rest = data;
        while let Some(nl) = rest.iter().position(|&b| b == b'\n') {
            self.pending.extend_from_slice(&rest[..nl]);
            self.emit(sink, false);
            rest = &rest[nl + 1..];
        }
        self.pending.extend_from_slice(rest);
        while self.pending.len() >= MAX_LINE {
            let tail = self.pending.split_off(MAX_LINE);
            self.emit(sink, true);
            self.pending = tail;
        }
    }

    /// The stream ended: what is left is a last line without a newline.
    pub fn finish(&mut self, sink: &mut Sink) {
        if !self.pending.is_empty() {
            self.emit(sink, true);
        }
    }

    fn emit(&mut self, sink: &mut Sink, partial: bool) {
        sink.record(self.stream, partial, &self.pending);
        self.pending.clear();
    }
}

/// One parsed record.
#[derive(Debug, PartialEq, Eq)]
pub struct Entry<'a> {
    pub time: &'a str,
    pub stderr: bool,
    pub partial: bool,
    pub text: &'a [u8],
}

pub fn parse(line: &[u8]) -> Option<Entry<'_>> {
    let mut parts = line.splitn(4, |&b| b == b' ');
    let time = std::str::from_utf8(parts.next()?).ok()?;
    let stderr = match parts.next()? {
        b"stdout" => false,
        b"stderr" => true,
        _ => return None,
    };
    let partial = match parts.next()? {
        b"P" => true,
        b"F" => false,
        _ => return None,
    };
    Some(Entry {
        time,
        stderr,
        partial,
        text: parts.next().unwrap_or(b""),
    })
}

/// The log files of a container, oldest first.
pub fn files(dir: &Path) -> Vec<PathBuf> {
    let mut numbered: Vec<(u32, PathBuf)> = fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let n = name.strip_prefix(LOG_NAME)?;
            let n = if n.is_empty() {
                0
            } else {
                n.strip_prefix('.')?.parse().ok()?
            };
            Some((n, e.path()))
        })
        .collect();
    numbered.sort_by_key(|e| std::cmp::Reverse(e.0));
    numbered.into_iter().map(|(_, p)| p).collect()
}

/// What `slate logs` prints.
#[derive(Debug)]
pub struct ReadOptions {
    pub tail: Option<usize>,
    /// Seconds since the epoch: only records at or after it.
    pub since: Option<i64>,
    pub timestamps: bool,
}

/// Prints the records of `dir` per `opts`, then, when `follow` says the container is still
/// running, keeps printing what is appended (across rotations) until it stops.
pub fn print(
    dir: &Path,
    opts: &ReadOptions,
    follow: Option<&dyn Fn() -> bool>,
) -> anyhow::Result<()> {
    let stdout = std::io::stdout();
    let stderr = std::io::stderr();
    let mut out = Printer {
        opts,
        stdout: stdout.lock(),
        stderr: stderr.lock(),
        at_line_start: [true, true],
    };
    let mut lines: Vec<Vec<u8>> = Vec::new();
    let files = files(dir);
    for f in &files {
        let file = match File::open(f) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue, // rotated meanwhile
            Err(e) => return Err(e).with_context(|| format!("cannot read {}", f.display())),
        };
        for l in BufReader::new(file).split(b'\n') {
            let l = l.with_context(|| format!("cannot read {}", f.display()))?;
            lines.push(l);
            if let Some(n) = opts.tail {
                // Keep memory bounded by the tail, not the log size.
                if lines.len() > n.saturating_mul(2).max(1024) {
                    let cut = lines.len() - n;
                    lines.drain(..cut);
                }
            }
        }
    }
    if let Some(n) = opts.tail {
        let cut = lines.len().saturating_sub(n);
        lines.drain(..cut);
    }
    for l in &lines {
        out.line(l)?;
    }
    out.flush()?;
    let Some(running) = follow else {
        return Ok(());
    };
    // Follow the current file from its end; a rotation shows as a new inode.
    let path = dir.join(LOG_NAME);
    let mut cur = File::open(&path).ok();
    let mut ino = cur
        .as_ref()
        .and_then(|f| f.metadata().ok())
        .map(|m| m.ino());
    if let Some(f) = cur.as_mut() {
        f.seek(SeekFrom::End(0))
            .with_context(|| format!("cannot read {}", path.display()))?;
    }
    let mut buf = Vec::new();
    loop {
        let alive = running();
        let mut got = false;
        if let Some(f) = cur.as_mut() {
            let mut chunk = Vec::new();
            f.read_to_end(&mut chunk)
                .with_context(|| format!("cannot read {}", path.display()))?;
            got = !chunk.is_empty();
            buf.extend_from_slice(&chunk);
            while let Some(nl) = buf.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = buf.drain(..=nl).collect();
                out.line(&line[..line.len() - 1])?;
            }
            out.flush()?;
        }
        let now_ino = fs::metadata(&path).ok().map(|m| m.ino());
        if now_ino != ino {
            // Rotated (or created): what was left in the old file was read above.
            cur = File::open(&path).ok();
            ino = now_ino;
            buf.clear();
            continue;
        }
        if !alive && !got {
            return Ok(());
        }
        if !got {
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

struct Printer<'a> {
    opts: &'a ReadOptions,
    stdout: std::io::StdoutLock<'static>,
    stderr: std::io::StderrLock<'static>,
    at_line_start: [bool; 2],
}

impl Printer<'_> {
    fn line(&mut self, l: &[u8]) -> anyhow::Result<()> {
        let Some(e) = parse(l) else { return Ok(()) };
        if let Some(since) = self.opts.since {
            if crate::output::parse_rfc3339(e.time).is_some_and(|t| t < since) {
                return Ok(());
            }
        }
        let idx = usize::from(e.stderr);
        let w: &mut dyn Write = if e.stderr {
            &mut self.stderr
        } else {
            &mut self.stdout
        };
        let res = (|| -> std::io::Result<()> {
            if self.opts.timestamps && self.at_line_start[idx] {
                w.write_all(e.time.as_bytes())?;
                w.write_all(b" ")?;
            }
            w.write_all(e.text)?;
            if !e.partial {
                w.write_all(b"\n")?;
            }
            Ok(())
        })();
        self.at_line_start[idx] = !e.partial;
        match res {
            Ok(()) => Ok(()),
            // The reader went away (`slate logs | head`): not an error.
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => std::process::exit(0),
            Err(e) => Err(e).context("cannot write the logs"),
        }
    }

    fn flush(&mut self) -> anyhow::Result<()> {
        let _ = self.stdout.flush();
        let _ = self.stderr.flush();
        Ok(())
    }
}

/// `--since`: an RFC 3339 time, a Unix time, or a duration back from now (`10m`, `1h30m`, `45s`).
pub fn parse_since(s: &str) -> anyhow::Result<i64> {
    if let Some(t) = crate::output::parse_rfc3339(s) {
        return Ok(t);
    }
    if let Ok(t) = s.parse::<i64>() {
        return Ok(t);
    }
    let secs = parse_duration(s).with_context(|| {
        format!("invalid --since {s:?}: expected an RFC 3339 time or a duration like 10m")
    })?;
    Ok(state::now().0 - secs as i64)
}

/// `1h30m`, `10m`, `45s`, `2h`, `500ms` (rounded down to seconds).
pub fn parse_duration(s: &str) -> anyhow::Result<u64> {
    let mut total_ms: u64 = 0;
    let mut num = String::new();
    let mut chars = s.chars().peekable();
    let mut any = false;
    while let Some(c) = chars.next() {
        if c.is_ascii_digit() {
            num.push(c);
            continue;
        }
        let n: u64 = num.parse().context("a number must come before each unit")?;
        num.clear();
        let unit_ms = match c {
            'h' => 3_600_000,
            's' => 1000,
            'd' => 86_400_000,
            'm' if chars.peek() == Some(&'s') => {
                chars.next();
                1
            }
            'm' => 60_000,
            _ => bail!("unknown unit {c:?}"),
        };
        total_ms = total_ms.saturating_add(n.saturating_mul(unit_ms));
        any = true;
    }
    if !num.is_empty() || !any {
        bail!("a duration needs a unit (h, m, s, ms, d)");
    }
    Ok(total_ms / 1000)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn read_all(dir: &Path) -> String {
        files(dir)
            .iter()
            .map(|f| fs::read_to_string(f).unwrap())
            .collect()
    }

    #[test]
    fn lines_split_and_rotate_within_the_cap() {
        let d = tempfile::tempdir().unwrap();
        let mut sink = Sink::File(FileLog::open(d.path(), 2048, 3).unwrap());
        let mut out = Lines::new(Stream::Stdout);
        for i in 0..200 {
            out.feed(format!("line {i}\n").as_bytes(), &mut sink);
        }
        out.feed(b"no newline", &mut sink);
        out.finish(&mut sink);
        let fs = files(d.path());
        assert_eq!(fs.len(), 3, "{fs:?}");
        for f in &fs {
            assert!(fs::metadata(f).unwrap().len() <= 2048);
        }
        let text = read_all(d.path());
        assert!(text.contains("stdout F line 199\n"));
        assert!(text.ends_with("stdout P no newline\n"));
        assert!(
            !text.contains("line 0\n"),
            "the oldest records were rotated away"
        );
    }

    #[test]
    fn long_lines_become_partial_records() {
        let d = tempfile::tempdir().unwrap();
        let mut sink = Sink::File(FileLog::open(d.path(), 1 << 20, 2).unwrap());
        let mut err = Lines::new(Stream::Stderr);
        let long = vec![b'x'; MAX_LINE + 10];
        err.feed(&long, &mut sink);
        err.feed(b"\n", &mut sink);
        let text = read_all(d.path());
        let recs: Vec<Entry> = text.lines().map(|l| parse(l.as_bytes()).unwrap()).collect();
        assert_eq!(recs.len(), 2);
        assert!(recs[0].partial && recs[0].stderr);
        assert_eq!(recs[0].text.len(), MAX_LINE);
        assert!(!recs[1].partial);
        assert_eq!(recs[1].text.len(), 10);
    }

    #[test]
    fn journal_records_use_the_binary_safe_message_field() {
        let (ours, journald) = UnixDatagram::pair().unwrap();
        let mut j = Journal {
            sock: ours,
            fields: b"SYSLOG_IDENTIFIER=web\n".to_vec(),
        };
        j.send(Stream::Stderr, b"a=b\nnot a field").unwrap();
        let mut buf = [0u8; 256];
        let n = journald.recv(&mut buf).unwrap();
        let mut want = b"SYSLOG_IDENTIFIER=web\nPRIORITY=3\nMESSAGE\n".to_vec();
        want.extend_from_slice(&15u64.to_le_bytes());
        want.extend_from_slice(b"a=b\nnot a field\n");
        assert_eq!(&buf[..n], &want[..]);
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("1h30m").unwrap(), 5400);
        assert_eq!(parse_duration("45s").unwrap(), 45);
        assert_eq!(parse_duration("1500ms").unwrap(), 1);
        assert!(parse_duration("10").is_err());
        assert!(parse_duration("5y").is_err());
        assert_eq!(parse_since("1970-01-01T00:01:00Z").unwrap(), 60);
    }
}
