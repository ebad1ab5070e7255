//! End to end with the real client: `ltxvault serve` and a LiteFS 0.5.14 primary (static
//! lease, FUSE mount) pointed at it with `LITEFS_CLOUD_ENDPOINT`/`LITEFS_CLOUD_TOKEN`.
//! Transactions written with `sqlite3` through the mount must reach the vault; the vault's
//! copy must equal the live database; a node started on an empty data directory must pull
//! every database back; the server must stop cleanly on SIGTERM.
//!
//! `tools/test.sh` installs LiteFS (`go install …/litefs@v0.5.14`), `fuse3` and `sqlite3`.
//! This test never skips: without them it fails and says what is missing.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

mod common;
use common::peers::{free_port, litefs_binary};

/// A child process killed (and waited for) on drop.
struct Running {
    child: Child,
    name: &'static str,
    log: PathBuf,
}

impl Running {
    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGTERM or SIGINT, then wait up to 20 s; returns the exit status.
    fn stop(mut self, signal: i32) -> std::process::ExitStatus {
        // SAFETY: sending a signal to our own child, whose pid we hold and have not reaped.
        unsafe { libc::kill(self.child.id() as libc::pid_t, signal) };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                return status;
            }
            assert!(Instant::now() < deadline, "{} did not stop on signal {signal}:\n{}", self.name, self.log_text());
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn spawn(name: &'static str, command: &mut Command, log: &Path) -> Running {
    let file = std::fs::File::create(log).expect("log file");
    let child = command
        .stdout(Stdio::from(file.try_clone().expect("clone")))
        .stderr(Stdio::from(file))
        .spawn()
        .unwrap_or_else(|e| panic!("start {name}: {e}"));
    Running { child, name, log: log.to_path_buf() }
}

fn start_server(dir: &Path, addr: SocketAddr) -> Running {
    let server = spawn(
        "ltxvault serve",
        Command::new(env!("CARGO_BIN_EXE_ltxvault"))
            .args(["serve", "--auth", "tokens", "--data"])
            .arg(dir.join("vault"))
            .args(["--listen", &addr.to_string()]),
        &dir.join("serve.log"),
    );
    wait_for(&format!("the server on {addr}"), Duration::from_secs(20), || std::net::TcpStream::connect(addr).is_ok());
    server
}

/// A LiteFS node (static lease, always primary) in `dir` backing up to `server`.
fn start_node(litefs: &Path, dir: &Path, server: SocketAddr, token: &str) -> Running {
    std::fs::create_dir_all(dir.join("mnt")).expect("mnt");
    std::fs::create_dir_all(dir.join("data")).expect("data");
    let port = free_port();
    let config = format!(
        "fuse:\n  dir: \"{0}/mnt\"\ndata:\n  dir: \"{0}/data\"\nhttp:\n  addr: \"127.0.0.1:{port}\"\nlease:\n  type: \"static\"\n  candidate: true\n  hostname: \"node\"\n  advertise-url: \"http://127.0.0.1:{port}\"\nexit-on-error: false\n",
        dir.display()
    );
    std::fs::write(dir.join("litefs.yml"), config).expect("config");
    let node = spawn(
        "litefs",
        Command::new(litefs)
            .args(["mount", "-config"])
            .arg(dir.join("litefs.yml"))
            .env("LITEFS_CLOUD_ENDPOINT", format!("http://{server}"))
            .env("LITEFS_CLOUD_TOKEN", token),
        &dir.join("litefs.log"),
    );
    wait_for("the LiteFS node to become primary", Duration::from_secs(30), || {
        node.log_text().contains("begin primary backup stream") || node.log_text().contains("primary lease acquired")
    });
    node
}

fn wait_for(what: &str, limit: Duration, mut ready: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !ready() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn sqlite(db: &Path, sql: &str) -> String {
    try_sqlite(db, sql).unwrap_or_else(|err| panic!("sqlite3 {sql}: {err}"))
}

/// Runs `sql` with a busy timeout; while LiteFS applies a transaction it holds the
/// database's lock, so a reader can still see "database is locked" past the timeout.
fn try_sqlite(db: &Path, sql: &str) -> Result<String, String> {
    let out = Command::new("sqlite3")
        .args(["-cmd", ".timeout 5000"])
        .arg(db)
        .arg(sql)
        .output()
        .expect("run sqlite3 (tools/test.sh installs it)");
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).into_owned());
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

fn http(addr: SocketAddr, method: &str, path: &str, token: &str) -> Vec<u8> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(addr).expect("connect");
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: {token}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    )
    .expect("send");
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).expect("read");
    let end = raw.windows(4).position(|w| w == b"\r\n\r\n").expect("a reply");
    let head = String::from_utf8_lossy(&raw[..end]).to_string();
    assert!(head.starts_with("HTTP/1.1 200"), "{method} {path}: {head}\n{}", String::from_utf8_lossy(&raw[end..]));
    let body = &raw[end + 4..];
    if head.to_ascii_lowercase().contains("transfer-encoding: chunked") {
        let mut out = Vec::new();
        let mut rest = body;
        loop {
            let line = rest.windows(2).position(|w| w == b"\r\n").expect("chunk size");
            let size = usize::from_str_radix(std::str::from_utf8(&rest[..line]).expect("text"), 16).expect("hex");
            rest = &rest[line + 2..];
            if size == 0 {
                return out;
            }
            out.extend_from_slice(&rest[..size]);
            rest = &rest[size + 2..];
        }
    }
    body.to_vec()
}

/// The vault's position of `db`, as `TXID/checksum` (LiteFS writes its own the same way in
/// the `<db>-pos` file of the mount).
fn vault_position(addr: SocketAddr, token: &str, db: &str) -> Option<String> {
    let map: serde_json::Value = serde_json::from_slice(&http(addr, "GET", "/pos", token)).expect("json");
    let pos = map.get(db)?;
    Some(format!("{}/{}", pos["TXID"].as_str()?, pos["PostApplyChecksum"].as_str()?))
}

/// The TXID of the restore point just before the newest one, from `GET /db/info`.
fn vault_point_before_last(addr: SocketAddr, token: &str, db: &str) -> String {
    let info: serde_json::Value =
        serde_json::from_slice(&http(addr, "GET", &format!("/db/info?db={db}"), token)).expect("json");
    let newest = info["newest"]["txid"].as_str().expect("newest");
    let newest = u64::from_str_radix(newest, 16).expect("hex");
    format!("{:016x}", newest - 1)
}

fn local_position(mnt: &Path, db: &str) -> String {
    std::fs::read_to_string(mnt.join(format!("{db}-pos"))).unwrap_or_default().trim().to_string()
}

#[test]
fn litefs_backs_up_to_the_vault_and_restores_from_it() {
    let litefs = litefs_binary();
    let dir = tempfile::tempdir().expect("tempdir");
    let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().expect("addr");
    let vault_dir = dir.path().join("vault");
    std::fs::create_dir_all(&vault_dir).expect("vault dir");
    let cli = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_ltxvault")).args(args).output().expect("run ltxvault");
        assert!(out.status.success(), "ltxvault {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    // The token LiteFS sends verbatim: LITEFS_CLOUD_TOKEN.
    let token = cli(&["token", "create", "--data", vault_dir.to_str().expect("path"), "--cluster", "e2e"]);
    let token = token.as_str();
    let server = start_server(dir.path(), addr);

    // Node A writes two databases through its mount.
    let a = dir.path().join("a");
    let node = start_node(&litefs, &a, addr, token);
    let mnt = a.join("mnt");
    sqlite(&mnt.join("app.db"), "CREATE TABLE t (x INTEGER); INSERT INTO t VALUES (1), (2), (3);");
    sqlite(&mnt.join("other.db"), "CREATE TABLE kv (k TEXT PRIMARY KEY, v TEXT); INSERT INTO kv VALUES ('a', 'b');");
    for i in 4..=20 {
        sqlite(&mnt.join("app.db"), &format!("INSERT INTO t VALUES ({i});"));
    }
    for db in ["app.db", "other.db"] {
        wait_for(&format!("{db} to reach the vault"), Duration::from_secs(30), || {
            vault_position(addr, token, db).is_some_and(|p| p == local_position(&mnt, db))
        });
    }
    // The vault's copy is the live database, byte for byte.
    let snapshot = http(addr, "GET", "/db/snapshot?db=app.db&format=sqlite", token);
    assert!(snapshot == std::fs::read(mnt.join("app.db")).expect("read live db"), "the vault holds the live database");
    let restored = dir.path().join("restored.db");
    std::fs::write(&restored, &snapshot).expect("write");
    assert_eq!(sqlite(&restored, "PRAGMA integrity_check;"), "ok");
    assert_eq!(sqlite(&restored, "SELECT sum(x) FROM t;"), "210");
    // The CLI through the running server (which holds the vault's lock).
    let endpoint = format!("http://{addr}");
    let via_cli = dir.path().join("via-cli.db");
    let via = via_cli.to_str().expect("path");
    cli(&["restore", "--endpoint", &endpoint, "--token", token, "--cluster", "e2e", "--db", "app.db", "-o", via]);
    assert!(std::fs::read(&via_cli).expect("read") == snapshot, "restore --endpoint gives the same database");
    let info: serde_json::Value = serde_json::from_str(&cli(&[
        "info",
        "--endpoint",
        &endpoint,
        "--token",
        token,
        "--cluster",
        "e2e",
        "--db",
        "app.db",
        "--json",
    ]))
    .expect("json");
    assert_eq!(info["position"].as_str(), vault_position(addr, token, "app.db").as_deref());
    let exported = dir.path().join("exported.db");
    cli(&[
        "export",
        "--endpoint",
        &endpoint,
        "--token",
        token,
        "--cluster",
        "e2e",
        "--db",
        "app.db",
        "-o",
        exported.to_str().expect("path"),
    ]);
    assert!(std::fs::read(&exported).expect("read") == snapshot, "export --endpoint gives the same database");
    let exported_ltx = dir.path().join("exported.ltx");
    cli(&[
        "export",
        "--endpoint",
        &endpoint,
        "--token",
        token,
        "--cluster",
        "e2e",
        "--db",
        "app.db",
        "--format",
        "ltx",
        "-o",
        exported_ltx.to_str().expect("path"),
    ]);
    let ltx = std::fs::read(&exported_ltx).expect("read");
    let mut decoder = ltxvault::ltx::Decoder::new(&ltx).expect("an LTX file");
    while decoder.next_page().expect("page").is_some() {}
    assert_eq!(decoder.header().min_txid, ltxvault::ltx::TxId(1), "a snapshot");
    let listed = cli(&["ls", "--endpoint", &endpoint, "--token", token]);
    assert!(listed.contains("e2e/app.db") && listed.contains("e2e/other.db"), "{listed}");
    let status = node.stop(libc::SIGINT);
    assert!(status.success(), "litefs exits cleanly: {status}");

    // Node B starts on an empty data directory and pulls every database back. The vault
    // bound cluster "e2e" to node A's LiteFS cluster id, and a static-lease node makes up a
    // new one on a fresh data directory, so the operator carries the id over (the 422
    // message says so). Nothing may touch the mount before the restore: an empty local
    // database would be dropped from backup sync.
    let b = dir.path().join("b");
    std::fs::create_dir_all(b.join("data")).expect("data");
    std::fs::copy(a.join("data/clusterid"), b.join("data/clusterid")).expect("carry the cluster id over");
    let node = start_node(&litefs, &b, addr, token);
    wait_for("node B to restore both databases", Duration::from_secs(30), || {
        node.log_text().matches("database restore complete").count() >= 2
    });
    let mnt = b.join("mnt");
    assert_eq!(sqlite(&mnt.join("app.db"), "SELECT sum(x) FROM t;"), "210");
    assert_eq!(sqlite(&mnt.join("other.db"), "SELECT v FROM kv WHERE k = 'a';"), "b");
    // It goes on writing on top of what it restored, and the vault follows.
    sqlite(&mnt.join("app.db"), "INSERT INTO t VALUES (1000);");
    wait_for("node B's write to reach the vault", Duration::from_secs(30), || {
        vault_position(addr, token, "app.db").is_some_and(|p| p == local_position(&mnt, "app.db"))
    });
    assert_eq!(sqlite(&mnt.join("app.db"), "SELECT sum(x) FROM t;"), "1210");
    // In-place restore to the point before that write: a new transaction in the vault;
    // the node sees "remote ahead" at its next full sync (10 s) and follows.
    let before = vault_point_before_last(addr, token, "app.db");
    let reply = http(addr, "POST", &format!("/db/restore?db=app.db&txid={before}"), token);
    let reply: serde_json::Value = serde_json::from_slice(&reply).expect("json");
    assert_eq!(reply["applied"], true, "{reply}");
    wait_for("node B to follow the in-place restore", Duration::from_secs(40), || {
        try_sqlite(&mnt.join("app.db"), "SELECT sum(x) FROM t;").is_ok_and(|sum| sum == "210")
    });
    assert!(node.stop(libc::SIGINT).success());

    // SIGTERM: the server finishes, syncs and exits 0.
    let log = server.log.clone();
    let status = server.stop(libc::SIGTERM);
    assert!(
        status.success(),
        "serve exits 0 on SIGTERM: {status}\n{}",
        std::fs::read_to_string(log).unwrap_or_default()
    );
}
