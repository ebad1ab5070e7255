//! Shared helpers for the vault's integration tests: a seeded generator and an in-memory
//! model database that produces valid LiteFS-style (v1) uploads and knows the image they
//! must restore to.
#![allow(dead_code)]

pub mod cli;
pub mod http;
pub mod ltxgen;
pub mod peers;
pub mod replay;
pub mod serve;
pub mod server;
pub mod sqlite;

use ltxvault::ltx::{Checksum, Encoder, Format, Header, PageNo, TxId, database_checksum};

/// xorshift64*: small, seedable, good enough for test data.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform in `0..n` (n > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }

    pub fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }

    pub fn fill(&mut self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(8) {
            let v = self.next_u64().to_le_bytes();
            chunk.copy_from_slice(&v[..chunk.len()]);
        }
    }
}

/// The seed for a randomized test: `LTXVAULT_SEED` if set, else `default`. Printed so a
/// failure can be reproduced.
pub fn seed(test: &str, default: u64) -> u64 {
    let seed = std::env::var("LTXVAULT_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or(default);
    eprintln!("{test}: seed {seed} (set LTXVAULT_SEED={seed} to reproduce)");
    seed
}

/// A database as the client sees it: the image after every acknowledged upload.
#[derive(Clone)]
pub struct ModelDb {
    pub page_size: u32,
    pub image: Vec<u8>,
    pub txid: u64,
    pub checksum: Checksum,
    pub timestamp_ms: i64,
    /// The database never grows past this many pages (long runs stay small).
    pub max_pages: u32,
    /// Uploads are stamped with the wall clock (made increasing) instead of a made-up
    /// time a few seconds after the last: for runs where retention and compaction windows
    /// of seconds must see real ages.
    pub real_time: bool,
}

impl ModelDb {
    pub fn new(page_size: u32) -> ModelDb {
        ModelDb {
            page_size,
            image: Vec::new(),
            txid: 0,
            checksum: Checksum::EMPTY_DATABASE,
            timestamp_ms: 1_700_000_000_000,
            max_pages: u32::MAX,
            real_time: false,
        }
    }

    pub fn commit(&self) -> u32 {
        (self.image.len() / self.page_size as usize) as u32
    }

    fn page(&self, pgno: u32) -> &[u8] {
        let ps = self.page_size as usize;
        &self.image[(pgno as usize - 1) * ps..pgno as usize * ps]
    }

    /// The next upload: a random change (writes, growth, shrink), as a v1 file. The model
    /// moves forward only when `accept` is called with the returned state.
    pub fn propose(&self, rng: &mut Rng, compress: bool) -> (Vec<u8>, ModelDb) {
        let ps = self.page_size as usize;
        let lock = PageNo::lock_page(self.page_size).0;
        let old_commit = self.commit();
        let new_commit = match rng.below(10) {
            0 if old_commit > 1 => old_commit - 1 - rng.below(old_commit.min(4) as u64) as u32,
            1..=3 => old_commit + 1 + rng.below(4) as u32,
            _ => old_commit.max(1),
        }
        .min(self.max_pages.max(1));
        let mut next = self.clone();
        next.image.resize(new_commit as usize * ps, 0);
        let mut pages: Vec<u32> = Vec::new();
        for p in 1..=new_commit {
            let grown = p > old_commit;
            // Growth pages are nearly always written (SQLite and Litestream do); now and
            // then one is left out, which the database sees as zeros.
            if (grown && rng.chance(90)) || (!grown && rng.chance(20)) {
                pages.push(p);
            }
        }
        pages.retain(|&p| p != lock);
        for &p in &pages {
            rng.fill(&mut next.image[(p as usize - 1) * ps..p as usize * ps]);
        }
        next.txid = self.txid + 1;
        next.timestamp_ms = self.next_timestamp(rng);
        next.checksum = database_checksum(&next.image, self.page_size);
        let header = Header {
            page_size: self.page_size,
            commit: new_commit,
            min_txid: TxId(next.txid),
            max_txid: TxId(next.txid),
            timestamp_ms: next.timestamp_ms,
            pre_apply_checksum: if self.txid == 0 { Checksum::NONE } else { self.checksum },
            ..Header::default()
        };
        let bytes = if self.txid == 0 {
            next.snapshot_bytes_with(&header, compress)
        } else {
            let mut enc = Encoder::new(Vec::new(), &header, Format::V1 { compress }).expect("header");
            for &p in &pages {
                enc.write_page(PageNo(p), next.page(p)).expect("page");
            }
            enc.finish(next.checksum).expect("finish").0
        };
        (bytes, next)
    }

    /// The time of the next upload: the wall clock (made increasing) when `real_time`, else
    /// a made-up time up to 5 s after the last.
    pub fn next_timestamp(&self, rng: &mut Rng) -> i64 {
        if self.real_time {
            let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock");
            (now.as_millis() as i64).max(self.timestamp_ms + 1)
        } else {
            self.timestamp_ms + 1 + rng.below(5_000) as i64
        }
    }

    /// The upload that takes the model to `image` (a whole database file) `dt_ms` later: a
    /// snapshot when the model is empty, else the pages that differ or are new (LZ4).
    pub fn change_to(&self, image: Vec<u8>, dt_ms: i64) -> (Vec<u8>, ModelDb) {
        self.change_to_at(image, self.timestamp_ms + dt_ms, self.txid != 0)
    }

    /// The upload that takes the model to `image`, stamped `timestamp_ms`: a snapshot when
    /// the model is empty, else the pages that differ or are new; LZ4 blocks if `compress`.
    pub fn change_to_at(&self, image: Vec<u8>, timestamp_ms: i64, compress: bool) -> (Vec<u8>, ModelDb) {
        let ps = self.page_size as usize;
        assert_eq!(image.len() % ps, 0, "whole pages");
        let lock = PageNo::lock_page(self.page_size).0;
        let mut next = self.clone();
        next.image = image;
        next.txid = self.txid + 1;
        next.timestamp_ms = timestamp_ms;
        next.checksum = database_checksum(&next.image, self.page_size);
        let header = Header {
            page_size: self.page_size,
            commit: next.commit(),
            min_txid: TxId(next.txid),
            max_txid: TxId(next.txid),
            timestamp_ms: next.timestamp_ms,
            pre_apply_checksum: if self.txid == 0 { Checksum::NONE } else { self.checksum },
            ..Header::default()
        };
        if self.txid == 0 {
            return (next.snapshot_bytes_with(&header, compress), next);
        }
        let mut enc = Encoder::new(Vec::new(), &header, Format::V1 { compress }).expect("header");
        for p in (1..=next.commit()).filter(|&p| p != lock) {
            if p > self.commit() || self.page(p) != next.page(p) {
                enc.write_page(PageNo(p), next.page(p)).expect("page");
            }
        }
        (enc.finish(next.checksum).expect("finish").0, next)
    }

    /// A snapshot of the current state (TXID 1..=txid).
    pub fn snapshot(&self, compress: bool) -> Vec<u8> {
        let header = Header {
            page_size: self.page_size,
            commit: self.commit(),
            min_txid: TxId(1),
            max_txid: TxId(self.txid),
            timestamp_ms: self.timestamp_ms,
            ..Header::default()
        };
        self.snapshot_bytes_with(&header, compress)
    }

    fn snapshot_bytes_with(&self, header: &Header, compress: bool) -> Vec<u8> {
        let mut header = *header;
        header.min_txid = TxId(1);
        header.pre_apply_checksum = Checksum::NONE;
        let lock = PageNo::lock_page(self.page_size).0;
        let mut enc = Encoder::new(Vec::new(), &header, Format::V1 { compress }).expect("header");
        for p in (1..=self.commit()).filter(|&p| p != lock) {
            enc.write_page(PageNo(p), self.page(p)).expect("page");
        }
        enc.finish(self.checksum).expect("finish").0
    }
}
