//! Replays the `http_router` fuzz seeds and every saved finding of that target through the
//! checks the target runs (`fuzz/src/http.rs`, included as a module rather than copied):
//! requests sent to the server's router in-process over a vault in a temporary directory,
//! the vault checked and put back after each input. On stable and without cargo-fuzz, so
//! CI catches a handler regression that fuzzing once found.

#[path = "../fuzz/src/http.rs"]
#[allow(dead_code)]
mod harness;

mod common;

use std::collections::BTreeSet;
use std::path::Path;

use common::replay::{assert_every_regression_listed, files, read};

const SEEDS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/fuzz/seeds/http_router");
const REGRESSIONS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/fuzz-regressions/http");

/// Every saved finding, by file name; `every_regression_has_a_test` keeps this complete.
const REGRESSION_FILES: &[&str] = &["http-method-not-allowed.txt"];

/// A known path with a method it does not take (`PUT /db/tx`, `PATCH /pos`, `DELETE
/// /db/snapshot`) got axum's bare 405 with an empty body, where the API promises a JSON
/// error with a code and a position for every error. The seeds hold one such request; the
/// harness let it pass until it checked 405s like every other error.
#[test]
fn wrong_method_is_a_json_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let harness = harness::Harness::new(dir.path());
    let exchanges = harness.run(&read(&Path::new(REGRESSIONS).join("http-method-not-allowed.txt")));
    assert_eq!(exchanges.len(), 3);
    for exchange in exchanges {
        assert_eq!(exchange.status, Some(axum::http::StatusCode::METHOD_NOT_ALLOWED), "{}", exchange.request);
        let body: serde_json::Value = serde_json::from_slice(&exchange.body).expect("a JSON error");
        assert_eq!(body["code"], "EMETHOD", "{}", exchange.request);
    }
}

#[test]
fn every_regression_has_a_test() {
    assert_every_regression_listed(Path::new(REGRESSIONS), REGRESSION_FILES);
}

/// Every seed passes every check of the target, every request in it is sent (none is one
/// hyper would refuse), and together they get a success from every endpoint, so fuzzing
/// starts from inputs that reach each handler's deep end.
#[test]
fn seeds_replay_and_reach_every_endpoint() {
    let seeds = files(Path::new(SEEDS));
    assert!(!seeds.is_empty(), "no http seeds in {SEEDS}");
    let dir = tempfile::tempdir().expect("tempdir");
    let harness = harness::Harness::new(dir.path());
    let mut succeeded = BTreeSet::new();
    for path in seeds {
        for exchange in harness.run(&read(&path)) {
            let status = exchange.status.unwrap_or_else(|| panic!("{}: {} not sent", path.display(), exchange.request));
            if status.is_success() {
                let (method, target) = exchange.request.trim_start_matches('!').split_once(' ').expect("method");
                let path = target.split('?').next().expect("path");
                succeeded.insert(format!("{method} {path}"));
            }
        }
    }
    for endpoint in [
        "GET /pos",
        "POST /db/tx",
        "GET /db/snapshot",
        "GET /dbs",
        "GET /db/info",
        "POST /db/restore",
        "GET /db/restore/check",
        "POST /db/upload",
        "DELETE /db",
        "POST /db/clone",
        "POST /cluster/clone",
        "COMPACT /",
        "RETAIN /",
    ] {
        assert!(succeeded.contains(endpoint), "no seed gets a success from {endpoint}: {succeeded:?}");
    }
}
