//! `ltxvault token create|list|revoke` and `ltxvault cluster reset-id`, run as an operator
//! would run them, checked against what the server will use: `TokenStore::authenticate` and
//! `ClusterIds`.

mod common;

use std::path::Path;

use common::cli::{failed, ltxvault, path, succeeded};

use ltxvault::auth::{ClusterIdError, ClusterIds, Scope, TokenStore};
use serde_json::Value;

fn create(data: &Path, scope: &[&str], note: Option<&str>) -> (String, String) {
    let mut args = vec!["token", "create", "--data", path(data)];
    args.extend_from_slice(scope);
    if let Some(note) = note {
        args.extend_from_slice(&["--note", note]);
    }
    let out = ltxvault(&args);
    let stdout = succeeded(&out);
    (stdout, String::from_utf8(out.stderr).expect("utf-8"))
}

fn list_json(data: &Path) -> Vec<Value> {
    let text = succeeded(&ltxvault(&["token", "list", "--data", path(data), "--json"]));
    serde_json::from_str::<Value>(&text).expect("JSON").as_array().expect("an array").clone()
}

#[test]
fn create_prints_a_token_the_store_accepts_with_its_scope() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path();
    // The server has the store open before the token exists, as `serve` would.
    let server = TokenStore::open(data).expect("open");

    let (stdout, stderr) = create(data, &["--cluster", "prod"], Some("fly app prod"));
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 1, "stdout is the token alone: {stdout:?}");
    let token = lines[0];
    assert!(token.starts_with("ltxv1_"), "{token}");
    assert!(stderr.contains("LITEFS_CLOUD_TOKEN") && stderr.contains("cannot be shown again"), "{stderr}");
    assert!(!stderr.contains(token), "the secret goes to stdout only: {stderr}");
    assert_eq!(server.authenticate(token), Some(Scope::Cluster("prod".into())));
    assert_eq!(server.authenticate(&format!("{token}x")), None);

    let (admin, _) = create(data, &["--admin"], None);
    assert_eq!(server.authenticate(admin.trim()), Some(Scope::Admin));
}

#[test]
fn list_shows_tokens_without_secrets_and_revoke_removes_them() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path();
    let (token, _) = create(data, &["--cluster", "prod"], Some("node a"));
    let token = token.trim();
    let id = &token["ltxv1_".len().."ltxv1_".len() + 16];
    let secret = &token["ltxv1_".len() + 17..];

    let listed = list_json(data);
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0]["id"], id);
    assert_eq!(listed[0]["scope"], serde_json::json!({"kind": "cluster", "name": "prod"}));
    assert_eq!(listed[0]["note"], "node a");
    assert!(listed[0]["created"].as_str().expect("created").ends_with('Z'));
    let table = succeeded(&ltxvault(&["token", "list", "--data", path(data)]));
    assert!(table.contains(id) && table.contains("cluster:prod") && table.contains("node a"), "{table}");
    for text in [table, serde_json::to_string(&listed).expect("json")] {
        assert!(!text.contains(secret), "{text}");
        assert!(!text.contains("sha256"), "{text}");
    }

    let server = TokenStore::open(data).expect("open");
    assert!(server.authenticate(token).is_some());
    let out = ltxvault(&["token", "revoke", "--data", path(data), id]);
    succeeded(&out);
    assert!(String::from_utf8_lossy(&out.stderr).contains(id));
    assert_eq!(server.authenticate(token), None, "a running server sees the revoke");
    assert!(list_json(data).is_empty());
}

#[test]
fn bad_input_fails_with_a_clear_message() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path();
    create(data, &["--admin"], None);

    let stderr = failed(&ltxvault(&["token", "revoke", "--data", path(data), "0123456789abcdef"]));
    assert!(stderr.contains("no token with id \"0123456789abcdef\""), "{stderr}");

    let stderr = failed(&ltxvault(&["token", "create", "--data", path(data), "--cluster", "a/b"]));
    assert!(stderr.contains("cluster name \"a/b\""), "{stderr}");

    let stderr = failed(&ltxvault(&["token", "create", "--data", path(data)]));
    assert!(stderr.contains("--cluster") && stderr.contains("--admin"), "{stderr}");

    let stderr = failed(&ltxvault(&["token", "create", "--data", path(data), "--admin", "--cluster", "c"]));
    assert!(stderr.contains("cannot be used with"), "{stderr}");

    let stderr = failed(&ltxvault(&["token", "create", "--data", path(data), "--admin", "--note", "a\nb"]));
    assert!(stderr.contains("control character"), "{stderr}");

    let missing = data.join("no-such-vault");
    let stderr = failed(&ltxvault(&["token", "create", "--data", path(&missing), "--admin"]));
    assert!(stderr.contains("is not a directory"), "{stderr}");
    assert!(!missing.exists(), "a mistyped --data creates nothing");

    let stderr = failed(&ltxvault(&["cluster", "reset-id", "--data", path(data), "--cluster", ".."]));
    assert!(stderr.contains("cluster name"), "{stderr}");

    assert_eq!(list_json(data).len(), 1, "failed commands changed nothing");
}

#[test]
fn cluster_reset_id_lets_a_new_id_bind() {
    const OLD: &str = "LFSCAAAAAAAAAAAAAAAA";
    const NEW: &str = "LFSCBBBBBBBBBBBBBBBB";
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path();
    let server = ClusterIds::open(data).expect("open");
    server.bind("prod", OLD).expect("bind");
    let err = server.check("prod", Some(NEW)).expect_err("mismatch");
    assert!(matches!(err, ClusterIdError::Mismatch(_)));
    assert!(err.to_string().contains("ltxvault cluster reset-id --data DIR --cluster prod"), "{err}");

    let out = ltxvault(&["cluster", "reset-id", "--data", path(data), "--cluster", "prod"]);
    succeeded(&out);
    assert!(String::from_utf8_lossy(&out.stderr).contains(OLD));
    server.check("prod", Some(NEW)).expect("the running server sees the reset");
    server.bind("prod", NEW).expect("bind the new id");
    assert_eq!(server.bound_id("prod").expect("read"), Some(NEW.to_string()));

    let out = ltxvault(&["cluster", "reset-id", "--data", path(data), "--cluster", "other"]);
    succeeded(&out);
    assert!(String::from_utf8_lossy(&out.stderr).contains("not bound"));
}
