//! Arbitrary bytes split into LTX files and merged; see `ltxvault_fuzz::check_merge`.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = ltxvault_fuzz::check_merge(data);
});
