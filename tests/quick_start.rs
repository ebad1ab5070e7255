//! The quick start of docs/OPERATOR.md, run as written: every `sh` block between the
//! `quick-start:begin` and `quick-start:end` markers, in one bash process in an empty
//! directory, with the built `ltxvault`, LiteFS and `sqlite3` on PATH. Only the two ports
//! are swapped for free ones. Then the files it made are checked: the restores must hold
//! what the walkthrough says they hold.

mod common;

use std::path::Path;
use std::process::Command;

use common::peers::{free_port, litefs_binary};

/// The quick start's shell blocks, in order.
fn quick_start_script(doc: &str) -> String {
    let begin = doc.find("<!-- quick-start:begin -->").expect("OPERATOR.md has a quick-start:begin marker");
    let end = doc.find("<!-- quick-start:end -->").expect("OPERATOR.md has a quick-start:end marker");
    let mut script = String::new();
    let mut in_block = false;
    for line in doc[begin..end].lines() {
        match (in_block, line.trim_end()) {
            (false, "```sh") => in_block = true,
            (true, "```") => in_block = false,
            (true, line) => {
                script.push_str(line);
                script.push('\n');
            }
            _ => {}
        }
    }
    assert!(!in_block, "an unclosed sh block in the quick start");
    script
}

fn sqlite(db: &Path, sql: &str) -> String {
    let out = Command::new("sqlite3").arg(db).arg(sql).output().expect("run sqlite3 (tools/test.sh installs it)");
    assert!(out.status.success(), "sqlite3 {sql}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

#[test]
fn the_quick_start_works_as_written() {
    let doc =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/OPERATOR.md")).expect("read OPERATOR.md");
    let script = quick_start_script(&doc);
    assert!(script.contains("ltxvault serve") && script.contains("litefs mount"), "{script}");
    let script = script
        .replace("127.0.0.1:2200", &format!("127.0.0.1:{}", free_port()))
        .replace("127.0.0.1:20202", &format!("127.0.0.1:{}", free_port()));

    let dir = tempfile::tempdir().expect("tempdir");
    let litefs = litefs_binary();
    let ltxvault = Path::new(env!("CARGO_BIN_EXE_ltxvault"));
    let path = format!(
        "{}:{}:{}",
        ltxvault.parent().expect("bin dir").display(),
        litefs.parent().expect("litefs dir").display(),
        std::env::var("PATH").unwrap_or_default()
    );
    // Background jobs get SIGINT at the end (LiteFS unmounts on it, the server syncs and
    // exits), LiteFS first so it stops streaming before the server goes.
    let wrapped = format!(
        "set -euo pipefail\ncleanup() {{ for pid in $(jobs -p | sort -rn); do kill -INT \"$pid\" 2>/dev/null || true; wait \"$pid\" 2>/dev/null || true; done; }}\ntrap cleanup EXIT\n{script}"
    );
    let out = Command::new("timeout")
        .args(["--signal=TERM", "180", "bash", "-c", &wrapped])
        .current_dir(dir.path())
        .env("PATH", path)
        .output()
        .expect("run bash");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "the quick start failed ({}):\n{stdout}\n{stderr}", out.status);

    // What the walkthrough promises.
    assert!(stdout.contains("demo/app.db"), "ls lists the database:\n{stdout}");
    assert_eq!(sqlite(&dir.path().join("now.db"), "SELECT sum(x) FROM t;"), "10");
    assert_eq!(sqlite(&dir.path().join("before.db"), "SELECT sum(x) FROM t;"), "6");
    assert_eq!(sqlite(&dir.path().join("now.db"), "PRAGMA integrity_check;"), "ok");
    let mounted = std::fs::read_to_string("/proc/mounts").unwrap_or_default();
    assert!(!mounted.contains(&dir.path().join("mnt").display().to_string()), "LiteFS left its mount behind");
}
