//! Arbitrary bytes read as an L0 segment file; see `ltxvault_fuzz::segment::check_segment`.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = ltxvault_fuzz::segment::check_segment(data);
});
