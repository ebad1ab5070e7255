//! L3: one full database image per database per day. An image is the plain SQLite file as
//! it was after its last transaction, so a restore starts from it with a kernel copy
//! (`copy_file_range`), followed by a 64-byte footer that says what it is:
//!
//! ```text
//! <vault>/levels/<hash of names>/L3-0000000000000001-<max txid>-<footer xxh3>.db
//!
//! footer (after commit × page size bytes of database):
//!   0  magic "LTXVIMG1"     8  page size u32    12  commit u32
//!  16  max TXID u64        24  timestamp ms i64 32  database checksum u64
//!  40  reserved (zero)     56  xxh3 of bytes 0..56
//! ```
//!
//! The footer's xxh3 is also in the file name, so opening a vault trusts an image's catalog
//! fields after reading 64 bytes of it. Its pages are checked through the database
//! checksum: when the image is made (against the checksum the vault recorded for its last
//! transaction) and at the end of every restore that starts from it.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;

use xxhash_rust::xxh3::xxh3_64;

use crate::catalog::{Run, Source};
use crate::error::{Error, Result};
use crate::io::Fs;
use crate::ltx::{Checksum, TxId, database_file_checksum};
use crate::restore::{self, Base, Input};

/// Bytes of the footer.
pub const FOOTER_SIZE: usize = 64;
const MAGIC: &[u8; 8] = b"LTXVIMG1";

/// What an image's footer records.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Footer {
    /// Page size.
    pub page_size: u32,
    /// Database size in pages.
    pub commit: u32,
    /// The last TXID the image holds.
    pub max_txid: TxId,
    /// Effective timestamp of that transaction, ms.
    pub timestamp_ms: i64,
    /// Database checksum of the image.
    pub checksum: Checksum,
}

impl Footer {
    /// The footer's bytes; the last eight are the xxh3 of the others.
    pub fn encode(&self) -> [u8; FOOTER_SIZE] {
        let mut b = [0u8; FOOTER_SIZE];
        b[0..8].copy_from_slice(MAGIC);
        b[8..12].copy_from_slice(&self.page_size.to_le_bytes());
        b[12..16].copy_from_slice(&self.commit.to_le_bytes());
        b[16..24].copy_from_slice(&self.max_txid.0.to_le_bytes());
        b[24..32].copy_from_slice(&self.timestamp_ms.to_le_bytes());
        b[32..40].copy_from_slice(&self.checksum.0.to_le_bytes());
        let sum = xxh3_64(&b[..56]);
        b[56..64].copy_from_slice(&sum.to_le_bytes());
        b
    }

    /// Decodes and checks a footer.
    pub fn decode(b: &[u8; FOOTER_SIZE]) -> std::result::Result<Footer, String> {
        let u64_at = |at: usize| u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"));
        let u32_at = |at: usize| u32::from_le_bytes(b[at..at + 4].try_into().expect("4 bytes"));
        if &b[0..8] != MAGIC {
            return Err("no image footer magic".into());
        }
        if xxh3_64(&b[..56]) != u64_at(56) {
            return Err("image footer checksum mismatch".into());
        }
        if b[40..56].iter().any(|&x| x != 0) {
            return Err("reserved footer bytes are not zero".into());
        }
        let footer = Footer {
            page_size: u32_at(8),
            commit: u32_at(12),
            max_txid: TxId(u64_at(16)),
            timestamp_ms: u64_at(24) as i64,
            checksum: Checksum(u64_at(32)),
        };
        if !footer.page_size.is_power_of_two() || !(512..=65536).contains(&footer.page_size) {
            return Err(format!("page size {} is not a power of two in 512..=65536", footer.page_size));
        }
        if footer.max_txid == TxId::ZERO {
            return Err("max TXID is zero".into());
        }
        Ok(footer)
    }

    /// Bytes of database before the footer.
    pub fn database_bytes(&self) -> u64 {
        u64::from(self.commit) * u64::from(self.page_size)
    }
}

/// File name of an image holding TXIDs 1..=`max`, with its footer's xxh3.
pub fn image_file_name(max: TxId, footer_sum: u64) -> String {
    format!("L3-{}-{max}-{footer_sum:016x}.db", TxId(1))
}

/// Reads an image's footer, checks it against the checksum its name carries and the file's
/// length, and makes its [`Run`]; also returns the page size.
pub fn load_image(path: &Path, name_sum: u64) -> Result<(Run, u32)> {
    let corrupt = |reason: String| Error::Corrupt { file: path.to_path_buf(), offset: 0, reason };
    let file = File::open(path).map_err(|e| Error::io(format!("open {}", path.display()), e))?;
    let len = file.metadata().map_err(|e| Error::io(format!("stat {}", path.display()), e))?.len();
    if len < FOOTER_SIZE as u64 {
        return Err(corrupt(format!("{len} bytes, too short for a database image")));
    }
    let mut bytes = [0u8; FOOTER_SIZE];
    file.read_exact_at(&mut bytes, len - FOOTER_SIZE as u64)
        .map_err(|e| Error::io(format!("read {}", path.display()), e))?;
    if u64::from_le_bytes(bytes[56..64].try_into().expect("8 bytes")) != name_sum {
        return Err(corrupt("footer does not match the checksum in the file name".into()));
    }
    let footer = Footer::decode(&bytes).map_err(corrupt)?;
    if footer.database_bytes() + FOOTER_SIZE as u64 != len {
        return Err(corrupt(format!(
            "{len} bytes, the footer says {} pages of {} bytes",
            footer.commit, footer.page_size
        )));
    }
    Ok((run_of(path, &footer, len), footer.page_size))
}

fn run_of(path: &Path, footer: &Footer, len: u64) -> Run {
    Run {
        level: 3,
        min_txid: TxId(1),
        max_txid: footer.max_txid,
        timestamp_ms: footer.timestamp_ms,
        commit: footer.commit,
        pre_apply: Checksum::NONE,
        post_apply: footer.checksum,
        bytes: len,
        source: Source::Image(path.to_path_buf()),
    }
}

/// Makes the image after `last` (the newest of `inputs`, oldest first, contiguous): copies
/// `base` (the previous image, if any), writes the inputs' changed pages over it, checks the
/// result's database checksum against the one recorded for `last`, and installs it
/// durably in `dir`. A mismatch is [`Error::Corrupt`] and leaves nothing behind.
pub fn write_image(
    fs: &Fs,
    dir: &Path,
    page_size: u32,
    base: Option<&Run>,
    inputs: &[Input],
    last: &Run,
) -> Result<Run> {
    let temp = fs.temp_file(&dir.join(format!("L3-{}-{}.db", TxId(1), last.max_txid)))?;
    let base_file = match base {
        Some(run) => {
            let path = run.path().ok_or_else(|| Error::Invalid("an image base must be a file".into()))?;
            Some(File::open(path).map_err(|e| Error::io(format!("open {}", path.display()), e))?)
        }
        None => None,
    };
    let base = base
        .zip(base_file.as_ref())
        .map(|(run, file)| Base { file, bytes: u64::from(run.commit) * u64::from(page_size) });
    restore::execute(fs, temp.file(), temp.path(), base, inputs, page_size, &mut |_| {})?;
    let footer = Footer {
        page_size,
        commit: last.commit,
        max_txid: last.max_txid,
        timestamp_ms: last.timestamp_ms,
        checksum: last.post_apply,
    };
    let computed = database_file_checksum(temp.path(), page_size)?;
    if computed != last.post_apply {
        return Err(Error::Corrupt {
            file: temp.path().to_path_buf(),
            offset: 0,
            reason: format!(
                "the image at TXID {} has database checksum {computed}, the vault recorded {}",
                last.max_txid, last.post_apply
            ),
        });
    }
    let bytes = footer.encode();
    temp.write_all_at(&bytes, footer.database_bytes())?;
    let sum = u64::from_le_bytes(bytes[56..64].try_into().expect("8 bytes"));
    let path = dir.join(image_file_name(last.max_txid, sum));
    temp.commit_to(&path)?;
    Ok(run_of(&path, &footer, footer.database_bytes() + FOOTER_SIZE as u64))
}

/// Parses an image file name: (max TXID, footer checksum).
pub fn parse_image_file_name(name: &str) -> Option<(TxId, u64)> {
    let rest = name.strip_prefix("L3-")?.strip_suffix(".db")?;
    let [min, max, sum] = crate::compact::parse_hex_fields(rest)?;
    (min == 1).then_some((TxId(max), sum))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn footers_round_trip_and_damage_is_caught() {
        let footer = Footer {
            page_size: 4096,
            commit: 7,
            max_txid: TxId(42),
            timestamp_ms: 1_800_000_000_000,
            checksum: Checksum(Checksum::FLAG | 5),
        };
        let bytes = footer.encode();
        assert_eq!(Footer::decode(&bytes), Ok(footer));
        for at in 0..FOOTER_SIZE {
            let mut bad = bytes;
            bad[at] ^= 0x10;
            assert!(Footer::decode(&bad).is_err(), "a flip at byte {at} went unnoticed");
        }
    }

    #[test]
    fn image_names_round_trip() {
        let name = image_file_name(TxId(300), 0xabc);
        assert_eq!(name, "L3-0000000000000001-000000000000012c-0000000000000abc.db");
        assert_eq!(parse_image_file_name(&name), Some((TxId(300), 0xabc)));
        assert_eq!(parse_image_file_name("L3-0000000000000002-000000000000012c-0000000000000abc.db"), None);
        assert_eq!(parse_image_file_name("L3-0000000000000001-000000000000012c.db"), None);
    }
}
