//! `Content-Encoding: gzip` for answers whose data was deflated once, when
//! the entry entered L1, instead of on every response: a hit of a 35 KB
//! answer compressed per request cost ~40 times the instructions of the
//! same hit uncompressed (bench/RESULTS.md, "Compressed hits").
//!
//! A response is one gzip member whose deflate stream is three segments: the
//! head (`{"data":`), the data and the tail (`,"metadata":{...}}`). The data
//! was deflated on its own and ends in a full flush (byte-aligned, window
//! emptied), so it decodes correctly wherever it is placed. The head and the
//! tail, a few hundred bytes that change per response, go in as stored
//! (uncompressed) blocks: setting up a compressor costs more than
//! compressing them saves. The trailer's CRC-32 is combined from the parts'.

use bytes::Bytes;
use flate2::{Compress, Compression, FlushCompress};

/// Data at least this large is worth compressing (below it the gzip framing
/// and the work outweigh the bytes saved); the HTTP compression layer uses
/// the same threshold for every other response.
pub const MIN_BYTES: usize = 1024;

/// Raw deflate ending in a full flush, and the CRC-32 and length of what it
/// holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Segment {
    pub deflated: Bytes,
    pub crc: u32,
    pub len: u64,
}

impl Segment {
    /// `input` deflated at the default level (6): done once per entry, so
    /// the better ratio is worth its time. `None` if deflate fails.
    pub fn new(input: &[u8]) -> Option<Self> {
        let deflated = deflate(input, Compression::default())?;
        Some(Self {
            deflated: deflated.into(),
            crc: crc32fast::hash(input),
            len: input.len() as u64,
        })
    }
}

/// A gzip member of `head`, the already deflated `middle` and `tail` (the
/// head and tail as stored blocks).
pub fn member(head: &[u8], middle: &Segment, tail: &[u8]) -> Vec<u8> {
    let mut crc = crc32fast::Hasher::new();
    crc.update(head);
    crc.combine(&crc32fast::Hasher::new_with_initial_len(middle.crc, middle.len));
    let mut tail_crc = crc32fast::Hasher::new();
    tail_crc.update(tail);
    crc.combine(&tail_crc);
    let len = head.len() as u64 + middle.len + tail.len() as u64;

    // RFC 1952: ID1 ID2, CM = deflate, no flags, no MTIME, no XFL, OS unknown.
    const HEADER: [u8; 10] = [0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff];
    let mut out = Vec::with_capacity(HEADER.len() + head.len() + middle.deflated.len() + tail.len() + 32);
    out.extend_from_slice(&HEADER);
    push_stored(&mut out, head, false);
    out.extend_from_slice(&middle.deflated);
    push_stored(&mut out, tail, true);
    out.extend_from_slice(&crc.finalize().to_le_bytes());
    // ISIZE is the length modulo 2^32.
    out.extend_from_slice(&(len as u32).to_le_bytes());
    out
}

/// `bytes` as stored deflate blocks (RFC 1951 3.2.4), at a byte boundary:
/// per block of at most 65,535 bytes a header byte (BFINAL, BTYPE 00, the
/// rest padding), LEN and its complement; `last` ends the stream.
fn push_stored(out: &mut Vec<u8>, bytes: &[u8], last: bool) {
    let mut chunks = bytes.chunks(usize::from(u16::MAX)).peekable();
    if chunks.peek().is_none() {
        out.push(u8::from(last));
        out.extend_from_slice(&[0, 0, 0xff, 0xff]);
        return;
    }
    while let Some(chunk) = chunks.next() {
        let len = u16::try_from(chunk.len()).unwrap_or(u16::MAX);
        out.push(u8::from(last && chunks.peek().is_none()));
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(&(!len).to_le_bytes());
        out.extend_from_slice(chunk);
    }
}

/// Whether `Accept-Encoding` (all its values) takes gzip: named (or
/// `x-gzip`) with a quality above 0, or `*` above 0 with gzip not refused.
pub fn accepted<'a>(values: impl IntoIterator<Item = &'a str>) -> bool {
    let mut gzip = None;
    let mut any = None;
    for coding in values.into_iter().flat_map(|v| v.split(',')) {
        let mut parts = coding.split(';');
        let name = parts.next().unwrap_or_default().trim();
        let quality = parts
            .filter_map(|p| p.trim().strip_prefix("q="))
            .find_map(|q| q.trim().parse::<f32>().ok())
            .unwrap_or(1.0);
        if name.eq_ignore_ascii_case("gzip") || name.eq_ignore_ascii_case("x-gzip") {
            gzip = Some(quality > 0.0);
        } else if name == "*" {
            any = Some(quality > 0.0);
        }
    }
    gzip.or(any).unwrap_or(false)
}

/// Raw deflate of `input` ending in a full flush (byte-aligned, the window
/// emptied, the stream left open for what follows).
fn deflate(input: &[u8], level: Compression) -> Option<Vec<u8>> {
    let mut compressor = Compress::new(level, false);
    let mut out = Vec::with_capacity(input.len() / 3 + 64);
    loop {
        let consumed = usize::try_from(compressor.total_in()).ok()?;
        compressor
            .compress_vec(input.get(consumed..)?, &mut out, FlushCompress::Full)
            .ok()?;
        // The flush is complete once a call has taken all the input and
        // left output space unused.
        if usize::try_from(compressor.total_in()).ok()? == input.len() && out.len() < out.capacity() {
            return Some(out);
        }
        out.reserve(out.capacity().max(256));
    }
}

#[cfg(test)]
mod tests {
    use std::io::Read;

    use super::*;

    fn gunzip(bytes: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(bytes)
            .read_to_end(&mut out)
            .expect("a valid gzip member");
        out
    }

    #[test]
    fn three_segments_make_one_member_that_any_decoder_reads() {
        let data: Vec<u8> = (0..20_000u32)
            .map(|i| format!("{{\"store\":\"Store {}\",\"revenue\":{}}},", i % 300, i * 7))
            .collect::<String>()
            .into_bytes();
        let middle = Segment::new(&data).expect("deflate");
        assert!(middle.deflated.len() < data.len() / 4, "it compresses");
        let (head, tail) = (
            b"{\"data\":[".as_slice(),
            b"{}],\"metadata\":{\"age_seconds\":3}}".as_slice(),
        );
        let gz = member(head, &middle, tail);
        let expected = [head, &data, tail].concat();
        assert_eq!(gunzip(&gz), expected);
        // Every segment may be tiny or empty, too.
        let empty = Segment::new(b"").expect("deflate");
        assert_eq!(gunzip(&member(b"", &empty, b"")), b"");
        assert_eq!(
            gunzip(&member(b"[", &Segment::new(b"1").expect("deflate"), b"]")),
            b"[1]"
        );
        // A tail longer than one stored block.
        let long_tail = vec![b'x'; 70_000];
        assert_eq!(
            gunzip(&member(b"[", &empty, &long_tail)),
            [b"[".as_slice(), &long_tail].concat()
        );
    }

    #[test]
    fn accept_encoding_is_read_with_its_qualities() {
        assert!(accepted(["gzip, deflate, br"]));
        assert!(accepted(["br;q=1.0, gzip;q=0.5"]));
        assert!(accepted(["identity", "x-gzip"]));
        assert!(accepted(["*"]));
        assert!(!accepted(["gzip;q=0"]));
        assert!(!accepted(["*;q=0.5, gzip;q=0"]));
        assert!(!accepted(["br, identity"]));
        assert!(!accepted([""]));
        assert!(!accepted(Vec::<&str>::new()));
    }
}
