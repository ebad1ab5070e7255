//! The LiteFS backup protocol against a real server on a loopback port: the conformance
//! scenarios of `litefs-backup-api.md` §12, with the exact status, code and position each
//! expects, and after every refused request a check that the position did not move.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use common::http::{Body, Reply, request};
use ltxvault::io::engine::IoChoice;
use ltxvault::ltx::{Checksum, Decoder, Encoder, Format, Header, PageNo, TxId};
use ltxvault::server::{AuthMode, ClusterIdPolicy, Limits, MetricsAccess};
use ltxvault::{Vault, VaultConfig};

/// A server on a loopback port over a vault in a temporary directory; stopped (and the
/// vault closed) on drop.
struct Server {
    addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

fn start(dir: &std::path::Path, auth: AuthMode, limits: Limits) -> Server {
    start_with(dir, auth, ClusterIdPolicy::Off, limits)
}

fn start_with(dir: &std::path::Path, auth: AuthMode, ids: ClusterIdPolicy, limits: Limits) -> Server {
    let config = VaultConfig { io: IoChoice::Std, background_compaction: false, ..VaultConfig::default() };
    start_config(dir, config, auth, ids, limits)
}

fn start_config(
    dir: &std::path::Path,
    config: VaultConfig,
    auth: AuthMode,
    ids: ClusterIdPolicy,
    limits: Limits,
) -> Server {
    let vault = Arc::new(Vault::open(dir, config).expect("open vault"));
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    listener.set_nonblocking(true).expect("nonblocking");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let thread = std::thread::spawn(move || {
        let runtime =
            tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
        runtime
            .block_on(async {
                let listener = tokio::net::TcpListener::from_std(listener).expect("listener");
                ltxvault::server::run(listener, vault.clone(), auth, ids, MetricsAccess::Open, limits, async {
                    let _ = stopped.await;
                })
                .await
            })
            .expect("serve");
        runtime.shutdown_timeout(Duration::from_secs(5));
        Arc::try_unwrap(vault).ok().expect("the server let go of the vault").close().expect("close");
    });
    Server { addr, stop: Some(stop), thread: Some(thread) }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

const CLUSTER: (&str, &str) = ("Authorization", "cluster c");
const CLUSTER_ID: (&str, &str) = ("Litefs-Cluster-Id", "LFSC0123456789ABCDEF");

fn page(byte: u8) -> Vec<u8> {
    vec![byte; 512]
}

/// An LTX v1 file with page size 512.
fn ltx(commit: u32, min: u64, max: u64, pre: u64, pages: &[(u32, u8)], post: u64, compress: bool) -> Vec<u8> {
    let header = Header {
        page_size: 512,
        commit,
        min_txid: TxId(min),
        max_txid: TxId(max),
        pre_apply_checksum: Checksum(pre),
        ..Header::default()
    };
    let mut enc = Encoder::new(Vec::new(), &header, Format::V1 { compress }).expect("header");
    for &(pgno, byte) in pages {
        enc.write_page(PageNo(pgno), &page(byte)).expect("page");
    }
    enc.finish(Checksum(post)).expect("finish").0
}

const C1: u64 = 0xe4e4aaa102377eee;
const C2: u64 = 0xad2dffe333333333;
const C4: u64 = 0x8b87423eeeeeeeee;

fn f1(compress: bool) -> Vec<u8> {
    ltx(1, 1, 1, 0, &[(1, 1)], C1, compress)
}
fn f2(compress: bool) -> Vec<u8> {
    ltx(2, 2, 2, C1, &[(2, 2)], C2, compress)
}
fn f3(compress: bool) -> Vec<u8> {
    ltx(2, 3, 4, C2, &[(1, 3)], C4, compress)
}

fn upload(addr: SocketAddr, db: &str, file: &[u8]) -> Reply {
    request(addr, "POST", &format!("/db/tx?db={db}"), &[CLUSTER, CLUSTER_ID], Body::Chunked(file, 4096)).expect("reply")
}

fn pos(addr: SocketAddr) -> serde_json::Value {
    let reply = request(addr, "GET", "/pos", &[CLUSTER, CLUSTER_ID], Body::None).expect("reply");
    assert_eq!(reply.status, 200, "{}", String::from_utf8_lossy(&reply.body));
    reply.json()
}

fn position(txid: u64, checksum: u64) -> serde_json::Value {
    serde_json::json!({"TXID": format!("{txid:016x}"), "PostApplyChecksum": format!("{checksum:016x}")})
}

/// Asserts an error reply: status, code, and the position it carries.
fn assert_error(reply: &Reply, status: u16, code: &str, pos: Option<(u64, u64)>) {
    let body = reply.json();
    assert_eq!(reply.status, status, "{body}");
    assert_eq!(body["code"], code, "{body}");
    assert!(body["error"].as_str().is_some_and(|e| !e.is_empty()), "{body}");
    if let Some((txid, checksum)) = pos {
        assert_eq!(body["pos"], position(txid, checksum), "{body}");
    }
    assert!(reply.header("Litefs-Hwm").is_none(), "no HWM on an error");
}

fn assert_hwm(reply: &Reply, expected: u64) {
    assert_eq!(reply.status, 200, "{}", String::from_utf8_lossy(&reply.body));
    let hwm = reply.header("Litefs-Hwm").expect("Litefs-Hwm on success");
    assert!(hwm.len() == 16 && hwm.bytes().all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()), "{hwm}");
    assert_eq!(u64::from_str_radix(hwm, 16).expect("hex"), expected);
}

#[test]
fn a_database_is_written_read_and_refused_as_the_protocol_says() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = start(dir.path(), AuthMode::None, Limits::default());
    let addr = server.addr;

    // 1. Empty cluster.
    assert_eq!(pos(addr), serde_json::json!({}));
    // 8. First write not a snapshot: refused with the zero position, db3 not listed.
    let reply = upload(addr, "db3", &ltx(2, 2, 2, C1, &[(2, 2)], C2, false));
    assert_error(&reply, 409, "EPOSMISMATCH", Some((0, 0)));
    assert_eq!(pos(addr), serde_json::json!({}));
    // 2-4. Snapshot, contiguous write, a two-TXID write; HWM is the new TXID each time.
    assert_hwm(&upload(addr, "db", &f1(false)), 1);
    assert_eq!(pos(addr), serde_json::json!({"db": position(1, C1)}));
    // 6. Gap, 7. pre-apply mismatch, 11. wrong post-apply.
    assert_error(&upload(addr, "db", &ltx(2, 3, 3, C1, &[(2, 2)], C2, false)), 409, "EPOSMISMATCH", Some((1, C1)));
    assert_error(
        &upload(addr, "db", &ltx(2, 2, 2, 0x80000000000007d0, &[(2, 2)], C2, false)),
        409,
        "EPOSMISMATCH",
        Some((1, C1)),
    );
    assert_error(
        &upload(addr, "db", &ltx(2, 2, 2, C1, &[(2, 2)], 0x99b1d11ab98cc555, false)),
        400,
        "EBADCHECKSUM",
        Some((1, C1)),
    );
    // 12. A flipped page byte, a body one byte short, a body cut mid-chunk.
    let good = f2(false);
    let mut flipped = good.clone();
    flipped[100 + 4 + 7] ^= 1;
    assert_error(&upload(addr, "db", &flipped), 400, "EBADLTX", Some((1, C1)));
    assert_error(&upload(addr, "db", &good[..good.len() - 1]), 400, "EBADLTX", Some((1, C1)));
    let cut = request(addr, "POST", "/db/tx?db=db", &[CLUSTER], Body::ChunkedCut(&good, 200)).expect("reply");
    assert_error(&cut, 400, "EBADBODY", Some((1, C1)));
    // 15. Growth without the new page.
    assert_error(&upload(addr, "db", &ltx(3, 2, 2, C1, &[(2, 2)], C2, false)), 400, "EBADCHECKSUM", Some((1, C1)));
    assert_eq!(pos(addr), serde_json::json!({"db": position(1, C1)}), "nothing refused moved the position");
    assert_hwm(&upload(addr, "db", &good), 2);
    // 10. Replay of an accepted upload.
    assert_error(&upload(addr, "db", &good), 409, "EPOSMISMATCH", Some((2, C2)));
    assert_hwm(&upload(addr, "db", &f3(false)), 4);
    assert_eq!(pos(addr), serde_json::json!({"db": position(4, C4)}));
    // 9. A snapshot onto existing data.
    assert_error(&upload(addr, "db", &f1(false)), 409, "EPOSMISMATCH", Some((4, C4)));
    // 14. Page size change.
    let big = {
        let header = Header {
            page_size: 4096,
            commit: 2,
            min_txid: TxId(5),
            max_txid: TxId(5),
            pre_apply_checksum: Checksum(C4),
            ..Header::default()
        };
        let mut enc = Encoder::new(Vec::new(), &header, Format::V1 { compress: false }).expect("header");
        enc.write_page(PageNo(1), &[9u8; 4096]).expect("page");
        enc.finish(Checksum(0x8000000000000001)).expect("finish").0
    };
    assert_error(&upload(addr, "db", &big), 422, "EBADHEADER", Some((4, C4)));

    // 5. Snapshot fetch: a snapshot at the position, equal to /pos.
    let reply = request(addr, "GET", "/db/snapshot?db=db", &[CLUSTER], Body::None).expect("reply");
    assert_eq!(reply.status, 200);
    assert_eq!(reply.header("Content-Type"), Some("application/octet-stream"));
    let mut decoder = Decoder::new(&reply.body).expect("a valid LTX file");
    let header = *decoder.header();
    assert_eq!(
        (header.min_txid, header.max_txid, header.commit, header.pre_apply_checksum),
        (TxId(1), TxId(4), 2, Checksum::NONE)
    );
    let mut pages = Vec::new();
    while let Some(p) = decoder.next_page().expect("page") {
        pages.push((p.pgno.0, p.data.to_vec()));
    }
    assert_eq!(pages, vec![(1, page(3)), (2, page(2))]);
    assert_eq!(decoder.trailer().expect("trailer").post_apply_checksum, Checksum(C4));
    // 32. Export as SQLite bytes.
    let reply = request(addr, "GET", "/db/snapshot?db=db&format=sqlite", &[CLUSTER], Body::None).expect("reply");
    assert_eq!(reply.body, [page(3), page(2)].concat());
    assert_error(
        &request(addr, "GET", "/db/snapshot?db=db&format=csv", &[CLUSTER], Body::None).expect("reply"),
        400,
        "EBADFORMAT",
        None,
    );
    // 20. Unknown database.
    assert_error(
        &request(addr, "GET", "/db/snapshot?db=nope", &[CLUSTER], Body::None).expect("reply"),
        404,
        "ENODB",
        Some((0, 0)),
    );

    // 16. LZ4 uploads give the same positions; 19. several databases.
    assert_hwm(&upload(addr, "db2", &f1(true)), 1);
    assert_hwm(&upload(addr, "db2", &f2(true)), 2);
    assert_hwm(&upload(addr, "db2", &f3(true)), 4);
    assert_eq!(pos(addr), serde_json::json!({"db": position(4, C4), "db2": position(4, C4)}));

    // The control plane's read side: one database, and every database of the cluster.
    let info = request(addr, "GET", "/db/info?db=db", &[CLUSTER], Body::None).expect("reply");
    assert_eq!(info.status, 200);
    let info = info.json();
    assert_eq!(info["position"], format!("{:016x}/{C4:016x}", 4));
    assert_eq!((info["page_size"].as_u64(), info["commit"].as_u64()), (Some(512), Some(2)));
    assert_eq!(info["levels"][0]["pieces"], 3, "three uploads in L0: {info}");
    assert_eq!(info["newest"]["txid"], "0000000000000004");
    let dbs = request(addr, "GET", "/dbs", &[CLUSTER], Body::None).expect("reply").json();
    let names: Vec<&str> = dbs["databases"].as_array().expect("list").iter().filter_map(|d| d["db"].as_str()).collect();
    assert_eq!(names, ["db", "db2"]);
    assert_error(&request(addr, "GET", "/db/info?db=nope", &[CLUSTER], Body::None).expect("reply"), 404, "ENODB", None);

    // 21. Bad database names never reach the file system; 26. unknown paths are JSON 404s.
    for db in ["", "..", "a%2Fb", "a%00b", &"x".repeat(10_000)] {
        let path = if db.is_empty() { "/db/tx".to_string() } else { format!("/db/tx?db={db}") };
        let reply = request(addr, "POST", &path, &[CLUSTER], Body::Fixed(&f1(false))).expect("reply");
        assert!(matches!(reply.status, 400 | 431 | 414), "db={:.20}: {}", db, reply.status);
        if reply.status == 400 {
            assert_eq!(reply.json()["code"], "EBADDB");
        }
    }
    assert_error(&request(addr, "GET", "/db/txx", &[CLUSTER], Body::None).expect("reply"), 404, "ENOTFOUND", None);
    assert_error(&request(addr, "GET", "/pos?bogus=1", &[CLUSTER], Body::None).expect("reply"), 400, "EBADINPUT", None);
    assert_error(
        &request(addr, "POST", "/db/tx?db=db", &[CLUSTER], Body::Fixed(&[])).expect("reply"),
        400,
        "EBADBODY",
        Some((4, C4)),
    );
    // 23. Another cluster sees none of it.
    let other = request(addr, "GET", "/pos", &[("Authorization", "cluster other")], Body::None).expect("reply");
    assert_eq!(other.json(), serde_json::json!({}));

    // 33. Persistence: a restart keeps positions, and HWMs stay (new upload continues).
    drop(server);
    let server = start(dir.path(), AuthMode::None, Limits::default());
    let addr = server.addr;
    assert_eq!(pos(addr), serde_json::json!({"db": position(4, C4), "db2": position(4, C4)}));
    assert_error(&upload(addr, "db", &f3(false)), 409, "EPOSMISMATCH", Some((4, C4)));
}

/// Scenario 27: two uploads of different TX2 files on top of the same TX1 at once: exactly
/// one wins, the other gets EPOSMISMATCH with the winner's position.
#[test]
fn concurrent_uploads_to_one_database_have_one_winner() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = start(dir.path(), AuthMode::None, Limits::default());
    let addr = server.addr;
    for round in 0..10 {
        let db = format!("race{round}");
        assert_hwm(&upload(addr, &db, &f1(false)), 1);
        let a = ltx(2, 2, 2, C1, &[(2, 2)], C2, false);
        let b = ltx(1, 2, 2, C1, &[(1, 5)], 0x99b1d11ab98cc555, false);
        let (ra, rb) = std::thread::scope(|s| {
            let ta = s.spawn(|| upload(addr, &db, &a));
            let tb = s.spawn(|| upload(addr, &db, &b));
            (ta.join().expect("a"), tb.join().expect("b"))
        });
        let (winner, loser, expected) = match (ra.status, rb.status) {
            (200, 409) => (&ra, &rb, (2, C2)),
            (409, 200) => (&rb, &ra, (2, 0x99b1d11ab98cc555)),
            other => panic!("round {round}: statuses {other:?}"),
        };
        assert_hwm(winner, 2);
        assert_error(loser, 409, "EPOSMISMATCH", Some(expected));
        assert_eq!(pos(addr)[&db], position(expected.0, expected.1));
    }
}

/// Scenario 28: a large upload, chunked, accepted; over the body limit, refused.
#[test]
fn large_bodies_are_spooled_and_limits_hold() {
    let dir = tempfile::tempdir().expect("tempdir");
    let limits = Limits { max_body_bytes: 32 << 20, ..Limits::default() };
    let server = start(dir.path(), AuthMode::None, limits);
    let addr = server.addr;
    // A 20 MiB snapshot (40,000 pages of 512 bytes): past the 8 MiB spill threshold.
    let commit = 40_000u32;
    let mut image = Vec::with_capacity(commit as usize * 512);
    for p in 1..=commit {
        image.extend(std::iter::repeat_n((p % 251) as u8, 512));
    }
    let checksum = ltxvault::ltx::database_checksum(&image, 512);
    let header = Header { page_size: 512, commit, min_txid: TxId(1), max_txid: TxId(1), ..Header::default() };
    let mut enc = Encoder::new(Vec::new(), &header, Format::V1 { compress: false }).expect("header");
    for (i, p) in image.chunks(512).enumerate() {
        enc.write_page(PageNo(i as u32 + 1), p).expect("page");
    }
    let file = enc.finish(checksum).expect("finish").0;
    // Cut off part way, past the spill threshold: refused, and the spooled part is gone.
    let cut = request(addr, "POST", "/db/tx?db=big", &[CLUSTER], Body::ChunkedCut(&file, 15 << 20)).expect("reply");
    assert_error(&cut, 400, "EBADBODY", Some((0, 0)));
    assert!(
        std::fs::read_dir(dir.path().join("tmp")).expect("scratch").next().is_none(),
        "the spooled part is removed"
    );
    assert_hwm(&upload(addr, "big", &file), 1);
    let reply = request(addr, "GET", "/db/snapshot?db=big&format=sqlite", &[CLUSTER], Body::None).expect("reply");
    assert!(reply.body == image, "the snapshot is the database");
    // Over the limit: refused whether the length is announced or not.
    let huge = vec![0u8; 33 << 20];
    assert_error(
        &request(addr, "POST", "/db/tx?db=h", &[CLUSTER], Body::Fixed(&huge)).expect("reply"),
        413,
        "ETOOLARGE",
        Some((0, 0)),
    );
    assert_error(&upload(addr, "h", &huge), 413, "ETOOLARGE", Some((0, 0)));
    assert!(
        std::fs::read_dir(dir.path().join("tmp")).expect("scratch").next().is_none(),
        "no spooled body is left behind"
    );
}

/// A client that sends headers and then stalls is cut off by the body timeout, and one
/// that never finishes its headers by the header timeout; neither changes anything.
#[test]
fn stalled_clients_time_out() {
    use std::io::{Read, Write};
    let dir = tempfile::tempdir().expect("tempdir");
    let limits = Limits {
        header_timeout: Duration::from_millis(500),
        body_idle_timeout: Duration::from_millis(500),
        ..Limits::default()
    };
    let server = start(dir.path(), AuthMode::None, limits);
    let addr = server.addr;
    let started = std::time::Instant::now();
    let mut stream = std::net::TcpStream::connect(addr).expect("connect");
    stream.write_all(b"POST /db/tx?db=db HTTP/1.1\r\nHost: x\r\nAuthorization: cluster c\r\nTransfer-Encoding: chunked\r\n\r\n10\r\nabc").expect("send");
    let mut reply = String::new();
    stream.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
    let _ = stream.read_to_string(&mut reply);
    assert!(reply.starts_with("HTTP/1.1 408"), "{reply}");
    assert!(reply.contains("ETIMEOUT"), "{reply}");
    let mut stream = std::net::TcpStream::connect(addr).expect("connect");
    stream.write_all(b"GET /pos HTTP/1.1\r\nHost: x\r\n").expect("send");
    stream.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
    let mut rest = Vec::new();
    let _ = stream.read_to_end(&mut rest);
    assert!(started.elapsed() < Duration::from_secs(8), "both were cut off by the timeouts");
    assert_eq!(pos(addr), serde_json::json!({}));
}

/// Scenarios 30-32 and the rest of the control plane: restore in place (a new transaction
/// whose state is the target's), its dry run, a plain SQLite upload, a clone, a deletion.
#[test]
fn the_control_plane_restores_uploads_clones_and_deletes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = start(dir.path(), AuthMode::None, Limits::default());
    let addr = server.addr;
    for file in [f1(false), f2(false), f3(false)] {
        assert_eq!(upload(addr, "db", &file).status, 200);
    }
    let call = |method: &str, path: &str| request(addr, method, path, &[CLUSTER], Body::None).expect("reply");
    // The dry run says where a restore would go, and changes nothing.
    let check = call("GET", "/db/restore/check?db=db&txid=0000000000000002");
    assert_eq!(check.status, 200, "{}", String::from_utf8_lossy(&check.body));
    assert_eq!(check.json()["target"]["txid"], "0000000000000002");
    assert_eq!(pos(addr)["db"], position(4, C4));
    // 30. Restore to TXID 2: a new TXID 5 with TX2's state.
    let done = call("POST", "/db/restore?db=db&txid=0000000000000002");
    assert_eq!(done.status, 200, "{}", String::from_utf8_lossy(&done.body));
    assert_eq!(done.json()["txID"], "0000000000000005");
    assert_eq!(pos(addr)["db"], position(5, C2));
    let snapshot = call("GET", "/db/snapshot?db=db&format=sqlite");
    assert_eq!(snapshot.body, [page(1), page(2)].concat(), "the state of TX2, at TXID 5");
    // A LiteFS node still at 4 gets EPOSMISMATCH with the new position (then restores).
    assert_error(
        &upload(addr, "db", &ltx(2, 5, 5, C4, &[(1, 7)], 0x8000000000000001, false)),
        409,
        "EPOSMISMATCH",
        Some((5, C2)),
    );
    // Restoring to the current point is a no-op; past it, ENOTXID; no target, EBADINPUT.
    let same = call("POST", "/db/restore?db=db&txid=0000000000000005");
    assert_eq!((same.status, same.json()["applied"].as_bool()), (200, Some(false)));
    assert_error(&call("POST", "/db/restore?db=db&txid=0000000000000009"), 404, "ENOTXID", Some((5, C2)));
    assert_error(&call("POST", "/db/restore?db=db"), 400, "EBADINPUT", None);
    assert_error(&call("POST", "/db/restore?db=nope&txid=1"), 404, "ENODB", None);

    // 31. A plain SQLite file uploads as a new database; junk is refused.
    let sqlite_file = {
        let path = dir.path().join("upload.db");
        let conn = rusqlite::Connection::open(&path).expect("sqlite");
        conn.execute_batch("PRAGMA page_size = 512; CREATE TABLE t (x); INSERT INTO t VALUES (42);").expect("sql");
        drop(conn);
        std::fs::read(&path).expect("read")
    };
    let reply =
        request(addr, "POST", "/db/upload?db=new", &[CLUSTER], Body::Chunked(&sqlite_file, 1000)).expect("reply");
    assert_eq!(reply.status, 200, "{}", String::from_utf8_lossy(&reply.body));
    assert_eq!(reply.json()["txID"], "0000000000000001");
    assert_eq!(call("GET", "/db/snapshot?db=new&format=sqlite").body, sqlite_file);
    let junk = request(addr, "POST", "/db/upload?db=junk", &[CLUSTER], Body::Fixed(&[7u8; 1024])).expect("reply");
    assert_error(&junk, 422, "EBADHEADER", None);

    // Clone db at TXID 4 into another cluster; the destination must not exist.
    let clone = call("POST", "/db/clone?db=db&to_cluster=copy&to_db=db4&txid=0000000000000004");
    assert_eq!(clone.status, 200, "{}", String::from_utf8_lossy(&clone.body));
    let copy =
        request(addr, "GET", "/db/snapshot?db=db4&format=sqlite", &[("Authorization", "cluster copy")], Body::None)
            .expect("reply");
    assert_eq!(copy.body, [page(3), page(2)].concat());
    assert_error(&call("POST", "/db/clone?db=db&to_cluster=copy&to_db=db4"), 409, "EEXISTS", None);

    // Delete: gone from /pos and snapshots, and stays gone after a restart.
    let deleted = call("DELETE", "/db?db=new");
    assert_eq!(deleted.status, 200, "{}", String::from_utf8_lossy(&deleted.body));
    assert!(pos(addr).get("new").is_none());
    assert_error(&call("GET", "/db/snapshot?db=new"), 404, "ENODB", None);
    drop(server);
    let server = start(dir.path(), AuthMode::None, Limits::default());
    assert!(pos(server.addr).get("new").is_none(), "a deletion survives a restart");
    assert_eq!(pos(server.addr)["db"], position(5, C2));
}

/// Scenarios 22-25: tokens reach their own cluster only, and a cluster bound to a LiteFS
/// cluster id refuses another id until the binding is reset.
#[test]
fn tokens_and_cluster_ids_keep_clusters_apart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let tokens = Arc::new(ltxvault::auth::TokenStore::open(dir.path()).expect("tokens"));
    let ids = Arc::new(ltxvault::auth::ClusterIds::open(dir.path()).expect("ids"));
    let (_, t1) = tokens.create(ltxvault::auth::Scope::Cluster("c1".into()), None).expect("token");
    let (_, t2) = tokens.create(ltxvault::auth::Scope::Cluster("c2".into()), None).expect("token");
    let (_, admin) = tokens.create(ltxvault::auth::Scope::Admin, None).expect("token");
    let server =
        start_with(dir.path(), AuthMode::Tokens(tokens.clone()), ClusterIdPolicy::Bind(ids.clone()), Limits::default());
    let addr = server.addr;
    let as_token = |token: &str, method: &str, path: &str, body: Body<'_>, id: &str| {
        request(addr, method, path, &[("Authorization", token), ("Litefs-Cluster-Id", id)], body).expect("reply")
    };
    const ID_A: &str = "LFSCAAAAAAAAAAAAAAAA";
    const ID_B: &str = "LFSCBBBBBBBBBBBBBBBB";
    // 22. No token, a wrong token: 401 on every endpoint, nothing stored.
    for (method, path) in [("GET", "/pos"), ("POST", "/db/tx?db=db"), ("GET", "/db/snapshot?db=db")] {
        let reply = request(addr, method, path, &[], Body::Fixed(&f1(false))).expect("reply");
        assert_error(&reply, 401, "EINVALIDAUTH", None);
        let wrong = format!("{}x", &t1[..t1.len() - 1]);
        assert_error(&as_token(&wrong, method, path, Body::Fixed(&f1(false)), ID_A), 401, "EINVALIDAUTH", None);
    }
    // First write binds c1 to ID_A.
    assert_hwm(&as_token(&t1, "POST", "/db/tx?db=db", Body::Chunked(&f1(false), 100), ID_A), 1);
    // 23. c2 sees nothing of c1, and the same name evolves on its own there.
    assert_eq!(as_token(&t2, "GET", "/pos", Body::None, ID_B).json(), serde_json::json!({}));
    assert_hwm(&as_token(&t2, "POST", "/db/tx?db=db", Body::Chunked(&f1(true), 100), ID_B), 1);
    // 24. A cluster token naming another cluster: 403; an admin token needs a cluster.
    assert_error(&as_token(&t1, "GET", "/pos?cluster=c2", Body::None, ID_A), 403, "EFORBIDDEN", None);
    assert_error(&as_token(&admin, "GET", "/pos", Body::None, ID_A), 400, "EBADCLUSTER", None);
    let both = as_token(&admin, "GET", "/pos?cluster=c1", Body::None, ID_A);
    assert_eq!(both.json(), serde_json::json!({"db": position(1, C1)}));
    // 25. Another cluster id for c1: 422 with the fix in the message; no header is fine.
    let refused = as_token(&t1, "GET", "/pos", Body::None, ID_B);
    assert_error(&refused, 422, "ECLUSTERID", None);
    let message = refused.json()["error"].as_str().expect("text").to_string();
    assert!(message.starts_with(&format!("cluster id mismatch, expecting \"{ID_A}\"")), "{message}");
    assert!(message.contains("reset-id"), "{message}");
    assert_error(&as_token(&t1, "POST", "/db/tx?db=db", Body::Fixed(&f2(false)), ID_B), 422, "ECLUSTERID", None);
    let no_header = request(addr, "GET", "/pos", &[("Authorization", t1.as_str())], Body::None).expect("reply");
    assert_eq!(no_header.status, 200);
    // After a reset the new id binds.
    ids.reset("c1").expect("reset");
    assert_hwm(&as_token(&t1, "POST", "/db/tx?db=db", Body::Fixed(&f2(false)), ID_B), 2);
    assert_error(&as_token(&t1, "GET", "/pos", Body::None, ID_A), 422, "ECLUSTERID", None);
    // A revoked token stops working at once.
    let id = tokens
        .list()
        .expect("list")
        .iter()
        .find(|t| t.scope == ltxvault::auth::Scope::Cluster("c2".into()))
        .expect("t2")
        .id
        .clone();
    tokens.revoke(&id).expect("revoke");
    assert_error(&as_token(&t2, "GET", "/pos", Body::None, ID_B), 401, "EINVALIDAUTH", None);
}

/// Scenario 13: invalid headers and page blocks are refused with 400 and change nothing;
/// scenarios 17 and 18: a deleted database (Commit 0) and its re-creation, and an empty
/// snapshot for a new database.
#[test]
fn malformed_files_are_refused_and_deletions_round_trip() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = start(dir.path(), AuthMode::None, Limits::default());
    let addr = server.addr;
    assert_hwm(&upload(addr, "db", &f1(false)), 1);
    let good = f2(false);
    let with = |edit: &dyn Fn(&mut Vec<u8>)| {
        let mut bytes = good.clone();
        edit(&mut bytes);
        bytes
    };
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("bad magic", with(&|b| b[0] = b'X')),
        ("flags 0x2", with(&|b| b[7] = 2)),
        ("page size 1000", with(&|b| b[8..12].copy_from_slice(&1000u32.to_be_bytes()))),
        ("min TXID 0", with(&|b| b[16..24].copy_from_slice(&0u64.to_be_bytes()))),
        ("min > max", with(&|b| b[16..24].copy_from_slice(&9u64.to_be_bytes()))),
        ("non-snapshot with zero pre-apply", with(&|b| b[40..48].fill(0))),
        ("snapshot with a pre-apply", {
            let mut b = f1(false);
            b[40..48].copy_from_slice(&C1.to_be_bytes());
            b
        }),
        ("page above Commit", with(&|b| b[12..16].copy_from_slice(&1u32.to_be_bytes()))),
        ("page number 0", with(&|b| b[100..104].copy_from_slice(&0u32.to_be_bytes()))),
        ("truncated header", good[..50].to_vec()),
        ("not LTX at all", b"hello, world".to_vec()),
    ];
    for (what, body) in cases {
        let reply = upload(addr, "db", &body);
        assert!(reply.status == 400 || reply.status == 409, "{what}: {}", reply.status);
        if reply.status == 400 {
            assert!(
                matches!(reply.json()["code"].as_str(), Some("EBADLTX" | "EBADCHECKSUM")),
                "{what}: {}",
                reply.json()
            );
        }
        assert_eq!(pos(addr)["db"], position(1, C1), "{what} changed nothing");
    }
    // 17. Delete (Commit 0), snapshot of the deleted database, re-creation.
    assert_hwm(&upload(addr, "db", &good), 2);
    assert_hwm(&upload(addr, "db", &f3(false)), 4);
    assert_hwm(&upload(addr, "db", &ltx(0, 5, 5, C4, &[], 0x8000000000000000, false)), 5);
    assert_eq!(pos(addr)["db"], position(5, 0x8000000000000000), "a deleted database stays listed");
    let snapshot = request(addr, "GET", "/db/snapshot?db=db", &[CLUSTER], Body::None).expect("reply");
    let decoder = Decoder::new(&snapshot.body).expect("valid");
    assert_eq!(decoder.header().commit, 0);
    assert_hwm(&upload(addr, "db", &ltx(1, 6, 6, 0x8000000000000000, &[(1, 1)], C1, false)), 6);
    assert_eq!(pos(addr)["db"], position(6, C1));
    // 18. An empty snapshot for a new database.
    assert_hwm(&upload(addr, "db4", &ltx(0, 1, 3, 0, &[], 0x8000000000000000, false)), 3);
    assert_eq!(pos(addr)["db4"], position(3, 0x8000000000000000));
}

/// A cluster at its quota: uploads of every kind into it are refused with 507 `EQUOTA`
/// (with the stored position, which does not move), while another cluster keeps
/// uploading and the full cluster still answers reads; a deletion makes room again.
#[test]
fn uploads_past_a_quota_are_refused_with_507_and_nothing_else_is() {
    let dir = tempfile::tempdir().expect("tempdir");
    // Room for exactly the first upload's log record: header (112 bytes), the names
    // "c" and "db", the payload, padded to 8 bytes.
    let quota = (112 + 1 + 2 + f1(false).len() as u64).div_ceil(8) * 8;
    let config = VaultConfig {
        io: IoChoice::Std,
        background_compaction: false,
        quotas: ltxvault::quota::Quotas {
            default: None,
            clusters: [("c".to_string(), Some(quota))].into_iter().collect(),
        },
        ..VaultConfig::default()
    };
    let server = start_config(dir.path(), config, AuthMode::None, ClusterIdPolicy::Off, Limits::default());
    let addr = server.addr;
    let other = ("Authorization", "cluster other");
    assert_hwm(&upload(addr, "db", &f1(false)), 1);
    let refused = upload(addr, "db", &f2(false));
    assert_error(&refused, 507, "EQUOTA", Some((1, C1)));
    let message = refused.json()["error"].as_str().expect("message").to_string();
    for part in ["cluster \"c\"", &format!("{quota} of {quota} bytes"), "quotas.clusters.c"] {
        assert!(message.contains(part), "{part:?} missing from: {message}");
    }
    assert_eq!(pos(addr)["db"], position(1, C1), "the refused upload changed nothing");
    let dbs = request(addr, "GET", "/dbs", &[CLUSTER], Body::None).expect("reply").json();
    assert_eq!(dbs["usage"], serde_json::json!({"bytes": quota, "quota": quota}), "{dbs}");

    // Another cluster is not limited by it.
    for file in [f1(false), f2(false), f3(false)] {
        let reply =
            request(addr, "POST", "/db/tx?db=db", &[other, CLUSTER_ID], Body::Chunked(&file, 4096)).expect("reply");
        assert_eq!(reply.status, 200, "{}", String::from_utf8_lossy(&reply.body));
    }
    // Reads of the full cluster go on; every write into it is refused.
    let call = |method: &str, path: &str, auth: (&'static str, &'static str)| {
        request(addr, method, path, &[auth], Body::None).expect("reply")
    };
    let snapshot = call("GET", "/db/snapshot?db=db&format=sqlite", CLUSTER);
    assert_eq!((snapshot.status, snapshot.body), (200, page(1)));
    assert_error(&call("POST", "/db/clone?cluster=other&db=db&to_cluster=c&to_db=copy", other), 507, "EQUOTA", None);
    let sqlite_file = {
        let path = dir.path().join("upload.db");
        let conn = rusqlite::Connection::open(&path).expect("sqlite");
        conn.execute_batch("PRAGMA page_size = 512; CREATE TABLE t (x);").expect("sql");
        drop(conn);
        std::fs::read(&path).expect("read")
    };
    let reply =
        request(addr, "POST", "/db/upload?db=new", &[CLUSTER], Body::Chunked(&sqlite_file, 1000)).expect("reply");
    assert_error(&reply, 507, "EQUOTA", None);
    assert_eq!(pos(addr).as_object().map(|o| o.len()), Some(1), "no database appeared: {}", pos(addr));
    // The clone into a cluster with room works.
    assert_eq!(call("POST", "/db/clone?db=db&to_cluster=other&to_db=copy", CLUSTER).status, 200);
    // Deleting makes room.
    assert_eq!(call("DELETE", "/db?db=db", CLUSTER).status, 200);
    assert_hwm(&upload(addr, "db", &f1(false)), 1);
}
