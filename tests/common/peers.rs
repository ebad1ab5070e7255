//! Test peers: the LiteFS binary (installed by tools/test.sh) and free loopback ports.

use std::path::PathBuf;
use std::process::Command;

/// The LiteFS binary: `LITEFS_BIN`, or `litefs` in Go's bin directory.
pub fn litefs_binary() -> PathBuf {
    if let Some(path) = std::env::var_os("LITEFS_BIN") {
        return PathBuf::from(path);
    }
    let gopath = Command::new("go")
        .args(["env", "GOPATH"])
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .filter(|p| !p.is_empty())
        .unwrap_or_else(|| format!("{}/go", std::env::var("HOME").unwrap_or_default()));
    let path = PathBuf::from(gopath).join("bin/litefs");
    assert!(
        path.exists(),
        "no LiteFS binary at {} (set LITEFS_BIN, or run tools/test.sh, which installs it with `go install github.com/superfly/litefs/cmd/litefs@v0.5.14`)",
        path.display()
    );
    path
}

/// A loopback port nothing listens on right now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port()
}
