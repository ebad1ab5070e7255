//! Importing history from elsewhere: a Litestream 0.5 file replica.
//!
//! A replica holds `ltx/<level>/<min>-<max>.ltx`: level 0 has one file per Litestream
//! sync, levels 1..8 compactions of the level below, level 9 full snapshots. To keep every
//! restore point the replica has, the import walks the TXIDs from the vault's current
//! position and at each step takes the file that starts right there from the lowest level
//! that has one: level 0 while it lasts (every transaction a point), a compaction where
//! Litestream's own retention removed the level-0 files. Each file goes through the normal
//! ingest path, fully verified, with the vault computing the database checksums Litestream
//! leaves out.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::ingest::Payload;
use crate::io::MappedFile;
use crate::ltx::{TxId, parse_file_name};
use crate::vault::Vault;

/// What an import did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImportReport {
    /// Files ingested.
    pub files: usize,
    /// Bytes ingested.
    pub bytes: u64,
    /// First and last TXID imported (`None` if nothing was new).
    pub range: Option<(TxId, TxId)>,
    /// TXIDs after the last imported one that the replica has no continuation for, if the
    /// walk stopped at a gap rather than at the end.
    pub stopped_at_gap: Option<TxId>,
}

/// Imports a Litestream 0.5 replica directory into `cluster`/`db`, calling `progress` with
/// (files done, files planned) after each file.
pub fn import_litestream(
    vault: &Vault,
    cluster: &str,
    db: &str,
    replica: &Path,
    mut progress: impl FnMut(usize, usize),
) -> Result<ImportReport> {
    let ltx_dir = replica.join("ltx");
    let levels = std::fs::read_dir(&ltx_dir).map_err(|e| {
        Error::io(format!("read {} (a Litestream 0.5 replica has an ltx/<level>/ tree)", ltx_dir.display()), e)
    })?;
    // For each start TXID, the files starting there by level (lowest first).
    let mut by_start: BTreeMap<u64, BTreeMap<u32, (TxId, PathBuf)>> = BTreeMap::new();
    let mut newest = 0;
    for level in levels {
        let level = level.map_err(|e| Error::io(format!("read {}", ltx_dir.display()), e))?;
        let Some(number) = level.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else { continue };
        let files =
            std::fs::read_dir(level.path()).map_err(|e| Error::io(format!("read {}", level.path().display()), e))?;
        for file in files {
            let file = file.map_err(|e| Error::io(format!("read {}", level.path().display()), e))?;
            let Some((min, max)) = file.file_name().to_str().and_then(parse_file_name) else { continue };
            newest = newest.max(max.0);
            by_start.entry(min.0).or_default().entry(number).or_insert((max, file.path()));
        }
    }
    let mut position = vault.position(cluster, db).map_or(TxId::ZERO, |(p, _)| p.txid);
    let mut chain = Vec::new();
    while let Some((_, (max, path))) =
        position.0.checked_add(1).and_then(|next| by_start.get(&next)).and_then(|l| l.iter().next())
    {
        chain.push(path.clone());
        position = *max;
    }
    let first = chain.first().map(|_| vault.position(cluster, db).map_or(TxId(1), |(p, _)| TxId(p.txid.0 + 1)));
    let mut report = ImportReport {
        files: 0,
        bytes: 0,
        range: first.map(|f| (f, position)),
        stopped_at_gap: (position.0 < newest).then_some(TxId(position.0 + 1)),
    };
    if chain.is_empty() && vault.position(cluster, db).is_none() {
        return Err(Error::Invalid(format!(
            "{} has no file starting at TXID 1 at any level: nothing to start the database from",
            replica.display()
        )));
    }
    for (i, path) in chain.iter().enumerate() {
        let map = MappedFile::open(path)?;
        let len = map.len() as u64;
        vault.ingest(cluster, db, Payload::new(map)).map_err(|e| e.in_file(path))?;
        report.files += 1;
        report.bytes += len;
        progress(i + 1, chain.len());
    }
    Ok(report)
}
