//! The packaging files: the systemd unit must load (systemd-analyze verify, with its
//! ExecStart pointed at the built binary) and keep its hardening (systemd-analyze's
//! exposure score at most 2.0, which its --threshold counts in tenths), and the Dockerfile's build stage must copy every source
//! path Cargo.toml names, or `cargo build` fails in the image.

use std::process::Command;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

fn systemd_analyze(args: &[&str]) -> std::process::Output {
    Command::new("systemd-analyze")
        .args(args)
        .output()
        .expect("run systemd-analyze (tools/test.sh installs systemd when it is missing)")
}

#[test]
fn the_systemd_unit_loads_and_stays_hardened() {
    let unit = std::fs::read_to_string(format!("{ROOT}/deploy/ltxvault.service")).expect("read the unit");
    assert!(unit.contains("ExecStart=/usr/local/bin/ltxvault serve"), "the unit starts the server");
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("ltxvault.service");
    std::fs::write(&path, unit.replace("/usr/local/bin/ltxvault", env!("CARGO_BIN_EXE_ltxvault"))).expect("write");
    let path = path.to_str().expect("utf-8 path");

    let verify = systemd_analyze(&["verify", path]);
    let complaints = String::from_utf8_lossy(&verify.stderr);
    assert!(verify.status.success() && complaints.trim().is_empty(), "systemd-analyze verify: {complaints}");

    let security = systemd_analyze(&["security", "--offline=true", "--threshold=20", "--no-pager", path]);
    let report = String::from_utf8_lossy(&security.stdout);
    let exposure = report.lines().find(|l| l.contains("Overall exposure level")).unwrap_or("no exposure line");
    assert!(security.status.success(), "the unit's exposure rose above 2.0: {exposure}\n{report}");
}

#[test]
fn the_dockerfile_copies_every_path_cargo_needs() {
    let dockerfile = std::fs::read_to_string(format!("{ROOT}/Dockerfile")).expect("read the Dockerfile");
    let manifest: toml::Table =
        std::fs::read_to_string(format!("{ROOT}/Cargo.toml")).expect("read").parse().expect("toml");
    let copied: Vec<&str> = dockerfile
        .lines()
        .take_while(|l| !l.starts_with("FROM debian"))
        .filter_map(|l| l.strip_prefix("COPY "))
        .flat_map(|l| l.split_whitespace())
        .collect();
    let mut needed = vec!["Cargo.toml".to_string(), "Cargo.lock".to_string()];
    for section in ["lib", "bin", "bench", "test", "example"] {
        let targets = match manifest.get(section) {
            Some(toml::Value::Table(t)) => vec![t.clone()],
            Some(toml::Value::Array(a)) => a.iter().filter_map(|v| v.as_table().cloned()).collect(),
            _ => vec![],
        };
        for target in targets {
            if let Some(path) = target.get("path").and_then(|p| p.as_str()) {
                needed.push(path.to_string());
            } else if section == "bench" {
                let name = target["name"].as_str().expect("bench name");
                needed.push(format!("benches/{name}.rs"));
            }
        }
    }
    for path in needed {
        let top = path.split('/').next().expect("a path");
        assert!(
            copied.iter().any(|c| c.trim_end_matches('/') == top),
            "the Dockerfile's build stage does not COPY {top} (needed for {path}); copied: {copied:?}"
        );
    }
}
