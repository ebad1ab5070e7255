//! Retention: what may go once it has left every level's window.
//!
//! Level k promises every restore point it gives (every upload in L0, every window end in L1
//! and L2, every image in L3) whose timestamp is within its retention of now. Levels are
//! accelerators of each other: a piece of level k may go once
//!
//! - its own points have expired for level k and every finer level (its timestamp is
//!   before `cutoff(k)`, the oldest of the cutoffs of levels 0..=k), and
//! - a piece of a coarser level (k+1, or any above it) covers its TXIDs and ends before
//!   `cutoff(k)` too, so no promised point lies inside that piece: every promised point
//!   after it is reached through it (or something longer), never through the piece that
//!   goes.
//!
//! Any coarser level, not only the next: log records of expired history can outlive the L1
//! files that covered them (a segment is deleted only once every record in it has expired,
//! and the records are loaded again when the vault reopens), and by then those L1 files may
//! have gone in turn, covered by L2 files or an image. Were only L1 coverers counted, such
//! records could never go, and with them every later segment.
//!
//! An image goes once it has expired and a newer image, itself older than `cutoff(3)`,
//! exists: that newer one is the base every promised point starts from. A level whose
//! retention is off (`None`) keeps everything, and so do the levels above it: their pieces
//! then still hold finer points someone asked to keep.
//!
//! [`expired`] is the policy, pure; the vault applies it (catalog first, then files, then
//! whole log segments that no kept L0 run needs; see `Vault::retain_now`).

use crate::catalog::Run;

/// The oldest timestamp level `level` and every finer level still promise, or `None` if one
/// of them keeps everything.
pub fn cutoff(retention_ms: &[Option<i64>], level: usize, now_ms: i64) -> Option<i64> {
    retention_ms
        .iter()
        .take(level + 1)
        .try_fold(i64::MAX, |oldest, kept| kept.map(|ms| oldest.min(now_ms.saturating_sub(ms))))
}

/// Which pieces of one database may be deleted: for each level (L0, L1, L2, L3; each list
/// ordered by TXID as the catalog keeps it), the number of leading pieces that go. Pieces
/// only ever go from the old end of a level.
pub fn expired(levels: &[&[Run]], retention_ms: &[Option<i64>], now_ms: i64) -> Vec<usize> {
    let mut out = vec![0; levels.len()];
    for (k, pieces) in levels.iter().enumerate() {
        let Some(cutoff) = cutoff(retention_ms, k, now_ms) else { continue };
        let is_image_level = k == 3;
        let coverers = || levels.iter().skip(k + 1).flat_map(|level| level.iter());
        let mut n = 0;
        for (i, piece) in pieces.iter().enumerate() {
            if piece.timestamp_ms >= cutoff {
                break;
            }
            let goes = if is_image_level {
                pieces[i + 1..].iter().any(|newer| newer.timestamp_ms < cutoff)
            } else {
                coverers()
                    .any(|c| c.min_txid <= piece.min_txid && c.max_txid >= piece.max_txid && c.timestamp_ms < cutoff)
            };
            if !goes {
                break;
            }
            n += 1;
        }
        out[k] = n;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn piece(level: u8, min: u64, max: u64, ts: i64) -> Run {
        Run::for_test(level, min, max, ts)
    }

    const H: i64 = 3_600_000;

    #[test]
    fn cutoffs_take_the_oldest_of_the_finer_levels() {
        let kept = [Some(H), Some(10 * H), None, Some(2 * H)];
        assert_eq!(cutoff(&kept, 0, 100 * H), Some(99 * H));
        assert_eq!(cutoff(&kept, 1, 100 * H), Some(90 * H));
        assert_eq!(cutoff(&kept, 2, 100 * H), None);
        assert_eq!(cutoff(&kept, 3, 100 * H), None);
        let kept = [Some(20 * H), Some(10 * H)];
        assert_eq!(cutoff(&kept, 1, 100 * H), Some(80 * H), "a finer level kept longer holds the coarser back");
    }

    #[test]
    fn pieces_go_only_once_covered_by_an_expired_piece_of_the_next_level() {
        // L0: one upload per hour, TXIDs 1..=10 at hours 1..=10.
        let l0: Vec<Run> = (1..=10).map(|t| piece(0, t, t, t as i64 * H)).collect();
        // L1 covers 1..=4 (ends hour 4) and 5..=8 (ends hour 8).
        let l1 = vec![piece(1, 1, 4, 4 * H), piece(1, 5, 8, 8 * H)];
        let none: Vec<Run> = Vec::new();
        let kept = [Some(3 * H), None, None, None];
        // Now hour 12: L0 points before hour 9 expired. 1..=4 are covered by an L1 file that
        // ended before the cutoff; 5..=8 by one that ends at hour 8 < 9: all eight go.
        assert_eq!(expired(&[&l0, &l1, &none, &none], &kept, 12 * H), vec![8, 0, 0, 0]);
        // Now hour 10.5: cutoff 7.5 h. Uploads 5..=7 are expired but their L1 file ends at
        // hour 8, after the cutoff: upload 8 is still promised and the file passes it.
        assert_eq!(expired(&[&l0, &l1, &none, &none], &kept, 10 * H + H / 2), vec![4, 0, 0, 0]);
        // Nothing above the L1 files: uploads 9 and 10 stay whatever their age.
        assert_eq!(expired(&[&l0, &l1, &none, &none], &kept, 100 * H), vec![8, 0, 0, 0]);
        // Retention off for L0 keeps everything, at every level.
        let off = [None, Some(H), Some(H), Some(H)];
        assert_eq!(expired(&[&l0, &l1, &none, &none], &off, 100 * H), vec![0, 0, 0, 0]);
    }

    #[test]
    fn a_coarser_level_covers_when_the_next_one_has_gone() {
        // Log records 1..=6 loaded again at a reopen (their segment outlived them), whose L1
        // files retention removed once an L2 file and an image covered them.
        let l0: Vec<Run> = (1..=6).map(|t| piece(0, t, t, t as i64 * H)).collect();
        let l1 = vec![piece(1, 7, 8, 8 * H)];
        let l2 = vec![piece(2, 1, 4, 4 * H), piece(2, 5, 8, 8 * H)];
        let l3 = vec![piece(3, 1, 4, 4 * H)];
        let kept = [Some(H), Some(2 * H), Some(3 * H), Some(4 * H)];
        // Now hour 20: everything has expired. 1..=4 are covered by the first L2 file (and
        // the image), 5..=6 by the second; the L1 file goes under the second L2 file.
        assert_eq!(expired(&[&l0, &l1, &l2, &l3], &kept, 20 * H), vec![6, 1, 1, 0]);
        // Covered by the image alone.
        let none: Vec<Run> = Vec::new();
        assert_eq!(expired(&[&l0[..4], &none, &none, &l3], &kept, 20 * H), vec![4, 0, 0, 0]);
        // A coarser piece that ends after the cutoff still protects what it covers.
        assert_eq!(expired(&[&l0, &none, &l2, &none], &kept, 8 * H + H / 2), vec![4, 0, 0, 0]);
    }

    #[test]
    fn images_go_only_when_a_newer_expired_image_remains() {
        let l2 = vec![piece(2, 1, 3, 3 * H), piece(2, 4, 6, 6 * H), piece(2, 7, 9, 9 * H)];
        let l3 = vec![piece(3, 1, 3, 3 * H), piece(3, 1, 6, 6 * H), piece(3, 1, 9, 9 * H)];
        let none: Vec<Run> = Vec::new();
        let kept = [Some(H), Some(H), Some(H), Some(H)];
        // Now hour 8: cutoff 7 h. Images at 3 h and 6 h expired; the one at 6 h is the base
        // of every promised point, so only the first goes. L2 pieces up to TXID 6 are
        // covered by the 6 h image: they go.
        assert_eq!(expired(&[&none, &none, &l2, &l3], &kept, 8 * H), vec![0, 0, 2, 1]);
        // Long after: the newest image stays, however old.
        assert_eq!(expired(&[&none, &none, &l2, &l3], &kept, 100 * H), vec![0, 0, 3, 2]);
    }
}
