//! The page-checksum map of one database: 8 bytes per page, the page's LTX page checksum
//! (`1<<63 | crc64(u32be(pgno) ‖ page)`), in an mmap'ed file.
//!
//! It lets ingest check an upload's post-apply checksum in O(pages changed): the new
//! database checksum is the old one XOR the old and new checksums of the changed pages
//! (and XOR the dropped pages' on a shrink), without reading a single old page.
//!
//! The map is derived data: the log is the truth. It is written through the mmap without
//! a sync per upload; a header flag says whether the entries are known to match a given
//! position. The flag is cleared (and the header synced) before the first change after a
//! clean point, and set again only after all entries are synced. At open, a map that is
//! not clean at exactly the catalog's position, or whose entries fail their checksum, is
//! rebuilt from the log. A map that fails a check no crash can explain (a header that
//! fails its checksum, entries that fail theirs while the header says clean) is damage:
//! it is rebuilt all the same, and [`PageSums::damage_at_open`] says what was found, so
//! that `verify` reports the disk that flipped the bits.
//!
//! ```text
//! header (512 bytes, little-endian)
//!    0   8  magic "LTXVSUM1"
//!    8   4  version (1)
//!   12   4  page size
//!   16   4  entries (the database's commit)
//!   20   1  clean (1 = entries match txid/checksum below)
//!   24   8  txid the entries reflect (when clean)
//!   32   8  database checksum at that txid
//!   40   8  xxh3-64 of the entries (when clean)
//!   48   1  cluster name length C
//!   49   1  database name length D
//!   50   C+D names (for a human reading the directory; the file name is a hash)
//!  504   8  xxh3-64 of bytes 0..504
//! entries: u64 LE at 512 + (pgno - 1) * 8
//! ```

use std::fs::File;
use std::path::{Path, PathBuf};

use memmap2::MmapMut;
use xxhash_rust::xxh3::xxh3_64;

use crate::error::{Error, Result};
use crate::io::Fs;
use crate::ltx::{Checksum, PageNo, TxId};
use crate::segment::format::{le_u32, le_u64};

const MAGIC: [u8; 8] = *b"LTXVSUM1";
const VERSION: u32 = 1;
const HEADER_SIZE: usize = 512;
const MAGIC_OFFSET: usize = 0;
const VERSION_OFFSET: usize = MAGIC_OFFSET + MAGIC.len();
const PAGE_SIZE_OFFSET: usize = VERSION_OFFSET + 4;
const ENTRIES_OFFSET: usize = PAGE_SIZE_OFFSET + 4;
const CLEAN_OFFSET: usize = ENTRIES_OFFSET + 4;
const TXID_OFFSET: usize = CLEAN_OFFSET + 4;
const CHECKSUM_OFFSET: usize = TXID_OFFSET + 8;
const ENTRIES_SUM_OFFSET: usize = CHECKSUM_OFFSET + 8;
const CLUSTER_LEN_OFFSET: usize = ENTRIES_SUM_OFFSET + 8;
const DB_LEN_OFFSET: usize = CLUSTER_LEN_OFFSET + 1;
const NAMES_OFFSET: usize = DB_LEN_OFFSET + 1;
const HEADER_SUM_OFFSET: usize = HEADER_SIZE - 8;
const _: () = assert!(NAMES_OFFSET + 2 * crate::segment::format::MAX_NAME_LEN <= HEADER_SUM_OFFSET);
const ENTRY_SIZE: usize = 8;
const MIN_CAPACITY: usize = 1024;

/// What a clean map vouches for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CleanPoint {
    /// The position the entries reflect.
    pub txid: TxId,
    /// The database checksum there.
    pub checksum: Checksum,
    /// Page size of the database.
    pub page_size: u32,
    /// Number of pages (commit).
    pub entries: u32,
}

/// One database's page-checksum map; see the module docs.
pub struct PageSums {
    fs: Fs,
    file: File,
    map: MmapMut,
    path: PathBuf,
    entries: u32,
    clean: bool,
    /// Damage found when the map was opened (see the module docs).
    damage: Option<String>,
}

impl PageSums {
    /// Opens (or creates) the map at `path`. Returns the clean point when the header is
    /// intact, marked clean, and the entries match their checksum; `None` means rebuild.
    pub fn open(fs: &Fs, path: &Path, cluster: &str, db: &str) -> Result<(PageSums, Option<CleanPoint>)> {
        let file = fs.open_rw(path, true)?;
        let len = file.metadata().map_err(|e| Error::io(format!("stat {}", path.display()), e))?.len() as usize;
        let mut sums = PageSums {
            map: map_file(fs, &file, path, len.max(HEADER_SIZE))?,
            fs: fs.clone(),
            file,
            path: path.into(),
            entries: 0,
            clean: false,
            damage: None,
        };
        if len < HEADER_SIZE {
            if len > 0 {
                sums.damage = Some(format!("{len} bytes, shorter than the {HEADER_SIZE}-byte header"));
            }
            sums.init_header(cluster, db, 0);
            return Ok((sums, None));
        }
        let (clean, damage) = match sums.read_clean_point() {
            Ok(clean) => (clean, None),
            Err(damage) => (None, Some(damage)),
        };
        if clean.is_none() {
            sums.init_header(cluster, db, 0);
        } else {
            sums.entries = clean.map_or(0, |c| c.entries);
            sums.clean = true;
        }
        sums.damage = damage;
        Ok((sums, clean))
    }

    /// The clean point the header vouches for: `Ok(None)` when there is none (a new map,
    /// one left dirty by a crash, another format version), `Err` when the map is damaged.
    fn read_clean_point(&self) -> std::result::Result<Option<CleanPoint>, String> {
        let h = &self.map[..HEADER_SIZE];
        if h.iter().all(|&b| b == 0) {
            return Ok(None); // created, never written back
        }
        if h[..VERSION_OFFSET] != MAGIC {
            return Err("not a page-checksum map (bad magic)".into());
        }
        if le_u64(h, HEADER_SUM_OFFSET) != xxh3_64(&h[..HEADER_SUM_OFFSET]) {
            return Err("header checksum mismatch".into());
        }
        if le_u32(h, VERSION_OFFSET) != VERSION || h[CLEAN_OFFSET] != 1 {
            return Ok(None);
        }
        let entries = le_u32(h, ENTRIES_OFFSET);
        let end = HEADER_SIZE + entries as usize * ENTRY_SIZE;
        let body = self
            .map
            .get(HEADER_SIZE..end)
            .ok_or_else(|| format!("the header says {entries} entries, the file holds fewer"))?;
        if xxh3_64(body) != le_u64(h, ENTRIES_SUM_OFFSET) {
            return Err(format!("the header says clean, but the {entries} entries fail their checksum"));
        }
        Ok(Some(CleanPoint {
            txid: TxId(le_u64(h, TXID_OFFSET)),
            checksum: Checksum(le_u64(h, CHECKSUM_OFFSET)),
            page_size: le_u32(h, PAGE_SIZE_OFFSET),
            entries,
        }))
    }

    /// What was wrong with the map when it was opened (it was rebuilt since), if anything.
    pub fn damage_at_open(&self) -> Option<&str> {
        self.damage.as_deref()
    }

    /// Checks the map as it is now: the header's magic and checksum, and, when the header
    /// says clean, the entries' checksum. (Whether the entries add up to the database's
    /// checksum is the caller's check: see [`PageSums::database_checksum`].)
    pub fn verify(&self) -> std::result::Result<(), String> {
        let h = &self.map[..HEADER_SIZE];
        if h[..VERSION_OFFSET] != MAGIC {
            return Err("not a page-checksum map (bad magic)".into());
        }
        if le_u64(h, HEADER_SUM_OFFSET) != xxh3_64(&h[..HEADER_SUM_OFFSET]) {
            return Err("header checksum mismatch".into());
        }
        if le_u32(h, ENTRIES_OFFSET) != self.entries && h[CLEAN_OFFSET] == 1 {
            return Err(format!(
                "the header says {} entries, the map holds {}",
                le_u32(h, ENTRIES_OFFSET),
                self.entries
            ));
        }
        if h[CLEAN_OFFSET] == 1 {
            let end = HEADER_SIZE + self.entries as usize * ENTRY_SIZE;
            if xxh3_64(&self.map[HEADER_SIZE..end]) != le_u64(h, ENTRIES_SUM_OFFSET) {
                return Err(format!("the header says clean, but the {} entries fail their checksum", self.entries));
            }
        }
        Ok(())
    }

    fn init_header(&mut self, cluster: &str, db: &str, page_size: u32) {
        let h = &mut self.map[..HEADER_SIZE];
        h.fill(0);
        h[..VERSION_OFFSET].copy_from_slice(&MAGIC);
        h[VERSION_OFFSET..VERSION_OFFSET + 4].copy_from_slice(&VERSION.to_le_bytes());
        h[PAGE_SIZE_OFFSET..PAGE_SIZE_OFFSET + 4].copy_from_slice(&page_size.to_le_bytes());
        h[CLUSTER_LEN_OFFSET] = cluster.len() as u8;
        h[DB_LEN_OFFSET] = db.len() as u8;
        h[NAMES_OFFSET..NAMES_OFFSET + cluster.len()].copy_from_slice(cluster.as_bytes());
        h[NAMES_OFFSET + cluster.len()..NAMES_OFFSET + cluster.len() + db.len()].copy_from_slice(db.as_bytes());
        self.entries = 0;
        self.clean = false;
        self.seal_header();
    }

    fn seal_header(&mut self) {
        let sum = xxh3_64(&self.map[..HEADER_SUM_OFFSET]);
        self.map[HEADER_SUM_OFFSET..HEADER_SIZE].copy_from_slice(&sum.to_le_bytes());
    }

    /// Pages in the map (the database's commit).
    pub fn entries(&self) -> u32 {
        self.entries
    }

    /// The map's file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The checksum of page `pgno`, or `None` above the current size.
    pub fn get(&self, pgno: PageNo) -> Option<Checksum> {
        (pgno.0 >= 1 && pgno.0 <= self.entries).then(|| {
            let at = HEADER_SIZE + (pgno.0 as usize - 1) * ENTRY_SIZE;
            Checksum(le_u64(&self.map, at))
        })
    }

    /// Does the I/O a change to `commit` pages needs (clearing the clean flag, growing the
    /// file and allocating its blocks), so that the change itself ([`resize`](Self::resize),
    /// [`set`](Self::set)) then cannot fail: ingest calls it before it commits to an upload,
    /// and a disk without the room refuses the upload there.
    pub fn reserve(&mut self, commit: u32) -> Result<()> {
        self.ensure_dirty()?;
        let needed = HEADER_SIZE + commit as usize * ENTRY_SIZE;
        if needed > self.map.len() {
            let capacity = (commit as usize).max(MIN_CAPACITY).next_power_of_two();
            self.map = map_file(&self.fs, &self.file, &self.path, HEADER_SIZE + capacity * ENTRY_SIZE)?;
        }
        Ok(())
    }

    /// Makes the map hold `commit` pages: new entries are zero until set, dropped ones go.
    pub fn resize(&mut self, commit: u32) -> Result<()> {
        self.reserve(commit)?;
        let needed = HEADER_SIZE + commit as usize * ENTRY_SIZE;
        if commit < self.entries {
            self.map[needed..HEADER_SIZE + self.entries as usize * ENTRY_SIZE].fill(0);
        }
        self.entries = commit;
        Ok(())
    }

    /// Sets the checksum of a page within the current size.
    pub fn set(&mut self, pgno: PageNo, sum: Checksum) {
        assert!(pgno.0 >= 1 && pgno.0 <= self.entries, "page {pgno} outside the map ({} pages)", self.entries);
        debug_assert!(!self.clean, "ensure_dirty runs before any change");
        let at = HEADER_SIZE + (pgno.0 as usize - 1) * ENTRY_SIZE;
        self.map[at..at + ENTRY_SIZE].copy_from_slice(&sum.0.to_le_bytes());
    }

    /// Clears the clean flag durably before the first change after a clean point.
    pub fn ensure_dirty(&mut self) -> Result<()> {
        if !self.clean {
            return Ok(());
        }
        self.map[CLEAN_OFFSET] = 0;
        self.seal_header();
        self.fs.sync_map(&self.map, 0..HEADER_SIZE, &self.path)?;
        self.clean = false;
        Ok(())
    }

    /// Syncs the entries, then records that they reflect `txid` with database checksum
    /// `checksum`.
    pub fn mark_clean(&mut self, txid: TxId, checksum: Checksum, page_size: u32) -> Result<()> {
        let end = HEADER_SIZE + self.entries as usize * ENTRY_SIZE;
        let sum = xxh3_64(&self.map[HEADER_SIZE..end]);
        self.fs.sync_map(&self.map, 0..self.map.len(), &self.path)?;
        let h = &mut self.map[..HEADER_SIZE];
        h[PAGE_SIZE_OFFSET..PAGE_SIZE_OFFSET + 4].copy_from_slice(&page_size.to_le_bytes());
        h[ENTRIES_OFFSET..ENTRIES_OFFSET + 4].copy_from_slice(&self.entries.to_le_bytes());
        h[CLEAN_OFFSET] = 1;
        h[TXID_OFFSET..TXID_OFFSET + 8].copy_from_slice(&txid.0.to_le_bytes());
        h[CHECKSUM_OFFSET..CHECKSUM_OFFSET + 8].copy_from_slice(&checksum.0.to_le_bytes());
        h[ENTRIES_SUM_OFFSET..ENTRIES_SUM_OFFSET + 8].copy_from_slice(&sum.to_le_bytes());
        self.seal_header();
        self.fs.sync_map(&self.map, 0..HEADER_SIZE, &self.path)?;
        self.clean = true;
        Ok(())
    }

    /// The database checksum the entries add up to (every entry but the lock page's).
    pub fn database_checksum(&self, page_size: u32) -> Checksum {
        let lock = PageNo::lock_page(page_size);
        (1..=self.entries)
            .map(PageNo)
            .filter(|&p| p != lock)
            .fold(Checksum::EMPTY_DATABASE, |sum, p| sum.toggle(self.get(p).unwrap_or_default()))
    }
}

/// Maps the first `len` bytes of `file`, growing it if needed. Every block of them is
/// allocated first: a store through the map into a page with no block behind it would have
/// to allocate one, and on a full disk that is a SIGBUS that kills the process; allocated
/// up front, a full disk is an `ENOSPC` error here instead.
fn map_file(fs: &Fs, file: &File, path: &Path, len: usize) -> Result<MmapMut> {
    fs.allocate(file, 0, len as u64, path)?;
    // SAFETY: the vault holds an exclusive lock on its directory, and this map is the only
    // writer of the file within the process (it is owned by its database's state, behind
    // that database's mutex). The file is never truncated below the mapped length while
    // mapped: growing remaps first. Its blocks are allocated (above), so stores through the
    // map do not fault on a full disk.
    unsafe { memmap2::MmapOptions::new().len(len).map_mut(file) }
        .map_err(|e| Error::io(format!("mmap {}", path.display()), e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clean_point_survives_reopen_and_dirty_does_not() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.sums");
        let (mut sums, clean) = PageSums::open(&Fs::default(), &path, "c", "d").unwrap();
        assert_eq!(clean, None);
        sums.resize(3).unwrap();
        for p in 1..=3 {
            sums.set(PageNo(p), Checksum(Checksum::FLAG | p as u64));
        }
        let total = sums.database_checksum(4096);
        sums.mark_clean(TxId(9), total, 4096).unwrap();
        drop(sums);

        let (mut sums, clean) = PageSums::open(&Fs::default(), &path, "c", "d").unwrap();
        assert_eq!(clean, Some(CleanPoint { txid: TxId(9), checksum: total, page_size: 4096, entries: 3 }));
        assert_eq!(sums.get(PageNo(2)), Some(Checksum(Checksum::FLAG | 2)));
        assert_eq!(sums.get(PageNo(4)), None);
        sums.resize(5).unwrap();
        drop(sums);
        let (_, clean) = PageSums::open(&Fs::default(), &path, "c", "d").unwrap();
        assert_eq!(clean, None, "a change after the clean point makes the map untrusted");
    }

    #[test]
    fn a_flipped_entry_is_not_trusted() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.sums");
        let (mut sums, _) = PageSums::open(&Fs::default(), &path, "c", "d").unwrap();
        sums.resize(2).unwrap();
        sums.set(PageNo(1), Checksum(Checksum::FLAG | 5));
        sums.set(PageNo(2), Checksum(Checksum::FLAG | 6));
        sums.mark_clean(TxId(2), sums.database_checksum(512), 512).unwrap();
        drop(sums);
        let pristine = std::fs::read(&path).unwrap();
        let mut bytes = pristine.clone();
        bytes[HEADER_SIZE + 9] ^= 1;
        std::fs::write(&path, bytes).unwrap();
        let (sums, clean) = PageSums::open(&Fs::default(), &path, "c", "d").unwrap();
        assert_eq!(clean, None);
        assert!(sums.damage_at_open().unwrap().contains("entries fail their checksum"), "{:?}", sums.damage_at_open());
        assert_eq!(sums.verify(), Ok(()), "the map was started again");
        drop(sums);

        // A header byte: damage too.
        let mut bytes = pristine.clone();
        bytes[NAMES_OFFSET] ^= 1;
        std::fs::write(&path, bytes).unwrap();
        let (sums, _) = PageSums::open(&Fs::default(), &path, "c", "d").unwrap();
        assert_eq!(sums.damage_at_open(), Some("header checksum mismatch"));
        drop(sums);

        // A map left dirty (a crash after a change) is not damage, and neither is a new one.
        std::fs::write(&path, &pristine).unwrap();
        let (mut sums, clean) = PageSums::open(&Fs::default(), &path, "c", "d").unwrap();
        assert!(clean.is_some());
        sums.resize(3).unwrap();
        drop(sums);
        let (sums, clean) = PageSums::open(&Fs::default(), &path, "c", "d").unwrap();
        assert_eq!((clean, sums.damage_at_open()), (None, None));
        let (sums, _) = PageSums::open(&Fs::default(), &dir.path().join("new.sums"), "c", "d").unwrap();
        assert_eq!(sums.damage_at_open(), None);
    }

    #[test]
    fn verify_sees_a_byte_changed_under_a_clean_map() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.sums");
        let (mut sums, _) = PageSums::open(&Fs::default(), &path, "c", "d").unwrap();
        sums.resize(2).unwrap();
        sums.set(PageNo(1), Checksum(Checksum::FLAG | 5));
        sums.mark_clean(TxId(1), sums.database_checksum(512), 512).unwrap();
        assert_eq!(sums.verify(), Ok(()));
        // Another writer of the file (a disk, a stray process): the map sees the change.
        let file = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
        std::os::unix::fs::FileExt::write_all_at(&file, &[0xff], (HEADER_SIZE + 3) as u64).unwrap();
        assert!(sums.verify().unwrap_err().contains("entries fail their checksum"));
    }
}
