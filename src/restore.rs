//! Point-in-time restore: resolve a target to a stored point, plan the inputs, merge them
//! onto a file, verify the result.
//!
//! Targets are the latest state, a TXID, or a timestamp. A timestamp T means the state
//! after the last transaction whose (per-database monotonic) timestamp is <= T. Only the
//! end of a stored run is a restorable point: a TXID inside a run (an upload that carried
//! several transactions) is refused with the points around it, never rounded silently.
//!
//! Execution merges the planned runs oldest first with [`PageMerge`] in chunks of at most
//! [`MERGE_FAN_IN`] inputs, each chunk written onto the output and cut to its final Commit,
//! so memory stays flat however long the history is; every output page of a chunk is
//! written once.

use std::fs::File;
use std::os::unix::fs::FileExt;

use crate::catalog::Run;
use crate::error::{Error, Result};
use crate::ltx::{Checksum, Decoder, PageMerge, TxId};

/// Most runs merged at once.
pub const MERGE_FAN_IN: usize = 64;

/// What to restore to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target {
    /// The newest durable state.
    Latest,
    /// The state right after this TXID.
    TxId(TxId),
    /// The state after the last transaction with timestamp <= this (ms since the epoch).
    Timestamp(i64),
}

impl Target {
    /// Parses a timestamp given as RFC 3339 or as Unix milliseconds.
    pub fn parse_timestamp(text: &str) -> Result<i64> {
        if let Ok(ms) = text.parse::<i64>() {
            return Ok(ms);
        }
        chrono::DateTime::parse_from_rfc3339(text).map(|t| t.timestamp_millis()).map_err(|e| {
            Error::Invalid(format!(
                "timestamp \"{text}\" is neither RFC 3339 (2026-11-27T07:35:56.203Z) nor Unix milliseconds: {e}"
            ))
        })
    }
}

/// The inputs of a restore and what it will produce.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Plan {
    /// The TXID restored to.
    pub txid: TxId,
    /// Its database checksum.
    pub checksum: Checksum,
    /// Its timestamp (ms).
    pub timestamp_ms: i64,
    /// Database size in pages.
    pub commit: u32,
    /// The runs to merge, oldest first.
    pub inputs: Vec<Run>,
    /// Their payload bytes.
    pub bytes: u64,
}

/// Resolves `target` against a database's runs (oldest first) and picks the inputs: the
/// last snapshot at or before the point, and every run after it up to the point.
pub fn plan(runs: &[Run], target: Target) -> Result<Plan> {
    let (first, last) = match (runs.first(), runs.last()) {
        (Some(f), Some(l)) => (f, l),
        _ => return Err(Error::Invalid("the database has no stored history".into())),
    };
    let window = || {
        format!(
            "restorable points run from TXID {} ({}) to TXID {} ({})",
            first.max_txid,
            format_ms(first.timestamp_ms),
            last.max_txid,
            format_ms(last.timestamp_ms)
        )
    };
    let index = match target {
        Target::Latest => runs.len() - 1,
        Target::TxId(txid) => match runs.binary_search_by_key(&txid, |r| r.max_txid) {
            Ok(i) => i,
            Err(i) => {
                if let Some(run) = runs.get(i).filter(|r| r.min_txid <= txid) {
                    let before =
                        if run.min_txid.0 > 1 { format!("TXID {}", TxId(run.min_txid.0 - 1)) } else { "none".into() };
                    return Err(Error::Invalid(format!(
                        "TXID {txid} is inside the stored run {}..{}, which can only be restored as a whole; the nearest points are {before} and TXID {}",
                        run.min_txid, run.max_txid, run.max_txid
                    )));
                }
                return Err(Error::Invalid(format!("TXID {txid} is outside the retained history: {}", window())));
            }
        },
        Target::Timestamp(ms) => {
            let after = runs.partition_point(|r| r.timestamp_ms <= ms);
            if after == 0 {
                return Err(Error::Invalid(format!(
                    "timestamp {} is before the oldest restorable point: {}",
                    format_ms(ms),
                    window()
                )));
            }
            after - 1
        }
    };
    let start = runs[..=index].iter().rposition(|r| r.min_txid == TxId(1)).ok_or_else(|| Error::Corrupt {
        file: "catalog".into(),
        offset: 0,
        reason: "no snapshot before the restore point: the history does not start with one".into(),
    })?;
    let inputs = runs[start..=index].to_vec();
    let point = &runs[index];
    Ok(Plan {
        txid: point.max_txid,
        checksum: point.post_apply,
        timestamp_ms: point.timestamp_ms,
        commit: point.commit,
        bytes: inputs.iter().map(|r| r.bytes).sum(),
        inputs,
    })
}

/// Merges `payloads` (the planned runs' LTX files, oldest first) onto `out`, which must be
/// empty: chunks of [`MERGE_FAN_IN`], each written page by page and cut to its Commit.
pub fn execute(out: &File, payloads: &[&[u8]], page_size: u32) -> Result<()> {
    for chunk in payloads.chunks(MERGE_FAN_IN) {
        let decoders = chunk.iter().map(|p| Decoder::new(p)).collect::<Result<Vec<_>, _>>()?;
        let mut merge = PageMerge::new(decoders, page_size)?;
        while let Some(page) = merge.next_page()? {
            out.write_all_at(page.data, page.pgno.file_offset(page_size))
                .map_err(|e| Error::io(format!("write page {}", page.pgno), e))?;
        }
        out.set_len(u64::from(merge.commit()) * u64::from(page_size))
            .map_err(|e| Error::io("set the restored database's length", e))?;
    }
    Ok(())
}

fn format_ms(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| t.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string())
        .unwrap_or_else(|| format!("{ms} ms"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::segment::Location;

    fn run(min: u64, max: u64, ts: i64) -> Run {
        Run {
            min_txid: TxId(min),
            max_txid: TxId(max),
            timestamp_ms: ts,
            commit: 1,
            pre_apply: Checksum::NONE,
            post_apply: Checksum(Checksum::FLAG | max),
            location: Location { segment: 1, offset: min },
            bytes: 10,
        }
    }

    #[test]
    fn targets_resolve_to_run_ends_and_nothing_else() {
        let runs = [run(1, 1, 100), run(2, 4, 200), run(5, 5, 200), run(6, 6, 300)];
        assert_eq!(plan(&runs, Target::Latest).unwrap().txid, TxId(6));
        assert_eq!(plan(&runs, Target::TxId(TxId(4))).unwrap().inputs.len(), 2);
        let err = plan(&runs, Target::TxId(TxId(3))).unwrap_err().to_string();
        assert!(err.contains("inside the stored run") && err.contains("TXID 0000000000000001"), "{err}");
        assert!(plan(&runs, Target::TxId(TxId(7))).unwrap_err().to_string().contains("outside"));
        assert_eq!(plan(&runs, Target::Timestamp(250)).unwrap().txid, TxId(5));
        assert_eq!(plan(&runs, Target::Timestamp(200)).unwrap().txid, TxId(5));
        assert_eq!(plan(&runs, Target::Timestamp(199)).unwrap().txid, TxId(1));
        assert!(plan(&runs, Target::Timestamp(99)).unwrap_err().to_string().contains("before the oldest"));
    }

    #[test]
    fn timestamps_parse_in_both_forms() {
        assert_eq!(Target::parse_timestamp("1795764956203").unwrap(), 1795764956203);
        assert_eq!(Target::parse_timestamp("2026-11-27T07:35:56.203Z").unwrap(), 1795764956203);
        assert!(Target::parse_timestamp("yesterday").is_err());
    }
}
