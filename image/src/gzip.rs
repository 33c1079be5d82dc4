//! Gzip layer streams (RFC 1952, any number of members, as `gzip`, `pigz` and Go's
//! `compress/gzip` write them) inflated without checking their CRC-32.
//!
//! Why not `flate2::bufread::MultiGzDecoder`: it runs a CRC-32 over every inflated byte, a
//! second pass after the inflate itself. A pull never needs it: the inflated stream is the
//! layer's tar, whose sha256 must equal the config's diff id before anything is committed,
//! and the compressed bytes were hashed against the blob digest on the way in. A damaged
//! stream fails the inflate or the diff id; the CRC could only reject what the digests already
//! accept. Here it cost ~0.1 s of the 0.5 s that inflating the bench image's largest layer
//! takes, on the thread that bounds the whole pull. The trailer's length (`ISIZE`) is still
//! checked, since that costs nothing.
//!
//! Headers are parsed streaming: optional fields (extra, name, comment) are skipped, never
//! held in memory, however long a hostile blob makes them.

use std::io::{self, BufRead, Read};

use flate2::{Decompress, DecompressError, FlushDecompress, Status};

const ID1: u8 = 0x1f;
const ID2: u8 = 0x8b;
/// The only compression method gzip defines: deflate.
const CM_DEFLATE: u8 = 8;
const FHCRC: u8 = 0x02;
const FEXTRA: u8 = 0x04;
const FNAME: u8 = 0x08;
const FCOMMENT: u8 = 0x10;
/// Flag bits RFC 1952 reserves; a member with any set is refused, as gzip does.
const FRESERVED: u8 = 0xe0;

enum State {
    /// At a member's header: the first one must be there, later ones only if more bytes follow.
    Header {
        first: bool,
    },
    /// Inside a member's deflate data.
    Body,
    Done,
}

/// A reader of the inflated bytes of a gzip stream (see the module docs).
pub(crate) struct GzipReader<R> {
    inner: R,
    inflate: Decompress,
    state: State,
    /// Bytes inflated from the current member, for its trailer's `ISIZE`.
    member_out: u64,
}

fn invalid(msg: &'static str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg)
}

fn corrupt(_: DecompressError) -> io::Error {
    invalid("corrupt deflate data in gzip stream")
}

fn truncated() -> io::Error {
    io::Error::new(io::ErrorKind::UnexpectedEof, "gzip stream is truncated")
}

/// Reads exactly `buf.len()` bytes.
fn read_exact(r: &mut impl BufRead, buf: &mut [u8]) -> io::Result<()> {
    r.read_exact(buf).map_err(|e| match e.kind() {
        io::ErrorKind::UnexpectedEof => truncated(),
        _ => e,
    })
}

/// Fills `r`'s buffer, retrying a read that was interrupted (`fill_buf` itself does not), so
/// that no caller here is left half-way through a header. Returns whether at the end.
fn at_end(r: &mut impl BufRead) -> io::Result<bool> {
    loop {
        match r.fill_buf() {
            Ok(buf) => return Ok(buf.is_empty()),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
}

/// Skips `n` bytes.
fn skip(r: &mut impl BufRead, mut n: usize) -> io::Result<()> {
    while n > 0 {
        at_end(r)?;
        let avail = r.fill_buf()?;
        if avail.is_empty() {
            return Err(truncated());
        }
        let k = avail.len().min(n);
        r.consume(k);
        n -= k;
    }
    Ok(())
}

/// Skips a NUL-terminated field (file name, comment).
fn skip_cstr(r: &mut impl BufRead) -> io::Result<()> {
    loop {
        at_end(r)?;
        let avail = r.fill_buf()?;
        if avail.is_empty() {
            return Err(truncated());
        }
        match avail.iter().position(|&b| b == 0) {
            Some(i) => {
                r.consume(i + 1);
                return Ok(());
            }
            None => {
                let k = avail.len();
                r.consume(k);
            }
        }
    }
}

/// Reads a member header, leaving `r` at the start of its deflate data.
fn read_header(r: &mut impl BufRead) -> io::Result<()> {
    let mut fixed = [0u8; 10];
    read_exact(r, &mut fixed)?;
    if fixed[0] != ID1 || fixed[1] != ID2 {
        return Err(invalid("not a gzip stream (bad magic number)"));
    }
    if fixed[2] != CM_DEFLATE {
        return Err(invalid("gzip stream uses an unknown compression method"));
    }
    let flags = fixed[3];
    if flags & FRESERVED != 0 {
        return Err(invalid("gzip header has reserved flags set"));
    }
    if flags & FEXTRA != 0 {
        let mut len = [0u8; 2];
        read_exact(r, &mut len)?;
        skip(r, usize::from(u16::from_le_bytes(len)))?;
    }
    if flags & FNAME != 0 {
        skip_cstr(r)?;
    }
    if flags & FCOMMENT != 0 {
        skip_cstr(r)?;
    }
    if flags & FHCRC != 0 {
        skip(r, 2)?;
    }
    Ok(())
}

impl<R: BufRead> GzipReader<R> {
    pub(crate) fn new(inner: R) -> GzipReader<R> {
        GzipReader {
            inner,
            // Raw deflate: the gzip framing is read here.
            inflate: Decompress::new(false),
            state: State::Header { first: true },
            member_out: 0,
        }
    }

    /// Appends inflated bytes to `out`, up to its capacity (which is not zeroed first), and
    /// returns how many; 0 only at the end of the stream (or with no spare capacity).
    pub(crate) fn read_into(&mut self, out: &mut Vec<u8>) -> io::Result<usize> {
        let start = out.len();
        while out.len() < out.capacity() {
            if self.pump(|d, input, flush| d.decompress_vec(input, out, flush))? == 0 {
                break;
            }
        }
        Ok(out.len() - start)
    }

    /// Moves the stream on until `run` (one call of the inflater into the caller's buffer)
    /// produced something or the stream ended; returns the bytes produced.
    fn pump(
        &mut self,
        mut run: impl FnMut(&mut Decompress, &[u8], FlushDecompress) -> Result<Status, DecompressError>,
    ) -> io::Result<usize> {
        loop {
            match self.state {
                State::Done => return Ok(0),
                State::Header { first } => {
                    // Concatenated members are one stream; past the last, nothing may follow
                    // but another member.
                    if !first && at_end(&mut self.inner)? {
                        self.state = State::Done;
                        return Ok(0);
                    }
                    read_header(&mut self.inner)?;
                    self.inflate.reset(false);
                    self.member_out = 0;
                    self.state = State::Body;
                }
                State::Body => {
                    at_end(&mut self.inner)?;
                    let input = self.inner.fill_buf()?;
                    let eof = input.is_empty();
                    let (in_before, out_before) =
                        (self.inflate.total_in(), self.inflate.total_out());
                    let flush = if eof {
                        FlushDecompress::Finish
                    } else {
                        FlushDecompress::None
                    };
                    let status = run(&mut self.inflate, input, flush).map_err(corrupt)?;
                    let consumed = self.inflate.total_in() - in_before;
                    let produced = self.inflate.total_out() - out_before;
                    // At most the input it was given.
                    self.inner.consume(consumed as usize);
                    self.member_out += produced;
                    if status == Status::StreamEnd {
                        self.end_member()?;
                    } else if produced == 0 && consumed == 0 {
                        // Callers always leave room for output, so with input left this
                        // cannot happen; if it did, returning 0 would pass for the end.
                        return Err(if eof {
                            truncated()
                        } else {
                            invalid("gzip inflater made no progress")
                        });
                    }
                    if produced > 0 {
                        return Ok(produced as usize);
                    }
                }
            }
        }
    }

    /// Reads a member's trailer: the CRC-32, unchecked (see the module docs), and the length.
    fn end_member(&mut self) -> io::Result<()> {
        let mut trailer = [0u8; 8];
        read_exact(&mut self.inner, &mut trailer)?;
        let isize = u32::from_le_bytes([trailer[4], trailer[5], trailer[6], trailer[7]]);
        // ISIZE is the length modulo 2^32.
        if u64::from(isize) != self.member_out & u64::from(u32::MAX) {
            return Err(invalid("gzip member length does not match its trailer"));
        }
        self.state = State::Header { first: false };
        Ok(())
    }
}

impl<R: BufRead> Read for GzipReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        self.pump(|d, input, flush| d.decompress(input, buf, flush))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::io::Write;

    fn gz(data: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::new(6));
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    fn inflate_all(stream: &[u8]) -> io::Result<Vec<u8>> {
        let mut out = Vec::new();
        GzipReader::new(io::BufReader::with_capacity(7, stream)).read_to_end(&mut out)?;
        Ok(out)
    }

    fn sample(n: usize) -> Vec<u8> {
        (0..n)
            .map(|i| (i * 7 % 251) as u8 ^ (i >> 9) as u8)
            .collect()
    }

    #[test]
    fn inflates_what_flate2_writes() {
        let data = sample(300_000);
        assert_eq!(inflate_all(&gz(&data)).unwrap(), data);
        assert_eq!(inflate_all(&gz(b"")).unwrap(), b"");
    }

    #[test]
    fn concatenated_members_are_one_stream() {
        let mut s = gz(b"hello ");
        s.extend(gz(b""));
        s.extend(gz(b"world"));
        assert_eq!(inflate_all(&s).unwrap(), b"hello world");
    }

    #[test]
    fn optional_header_fields_are_skipped() {
        let body = gz(b"payload");
        // The same deflate data and trailer behind a header with every optional field.
        let mut s = vec![
            ID1,
            ID2,
            CM_DEFLATE,
            FHCRC | FEXTRA | FNAME | FCOMMENT,
            0,
            0,
            0,
            0,
            0,
            3,
        ];
        s.extend([5, 0, b'a', b'b', 2, 0, b'x']);
        s.extend(b"layer.tar\0a comment\0");
        s.extend([0xaa, 0xbb]);
        s.extend(&body[10..]);
        assert_eq!(inflate_all(&s).unwrap(), b"payload");
    }

    #[test]
    fn a_wrong_crc_passes_but_a_wrong_length_does_not() {
        let mut s = gz(b"payload");
        let n = s.len();
        s[n - 8] ^= 0xff;
        assert_eq!(inflate_all(&s).unwrap(), b"payload");
        s[n - 1] ^= 0x01;
        assert!(inflate_all(&s).is_err());
    }

    #[test]
    fn bad_streams_are_errors() {
        let good = gz(&sample(10_000));
        for cut in [0, 5, 10, good.len() / 2, good.len() - 4, good.len() - 1] {
            let e = inflate_all(&good[..cut]).unwrap_err();
            assert_eq!(e.kind(), io::ErrorKind::UnexpectedEof, "cut at {cut}");
        }
        let mut trailing = good.clone();
        trailing.extend(b"garbage!!!");
        assert!(inflate_all(&trailing).is_err());
        let mut zeros = good.clone();
        zeros.extend([0u8; 16]);
        assert!(inflate_all(&zeros).is_err());
        let mut reserved = good.clone();
        reserved[3] |= 0x80;
        assert!(inflate_all(&reserved).is_err());
        let mut method = good.clone();
        method[2] = 7;
        assert!(inflate_all(&method).is_err());
        let mut body = good;
        body[12] ^= 0x55;
        body[13] ^= 0x55;
        assert!(inflate_all(&body).is_err());
    }

    #[test]
    fn read_into_fills_the_spare_capacity() {
        let data = sample(100_000);
        let stream = gz(&data);
        let mut r = GzipReader::new(io::BufReader::new(&stream[..]));
        let mut got = Vec::new();
        loop {
            let mut chunk = Vec::with_capacity(8192);
            let n = r.read_into(&mut chunk).unwrap();
            if n == 0 {
                break;
            }
            assert!(
                n == 8192 || got.len() + n == data.len(),
                "a short chunk before the end"
            );
            got.extend(chunk);
        }
        assert_eq!(got, data);
    }

    proptest! {
        #[test]
        fn agrees_with_flate2(
            parts in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..3000), 1..4),
            cap in 1usize..5000,
        ) {
            let mut stream = Vec::new();
            for p in &parts {
                stream.extend(gz(p));
            }
            let mut want = Vec::new();
            flate2::bufread::MultiGzDecoder::new(&stream[..]).read_to_end(&mut want).unwrap();
            let mut got = Vec::new();
            GzipReader::new(io::BufReader::with_capacity(cap, &stream[..]))
                .read_to_end(&mut got)
                .unwrap();
            prop_assert_eq!(got, want);
        }
    }
}
