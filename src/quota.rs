//! Per-cluster quotas: how many bytes a cluster may store, and the running count of what
//! each cluster does store.
//!
//! What counts is what a cluster's databases occupy in the vault: their records in the L0
//! log (header, names, payload and padding, as written), their level files and their L3
//! images. Not counted: the page-checksum maps (8 bytes per page), the `NAME` files, scratch
//! files of running operations, and the rest of a log segment a record shares with other
//! clusters (segments are preallocated; a record's share is its own bytes).
//!
//! The count is kept, never measured: a directory scan per upload would cost more than the
//! upload. Every change to what a database stores changes its count and its cluster's in the
//! same step (under the database's lock):
//!
//! ```text
//!  open        count = every piece the catalog holds (log records, level files, images)
//!  ingest      + the record, when it is queued for the log (checked against the quota)
//!  compaction  + the level file or image, when it joins the catalog
//!  retention   - each piece it drops from the catalog
//!  delete      - everything the database counted
//! ```
//!
//! An upload is refused ([`Error::QuotaExceeded`]) when its record would take the cluster's
//! count past the quota. The check and the charge are one step under the count's lock, so
//! uploads racing each other cannot pass the quota together. Nothing else is checked:
//! compaction may take a cluster past its quota (its files replace nothing until retention
//! runs), and reads, restores, retention and other clusters never look at it. Uploads resume
//! once retention or a deletion brings the count back under the quota.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

use crate::error::{Error, Result};

/// The quota of every cluster: a default and per-cluster overrides, in bytes; `None` means
/// no limit.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Quotas {
    /// The quota of a cluster not named in `clusters`.
    pub default: Option<u64>,
    /// Quotas by cluster name, overriding the default (`None`: this cluster has no limit).
    pub clusters: BTreeMap<String, Option<u64>>,
}

impl Quotas {
    /// The quota of `cluster`, in bytes; `None` when it has none.
    pub fn limit(&self, cluster: &str) -> Option<u64> {
        self.clusters.get(cluster).copied().unwrap_or(self.default)
    }
}

/// What a cluster stores, against its quota.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ClusterUsage {
    /// Bytes its databases occupy (see the module docs for what counts).
    pub bytes: u64,
    /// Its quota, if it has one.
    pub quota: Option<u64>,
}

/// The running byte count of every cluster.
#[derive(Debug, Default)]
pub struct Usage {
    bytes: Mutex<HashMap<String, u64>>,
}

impl Usage {
    fn counts(&self) -> std::sync::MutexGuard<'_, HashMap<String, u64>> {
        // A panic while the lock was held left at worst one count unchanged; the vault
        // poisons itself on worker panics.
        self.bytes.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Bytes `cluster` stores.
    pub fn bytes(&self, cluster: &str) -> u64 {
        self.counts().get(cluster).copied().unwrap_or(0)
    }

    /// Every cluster that stores anything, with its bytes, by name.
    pub fn all(&self) -> BTreeMap<String, u64> {
        self.counts().iter().map(|(cluster, &bytes)| (cluster.clone(), bytes)).collect()
    }

    /// Counts `bytes` more for `cluster`, whatever its quota (compaction, open).
    pub fn add(&self, cluster: &str, bytes: u64) {
        if bytes == 0 {
            return;
        }
        let mut counts = self.counts();
        match counts.get_mut(cluster) {
            Some(count) => *count = count.saturating_add(bytes),
            None => {
                counts.insert(cluster.to_string(), bytes);
            }
        }
    }

    /// Counts `bytes` less for `cluster` (retention, deletion, a charge given back).
    pub fn sub(&self, cluster: &str, bytes: u64) {
        if bytes == 0 {
            return;
        }
        let mut counts = self.counts();
        let Some(count) = counts.get_mut(cluster) else {
            debug_assert!(false, "{cluster} gives back {bytes} bytes it never counted");
            return;
        };
        debug_assert!(*count >= bytes, "{cluster} gives back {bytes} bytes of its {count}");
        *count = count.saturating_sub(bytes);
        if *count == 0 {
            counts.remove(cluster);
        }
    }

    /// Counts `bytes` more for `cluster` if that keeps it within `quota`; otherwise counts
    /// nothing and returns [`Error::QuotaExceeded`].
    pub fn charge(&self, cluster: &str, bytes: u64, quota: Option<u64>) -> Result<()> {
        let mut counts = self.counts();
        let used = counts.get(cluster).copied().unwrap_or(0);
        if let Some(quota) = quota
            && used.saturating_add(bytes) > quota
        {
            return Err(Error::QuotaExceeded { cluster: cluster.to_string(), used, quota, needed: bytes });
        }
        *counts.entry(cluster.to_string()).or_insert(0) += bytes;
        Ok(())
    }
}

/// A byte count for people: `"512 B"`, `"1.50 KiB"`, `"4.00 GiB"`.
pub fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["KiB", "MiB", "GiB", "TiB", "PiB"];
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    let mut value = bytes as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.2} {}", UNITS[unit])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_charge_past_the_quota_counts_nothing() {
        let usage = Usage::default();
        usage.charge("a", 60, Some(100)).unwrap();
        let err = usage.charge("a", 41, Some(100)).unwrap_err();
        assert!(matches!(err, Error::QuotaExceeded { used: 60, quota: 100, needed: 41, .. }), "{err}");
        assert_eq!(usage.bytes("a"), 60);
        usage.charge("a", 40, Some(100)).unwrap();
        assert_eq!(usage.bytes("a"), 100, "exactly the quota is within it");
        // Other clusters and clusters without a quota are not limited by it.
        usage.charge("b", 1 << 40, None).unwrap();
        usage.charge("c", 100, Some(100)).unwrap();
        usage.sub("a", 100);
        assert_eq!(usage.all(), BTreeMap::from([("b".to_string(), 1 << 40), ("c".to_string(), 100)]));
    }

    #[test]
    fn overrides_win_over_the_default() {
        let quotas = Quotas {
            default: Some(10),
            clusters: BTreeMap::from([("big".to_string(), Some(1000)), ("free".to_string(), None)]),
        };
        assert_eq!(quotas.limit("other"), Some(10));
        assert_eq!(quotas.limit("big"), Some(1000));
        assert_eq!(quotas.limit("free"), None);
        assert_eq!(Quotas::default().limit("any"), None);
    }

    #[test]
    fn human_bytes_reads_well() {
        assert_eq!(human_bytes(512), "512 B");
        assert_eq!(human_bytes(1536), "1.50 KiB");
        assert_eq!(human_bytes(5 << 30), "5.00 GiB");
    }
}
