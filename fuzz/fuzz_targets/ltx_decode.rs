//! Arbitrary bytes through the LTX decoder as every version; see `ltxvault_fuzz::check_decode`.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = ltxvault_fuzz::check_decode(data);
});
