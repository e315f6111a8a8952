//! The stored value: the serialized `data` array behind a small binary header,
//! lz4-compressed above a threshold.
//!
//! Layout: `b"AQ3"` | flags u8 (bit 0: lz4, bit 1: total) | created_at u64
//! LE (unix s) | ttl u32 LE | rows u32 LE | versions u64 LE | source length
//! u8 | source | total u64 LE (only with bit 1) | payload. The payload is the JSON array exactly as it goes on the wire, so
//! a hit is spliced into the response unparsed. `versions` is the snapshot
//! of the version counters the entry was computed under (see
//! `cache::versions`); `source` the rollup that computed it (empty: the raw
//! table); `total` the rows before limit/offset of a `"total": true` query.
//! Entries of the older layouts still decode: `AQ2` (no source) as
//! computed from the raw table, `AQ1` (no snapshot) as never valid.

use std::sync::Arc;

use bytes::Bytes;

const MAGIC: &[u8; 3] = b"AQ3";
const MAGIC_V2: &[u8; 3] = b"AQ2";
const MAGIC_V1: &[u8; 3] = b"AQ1";
const HEADER_LEN_V1: usize = 3 + 1 + 8 + 4 + 4;
const HEADER_LEN_V2: usize = HEADER_LEN_V1 + 8;
/// Before the source's bytes.
const HEADER_LEN: usize = HEADER_LEN_V2 + 1;
const FLAG_LZ4: u8 = 1;
/// The entry carries a row count before limit/offset. A bit, not a new
/// magic: every entry without it reads exactly as before.
const FLAG_TOTAL: u8 = 2;

/// A cached result, decoded (decompressed) and ready to serve.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CachedData {
    /// The JSON array of rows.
    pub data: Bytes,
    pub rows: u64,
    /// Rows before limit/offset, for a query that asked (`"total": true`).
    pub total: Option<u64>,
    pub created_at: u64,
    pub ttl_seconds: u64,
    /// Snapshot of the version counters at computation; `None` (an `AQ1`
    /// entry) never matches, so such an entry is never served as valid.
    pub versions: Option<u64>,
    /// The rollup that computed it; `None`: the raw table.
    pub source: Option<Arc<str>>,
    /// What the entry depends on, kept in memory (not stored) so an
    /// invalidation can find L1 entries without asking Redis.
    pub deps: Option<Arc<EntryDeps>>,
    /// `data` deflated for gzip responses, made once as the entry enters L1
    /// (in memory only, and only for data of `gzip::MIN_BYTES` or more):
    /// every later hit sends it instead of compressing the answer again.
    pub deflated: Option<Arc<crate::gzip::Segment>>,
}

/// The dataset, tenant and version keys an entry depends on.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct EntryDeps {
    pub dataset: String,
    pub tenant: String,
    /// Version keys of the entry's tags, generations excluded.
    pub keys: Vec<String>,
}

impl CachedData {
    /// Seconds since it was computed.
    pub fn age(&self, now: u64) -> u64 {
        now.saturating_sub(self.created_at)
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DecodeError {
    #[error("entry shorter than its header")]
    Truncated,
    #[error("entry does not start with the expected magic bytes")]
    BadMagic,
    #[error("entry claims {0} bytes uncompressed, over the entry limit")]
    TooLarge(usize),
    #[error("entry payload does not decompress")]
    Decompress,
    #[error("entry payload is not a JSON array")]
    NotAnArray,
}

/// Serializes `entry`, compressing payloads larger than `compress_above`.
pub fn encode(entry: &CachedData, compress_above: usize) -> Vec<u8> {
    let compress = entry.data.len() > compress_above;
    let payload: std::borrow::Cow<[u8]> = if compress {
        lz4_flex::compress_prepend_size(&entry.data).into()
    } else {
        entry.data.as_ref().into()
    };
    let mut out = Vec::with_capacity(HEADER_LEN + payload.len());
    out.extend_from_slice(MAGIC);
    let mut flags = if compress { FLAG_LZ4 } else { 0 };
    if entry.total.is_some() {
        flags |= FLAG_TOTAL;
    }
    out.push(flags);
    out.extend_from_slice(&entry.created_at.to_le_bytes());
    out.extend_from_slice(&u32::try_from(entry.ttl_seconds).unwrap_or(u32::MAX).to_le_bytes());
    out.extend_from_slice(&u32::try_from(entry.rows).unwrap_or(u32::MAX).to_le_bytes());
    out.extend_from_slice(&entry.versions.unwrap_or_default().to_le_bytes());
    // Rollup names are model identifiers (at most 63 bytes).
    let source = entry.source.as_deref().unwrap_or_default().as_bytes();
    let source = &source[..source.len().min(u8::MAX as usize)];
    out.push(source.len() as u8);
    out.extend_from_slice(source);
    if let Some(total) = entry.total {
        out.extend_from_slice(&total.to_le_bytes());
    }
    out.extend_from_slice(&payload);
    out
}

/// Parses a stored entry. Anything unexpected is an error, which the cache
/// treats as a miss (and deletes), never as a failed request.
pub fn decode(bytes: &[u8], max_uncompressed: usize) -> Result<CachedData, DecodeError> {
    let snapshot = || -> Result<u64, DecodeError> {
        Ok(u64::from_le_bytes(
            bytes[20..28].try_into().map_err(|_| DecodeError::Truncated)?,
        ))
    };
    let (header_len, versions, source) = match bytes.get(..3) {
        Some(magic) if magic == MAGIC && bytes.len() >= HEADER_LEN => {
            let end = HEADER_LEN + usize::from(bytes[HEADER_LEN - 1]);
            let source = bytes.get(HEADER_LEN..end).ok_or(DecodeError::Truncated)?;
            let source = std::str::from_utf8(source).map_err(|_| DecodeError::BadMagic)?;
            (end, Some(snapshot()?), (!source.is_empty()).then(|| Arc::from(source)))
        }
        Some(magic) if magic == MAGIC_V2 && bytes.len() >= HEADER_LEN_V2 => (HEADER_LEN_V2, Some(snapshot()?), None),
        Some(magic) if magic == MAGIC_V1 && bytes.len() >= HEADER_LEN_V1 => (HEADER_LEN_V1, None, None),
        Some(magic) if magic == MAGIC || magic == MAGIC_V2 || magic == MAGIC_V1 => return Err(DecodeError::Truncated),
        Some(_) => return Err(DecodeError::BadMagic),
        None => return Err(DecodeError::Truncated),
    };
    let flags = bytes[3];
    let created_at = u64::from_le_bytes(bytes[4..12].try_into().map_err(|_| DecodeError::Truncated)?);
    let ttl = u32::from_le_bytes(bytes[12..16].try_into().map_err(|_| DecodeError::Truncated)?);
    let rows = u32::from_le_bytes(bytes[16..20].try_into().map_err(|_| DecodeError::Truncated)?);
    let (total, header_len) = if flags & FLAG_TOTAL != 0 && magic_is_current(bytes) {
        let total = bytes
            .get(header_len..header_len + 8)
            .and_then(|b| b.try_into().ok())
            .map(u64::from_le_bytes)
            .ok_or(DecodeError::Truncated)?;
        (Some(total), header_len + 8)
    } else {
        (None, header_len)
    };
    let payload = &bytes[header_len..];
    let data: Vec<u8> = if flags & FLAG_LZ4 != 0 {
        // Check the claimed size before allocating: a corrupt header must not
        // make us allocate gigabytes.
        let claimed = payload
            .get(..4)
            .and_then(|b| b.try_into().ok())
            .map(u32::from_le_bytes)
            .ok_or(DecodeError::Truncated)? as usize;
        if claimed > max_uncompressed {
            return Err(DecodeError::TooLarge(claimed));
        }
        lz4_flex::decompress_size_prepended(payload).map_err(|_| DecodeError::Decompress)?
    } else {
        payload.to_vec()
    };
    // A cheap shape check instead of a parse: enough to catch garbage and
    // truncation without paying for JSON decoding on every hit.
    if data.first() != Some(&b'[') || data.last() != Some(&b']') {
        return Err(DecodeError::NotAnArray);
    }
    Ok(CachedData {
        data: Bytes::from(data),
        rows: u64::from(rows),
        total,
        created_at,
        ttl_seconds: u64::from(ttl),
        versions,
        source,
        deps: None,
        deflated: None,
    })
}

fn magic_is_current(bytes: &[u8]) -> bool {
    bytes.get(..3) == Some(MAGIC.as_slice())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(data: &str) -> CachedData {
        CachedData {
            data: Bytes::copy_from_slice(data.as_bytes()),
            rows: 2,
            total: None,
            created_at: 1_700_000_000,
            ttl_seconds: 300,
            versions: Some(42),
            source: None,
            deps: None,
            deflated: None,
        }
    }

    #[test]
    fn the_source_round_trips_and_older_entries_read_as_raw() {
        let mut entry = sample("[1]");
        entry.source = Some(Arc::from("daily_store"));
        assert_eq!(decode(&encode(&entry, 1024), 1024), Ok(entry.clone()));
        let mut v2 = encode(&sample("[1]"), 1024);
        v2[..3].copy_from_slice(b"AQ2");
        v2.remove(HEADER_LEN - 1);
        let decoded = decode(&v2, 1024).expect("decodes");
        assert_eq!((decoded.source, decoded.versions), (None, Some(42)));
    }

    #[test]
    fn the_total_round_trips_compressed_or_not() {
        let mut small = sample("[1,2]");
        small.total = Some(1_234_567);
        assert_eq!(decode(&encode(&small, 1024), 1024), Ok(small.clone()));
        let mut large = sample(&format!("[{}]", "1,".repeat(5000) + "1"));
        large.total = Some(0);
        let encoded = encode(&large, 16);
        assert_eq!(encoded[3], FLAG_LZ4 | FLAG_TOTAL);
        assert_eq!(decode(&encoded, 1 << 20), Ok(large));
        let mut cut = encode(&small, 1024);
        cut.truncate(HEADER_LEN + 4);
        assert_eq!(decode(&cut, 1024), Err(DecodeError::Truncated));
    }

    #[test]
    fn small_entries_round_trip_uncompressed() {
        let entry = sample(r#"[{"a":1},{"a":2}]"#);
        let encoded = encode(&entry, 1024);
        assert_eq!(encoded[3], 0, "small payloads stay uncompressed");
        assert_eq!(decode(&encoded, 1 << 20), Ok(entry));
    }

    #[test]
    fn large_entries_round_trip_compressed() {
        let body = format!("[{}]", vec![r#"{"channel":"iFood","revenue":1234.5}"#; 2000].join(","));
        let entry = sample(&body);
        let encoded = encode(&entry, 1024);
        assert_eq!(encoded[3], FLAG_LZ4);
        assert!(encoded.len() < body.len() / 4, "repetitive JSON compresses well");
        assert_eq!(decode(&encoded, 1 << 20), Ok(entry));
    }

    #[test]
    fn older_entries_decode_without_a_snapshot() {
        let mut v1 = b"AQ1".to_vec();
        v1.push(0);
        v1.extend_from_slice(&1_700_000_000u64.to_le_bytes());
        v1.extend_from_slice(&300u32.to_le_bytes());
        v1.extend_from_slice(&1u32.to_le_bytes());
        v1.extend_from_slice(b"[1]");
        let decoded = decode(&v1, 1024).expect("decodes");
        assert_eq!(
            (decoded.versions, decoded.rows, &decoded.data[..]),
            (None, 1, &b"[1]"[..])
        );
    }

    #[test]
    fn garbage_and_truncation_are_errors_not_panics() {
        assert_eq!(decode(b"", 1024), Err(DecodeError::Truncated));
        assert_eq!(
            decode(b"definitely not a cache entry", 1024),
            Err(DecodeError::BadMagic)
        );
        let encoded = encode(&sample("[1,2]"), 1024);
        assert_eq!(
            decode(&encoded[..encoded.len() - 1], 1024),
            Err(DecodeError::NotAnArray)
        );
        let mut lying = encode(&sample(&format!("[{}]", "1,".repeat(5000) + "1")), 16);
        lying[HEADER_LEN..HEADER_LEN + 4].copy_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(decode(&lying, 1 << 20), Err(DecodeError::TooLarge(u32::MAX as usize)));
    }
}
