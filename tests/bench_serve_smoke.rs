//! `ltxvault bench serve` in small: 20 simulated LiteFS primaries for 3 seconds against a
//! real server process, so that CI runs the load tool end to end (server start, uploads,
//! position checks, SIGTERM and a clean exit) and notices when it breaks.

use ltxvault::bench::serve::{ServeParams, serve};

#[test]
fn twenty_primaries_for_three_seconds_upload_once_a_second_without_errors() {
    let dir = tempfile::tempdir().expect("tempdir");
    let params = ServeParams { primaries: 20, clusters: 4, seconds: 3, pages_per_upload: 2, page_size: 4096 };
    let exe = std::path::Path::new(env!("CARGO_BIN_EXE_ltxvault"));
    let report = serve(&dir.path().join("bench"), exe, &params).expect("bench runs");
    assert_eq!(report.errors_total, 0, "errors: {:?}\nserver log:\n{}", report.errors, report.server_log_tail);
    // One upload per primary per second: the snapshot at its start, then one a tick.
    assert!((55..=60).contains(&report.uploads), "{} uploads", report.uploads);
    assert_eq!(report.snapshot.count, 20);
    assert_eq!(report.positions_checked, 20);
    assert!(report.pos.count >= 20, "every primary reads /pos at its start");
    assert!(report.server_peak_rss_kib > 0);
}
