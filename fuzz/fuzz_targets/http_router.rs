//! A sequence of HTTP requests sent to the server's router in-process, over one vault per
//! fuzzing process; see `ltxvault_fuzz::http`.

#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use ltxvault_fuzz::http::Harness;

static HARNESS: OnceLock<Harness> = OnceLock::new();

fuzz_target!(|data: &[u8]| {
    let harness = HARNESS.get_or_init(|| {
        // Under $TMPDIR, which tools/fuzz.sh points at a tmpfs and removes afterwards.
        let dir = std::env::temp_dir().join(format!("ltxvault-fuzz-http-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        Harness::new(&dir)
    });
    harness.run(data);
});
