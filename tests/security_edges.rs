//! The server's security edges: failed authentications limited per source address, a
//! vault that only its owner can read (directories 0700, files 0600), slow or greedy
//! clients cut off (header and body timeouts, the connection limit), and tokens that never
//! reach the logs.
//!
//! Token comparison itself (a look-up by the token's public id, then a constant-time
//! comparison of SHA-256 digests, so nothing short-circuits on the secret) is a matter of
//! reading `TokenStore::authenticate`; `docs/RELIABILITY.md` says what was checked.

mod common;

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::cli::ltxvault;
use common::http::{Body, Reply, request, request_from};
use common::server::serve;
use ltxvault::auth::{ClusterIds, Scope, TokenStore};
use ltxvault::clock::ManualClock;
use ltxvault::io::engine::IoChoice;
use ltxvault::ltx::{Encoder, Format, Header, PageNo, TxId, database_checksum};
use ltxvault::server::{AuthMode, ClusterIdPolicy, Limits};
use ltxvault::{Vault, VaultConfig};

const PAGE: u32 = 512;
const DAY: i64 = 86_400_000;
const NOW: i64 = 20_473 * DAY;

/// A snapshot (TXID 1) of a database of `commit` pages, page p filled with byte p.
fn snapshot(commit: u32, timestamp_ms: i64) -> Vec<u8> {
    let image: Vec<u8> = (1..=commit).flat_map(|p| vec![p as u8; PAGE as usize]).collect();
    let header =
        Header { page_size: PAGE, commit, min_txid: TxId(1), max_txid: TxId(1), timestamp_ms, ..Header::default() };
    let mut encoder = Encoder::new(Vec::new(), &header, Format::V1 { compress: false }).expect("header");
    for (i, page) in image.chunks(PAGE as usize).enumerate() {
        encoder.write_page(PageNo(i as u32 + 1), page).expect("page");
    }
    encoder.finish(database_checksum(&image, PAGE)).expect("finish").0
}

/// The transaction after `txid` that sets page 1 of a database to `byte` (the database is
/// `image` before it).
fn change(image: &mut [u8], txid: u64, byte: u8, timestamp_ms: i64) -> Vec<u8> {
    let before = database_checksum(image, PAGE);
    image[..PAGE as usize].fill(byte);
    let header = Header {
        page_size: PAGE,
        commit: (image.len() / PAGE as usize) as u32,
        min_txid: TxId(txid + 1),
        max_txid: TxId(txid + 1),
        timestamp_ms,
        pre_apply_checksum: before,
        ..Header::default()
    };
    let mut encoder = Encoder::new(Vec::new(), &header, Format::V1 { compress: false }).expect("header");
    encoder.write_page(PageNo(1), &image[..PAGE as usize]).expect("page");
    encoder.finish(database_checksum(image, PAGE)).expect("finish").0
}

fn std_config() -> VaultConfig {
    VaultConfig { io: IoChoice::Std, segment_bytes: 1 << 20, background_compaction: false, ..VaultConfig::default() }
}

fn text(reply: &Reply) -> String {
    String::from_utf8_lossy(&reply.body).to_string()
}

// ------------------------------------------------------------------------------------------
// Failed authentications.

/// After the limit of failed authentications from one address, that address gets 429 with
/// Retry-After even with a valid token, until its window ends; other addresses are not
/// affected and keep counts of their own.
#[test]
fn failed_authentications_are_limited_per_source_address() {
    let dir = tempfile::tempdir().expect("tempdir");
    let vault = Arc::new(Vault::open(dir.path(), std_config()).expect("open"));
    let tokens = Arc::new(TokenStore::open(dir.path()).expect("tokens"));
    let (_, good) = tokens.create(Scope::Cluster("c".into()), None).expect("token");
    let bad = format!("{}_{}", &good[..22], "A".repeat(good.len() - 23));
    assert_ne!(bad, good);
    let window = Duration::from_secs(4);
    let limits = Limits { auth_failure_limit: 3, auth_failure_window: window, ..Limits::default() };
    let server = serve(vault, AuthMode::Tokens(tokens), ClusterIdPolicy::Off, limits);
    let addr = server.addr;
    let from = |source: &str, token: &str| {
        let source: IpAddr = source.parse().expect("address");
        request_from(source, addr, "GET", "/pos", &[("Authorization", token)], Body::None).expect("reply")
    };

    let started = Instant::now();
    for attempt in 1..=3 {
        let reply = from("127.0.0.2", &bad);
        assert_eq!(reply.status, 401, "attempt {attempt}: {}", text(&reply));
    }
    // Refused now, valid token or not, without the token being looked at.
    for token in [good.as_str(), bad.as_str()] {
        let refused = from("127.0.0.2", token);
        assert_eq!(refused.status, 429, "{}", text(&refused));
        assert_eq!(refused.json()["code"], "ETOOMANYFAILURES");
        let retry: u64 = refused.header("Retry-After").expect("Retry-After").parse().expect("seconds");
        assert!((1..=4).contains(&retry), "Retry-After {retry}");
    }
    // Other addresses: unaffected, and counted on their own.
    assert_eq!(from("127.0.0.3", &good).status, 200);
    assert_eq!(from("127.0.0.1", &good).status, 200);
    assert_eq!(from("127.0.0.3", &bad).status, 401);
    assert_eq!(from("127.0.0.3", &good).status, 200, "one failure of three");
    // Once the window is over, the address is heard again.
    std::thread::sleep((started + window + Duration::from_millis(200)).saturating_duration_since(Instant::now()));
    assert_eq!(from("127.0.0.2", &good).status, 200, "the window ended");
}

// ------------------------------------------------------------------------------------------
// Modes on disk.

/// Every directory the vault makes is 0700 and every file 0600, whatever the umask lets
/// through, after a workload that writes every kind of file: log segments, page-checksum
/// maps, level files and images (compaction), NAME files, auth and cluster-id files and
/// their locks (token create, a binding), the LOCK, a restore in place. Restore outputs
/// written for the user are 0600 when new and keep the mode of the file they replace.
#[test]
fn the_vault_is_private_on_disk() {
    // With no umask, a file created with the default mode would be 0666: every mode below
    // is the one the vault asked for.
    // SAFETY: umask only sets the process's file-creation mask; the other tests in this
    // file create files too, and want the vault's modes whatever the mask.
    unsafe { libc::umask(0) };
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("vault");
    let data_str = data.to_str().expect("utf-8");
    let clock = ManualClock::new(NOW);
    let vault = Arc::new(Vault::open_with_clock(&data, std_config(), clock).expect("open"));
    let tokens = Arc::new(TokenStore::open(&data).expect("tokens"));
    let ids = Arc::new(ClusterIds::open(&data).expect("ids"));
    let server = serve(vault.clone(), AuthMode::Tokens(tokens), ClusterIdPolicy::Bind(ids), Limits::default());
    let addr = server.addr;

    // A token made by the CLI while the server runs, as an operator would.
    let out = ltxvault(&["token", "create", "--data", data_str, "--cluster", "c"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let token = String::from_utf8(out.stdout).expect("utf-8").trim().to_string();
    let headers = [("Authorization", token.as_str()), ("Litefs-Cluster-Id", "LFSC0123456789ABCDEF")];
    let post = |path: &str, body: &[u8]| request(addr, "POST", path, &headers, Body::Fixed(body)).expect("reply");

    // Three days of history (so compaction writes L1, L2 and L3), then a restore in place
    // and a snapshot download.
    let mut image: Vec<u8> = (1..=3u8).flat_map(|p| vec![p; PAGE as usize]).collect();
    let first = snapshot(3, NOW - 3 * DAY);
    assert_eq!(post("/db/tx?db=app", &first).status, 200);
    for (txid, day) in [(1u64, 2i64), (2, 1)] {
        let file = change(&mut image, txid, 0x40 + txid as u8, NOW - day * DAY);
        let reply = post("/db/tx?db=app", &file);
        assert_eq!(reply.status, 200, "{}", text(&reply));
    }
    for _ in 0..10 {
        if vault.compact_now().expect("compact") == 0 {
            break;
        }
    }
    let restored = post("/db/restore?db=app&txid=2", &[]);
    assert_eq!(restored.status, 200, "{}", text(&restored));
    assert_eq!(request(addr, "GET", "/db/snapshot?db=app", &headers, Body::None).expect("reply").status, 200);
    let levels = walk_modes(&data);
    for kind in ["L1-", "L2-", "L3-", "NAME", ".seg", ".sums", "tokens", "cluster-ids", "LOCK"] {
        assert!(levels.iter().any(|(path, _, _)| path.contains(kind)), "the workload wrote no {kind} file");
    }

    // Restore outputs through the server: a new file is private, a replaced one keeps its
    // mode.
    let endpoint = format!("http://{addr}");
    let restore = |out: &Path, force: bool| {
        let mut args = vec![
            "restore",
            "--endpoint",
            &endpoint,
            "--token",
            &token,
            "--cluster",
            "c",
            "--db",
            "app",
            "-o",
            out.to_str().expect("utf-8"),
        ];
        if force {
            args.push("--force");
        }
        let out = ltxvault(&args);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    };
    let fresh = dir.path().join("fresh.db");
    restore(&fresh, false);
    assert_eq!(mode(&fresh), "600", "a new restore output is private");
    let shared = dir.path().join("shared.db");
    std::fs::write(&shared, b"old").expect("write");
    std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o640)).expect("chmod");
    restore(&shared, true);
    assert_eq!(mode(&shared), "640", "a replaced file keeps its mode");
    assert_ne!(std::fs::read(&shared).expect("read"), b"old");

    drop(server);
    drop(vault);
    // The local restore (the vault opened by the CLI) does the same.
    let local = dir.path().join("local.db");
    let out = ltxvault(&[
        "restore",
        "--data",
        data_str,
        "--cluster",
        "c",
        "--db",
        "app",
        "-o",
        local.to_str().expect("utf-8"),
    ]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(mode(&local), "600");

    let mut wrong = Vec::new();
    for (path, is_dir, mode) in walk_modes(&data) {
        let expected = if is_dir { 0o700 } else { 0o600 };
        if mode != expected {
            wrong.push(format!("{path}: {mode:o}, expected {expected:o}"));
        }
    }
    assert_eq!(mode(&data), "700", "the vault directory");
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

/// The permission bits of `path`, in octal.
fn mode(path: &Path) -> String {
    format!("{:o}", std::fs::metadata(path).expect("stat").permissions().mode() & 0o777)
}

/// Every entry under `root`: relative path, whether a directory, permission bits.
fn walk_modes(root: &Path) -> Vec<(String, bool, u32)> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).expect("read dir") {
            let path = entry.expect("entry").path();
            let meta = std::fs::symlink_metadata(&path).expect("stat");
            let relative = path.strip_prefix(root).expect("inside").display().to_string();
            out.push((relative, meta.is_dir(), meta.permissions().mode() & 0o777));
            if meta.is_dir() {
                stack.push(path);
            }
        }
    }
    out
}

// ------------------------------------------------------------------------------------------
// Slow and greedy clients.

/// A client that sends its request head a byte at a time, slower than the header timeout
/// allows, is disconnected when the timeout passes, before it finishes.
#[test]
fn a_head_sent_byte_by_byte_is_cut_off_at_the_header_timeout() {
    let dir = tempfile::tempdir().expect("tempdir");
    let vault = Arc::new(Vault::open(dir.path(), std_config()).expect("open"));
    let header_timeout = Duration::from_secs(1);
    let limits = Limits { header_timeout, ..Limits::default() };
    let server = serve(vault, AuthMode::None, ClusterIdPolicy::Off, limits);
    let head = b"GET /pos HTTP/1.1\r\nHost: x\r\nAuthorization: cluster c\r\nUser-Agent: a-very-slow-client\r\n\r\n";
    let mut stream = TcpStream::connect(server.addr).expect("connect");
    stream.set_read_timeout(Some(Duration::from_millis(100))).expect("timeout");
    let started = Instant::now();
    let mut sent = 0;
    let closed_at = loop {
        if sent < head.len() && stream.write_all(&head[sent..sent + 1]).is_ok() {
            sent += 1;
        }
        // Waits 100 ms between bytes, watching for the server closing the connection.
        let mut buf = [0u8; 256];
        match stream.read(&mut buf) {
            Ok(0) => break started.elapsed(),
            Ok(n) => {
                panic!("a client slower than the header timeout was served: {}", String::from_utf8_lossy(&buf[..n]))
            }
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {}
            Err(_) => break started.elapsed(),
        }
        assert!(started.elapsed() < Duration::from_secs(10), "still connected after 10 s");
    };
    assert!(sent < head.len(), "cut off before the head was complete ({sent} of {} bytes)", head.len());
    assert!(closed_at >= header_timeout - Duration::from_millis(100), "closed after {closed_at:?}");
    assert!(closed_at < header_timeout * 3, "closed after {closed_at:?}");
}

/// A client that stalls in the middle of a large body (already spooled to a file under the
/// vault's `tmp/`, mode 0600) gets 408 when the idle timeout passes, and the spooled part
/// is removed.
#[test]
fn a_body_stalled_after_spooling_gets_408_and_leaves_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let vault = Arc::new(Vault::open(dir.path(), std_config()).expect("open"));
    let limits = Limits { body_idle_timeout: Duration::from_secs(1), ..Limits::default() };
    let server = serve(vault, AuthMode::None, ClusterIdPolicy::Off, limits);
    let tmp = dir.path().join("tmp");
    let mut stream = TcpStream::connect(server.addr).expect("connect");
    stream.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
    // One chunk announced as 10 MiB, of which 9 MiB (past the 8 MiB kept in memory) come.
    let head =
        "POST /db/tx?db=db HTTP/1.1\r\nHost: x\r\nAuthorization: cluster c\r\nTransfer-Encoding: chunked\r\n\r\n";
    stream.write_all(head.as_bytes()).expect("head");
    write!(stream, "{:x}\r\n", 10 << 20).expect("chunk size");
    stream.write_all(&vec![0x5a; 9 << 20]).expect("part of the chunk");
    stream.flush().expect("flush");
    let spooled = wait_for(Duration::from_secs(5), || {
        std::fs::read_dir(&tmp).expect("tmp").filter_map(Result::ok).map(|e| e.path()).find(|p| {
            p.file_name().is_some_and(|n| n.to_string_lossy().starts_with("upload-"))
                && std::fs::metadata(p).is_ok_and(|m| m.len() > 8 << 20)
        })
    })
    .expect("the body is spooled to a file under tmp/");
    assert_eq!(mode(&spooled), "600", "{}", spooled.display());
    let mut reply = String::new();
    let _ = stream.read_to_string(&mut reply);
    assert!(reply.starts_with("HTTP/1.1 408"), "{reply}");
    assert!(reply.contains("\"ETIMEOUT\""), "{reply}");
    let left =
        wait_for(Duration::from_secs(2), || std::fs::read_dir(&tmp).expect("tmp").next().is_none().then_some(()));
    assert!(
        left.is_some(),
        "the spooled part is removed: {:?}",
        std::fs::read_dir(&tmp).expect("tmp").collect::<Vec<_>>()
    );
}

/// At most `max_connections` connections are open at once: one more is closed at once,
/// the others stay usable, and a slot freed is taken again.
#[test]
fn connections_beyond_the_limit_are_closed_at_accept() {
    let dir = tempfile::tempdir().expect("tempdir");
    let vault = Arc::new(Vault::open(dir.path(), std_config()).expect("open"));
    let limits = Limits { max_connections: 3, header_timeout: Duration::from_secs(10), ..Limits::default() };
    let server = serve(vault, AuthMode::None, ClusterIdPolicy::Off, limits);
    let idle: Vec<TcpStream> = (0..3).map(|_| TcpStream::connect(server.addr).expect("connect")).collect();
    // Let the server accept them (and take their slots).
    std::thread::sleep(Duration::from_millis(300));
    let started = Instant::now();
    let mut extra = TcpStream::connect(server.addr).expect("the kernel accepts");
    extra.set_read_timeout(Some(Duration::from_secs(5))).expect("timeout");
    let _ = extra.write_all(b"GET /pos HTTP/1.1\r\nHost: x\r\nAuthorization: cluster c\r\n\r\n");
    let mut buf = [0u8; 64];
    let read = extra.read(&mut buf);
    assert!(matches!(read, Ok(0) | Err(_)), "the fourth connection is closed, not served: {read:?}");
    assert!(started.elapsed() < Duration::from_secs(2), "closed at once, not after a timeout");
    // The three are still served.
    let mut first = idle.into_iter();
    let mut one = first.next().expect("one");
    one.set_read_timeout(Some(Duration::from_secs(5))).expect("timeout");
    one.write_all(b"GET /pos HTTP/1.1\r\nHost: x\r\nAuthorization: cluster c\r\nConnection: close\r\n\r\n")
        .expect("send");
    let mut reply = String::new();
    let _ = one.read_to_string(&mut reply);
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
    drop(one);
    // Its slot is free again.
    let reply = wait_for(Duration::from_secs(5), || {
        request(server.addr, "GET", "/pos", &[("Authorization", "cluster c")], Body::None).filter(|r| r.status == 200)
    });
    assert!(reply.is_some(), "a freed slot serves a new connection");
}

fn wait_for<T>(limit: Duration, mut probe: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(found) = probe() {
            return Some(found);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

// ------------------------------------------------------------------------------------------
// Logs.

/// `ltxvault serve` with RUST_LOG=debug, sent requests with a valid token, a wrong one, and
/// tokens in places they do not belong (query string, path, other headers, after
/// "Bearer"), enough failures to trip the failed-auth limit: no token's secret appears in
/// what it writes.
#[test]
fn tokens_never_reach_the_logs() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("vault");
    let data_str = data.to_str().expect("utf-8");
    std::os::unix::fs::DirBuilderExt::mode(&mut std::fs::DirBuilder::new(), 0o700).create(&data).expect("mkdir");
    let create = |scope: &[&str]| {
        let mut args = vec!["token", "create", "--data", data_str];
        args.extend_from_slice(scope);
        let out = ltxvault(&args);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).expect("utf-8").trim().to_string()
    };
    let good = create(&["--cluster", "c"]);
    let admin = create(&["--admin"]);
    let (stdout_path, stderr_path) = (dir.path().join("stdout"), dir.path().join("stderr"));
    let mut child = Command::new(env!("CARGO_BIN_EXE_ltxvault"))
        .args(["serve", "--data", data_str, "--listen", "127.0.0.1:0"])
        .env("RUST_LOG", "debug")
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&stdout_path).expect("stdout"))
        .stderr(std::fs::File::create(&stderr_path).expect("stderr"))
        .spawn()
        .expect("spawn serve");
    let addr: SocketAddr = wait_for(Duration::from_secs(20), || {
        let log = std::fs::read_to_string(&stderr_path).ok()?;
        let at = log.find("on http://")? + "on http://".len();
        log[at..].split_whitespace().next()?.parse().ok()
    })
    .expect("serve says where it listens");

    // A wrong secret for the good token's id, and a malformed token.
    let wrong = format!("{}{}", &good[..good.len() - 43], "B".repeat(43));
    let id = "LFSC0123456789ABCDEF";
    let call = |method: &str, path: &str, headers: &[(&str, &str)], body: Body<'_>| {
        request(addr, method, path, headers, body).expect("reply")
    };
    let upload = snapshot(2, NOW);
    assert_eq!(
        call("POST", "/db/tx?db=app", &[("Authorization", &good), ("Litefs-Cluster-Id", id)], Body::Fixed(&upload))
            .status,
        200
    );
    assert_eq!(call("GET", "/pos", &[("Authorization", &good)], Body::None).status, 200);
    assert_eq!(call("GET", "/dbs?cluster=c", &[("Authorization", &admin)], Body::None).status, 200);
    assert_eq!(call("GET", "/db/snapshot?db=app", &[("Authorization", &good)], Body::None).status, 200);
    assert_eq!(call("POST", "/db/tx?db=app", &[("Authorization", &good)], Body::Fixed(b"not ltx")).status, 400);
    assert_eq!(call("GET", "/pos", &[("Authorization", &wrong)], Body::None).status, 401);
    let (bearer, as_cluster) = (format!("Bearer {good}"), format!("cluster {good}"));
    let misplaced: [(String, Vec<(&str, &str)>); 6] = [
        (format!("/pos?token={good}"), vec![]),
        (format!("/{good}"), vec![("Authorization", &good)]),
        ("/pos".into(), vec![("Authorization", &bearer)]),
        ("/pos".into(), vec![("X-Auth-Token", &good)]),
        ("/pos".into(), vec![("Authorization", &good), ("Litefs-Cluster-Id", &good)]),
        ("/pos".into(), vec![("Authorization", &as_cluster)]),
    ];
    for (path, headers) in &misplaced {
        let reply = call("GET", path, headers, Body::None);
        assert!(reply.status >= 400, "{path}: {}", reply.status);
    }
    // Requests hyper cannot parse, with the token inside: the connection error is logged
    // at debug level, and must not quote the request.
    for raw in [
        format!("GET /pos HTTP/1.1\r\nAuthorization: {good}\r\nthis is no header\r\n\r\n"),
        format!("GET /pos?{good} HTTP/9.9\r\nAuthorization: {good}\r\n\r\n"),
        format!("GET /pos HTTP/1.1\r\nContent-Length: {good}\r\nAuthorization: {good}\r\n\r\n"),
    ] {
        let reply = common::http::send_raw(addr, raw.as_bytes());
        assert!(reply.is_none_or(|r| r.status == 400), "{raw}");
    }
    // Enough failures from this address to trip the limit (10 by default), which is
    // logged.
    for _ in 0..12 {
        call("GET", "/pos", &[("Authorization", &wrong)], Body::None);
    }
    // SAFETY: a plain signal to the child this test spawned.
    unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
    let status = child.wait().expect("wait");
    assert!(status.success(), "serve stopped cleanly on SIGTERM: {status:?}");
    let logs = std::fs::read_to_string(&stdout_path).expect("stdout")
        + &std::fs::read_to_string(&stderr_path).expect("stderr");
    // The capture works: debug lines and the limit's warning are there.
    assert!(logs.contains("DEBUG") && logs.contains("connection ended with an error"), "debug lines:\n{logs}");
    assert!(logs.contains("too many failed authentications"), "{logs}");
    for token in [&good, &admin, &wrong] {
        let secret = &token[token.len() - 43..];
        assert!(!logs.contains(secret), "a token's secret is in the logs:\n{logs}");
    }
    eprintln!("tokens_never_reach_the_logs: {} lines of logs checked", logs.lines().count());
}
