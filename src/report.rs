//! What the vault reports about a database, in one shape for the CLI, the HTTP control
//! plane and scripts: [`info_json`] builds it, [`info_text`] prints it for people (from the
//! JSON, so a remote `info` prints exactly what a local one does).

use crate::config::{format_duration_ms, format_retention};
use crate::ltx::TxId;
use crate::quota::{ClusterUsage, human_bytes};
use crate::vault::{DbInfo, DrillResult, VaultConfig};

/// A timestamp in ms as RFC 3339 (UTC, milliseconds).
pub fn rfc3339(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| t.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string())
        .unwrap_or_else(|| format!("{ms} ms"))
}

/// The window of a level (L1 and up) in ms, as configured.
pub fn window_ms(config: &VaultConfig, level: u8) -> Option<i64> {
    let index = usize::from(level.checked_sub(1)?);
    config.level_intervals_ms.get(index).copied()
}

/// The retention of a level in ms (`None`: kept forever), as configured.
pub fn retention_ms(config: &VaultConfig, level: u8) -> Option<i64> {
    config.retention_ms.get(usize::from(level)).copied().flatten()
}

/// A restore drill as JSON: when, how long, the seed (a string: it may not fit a double),
/// whether it passed and why not, and every point drilled.
pub fn drill_json(drill: &DrillResult) -> serde_json::Value {
    let points: Vec<_> = drill
        .points
        .iter()
        .map(|p| {
            serde_json::json!({"point": p.choice.to_string(), "txid": p.txid.to_string(),
                "timestamp_ms": p.timestamp_ms, "time": rfc3339(p.timestamp_ms),
                "checksum": p.checksum.to_string(), "commit": p.commit, "ok": p.ok, "detail": p.detail})
        })
        .collect();
    serde_json::json!({"time": rfc3339(drill.started_ms), "timestamp_ms": drill.started_ms,
        "duration_ms": drill.duration_ms, "seed": drill.seed.to_string(), "ok": drill.ok,
        "detail": drill.detail, "points": points})
}

/// A drill for people, one line: when, passed or failed, points, time taken, the seed.
pub fn drill_text(drill: &serde_json::Value) -> String {
    let text = |v: &serde_json::Value| v.as_str().map_or_else(|| v.to_string(), str::to_string);
    let ok = drill["ok"].as_bool().unwrap_or(false);
    let points = drill["points"].as_array().map_or(0, Vec::len);
    let passed = drill["points"].as_array().map_or(0, |p| p.iter().filter(|p| p["ok"] == true).count());
    let verdict = if ok { "ok".to_string() } else { format!("FAILED: {}", text(&drill["detail"])) };
    format!(
        "{} {verdict} ({passed}/{points} points, {} ms, seed {})",
        text(&drill["time"]),
        text(&drill["duration_ms"]),
        text(&drill["seed"])
    )
}

/// A database as JSON: position, HWM, page size, size, per level its window, retention,
/// pieces, bytes on disk and restorable range, and the last restore drill (or null).
pub fn info_json(info: &DbInfo, config: &VaultConfig) -> serde_json::Value {
    let point = |p: Option<(TxId, i64)>| {
        p.map(|(txid, ms)| serde_json::json!({"txid": txid.to_string(), "timestamp_ms": ms, "time": rfc3339(ms)}))
    };
    let levels: Vec<_> = info
        .levels
        .iter()
        .map(|l| {
            let window = window_ms(config, l.level);
            let retention = retention_ms(config, l.level);
            serde_json::json!({"level": l.level, "window_ms": window, "window": window.map(format_duration_ms),
                "retention_ms": retention, "retention": format_retention(retention),
                "pieces": l.pieces, "bytes": l.bytes, "oldest": point(l.oldest), "newest": point(l.newest)})
        })
        .collect();
    serde_json::json!({"cluster": info.cluster, "db": info.db, "position": info.position.to_string(),
        "hwm": info.hwm.to_string(), "page_size": info.page_size, "commit": info.commit,
        "size_bytes": u64::from(info.commit) * u64::from(info.page_size),
        "oldest": point(info.oldest), "newest": point(info.newest), "levels": levels,
        "drill": info.drill.as_ref().map(drill_json)})
}

/// [`info_json`] for people: the database, then a table with one row per level.
pub fn info_text(info: &serde_json::Value) -> String {
    let text = |v: &serde_json::Value| match v {
        serde_json::Value::String(s) => s.clone(),
        serde_json::Value::Null => "-".to_string(),
        other => other.to_string(),
    };
    let point = |p: &serde_json::Value| {
        if p.is_null() { "-".to_string() } else { format!("{} {}", text(&p["txid"]), text(&p["time"])) }
    };
    let mut rows = vec![["level", "window", "retention", "pieces", "bytes", "oldest", "newest"].map(String::from)];
    for l in info["levels"].as_array().into_iter().flatten() {
        rows.push([
            format!("L{}", text(&l["level"])),
            text(&l["window"]),
            text(&l["retention"]),
            text(&l["pieces"]),
            text(&l["bytes"]),
            point(&l["oldest"]),
            point(&l["newest"]),
        ]);
    }
    let mut widths = [0; 7];
    for row in &rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.len());
        }
    }
    let mut out = format!(
        "{}/{}\n  position   {}\n  hwm        {}\n  page size  {}\n  size       {} pages, {} bytes\n",
        text(&info["cluster"]),
        text(&info["db"]),
        text(&info["position"]),
        text(&info["hwm"]),
        text(&info["page_size"]),
        text(&info["commit"]),
        text(&info["size_bytes"]),
    );
    let drill = if info["drill"].is_null() { "none yet".to_string() } else { drill_text(&info["drill"]) };
    out.push_str(&format!("  last drill {drill}\n"));
    for row in &rows {
        let cells: Vec<_> = row.iter().zip(widths).map(|(cell, width)| format!("{cell:width$}")).collect();
        out.push_str(&format!("  {}\n", cells.join("  ").trim_end()));
    }
    out
}

/// Databases for people, one line each: cluster/name, position, size, last upload, and the
/// oldest and newest restorable points.
pub fn list_text(reports: &[serde_json::Value]) -> String {
    let text = |v: &serde_json::Value| v.as_str().map_or_else(|| v.to_string(), str::to_string);
    let time = |p: &serde_json::Value| p["time"].as_str().unwrap_or("-").to_string();
    let mut rows = vec![["database", "position", "size", "last upload", "restorable from"].map(String::from)];
    for r in reports {
        rows.push([
            format!("{}/{}", text(&r["cluster"]), text(&r["db"])),
            text(&r["position"]),
            format!("{} bytes", text(&r["size_bytes"])),
            time(&r["newest"]),
            time(&r["oldest"]),
        ]);
    }
    let mut widths = [0; 5];
    for row in &rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.len());
        }
    }
    let mut out = String::new();
    for row in &rows {
        let cells: Vec<_> = row.iter().zip(widths).map(|(cell, width)| format!("{cell:width$}")).collect();
        out.push_str(cells.join("  ").trim_end());
        out.push('\n');
    }
    out
}

/// What a cluster stores against its quota, as JSON: `{"bytes": N, "quota": N or null}`.
pub fn usage_json(usage: ClusterUsage) -> serde_json::Value {
    serde_json::json!({"bytes": usage.bytes, "quota": usage.quota})
}

/// [`usage_json`] for people, one line: `cluster demo stores 1.20 MiB (quota 5.00 GiB, 0% used)`.
pub fn usage_text(cluster: &str, usage: &serde_json::Value) -> String {
    let bytes = usage["bytes"].as_u64().unwrap_or(0);
    match usage["quota"].as_u64() {
        Some(quota) => format!(
            "cluster {cluster} stores {} (quota {}, {}% used)\n",
            human_bytes(bytes),
            human_bytes(quota),
            bytes.saturating_mul(100) / quota.max(1)
        ),
        None => format!("cluster {cluster} stores {} (no quota)\n", human_bytes(bytes)),
    }
}
