//! What the LTX property tests (`ltx_corruption`, `ltx_merge`, `ltx_round_trip`) share:
//! seeded proptest configurations, page contents described by small values, and encoding,
//! decoding and checksumming whole files.
//!
//! Seeds: every property prints its RNG seed on stderr (shown when it fails, or with
//! `--nocapture`); `LTXVAULT_SEED=<seed>` (or proptest's own `PROPTEST_RNG_SEED`) replays it.

use ltxvault::Error;
use ltxvault::ltx::{
    Checksum, Decoder, Encoder, Format, Header, LtxError, PageNo, Rule, Trailer, Version, database_checksum,
};
use proptest::prelude::*;
use proptest::test_runner::RngSeed;

// ------------------------------------------------------------------------------------------
// Seeds.

pub const SEED_VAR: &str = "LTXVAULT_SEED";

/// A proptest configuration with a known seed, printed so that a failure can be replayed.
///
/// `contextualize_config` in the `proptest!` macro re-reads `PROPTEST_*` variables after
/// this runs, so `PROPTEST_RNG_SEED` wins over `LTXVAULT_SEED` if both are set; the seed is
/// chosen in that same order so that the printed one is the one in use.
pub fn seeded(cases: u32) -> ProptestConfig {
    let defaults = ProptestConfig::default();
    let seed = match (defaults.rng_seed, std::env::var(SEED_VAR)) {
        (RngSeed::Fixed(seed), _) => seed,
        (RngSeed::Random, Ok(text)) => {
            text.trim().parse().unwrap_or_else(|_| panic!("{SEED_VAR}={text:?} is not a u64"))
        }
        (RngSeed::Random, Err(_)) => fresh_seed(),
    };
    let test = std::thread::current().name().unwrap_or("?").to_owned();
    eprintln!("{test}: RNG seed {seed} (replay with {SEED_VAR}={seed})");
    // Unoptimised builds run about ten times slower; keep `cargo test` without
    // `--release` quick. `PROPTEST_CASES` still overrides either count.
    let cases = if cfg!(debug_assertions) { (cases / 4).max(16) } else { cases };
    ProptestConfig {
        cases,
        rng_seed: RngSeed::Fixed(seed),
        // The printed seed is the reproducer; regression files would be new files in the
        // source tree on every failure.
        failure_persistence: None,
        ..defaults
    }
}

fn fresh_seed() -> u64 {
    use std::hash::BuildHasher;
    std::hash::RandomState::new().hash_one(std::time::SystemTime::now())
}

// ------------------------------------------------------------------------------------------
// Page contents.

/// How a page's bytes are made. Pages are described by a small value rather than generated
/// byte by byte, so that even 64 KiB pages cost nothing to generate or shrink.
#[derive(Clone, Copy, Debug)]
pub enum Fill {
    Zeros,
    Byte(u8),
    /// Incompressible: LZ4 gives a literal-only block larger than the page.
    Noise(u64),
    /// Runs of a few byte values and copies of earlier stretches: LZ4 output that mixes
    /// literals, short matches and distant matches (where equivalent encodings live).
    Runs(u64),
}

/// Which fills [`fill`] draws, and how often.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fills {
    /// Every kind, `Runs` most often, so that LZ4 sees all its cases: long zero runs, short
    /// runs and back-references, and noise.
    All,
    /// `Zeros`, `Noise` and non-zero `Byte`s only, so that every page but a `Zeros` one is
    /// non-zero somewhere: a stale page and a zeroed page look different.
    ZerosOrNonZero,
}

pub fn fill(fills: Fills) -> BoxedStrategy<Fill> {
    match fills {
        Fills::All => prop_oneof![
            1 => Just(Fill::Zeros),
            1 => any::<u8>().prop_map(Fill::Byte),
            2 => any::<u64>().prop_map(Fill::Noise),
            3 => any::<u64>().prop_map(Fill::Runs),
        ]
        .boxed(),
        Fills::ZerosOrNonZero => prop_oneof![
            1 => Just(Fill::Zeros),
            2 => (1..=255u8).prop_map(Fill::Byte),
            4 => any::<u64>().prop_map(Fill::Noise),
        ]
        .boxed(),
    }
}

/// SplitMix64: a tiny deterministic generator, enough to expand a seed into page bytes.
struct SplitMix(u64);

impl SplitMix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

pub fn page_bytes(fill: Fill, page_size: u32) -> Vec<u8> {
    let n = page_size as usize;
    match fill {
        Fill::Zeros => vec![0; n],
        Fill::Byte(b) => vec![b; n],
        Fill::Noise(seed) => {
            let mut rng = SplitMix(seed);
            let mut page = Vec::with_capacity(n + 8);
            while page.len() < n {
                page.extend_from_slice(&rng.next().to_le_bytes());
            }
            page.truncate(n);
            page
        }
        Fill::Runs(seed) => {
            let mut rng = SplitMix(seed);
            let mut page = Vec::with_capacity(n);
            while page.len() < n {
                let len = 1 + rng.below(96) as usize;
                if page.len() > 16 && rng.below(3) == 0 {
                    let from = rng.below(page.len() as u64 - 8) as usize;
                    let len = len.min(page.len() - from);
                    page.extend_from_within(from..from + len);
                } else {
                    let byte = [0u8, 0xff, 0x20, rng.next() as u8][rng.below(4) as usize];
                    page.extend(std::iter::repeat_n(byte, len));
                }
            }
            page.truncate(n);
            page
        }
    }
}

// ------------------------------------------------------------------------------------------
// Whole files.

pub const FLAG_LZ4: u32 = 0x1;
pub const FLAG_NO_CHECKSUM: u32 = 0x2;
pub const HEADER_SIZE: usize = 100;
pub const TRAILER_SIZE: usize = 16;

/// The formats ltxvault's encoder writes.
pub const ALL_FORMATS: [Format; 3] = [Format::V1 { compress: false }, Format::V1 { compress: true }, Format::V3Block];

/// One of [`ALL_FORMATS`], each as likely.
pub fn any_format() -> impl Strategy<Value = Format> {
    prop_oneof![Just(Format::V1 { compress: false }), Just(Format::V1 { compress: true }), Just(Format::V3Block)]
}

/// CRC-64/GO-ISO (the LTX file checksum's CRC), from the `crc` crate rather than ltxvault.
pub fn crc64(bytes: &[u8]) -> u64 {
    crc::Crc::<u64>::new(&crc::CRC_64_GO_ISO).checksum(bytes)
}

/// Appends `value` as an unsigned LEB128 varint (Go's `binary.PutUvarint`).
pub fn put_uvarint(out: &mut Vec<u8>, mut value: u64) {
    loop {
        let low = (value & 0x7f) as u8;
        value >>= 7;
        if value == 0 {
            out.push(low);
            return;
        }
        out.push(low | 0x80);
    }
}

/// Encodes a file the caller knows to be valid; panics if the encoder refuses it.
pub fn encode(header: &Header, format: Format, pages: &[(u32, Vec<u8>)], post_apply: Checksum) -> Vec<u8> {
    let mut encoder = Encoder::new(Vec::new(), header, format).expect("valid header");
    for (pgno, data) in pages {
        encoder.write_page(PageNo(*pgno), data).expect("valid page");
    }
    encoder.finish(post_apply).expect("valid file").0
}

/// The post-apply checksum a valid file carries, worked out independently of the encoder:
/// none without checksums; for a snapshot, the database checksum of the image it describes
/// (`pages`, which must be 1..=commit, laid end to end); for Commit 0, the empty database's;
/// otherwise `incremental`, since the database before an incremental file is not modelled.
pub fn expected_post_apply(
    checksums: bool,
    snapshot: bool,
    commit: u32,
    page_size: u32,
    pages: &[(u32, Vec<u8>)],
    incremental: Checksum,
) -> Checksum {
    if !checksums {
        Checksum::NONE
    } else if snapshot {
        let image: Vec<u8> = pages.iter().flat_map(|(_, data)| data.iter().copied()).collect();
        database_checksum(&image, page_size)
    } else if commit == 0 {
        Checksum::EMPTY_DATABASE
    } else {
        incremental
    }
}

/// Everything a decoder hands out for one file.
#[derive(Debug, PartialEq)]
pub struct Decoded {
    pub version: Version,
    pub header: Header,
    pub pages: Vec<(u32, Vec<u8>)>,
    pub trailer: Trailer,
}

/// Decodes a whole file (version detected): header, pages, and the verified trailer.
pub fn decode(bytes: &[u8]) -> Result<Decoded, LtxError> {
    let mut decoder = Decoder::new(bytes)?;
    let mut pages = Vec::new();
    while let Some(page) = decoder.next_page()? {
        pages.push((page.pgno.0, page.data.to_vec()));
    }
    let trailer = decoder.trailer().expect("a drained decoder has a verified trailer");
    Ok(Decoded { version: decoder.version(), header: *decoder.header(), pages, trailer })
}

/// [`decode`] of a file that must be valid; panics if it is not.
pub fn decode_valid(bytes: &[u8]) -> Decoded {
    decode(bytes).unwrap_or_else(|e| panic!("a valid file failed to decode: {e}"))
}

/// The format rule an encoder, decoder or merge error names, or `None` for any other error.
pub fn rule_of(error: &Error) -> Option<Rule> {
    match error {
        Error::Format(e) => Some(e.rule),
        _ => None,
    }
}
