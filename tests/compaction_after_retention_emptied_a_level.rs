//! A database that goes quiet for longer than its L1 retention has every L1 file deleted
//! (each covered by an expired L2 file), so its L1 level is empty when uploads resume. The
//! next L1 file must then continue after the L2 file, not from TXID 1: compaction used to
//! refuse it ("would start at TXID n, which does not follow its last file") on every pass
//! from then on, so L1 stayed stuck and the log was never trimmed. The I/O fault sweep
//! found it (a failed compaction gave retention the time to empty the level).

mod common;

use common::{ModelDb, Rng};
use ltxvault::clock::ManualClock;
use ltxvault::io::engine::IoChoice;
use ltxvault::ltx::TxId;
use ltxvault::restore::Target;
use ltxvault::{Vault, VaultConfig};

const MINUTE: i64 = 60_000;
const HOUR: i64 = 60 * MINUTE;
const START: i64 = 1_800_000_000_000;

#[test]
fn an_emptied_level_continues_after_the_coarser_one() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = VaultConfig {
        io: IoChoice::Std,
        background_compaction: false,
        level_intervals_ms: vec![MINUTE, 10 * MINUTE, 24 * HOUR],
        retention_ms: vec![Some(30 * MINUTE), Some(HOUR), None, None],
        ..VaultConfig::default()
    };
    let clock = ManualClock::new(START);
    let vault = Vault::open_with_clock(&dir.path().join("vault"), config, clock.clone()).expect("open");
    let mut rng = Rng::new(3);
    let mut model = ModelDb::new(512);
    model.timestamp_ms = START;
    let mut images = Vec::new();
    let mut upload = |model: &mut ModelDb, at: i64| {
        model.timestamp_ms = model.timestamp_ms.max(at);
        let (bytes, next) = model.propose(&mut rng, false);
        vault.ingest("c", "db", bytes).expect("upload");
        *model = next;
        images.push((model.txid, model.image.clone()));
    };
    for minute in 0..5 {
        upload(&mut model, START + minute * MINUTE);
    }
    clock.set_ms(START + 20 * MINUTE);
    vault.compact_now().expect("compact");
    assert!(!vault.level_runs("c", "db")[1].is_empty(), "the first ten minutes are in L2");

    // Three quiet hours: the L0 records and the L1 files expire; L2 keeps the history.
    clock.set_ms(START + 3 * HOUR);
    vault.retain_now().expect("retain");
    assert!(vault.level_runs("c", "db")[0].is_empty(), "retention emptied L1");
    assert!(vault.runs("c", "db").is_empty(), "and the log");

    upload(&mut model, START + 3 * HOUR);
    upload(&mut model, START + 3 * HOUR + 10_000);
    clock.set_ms(START + 3 * HOUR + 5 * MINUTE);
    vault.compact_now().expect("compaction goes on after the emptied level");
    let l1 = &vault.level_runs("c", "db")[0];
    let l2_end = vault.level_runs("c", "db")[1].last().map(|r| r.max_txid).expect("L2");
    assert_eq!(l1.first().map(|r| r.min_txid.0), Some(l2_end.0 + 1), "L1 continues after L2");
    assert_eq!(l1.last().map(|r| r.max_txid), Some(TxId(model.txid)));
    for (txid, image) in &images[images.len() - 2..] {
        let out = dir.path().join(format!("{txid}.db"));
        vault.restore("c", "db", Target::TxId(TxId(*txid)), &out, false).expect("restore");
        assert!(std::fs::read(&out).expect("read") == *image, "TXID {txid}");
    }
}
