//! A full disk, for real: a 64 MiB ext4 file system that the test makes from an image
//! file, loop-mounts and removes again (a size-limited tmpfs where no loop device can be
//! had), with `ltxvault serve` over a vault on it, filled through HTTP uploads as LiteFS
//! sends them. What must hold:
//!
//! - an upload that finds no room is refused with 507 `ENOSPC` and a message saying the
//!   vault's disk is full: never a 500, never a poisoned vault (503 `EPOISONED`) that only a
//!   restart cures. A new database is refused the same way (its page-checksum map cannot be
//!   made either, and writing one through a mapping of unallocated blocks would kill the
//!   server with SIGBUS); so is a snapshot download, before its first byte;
//! - positions stay readable and what was acknowledged stays acknowledged;
//! - compaction backs off: a warning per level, not an error per database per second, and
//!   no temporary file left behind;
//! - when space comes back (the test deletes its filler files, or retention deletes expired
//!   history) uploads are accepted again without a restart, and every upload that got a 200
//!   restores byte-identical afterwards.
//!
//! Every upload of a database rewrites the same number of pages of a database of a fixed
//! size, so every record has the same length: once one does not fit in the log, none does
//! until space is freed, which makes "the disk is full" a state the test can hold.
//!
//! `LTXVAULT_FULL_DISK_FS=tmpfs` skips the loop device, to run the fallback on purpose.
//!
//! Needs root (mount). Under `LTXVAULT_REQUIRE_TEST_PEERS` (set by tools/test.sh, which
//! also installs `mkfs.ext4`) a machine where neither file system can be made fails the
//! test; elsewhere the test is skipped with a note.

mod common;

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::http::{Body, Reply, request};
use common::serve::Serve;
use common::{Rng, seed};
use ltxvault::ltx::{Checksum, Encoder, Format, Header, PageNo, TxId, database_checksum};
use ltxvault::restore::Target;
use ltxvault::vault::SnapshotFormat;
use ltxvault::{Error, Vault, VaultConfig};

const PAGE_SIZE: u32 = 4096;
const AUTH: (&str, &str) = ("Authorization", "cluster c");

/// A small file system mounted for one test; unmounted and removed on drop, also when the
/// test panics (the server, declared after it, is dropped, so killed, first).
struct SmallFs {
    mount: PathBuf,
    kind: &'static str,
    _scratch: tempfile::TempDir,
}

impl SmallFs {
    /// A `size_mib` MiB file system: ext4 on a loop device if possible, else tmpfs.
    /// `None` (after a note) where neither can be made and the test may be skipped.
    fn make(size_mib: u64) -> Option<SmallFs> {
        let scratch = tempfile::tempdir().expect("tempdir");
        let mount = scratch.path().join("mnt");
        std::fs::create_dir(&mount).expect("mount point");
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            return skip_or_fail("mounting a file system needs root");
        }
        let image = scratch.path().join("fs.img");
        let ext4 = (|| {
            if std::env::var("LTXVAULT_FULL_DISK_FS").is_ok_and(|fs| fs == "tmpfs") {
                return Err("LTXVAULT_FULL_DISK_FS=tmpfs".to_string());
            }
            std::fs::File::create(&image).and_then(|f| f.set_len(size_mib << 20)).map_err(|e| e.to_string())?;
            // No blocks reserved for root: the server runs as root here and would otherwise
            // find 5% more room than "full".
            run("mkfs.ext4", &["-q", "-m", "0", "-b", "4096", path_str(&image)])?;
            run("mount", &["-o", "loop", path_str(&image), path_str(&mount)])
        })();
        let kind = match ext4 {
            Ok(()) => "ext4 on a loop device",
            Err(why) => {
                eprintln!("no loop-mounted ext4 ({why}); using a size-limited tmpfs");
                let size = format!("size={size_mib}m");
                if let Err(why) = run("mount", &["-t", "tmpfs", "-o", &size, "tmpfs", path_str(&mount)]) {
                    return skip_or_fail(&format!("neither a loop-mounted ext4 nor a tmpfs could be mounted: {why}"));
                }
                "tmpfs"
            }
        };
        eprintln!("full_disk: {size_mib} MiB {kind} at {}", mount.display());
        Some(SmallFs { mount, kind, _scratch: scratch })
    }

    /// Bytes an unprivileged writer could still allocate.
    fn free_bytes(&self) -> u64 {
        let path = std::ffi::CString::new(path_str(&self.mount)).expect("path");
        // SAFETY: an all-zero statvfs is a valid value for statvfs to fill.
        let mut stat: libc::statvfs = unsafe { std::mem::zeroed() };
        // SAFETY: `path` is a NUL-terminated string and `stat` is valid for writes.
        assert_eq!(unsafe { libc::statvfs(path.as_ptr(), &mut stat) }, 0, "statvfs");
        stat.f_bavail as u64 * stat.f_frsize as u64
    }
}

impl Drop for SmallFs {
    fn drop(&mut self) {
        let mount = path_str(&self.mount).to_string();
        for _ in 0..50 {
            if run("umount", &[&mount]).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        // Something still holds it: detach it, so that it goes once released.
        let _ = run("umount", &["-l", &mount]);
    }
}

fn skip_or_fail(why: &str) -> Option<SmallFs> {
    assert!(std::env::var_os("LTXVAULT_REQUIRE_TEST_PEERS").is_none(), "full_disk: {why}");
    eprintln!("SKIPPED full_disk: {why}");
    None
}

fn run(program: &str, args: &[&str]) -> Result<(), String> {
    let out = Command::new(program).args(args).output().map_err(|e| format!("{program}: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!("{program} {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim()))
    }
}

fn path_str(path: &Path) -> &str {
    path.to_str().expect("UTF-8 path")
}

/// Writes `len` bytes of zeros to `path` and syncs them: space the test takes away.
fn fill_with(path: &Path, len: u64) {
    let mut file = std::fs::File::create(path).expect("create filler");
    let chunk = vec![0u8; 1 << 20];
    let mut left = len;
    while left > 0 {
        let n = left.min(chunk.len() as u64) as usize;
        file.write_all(&chunk[..n]).expect("write filler");
        left -= n as u64;
    }
    file.sync_all().expect("sync filler");
}

/// Writes zeros to `path` until the file system refuses; returns the bytes written.
fn fill_to_the_brim(path: &Path) -> u64 {
    let mut file = std::fs::File::create(path).expect("create filler");
    let mut written = 0u64;
    for size in [1 << 20, 64 << 10, 4 << 10, 512] {
        let chunk = vec![0u8; size];
        loop {
            match file.write(&chunk) {
                Ok(0) => break,
                Ok(n) => written += n as u64,
                Err(e) if e.raw_os_error() == Some(libc::ENOSPC) => break,
                Err(e) => panic!("fill {}: {e}", path.display()),
            }
        }
    }
    let _ = file.sync_all();
    written
}

fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_millis() as i64
}

/// A database of `pages` pages whose uploads each rewrite `rewrite` of them: as the client
/// sees it after its last acknowledged upload.
#[derive(Clone)]
struct FixedDb {
    pages: u32,
    rewrite: usize,
    image: Vec<u8>,
    txid: u64,
    checksum: Checksum,
    timestamp_ms: i64,
}

impl FixedDb {
    fn new(pages: u32, rewrite: usize) -> FixedDb {
        FixedDb {
            pages,
            rewrite,
            image: vec![0; (pages * PAGE_SIZE) as usize],
            txid: 0,
            checksum: Checksum::EMPTY_DATABASE,
            timestamp_ms: 0,
        }
    }

    /// The next upload (the snapshot first) and the database after it.
    fn next(&self, rng: &mut Rng) -> (Vec<u8>, FixedDb) {
        let mut chosen: Vec<u32> = if self.txid == 0 {
            (1..=self.pages).collect()
        } else {
            let mut chosen = Vec::new();
            while chosen.len() < self.rewrite {
                let p = rng.below(u64::from(self.pages)) as u32 + 1;
                if !chosen.contains(&p) {
                    chosen.push(p);
                }
            }
            chosen
        };
        chosen.sort_unstable();
        let mut next = self.clone();
        let ps = PAGE_SIZE as usize;
        for &p in &chosen {
            rng.fill(&mut next.image[(p as usize - 1) * ps..p as usize * ps]);
        }
        next.txid += 1;
        next.timestamp_ms = now_ms().max(self.timestamp_ms + 1);
        next.checksum = database_checksum(&next.image, PAGE_SIZE);
        let header = Header {
            page_size: PAGE_SIZE,
            commit: self.pages,
            min_txid: TxId(if self.txid == 0 { 1 } else { next.txid }),
            max_txid: TxId(next.txid),
            timestamp_ms: next.timestamp_ms,
            pre_apply_checksum: if self.txid == 0 { Checksum::NONE } else { self.checksum },
            ..Header::default()
        };
        let mut encoder = Encoder::new(Vec::new(), &header, Format::V1 { compress: false }).expect("header");
        for &p in &chosen {
            encoder.write_page(PageNo(p), &next.image[(p as usize - 1) * ps..p as usize * ps]).expect("page");
        }
        (encoder.finish(next.checksum).expect("finish").0, next)
    }
}

/// The client side: every database's model and every upload that got a 200.
struct Client {
    addr: std::net::SocketAddr,
    rng: Rng,
    dbs: BTreeMap<String, FixedDb>,
    /// Per database, the state after every acknowledged upload, by TXID.
    acked: BTreeMap<String, BTreeMap<u64, FixedDb>>,
    /// Replies by status and code, for the report.
    replies: BTreeMap<String, u64>,
}

/// What one upload got.
#[derive(Debug, PartialEq, Eq)]
enum Outcome {
    Acked,
    NoSpace,
}

impl Client {
    fn new(addr: std::net::SocketAddr, seed: u64) -> Client {
        Client { addr, rng: Rng::new(seed), dbs: BTreeMap::new(), acked: BTreeMap::new(), replies: BTreeMap::new() }
    }

    fn add_db(&mut self, name: &str, pages: u32, rewrite: usize) {
        self.dbs.insert(name.to_string(), FixedDb::new(pages, rewrite));
    }

    /// Sends the next upload of `db`. A 200 must carry the upload's TXID as its HWM; any
    /// other answer must be 507 `ENOSPC` with a message that says so and the database's
    /// acknowledged position, and changes nothing.
    fn upload(&mut self, db: &str) -> Outcome {
        let (bytes, next) = self.dbs[db].next(&mut self.rng);
        let reply = request(self.addr, "POST", &format!("/db/tx?db={db}"), &[AUTH], Body::Chunked(&bytes, 4096))
            .expect("no reply to an upload: the server died (see its log)");
        let code = if reply.status == 200 { String::new() } else { reply.json()["code"].as_str().unwrap_or("").into() };
        *self.replies.entry(format!("{} {code}", reply.status)).or_insert(0) += 1;
        if reply.status == 200 {
            let hwm = reply.header("Litefs-Hwm").expect("a 200 carries Litefs-Hwm");
            assert_eq!(u64::from_str_radix(hwm, 16).expect("hex HWM"), next.txid, "{db}: HWM");
            self.acked.entry(db.to_string()).or_default().insert(next.txid, next.clone());
            self.dbs.insert(db.to_string(), next);
            return Outcome::Acked;
        }
        assert_no_space(&reply, &format!("upload to {db}"));
        let current = &self.dbs[db];
        let pos = &reply.json()["pos"];
        assert_eq!(pos["TXID"], format!("{:016x}", current.txid), "{db}: a refusal reports the stored position");
        Outcome::NoSpace
    }

    /// `GET /pos` must list every database at its last acknowledged position.
    fn check_positions(&self) {
        let reply = request(self.addr, "GET", "/pos", &[AUTH], Body::None).expect("reply");
        assert_eq!(reply.status, 200, "GET /pos on a full disk: {}", String::from_utf8_lossy(&reply.body));
        let positions = reply.json();
        for (db, model) in &self.dbs {
            if model.txid == 0 {
                assert!(positions.get(db).is_none(), "{db} was never acknowledged: {positions}");
                continue;
            }
            let want = serde_json::json!({
                "TXID": format!("{:016x}", model.txid),
                "PostApplyChecksum": format!("{:016x}", model.checksum.0),
            });
            assert_eq!(positions[db], want, "{db}: position");
        }
    }

    fn acked_count(&self) -> usize {
        self.acked.values().map(BTreeMap::len).sum()
    }
}

fn assert_no_space(reply: &Reply, what: &str) {
    let body = reply.json();
    assert_eq!((reply.status, body["code"].as_str()), (507, Some("ENOSPC")), "{what}: {body}");
    let message = body["error"].as_str().unwrap_or_default();
    assert_eq!(
        message.matches("disk is full").count(),
        1,
        "{what}: the message says the disk is full, once: {message}"
    );
    assert!(message.contains("free space"), "{what}: the message says what to do: {message}");
}

/// Files a failed write could leave behind: temporary files of level files, images, NAME
/// files and log segments, scratch files, spooled bodies.
fn leftovers(vault: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut stack = vec![vault.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).expect("list").flatten() {
            let path = entry.path();
            let name = entry.file_name().to_string_lossy().into_owned();
            if path.is_dir() {
                stack.push(path);
            } else if name.contains(".tmp") || name.ends_with(".rebuild") || dir.ends_with("tmp") {
                found.push(path);
            }
        }
    }
    found
}

/// Lines of the server log about compaction.
fn compaction_lines(serve: &Serve) -> Vec<String> {
    serve.log_text().lines().filter(|l| l.contains("compact")).map(str::to_string).collect()
}

/// The status of `GET /readyz` (503 while free space is below `storage.min_free`).
fn readyz(addr: std::net::SocketAddr) -> u16 {
    request(addr, "GET", "/readyz", &[AUTH], Body::None).expect("reply").status
}

/// Every acknowledged upload, restored from the vault (opened here after the server has
/// stopped), must be the client's database at that TXID, byte for byte. Points retention
/// may have removed (`may_expire`) may be refused as `NoSuchPoint` instead; the latest of
/// every database must restore.
fn check_every_ack(vault_dir: &Path, client: &Client, may_expire: bool) -> (usize, usize) {
    let config = VaultConfig { background_compaction: false, ..VaultConfig::default().retention_off() };
    let vault = Vault::open(vault_dir, config).expect("the vault opens");
    let (mut restored, mut expired) = (0, 0);
    for (db, points) in &client.acked {
        let latest = *points.keys().next_back().expect("acked");
        let (position, hwm) = vault.position("c", db).expect("position");
        assert_eq!((position.txid.0, position.checksum), (latest, points[&latest].checksum), "{db}: position");
        assert!(hwm.0 >= latest, "{db}: HWM {hwm} covers {latest}");
        for (&txid, model) in points {
            let mut out = Vec::new();
            match vault.write_snapshot("c", db, Target::TxId(TxId(txid)), SnapshotFormat::Sqlite, &mut out) {
                Ok(_) => {
                    assert!(out == model.image, "{db} at TXID {txid}: restore is not byte-identical");
                    restored += 1;
                }
                Err(Error::NoSuchPoint(_)) if may_expire && txid != latest => expired += 1,
                Err(e) => panic!("{db} at TXID {txid}: {e}"),
            }
        }
    }
    vault.close().expect("close");
    (restored, expired)
}

const CONFIG_NO_RETENTION: &str = r#"
[storage]
segment_size = "1MiB"
# Below this `/readyz` says not ready; the file system is 64 MiB.
min_free = "1MiB"

[levels]
l1_window = "1s"
l2_window = "2s"
l3_window = "4s"
grace = "100ms"
"#;

#[test]
fn a_full_disk_refuses_uploads_with_507_and_ingest_resumes_once_space_returns() {
    let seed = seed("full_disk_refuses", 7);
    let Some(fs) = SmallFs::make(64) else { return };
    let logs = tempfile::tempdir().expect("tempdir");
    let config = logs.path().join("vault.toml");
    std::fs::write(&config, CONFIG_NO_RETENTION).expect("config");
    let vault_dir = fs.mount.join("vault");
    // Most of the disk goes to a filler file; the vault gets about 10 MiB.
    let filler = fs.mount.join("filler");
    fill_with(&filler, fs.free_bytes().saturating_sub(10 << 20));
    let mut serve = Serve::start(
        &vault_dir,
        &logs.path().join("serve.log"),
        &["--config", path_str(&config), "--retention", "off"],
    );
    let mut client = Client::new(serve.addr, seed);
    let dbs: Vec<String> = (0..4).map(|i| format!("db{i}")).collect();
    for db in &dbs {
        client.add_db(db, 32, 12);
        assert_eq!(client.upload(db), Outcome::Acked, "{db}: snapshot with 10 MiB free");
    }

    // Fill the disk through ingest, round robin, until the first refusal.
    let mut uploads = 0;
    let full = loop {
        let db = &dbs[uploads % dbs.len()];
        uploads += 1;
        assert!(uploads < 2_000, "the disk never filled: {:?}", client.replies);
        if client.upload(db) == Outcome::NoSpace {
            break db.clone();
        }
    };
    let acked_before_full = client.acked_count();
    eprintln!("{}: refused after {acked_before_full} acknowledged uploads", fs.kind);

    // Take the crumbs the log could not use too: now nothing at all can be allocated.
    let brim = fs.mount.join("brim");
    fill_to_the_brim(&brim);
    let compaction_before = compaction_lines(&serve).len();
    let full_since = Instant::now();
    let mut refusals = 1;
    while full_since.elapsed() < Duration::from_secs(3) {
        for db in &dbs {
            assert_eq!(client.upload(db), Outcome::NoSpace, "{db}: an upload onto a full disk");
            refusals += 1;
        }
        client.check_positions();
        std::thread::sleep(Duration::from_millis(200));
    }
    // A new database: its page-checksum map cannot be created.
    client.add_db("fresh", 4, 1);
    assert_eq!(client.upload("fresh"), Outcome::NoSpace, "a new database on a full disk");
    // A body too large to hold in memory (9 MiB) is spooled to the vault's disk first.
    client.add_db("big", 2304, 1);
    assert_eq!(client.upload("big"), Outcome::NoSpace, "an upload spooled to a full disk");
    // A snapshot download restores into a scratch file first: refused before its first byte.
    let reply = request(serve.addr, "GET", &format!("/db/snapshot?db={full}&format=sqlite"), &[AUTH], Body::None)
        .expect("reply");
    assert_no_space(&reply, "snapshot download on a full disk");
    assert!(serve.alive(), "the server survives a full disk:\n{}", serve.log_tail(20));

    // Compaction could not write a thing for 3 s: it backs off with one warning per level
    // (at most one more for a level that failed once before the disk was quite full),
    // instead of an error per database per second, and leaves no partial file.
    let compaction = compaction_lines(&serve);
    assert!(
        compaction.len() - compaction_before <= 3 && compaction.len() <= 6,
        "compaction logs a warning per level while the disk is full, not a line per attempt:\n{}",
        compaction.join("\n")
    );
    let left = leftovers(&vault_dir);
    assert!(left.is_empty(), "failed writes left files behind: {left:?}");

    // The readiness endpoint says "not ready" while the disk is full.
    assert_eq!(readyz(serve.addr), 503, "GET /readyz on a full disk");

    // Space returns: ingest resumes without a restart, the new database included.
    std::fs::remove_file(&brim).expect("remove");
    std::fs::remove_file(&filler).expect("remove");
    for round in 0..20 {
        for db in &dbs {
            assert_eq!(client.upload(db), Outcome::Acked, "{db}: upload {round} after space returned");
        }
    }
    assert_eq!(client.upload("fresh"), Outcome::Acked, "a new database once space returned");
    client.check_positions();
    assert_eq!(readyz(serve.addr), 200, "GET /readyz once space returned");
    assert!(serve.stop().success(), "the server stops cleanly:\n{}", serve.log_tail(20));

    let (restored, _) = check_every_ack(&vault_dir, &client, false);
    assert_eq!(restored, client.acked_count());
    eprintln!(
        "{}: {} uploads acknowledged ({acked_before_full} before the disk filled), {refusals} refused with 507 \
         while full, every acknowledged TXID restored byte-identical; replies {:?}",
        fs.kind,
        client.acked_count(),
        client.replies
    );
}

const CONFIG_SHORT_RETENTION: &str = r#"
[storage]
segment_size = "1MiB"
# Below this `/readyz` says not ready; the file system is 64 MiB.
min_free = "1MiB"

[levels]
l1_window = "1s"
l2_window = "1m"
l3_window = "1h"
grace = "100ms"

[retention]
l0 = "1s"
l1 = "off"
every = "500ms"
"#;

#[test]
fn retention_frees_space_on_a_full_disk_and_ingest_resumes() {
    let seed = seed("retention_frees_space", 11);
    let Some(fs) = SmallFs::make(64) else { return };
    let logs = tempfile::tempdir().expect("tempdir");
    let config = logs.path().join("vault.toml");
    std::fs::write(&config, CONFIG_SHORT_RETENTION).expect("config");
    let vault_dir = fs.mount.join("vault");
    fill_with(&fs.mount.join("filler"), fs.free_bytes().saturating_sub(6 << 20));
    let mut serve =
        Serve::start(&vault_dir, &logs.path().join("serve.log"), &["--config", path_str(&config), "--retention", "on"]);
    let mut client = Client::new(serve.addr, seed);
    let dbs: Vec<String> = (0..4).map(|i| format!("db{i}")).collect();
    for db in &dbs {
        client.add_db(db, 8, 8);
    }
    // Upload as fast as one client can until the disk has been full and then, with nothing
    // deleted by the test, taken an upload again: retention made the room.
    let started = Instant::now();
    let (mut first_full, mut resumed, mut i) = (None::<Instant>, 0, 0);
    while resumed < 20 {
        let db = &dbs[i % dbs.len()];
        i += 1;
        match client.upload(db) {
            Outcome::NoSpace => {
                first_full.get_or_insert_with(Instant::now);
                std::thread::sleep(Duration::from_millis(20));
            }
            Outcome::Acked if first_full.is_some() => resumed += 1,
            Outcome::Acked => {}
        }
        assert!(
            first_full.is_some() || started.elapsed() < Duration::from_secs(30),
            "the disk never filled in 30 s: {:?}",
            client.replies
        );
        assert!(
            first_full.is_none_or(|at| at.elapsed() < Duration::from_secs(30)),
            "30 s after the disk filled, retention has not made room for an upload: {:?}\n{}",
            client.replies,
            serve.log_tail(20)
        );
    }
    client.check_positions();
    assert!(serve.alive());
    assert!(serve.stop().success(), "the server stops cleanly:\n{}", serve.log_tail(20));
    let (restored, expired) = check_every_ack(&vault_dir, &client, true);
    eprintln!(
        "{}: {} uploads acknowledged, {restored} restored byte-identical, {expired} no longer restore points \
         (retention), replies {:?}",
        fs.kind,
        client.acked_count(),
        client.replies
    );
}
