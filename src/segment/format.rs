//! Byte layout of L0 segment files: the only place that knows their offsets.
//!
//! A segment is a preallocated, zero-filled file that the log writer fills front to back
//! with records. Zero bytes after the last record mean "nothing written yet".
//!
//! ```text
//! segment header (64 bytes, little-endian)
//!    0   8  magic "LTXVSEG1"
//!    8   4  format version (1)
//!   12   4  reserved (0)
//!   16   8  segment id (also the file name)
//!   24   8  created, ms since the Unix epoch
//!   32  24  reserved (0)
//!   56   8  xxh3-64 of bytes 0..56
//!
//! record (starts 8-byte aligned; little-endian)
//!    0   4  magic "L0RC"
//!    4   1  kind (1 = an LTX file as uploaded, 2 = a tombstone; see below)
//!    5   1  cluster name length C (1..=128)
//!    6   1  database name length D (1..=128)
//!    7   1  reserved (0)
//!    8   8  sequence number (+1 per record across all segments)
//!   16   8  offset in this segment of the first record of this record's write batch
//!   24   8  min TXID
//!   32   8  max TXID
//!   40   8  LTX header timestamp (ms)
//!   48   8  effective timestamp (ms): the header's, made monotonic per database
//!   56   8  received (ms, wall clock)
//!   64   8  database checksum before (computed by the vault)
//!   72   8  database checksum after (computed by the vault)
//!   80   4  commit (pages)
//!   84   4  page size
//!   88   8  payload length P
//!   96   8  xxh3-64 of the payload
//!  104   8  xxh3-64 of bytes 0..104 followed by the names
//!  112   C  cluster name
//!  112+C D  database name
//!  …     P  payload: the LTX file exactly as received
//!  …        zero padding to the next multiple of 8
//! ```
//!
//! A tombstone (kind 2) deletes a database: every record of the same cluster and database
//! earlier in the log (lower sequence number) is history the vault no longer has. It has no
//! payload (length 0). Its min and max TXID are both the last TXID of the history it
//! deletes, its commit, page size and checksum before are that history's last (for a human
//! reading the log), its checksum after is 0. A record of the same database after it
//! starts a new history at TXID 1.
//!
//! The header checksum lets recovery walk the log reading headers only; the payload
//! checksum is checked whenever a payload is read (and for the whole last segment at
//! open, where a crash may have torn a write). The batch offset tells a torn last batch
//! (never acknowledged, safe to cut) from damage to an earlier, acknowledged batch (the
//! open fails): see `recovery`.

use xxhash_rust::xxh3::{Xxh3, xxh3_64};

use crate::ltx::{Checksum, TxId};

/// First bytes of every segment file.
pub const SEGMENT_MAGIC: [u8; 8] = *b"LTXVSEG1";
/// Version of this layout.
pub const SEGMENT_VERSION: u32 = 1;

const SEG_MAGIC_OFFSET: usize = 0;
const SEG_VERSION_OFFSET: usize = SEG_MAGIC_OFFSET + SEGMENT_MAGIC.len();
const SEG_RESERVED_OFFSET: usize = SEG_VERSION_OFFSET + size_of::<u32>();
const SEG_ID_OFFSET: usize = SEG_RESERVED_OFFSET + size_of::<u32>();
const SEG_CREATED_OFFSET: usize = SEG_ID_OFFSET + size_of::<u64>();
const SEG_CHECKSUM_OFFSET: usize = SEG_CREATED_OFFSET + size_of::<i64>() + 24;
/// Size of the segment header; the first record starts here.
pub const SEGMENT_HEADER_SIZE: usize = SEG_CHECKSUM_OFFSET + size_of::<u64>();
const _: () = assert!(SEGMENT_HEADER_SIZE == 64);

/// First bytes of every record.
pub const RECORD_MAGIC: [u8; 4] = *b"L0RC";
/// Record kind: an uploaded LTX file.
pub const KIND_LTX: u8 = 1;
/// Record kind: a tombstone, the deletion of a database (no payload).
pub const KIND_TOMBSTONE: u8 = 2;
/// Longest cluster or database name.
pub const MAX_NAME_LEN: usize = 128;
/// Records start at multiples of this.
pub const RECORD_ALIGN: usize = 8;

const REC_MAGIC_OFFSET: usize = 0;
const REC_KIND_OFFSET: usize = REC_MAGIC_OFFSET + RECORD_MAGIC.len();
const REC_CLUSTER_LEN_OFFSET: usize = REC_KIND_OFFSET + 1;
const REC_DB_LEN_OFFSET: usize = REC_CLUSTER_LEN_OFFSET + 1;
const REC_RESERVED_OFFSET: usize = REC_DB_LEN_OFFSET + 1;
const REC_SEQ_OFFSET: usize = REC_RESERVED_OFFSET + 1;
const REC_BATCH_OFFSET: usize = REC_SEQ_OFFSET + size_of::<u64>();
const REC_MIN_TXID_OFFSET: usize = REC_BATCH_OFFSET + size_of::<u64>();
const REC_MAX_TXID_OFFSET: usize = REC_MIN_TXID_OFFSET + size_of::<u64>();
const REC_TIMESTAMP_OFFSET: usize = REC_MAX_TXID_OFFSET + size_of::<u64>();
const REC_EFFECTIVE_OFFSET: usize = REC_TIMESTAMP_OFFSET + size_of::<i64>();
const REC_RECEIVED_OFFSET: usize = REC_EFFECTIVE_OFFSET + size_of::<i64>();
const REC_PRE_OFFSET: usize = REC_RECEIVED_OFFSET + size_of::<i64>();
const REC_POST_OFFSET: usize = REC_PRE_OFFSET + size_of::<u64>();
const REC_COMMIT_OFFSET: usize = REC_POST_OFFSET + size_of::<u64>();
const REC_PAGE_SIZE_OFFSET: usize = REC_COMMIT_OFFSET + size_of::<u32>();
const REC_PAYLOAD_LEN_OFFSET: usize = REC_PAGE_SIZE_OFFSET + size_of::<u32>();
const REC_PAYLOAD_SUM_OFFSET: usize = REC_PAYLOAD_LEN_OFFSET + size_of::<u64>();
const REC_HEADER_SUM_OFFSET: usize = REC_PAYLOAD_SUM_OFFSET + size_of::<u64>();
/// Fixed part of a record header; the names follow it.
pub const RECORD_FIXED_SIZE: usize = REC_HEADER_SUM_OFFSET + size_of::<u64>();
const _: () = assert!(RECORD_FIXED_SIZE == 112);
const _: () =
    assert!(RECORD_FIXED_SIZE.is_multiple_of(RECORD_ALIGN) && SEGMENT_HEADER_SIZE.is_multiple_of(RECORD_ALIGN));

/// The segment header, decoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SegmentHeader {
    /// The segment's id: its place in the log.
    pub id: u64,
    /// When it was created (ms since the epoch).
    pub created_ms: i64,
}

impl SegmentHeader {
    /// Encodes the header with its checksum.
    pub fn encode(&self) -> [u8; SEGMENT_HEADER_SIZE] {
        let mut b = [0u8; SEGMENT_HEADER_SIZE];
        b[SEG_MAGIC_OFFSET..SEG_VERSION_OFFSET].copy_from_slice(&SEGMENT_MAGIC);
        b[SEG_VERSION_OFFSET..SEG_RESERVED_OFFSET].copy_from_slice(&SEGMENT_VERSION.to_le_bytes());
        b[SEG_ID_OFFSET..SEG_CREATED_OFFSET].copy_from_slice(&self.id.to_le_bytes());
        b[SEG_CREATED_OFFSET..SEG_CREATED_OFFSET + 8].copy_from_slice(&self.created_ms.to_le_bytes());
        let sum = xxh3_64(&b[..SEG_CHECKSUM_OFFSET]);
        b[SEG_CHECKSUM_OFFSET..].copy_from_slice(&sum.to_le_bytes());
        b
    }

    /// Decodes and checks a header; the error says which check failed.
    pub fn decode(bytes: &[u8]) -> Result<SegmentHeader, String> {
        let b = bytes.get(..SEGMENT_HEADER_SIZE).ok_or("file shorter than a segment header")?;
        if b[SEG_MAGIC_OFFSET..SEG_VERSION_OFFSET] != SEGMENT_MAGIC {
            return Err("not a segment file (bad magic)".into());
        }
        if le_u64(b, SEG_CHECKSUM_OFFSET) != xxh3_64(&b[..SEG_CHECKSUM_OFFSET]) {
            return Err("segment header checksum mismatch".into());
        }
        let version = le_u32(b, SEG_VERSION_OFFSET);
        if version != SEGMENT_VERSION {
            return Err(format!("segment format version {version}, this build reads {SEGMENT_VERSION}"));
        }
        let reserved = [SEG_RESERVED_OFFSET..SEG_ID_OFFSET, SEG_CREATED_OFFSET + 8..SEG_CHECKSUM_OFFSET];
        if reserved.into_iter().any(|r| b[r].iter().any(|&x| x != 0)) {
            return Err("segment header reserved bytes are not zero".into());
        }
        Ok(SegmentHeader { id: le_u64(b, SEG_ID_OFFSET), created_ms: le_u64(b, SEG_CREATED_OFFSET) as i64 })
    }
}

/// What a record says about its payload, without the payload.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecordHeader {
    /// Record kind (`KIND_LTX` or `KIND_TOMBSTONE`).
    pub kind: u8,
    /// Log sequence number.
    pub seq: u64,
    /// Offset of the first record of the write batch this record was written in.
    pub batch_offset: u64,
    /// Cluster name.
    pub cluster: String,
    /// Database name.
    pub db: String,
    /// First TXID of the LTX file.
    pub min_txid: TxId,
    /// Last TXID of the LTX file.
    pub max_txid: TxId,
    /// The LTX header's timestamp.
    pub timestamp_ms: i64,
    /// The timestamp made monotonic per database.
    pub effective_ms: i64,
    /// Wall-clock time of arrival.
    pub received_ms: i64,
    /// Database checksum before the file (computed by the vault).
    pub pre_apply: Checksum,
    /// Database checksum after the file (computed by the vault).
    pub post_apply: Checksum,
    /// Database size in pages after the file.
    pub commit: u32,
    /// Page size.
    pub page_size: u32,
    /// Payload length.
    pub payload_len: u64,
    /// xxh3-64 of the payload.
    pub payload_xxh3: u64,
}

impl RecordHeader {
    /// Bytes of the header including names.
    pub fn header_len(&self) -> usize {
        RECORD_FIXED_SIZE + self.cluster.len() + self.db.len()
    }

    /// Bytes the whole record takes in the segment, padding included.
    pub fn record_len(&self) -> u64 {
        align_up(self.header_len() as u64 + self.payload_len)
    }

    /// Encodes the header (fixed part and names); the payload is written after it.
    pub fn encode(&self) -> Vec<u8> {
        assert!(
            (1..=MAX_NAME_LEN).contains(&self.cluster.len()) && (1..=MAX_NAME_LEN).contains(&self.db.len()),
            "names are validated before they reach the log"
        );
        let mut b = vec![0u8; self.header_len()];
        b[REC_MAGIC_OFFSET..REC_KIND_OFFSET].copy_from_slice(&RECORD_MAGIC);
        b[REC_KIND_OFFSET] = self.kind;
        b[REC_CLUSTER_LEN_OFFSET] = self.cluster.len() as u8;
        b[REC_DB_LEN_OFFSET] = self.db.len() as u8;
        let mut put = |offset: usize, v: u64| b[offset..offset + 8].copy_from_slice(&v.to_le_bytes());
        put(REC_SEQ_OFFSET, self.seq);
        put(REC_BATCH_OFFSET, self.batch_offset);
        put(REC_MIN_TXID_OFFSET, self.min_txid.0);
        put(REC_MAX_TXID_OFFSET, self.max_txid.0);
        put(REC_TIMESTAMP_OFFSET, self.timestamp_ms as u64);
        put(REC_EFFECTIVE_OFFSET, self.effective_ms as u64);
        put(REC_RECEIVED_OFFSET, self.received_ms as u64);
        put(REC_PRE_OFFSET, self.pre_apply.0);
        put(REC_POST_OFFSET, self.post_apply.0);
        put(REC_PAYLOAD_LEN_OFFSET, self.payload_len);
        put(REC_PAYLOAD_SUM_OFFSET, self.payload_xxh3);
        b[REC_COMMIT_OFFSET..REC_COMMIT_OFFSET + 4].copy_from_slice(&self.commit.to_le_bytes());
        b[REC_PAGE_SIZE_OFFSET..REC_PAGE_SIZE_OFFSET + 4].copy_from_slice(&self.page_size.to_le_bytes());
        let names_at = RECORD_FIXED_SIZE;
        b[names_at..names_at + self.cluster.len()].copy_from_slice(self.cluster.as_bytes());
        b[names_at + self.cluster.len()..].copy_from_slice(self.db.as_bytes());
        let sum = header_checksum(&b);
        b[REC_HEADER_SUM_OFFSET..REC_HEADER_SUM_OFFSET + 8].copy_from_slice(&sum.to_le_bytes());
        b
    }

    /// Decodes and checks the record header at the start of `bytes` (which runs to the end
    /// of the segment). `Ok(None)` means zeros: no record here. The payload is not checked.
    pub fn decode(bytes: &[u8]) -> Result<Option<RecordHeader>, String> {
        let Some(fixed) = bytes.get(..RECORD_FIXED_SIZE) else {
            return if bytes.iter().all(|&b| b == 0) {
                Ok(None)
            } else {
                Err("record header runs past the end of the segment".into())
            };
        };
        if fixed[REC_MAGIC_OFFSET..REC_KIND_OFFSET] == [0; 4] {
            return if fixed.iter().all(|&b| b == 0) { Ok(None) } else { Err("record magic is zero".into()) };
        }
        if fixed[REC_MAGIC_OFFSET..REC_KIND_OFFSET] != RECORD_MAGIC {
            return Err("bad record magic".into());
        }
        let cluster_len = fixed[REC_CLUSTER_LEN_OFFSET] as usize;
        let db_len = fixed[REC_DB_LEN_OFFSET] as usize;
        let header_len = RECORD_FIXED_SIZE + cluster_len + db_len;
        let header = bytes.get(..header_len).ok_or("record names run past the end of the segment")?;
        if le_u64(header, REC_HEADER_SUM_OFFSET) != header_checksum(header) {
            return Err("record header checksum mismatch".into());
        }
        let name = |range: std::ops::Range<usize>| {
            std::str::from_utf8(&header[range]).map(str::to_owned).map_err(|_| "record name is not UTF-8".to_string())
        };
        let record = RecordHeader {
            kind: fixed[REC_KIND_OFFSET],
            seq: le_u64(fixed, REC_SEQ_OFFSET),
            batch_offset: le_u64(fixed, REC_BATCH_OFFSET),
            cluster: name(RECORD_FIXED_SIZE..RECORD_FIXED_SIZE + cluster_len)?,
            db: name(RECORD_FIXED_SIZE + cluster_len..header_len)?,
            min_txid: TxId(le_u64(fixed, REC_MIN_TXID_OFFSET)),
            max_txid: TxId(le_u64(fixed, REC_MAX_TXID_OFFSET)),
            timestamp_ms: le_u64(fixed, REC_TIMESTAMP_OFFSET) as i64,
            effective_ms: le_u64(fixed, REC_EFFECTIVE_OFFSET) as i64,
            received_ms: le_u64(fixed, REC_RECEIVED_OFFSET) as i64,
            pre_apply: Checksum(le_u64(fixed, REC_PRE_OFFSET)),
            post_apply: Checksum(le_u64(fixed, REC_POST_OFFSET)),
            commit: le_u32(fixed, REC_COMMIT_OFFSET),
            page_size: le_u32(fixed, REC_PAGE_SIZE_OFFSET),
            payload_len: le_u64(fixed, REC_PAYLOAD_LEN_OFFSET),
            payload_xxh3: le_u64(fixed, REC_PAYLOAD_SUM_OFFSET),
        };
        if fixed[REC_RESERVED_OFFSET] != 0 {
            return Err("record reserved byte is not zero".into());
        }
        if record.kind != KIND_LTX && record.kind != KIND_TOMBSTONE {
            return Err(format!("unknown record kind {}", record.kind));
        }
        if record.kind == KIND_TOMBSTONE && record.payload_len != 0 {
            return Err(format!("tombstone with a payload of {} bytes", record.payload_len));
        }
        if cluster_len == 0 || db_len == 0 || cluster_len > MAX_NAME_LEN || db_len > MAX_NAME_LEN {
            return Err("record name length out of range".into());
        }
        // Against the room left, not through `record_len`: header length + a payload length
        // near 2^64 would overflow. Within the room, the padded length fits a u64.
        if record.payload_len > (bytes.len() - header_len) as u64 || (bytes.len() as u64) < record.record_len() {
            return Err(format!(
                "record of {header_len} + {} bytes runs past the end of the segment",
                record.payload_len
            ));
        }
        Ok(Some(record))
    }

    /// The payload of this record, given the bytes starting at the record, with its
    /// checksum verified.
    pub fn payload<'a>(&self, record: &'a [u8]) -> Result<&'a [u8], String> {
        let start = self.header_len();
        let payload =
            record.get(start..start + self.payload_len as usize).ok_or("payload runs past the end of the segment")?;
        let sum = xxh3_64(payload);
        if sum != self.payload_xxh3 {
            return Err(format!("payload checksum mismatch (stored {:016x}, computed {sum:016x})", self.payload_xxh3));
        }
        Ok(payload)
    }
}

/// Rewrites, in place, the checksums of a segment image: the segment header's, then each
/// record's payload and header checksums, walking records as recovery would (from the
/// first one, while a record magic starts the next slot and its header fits). For fuzzing
/// only: mutated bytes would otherwise die at the first checksum and never reach the
/// checks behind it. Stops at the first record it cannot place.
#[doc(hidden)]
pub fn reseal(segment: &mut [u8]) {
    if segment.len() < SEGMENT_HEADER_SIZE {
        return;
    }
    let sum = xxh3_64(&segment[..SEG_CHECKSUM_OFFSET]);
    segment[SEG_CHECKSUM_OFFSET..SEGMENT_HEADER_SIZE].copy_from_slice(&sum.to_le_bytes());
    let mut offset = SEGMENT_HEADER_SIZE;
    while let Some(fixed) = segment.get(offset..offset + RECORD_FIXED_SIZE) {
        if fixed[REC_MAGIC_OFFSET..REC_KIND_OFFSET] != RECORD_MAGIC {
            return;
        }
        let header_len = RECORD_FIXED_SIZE + fixed[REC_CLUSTER_LEN_OFFSET] as usize + fixed[REC_DB_LEN_OFFSET] as usize;
        let payload_len = le_u64(fixed, REC_PAYLOAD_LEN_OFFSET);
        let Some(header_end) = offset.checked_add(header_len).filter(|&end| end <= segment.len()) else { return };
        let payload_end = usize::try_from(payload_len)
            .ok()
            .and_then(|n| header_end.checked_add(n))
            .filter(|&end| end <= segment.len());
        if let Some(payload_end) = payload_end {
            let sum = xxh3_64(&segment[header_end..payload_end]);
            let at = offset + REC_PAYLOAD_SUM_OFFSET;
            segment[at..at + 8].copy_from_slice(&sum.to_le_bytes());
        }
        let sum = header_checksum(&segment[offset..header_end]);
        let at = offset + REC_HEADER_SUM_OFFSET;
        segment[at..at + 8].copy_from_slice(&sum.to_le_bytes());
        let Some(end) = payload_end else { return };
        offset = end.next_multiple_of(RECORD_ALIGN);
    }
}

/// Rounds up to the record alignment.
pub fn align_up(n: u64) -> u64 {
    n.div_ceil(RECORD_ALIGN as u64) * RECORD_ALIGN as u64
}

fn header_checksum(header: &[u8]) -> u64 {
    let mut h = Xxh3::new();
    h.update(&header[..REC_HEADER_SUM_OFFSET]);
    h.update(&header[RECORD_FIXED_SIZE..]);
    h.digest()
}

/// Little-endian u64 at `offset`; callers check the bounds first.
pub(crate) fn le_u64(b: &[u8], offset: usize) -> u64 {
    u64::from_le_bytes(b[offset..offset + 8].try_into().unwrap_or_default())
}

/// Little-endian u32 at `offset`; callers check the bounds first.
pub(crate) fn le_u32(b: &[u8], offset: usize) -> u32 {
    u32::from_le_bytes(b[offset..offset + 4].try_into().unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> RecordHeader {
        RecordHeader {
            kind: KIND_LTX,
            seq: 42,
            batch_offset: 64,
            cluster: "prod".into(),
            db: "app.db".into(),
            min_txid: TxId(5),
            max_txid: TxId(7),
            timestamp_ms: 1_700_000_000_000,
            effective_ms: 1_700_000_000_001,
            received_ms: 1_700_000_000_002,
            pre_apply: Checksum(0x8000_0000_0000_0001),
            post_apply: Checksum(0x8000_0000_0000_0002),
            commit: 9,
            page_size: 4096,
            payload_len: 13,
            payload_xxh3: xxh3_64(b"payload bytes"),
        }
    }

    #[test]
    fn record_round_trips_and_every_header_byte_is_covered() {
        let rec = sample();
        let mut bytes = rec.encode();
        bytes.extend_from_slice(b"payload bytes");
        bytes.resize(rec.record_len() as usize, 0);
        assert_eq!(RecordHeader::decode(&bytes), Ok(Some(rec.clone())));
        assert_eq!(rec.payload(&bytes), Ok(&b"payload bytes"[..]));
        for i in 0..rec.header_len() {
            let mut bad = bytes.clone();
            bad[i] ^= 0x10;
            assert!(RecordHeader::decode(&bad).is_err(), "flip at {i} detected");
        }
        let mut bad = bytes.clone();
        bad[rec.header_len() + 3] ^= 1;
        assert!(rec.payload(&bad).is_err());
    }

    #[test]
    fn tombstones_round_trip_and_carry_no_payload() {
        let rec = RecordHeader { kind: KIND_TOMBSTONE, payload_len: 0, payload_xxh3: xxh3_64(b""), ..sample() };
        let mut bytes = rec.encode();
        bytes.resize(rec.record_len() as usize + 64, 0);
        assert_eq!(RecordHeader::decode(&bytes), Ok(Some(rec.clone())));
        assert_eq!(rec.payload(&bytes), Ok(&b""[..]));
        let with_payload = RecordHeader { payload_len: 8, ..rec.clone() };
        let mut bytes = with_payload.encode();
        bytes.resize(with_payload.record_len() as usize, 0);
        assert!(RecordHeader::decode(&bytes).unwrap_err().contains("tombstone with a payload"));
        let unknown = RecordHeader { kind: 3, ..rec };
        let mut bytes = unknown.encode();
        bytes.resize(unknown.record_len() as usize, 0);
        assert!(RecordHeader::decode(&bytes).unwrap_err().contains("unknown record kind 3"));
    }

    #[test]
    fn zeros_are_no_record() {
        assert_eq!(RecordHeader::decode(&[0; 200]), Ok(None));
        assert_eq!(RecordHeader::decode(&[0; 5]), Ok(None));
        assert!(RecordHeader::decode(&[0, 0, 0, 0, 1]).is_err());
    }

    #[test]
    fn segment_header_round_trips() {
        let h = SegmentHeader { id: 7, created_ms: 123 };
        let bytes = h.encode();
        assert_eq!(SegmentHeader::decode(&bytes), Ok(h));
        let mut bad = bytes;
        bad[20] ^= 1;
        assert!(SegmentHeader::decode(&bad).is_err());
    }
}
