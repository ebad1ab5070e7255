//! What the vault reports about itself: the state gauges of the metrics (computed from
//! the catalog at scrape time, see `metrics`), the metrics text, and its health.

use std::path::PathBuf;

use super::Vault;
use crate::catalog::{DbState, lock};
use crate::ltx::TxId;
use crate::metrics::{ClusterGauges, CompactionGauges, Gauges};

/// Whether the vault can take writes: what `GET /readyz` answers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Health {
    /// Why the vault is poisoned, if it is.
    pub poisoned: Option<String>,
    /// Bytes free on the vault's file system, or why they could not be read.
    pub free_bytes: Result<u64, String>,
    /// The configured minimum (`storage.min_free`).
    pub min_free_bytes: u64,
}

impl Health {
    /// Every reason the vault is not ready, for people; empty when it is.
    pub fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if let Some(reason) = &self.poisoned {
            problems
                .push(format!("the vault is poisoned after a failed write ({reason}); restart the server to recover"));
        }
        match &self.free_bytes {
            Ok(free) if *free < self.min_free_bytes => problems.push(format!(
                "the disk is nearly full: {free} bytes free, below storage.min_free ({} bytes)",
                self.min_free_bytes
            )),
            Ok(_) => {}
            Err(e) => problems.push(format!("cannot read the free space of the vault's file system: {e}")),
        }
        problems
    }
}

impl Vault {
    /// The vault's health: poisoned or not, free space against `storage.min_free`.
    pub fn health(&self) -> Health {
        Health {
            poisoned: self.poisoned(),
            free_bytes: crate::io::free_bytes(&self.dir).map_err(|e| e.to_string()),
            min_free_bytes: self.config.min_free_bytes,
        }
    }

    /// Every metric in the Prometheus text format, the state gauges computed now.
    pub fn metrics_text(&self) -> String {
        self.metrics.encode(&self.gauges())
    }

    /// The state gauges of the metrics, computed from the catalog: one short lock of each
    /// database, work per database independent of its history's length (binary searches
    /// and sums over its level lists, whose L0 list is the longest).
    pub fn gauges(&self) -> Gauges {
        let levels = self.config.level_intervals_ms.len();
        let now_ms = self.clock.now_ms();
        let mut gauges = Gauges {
            queue_depth: self.queue.as_ref().map_or(0, |q| q.len() as u64),
            queue_capacity: self.config.queue_capacity as u64,
            poisoned: self.poison.reason().is_some(),
            compaction: vec![CompactionGauges::default(); levels],
            log_segment_bytes: self.log_segment_bytes(),
            free_bytes: crate::io::free_bytes(&self.dir).ok(),
            ..Gauges::default()
        };
        let drills: std::collections::BTreeMap<_, _> =
            self.drill_results().into_iter().map(|(cluster, db, result)| ((cluster, db), result)).collect();
        for key in self.catalog.keys() {
            let drill = drills.get(&(key.cluster.clone(), key.db.clone()));
            let Some(state) = self.catalog.get(&key) else { continue };
            let state = lock(&state);
            if state.deleted || state.durable.txid == TxId::ZERO {
                continue;
            }
            let cluster = gauges
                .clusters
                .entry(key.cluster)
                .or_insert_with(|| ClusterGauges { stored_bytes: vec![0; levels + 1], ..ClusterGauges::default() });
            cluster.databases += 1;
            match drill {
                None => cluster.drills_missing += 1,
                Some(drill) => {
                    cluster.drills_failed += u64::from(!drill.ok);
                    let age = now_ms.saturating_sub(drill.started_ms).max(0) as f64 / 1000.0;
                    cluster.oldest_drill_age_seconds = cluster.oldest_drill_age_seconds.max(age);
                }
            }
            cluster.hwm_lag_txids = cluster.hwm_lag_txids.max(state.pending.txid.0.saturating_sub(state.hwm.0));
            for (level, pieces) in std::iter::once(&state.runs).chain(&state.levels).enumerate().take(levels + 1) {
                cluster.stored_bytes[level] += pieces.iter().map(|r| r.bytes).sum::<u64>();
            }
            for (index, (gauge, &interval_ms)) in
                gauges.compaction.iter_mut().zip(&self.config.level_intervals_ms).enumerate()
            {
                let (waiting, oldest_ms) = compaction_backlog(&state, index);
                gauge.backlog_pieces += waiting;
                if let Some(oldest_ms) = oldest_ms {
                    let window_end_ms = (oldest_ms.div_euclid(interval_ms) + 1).saturating_mul(interval_ms);
                    let lag_seconds = now_ms.saturating_sub(window_end_ms).max(0) as f64 / 1000.0;
                    gauge.lag_seconds = gauge.lag_seconds.max(lag_seconds);
                }
            }
        }
        gauges
    }

    /// Bytes of the log's segment files, or `None` when the directory cannot be read.
    fn log_segment_bytes(&self) -> Option<u64> {
        let dir = self.segments.dir();
        let paths: Vec<PathBuf> =
            self.segments.ids().ok()?.into_iter().map(|id| crate::segment::segment_path(dir, id)).collect();
        // A segment retention deletes meanwhile counts as gone.
        Some(paths.iter().filter_map(|p| std::fs::metadata(p).ok()).map(|m| m.len()).sum())
    }
}

/// The pieces of the level below level `index + 1` that it has not taken in yet, and the
/// timestamp of the oldest of them. The lists are sorted by TXID, so this is a binary
/// search, whatever the length of the history.
fn compaction_backlog(state: &DbState, index: usize) -> (u64, Option<i64>) {
    let done = state.levels.get(index).and_then(|l| l.last()).map_or(TxId::ZERO, |r| r.max_txid);
    let below = if index == 0 { &state.runs } else { &state.levels[index - 1] };
    let first = below.partition_point(|r| r.max_txid <= done);
    let waiting = &below[first..];
    (waiting.len() as u64, waiting.first().map(|r| r.timestamp_ms))
}
