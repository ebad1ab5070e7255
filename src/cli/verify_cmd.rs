//! `ltxvault verify`: checks every stored byte, then drills every database (restores its
//! latest point and a random point of each level, checks each against the recorded
//! checksum and with SQLite's integrity check), and prints one row per database. Exit
//! code 0 only when everything passed.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;

use super::vault_cmd::{ConfigArgs, open};
use crate::error::{Error, Result};
use crate::report::drill_json;
use crate::vault::drill::random_seed;
use crate::vault::{DrillResult, StorageCheck, StorageReport, Subject};

/// `ltxvault verify`.
#[derive(Args, Debug)]
pub(crate) struct VerifyArgs {
    /// The vault directory. The command takes the vault's lock: stop `serve` first.
    #[arg(long)]
    pub data: PathBuf,
    /// Only the databases of this cluster (the log's record headers are checked anyway).
    #[arg(long)]
    pub cluster: Option<String>,
    /// Only this database of `--cluster`.
    #[arg(long, requires = "cluster")]
    pub db: Option<String>,
    #[command(flatten)]
    pub config: ConfigArgs,
    /// Seed of the random choice of drilled points [default: a new one, printed, so that a
    /// failure can be replayed].
    #[arg(long)]
    pub seed: Option<u64>,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

/// One row of the result: a part of the storage, and for a database its drill.
struct Row {
    subject: Subject,
    storage: StorageCheck,
    drill: Option<std::result::Result<DrillResult, String>>,
}

impl Row {
    fn ok(&self) -> bool {
        self.storage.ok() && self.drill.as_ref().is_none_or(|d| d.as_ref().is_ok_and(|d| d.ok))
    }
}

pub(crate) fn verify(args: VerifyArgs) -> Result<ExitCode> {
    let seed = args.seed.unwrap_or_else(random_seed);
    let config = args.config.vault_config()?;
    let vault = match open(&args.data, config) {
        Ok(vault) => vault,
        Err(e @ (Error::Locked { .. } | Error::Invalid(_))) => return Err(e),
        // Damage the open cannot get past (a record header, a level file's header): that
        // is a finding too.
        Err(e) => {
            let message = format!("the vault does not open: {e}");
            if args.json {
                println!(
                    "{}",
                    serde_json::json!({"ok": false, "seed": seed.to_string(), "error": message, "rows": []})
                );
            } else {
                println!("FAILED: {message}");
            }
            return Ok(ExitCode::FAILURE);
        }
    };
    let (cluster, db) = (args.cluster.as_deref(), args.db.as_deref());
    if let (Some(c), Some(d)) = (cluster, db)
        && vault.position(c, d).is_none()
    {
        return Err(Error::NotFound { cluster: c.to_string(), db: d.to_string() });
    }
    let bar = bytes_bar();
    let storage = vault.verify_storage(cluster, db, &mut |done, total| {
        bar.set_length(total);
        bar.set_position(done);
    })?;
    bar.finish_and_clear();
    let databases: Vec<(String, String)> = vault
        .databases(cluster)
        .into_iter()
        .filter(|info| db.is_none_or(|d| d == info.db))
        .map(|info| (info.cluster, info.db))
        .collect();
    let bar = super::vault_cmd::progress_bar("drilling", "databases");
    bar.set_length(databases.len() as u64);
    let mut drills = std::collections::BTreeMap::new();
    for (c, d) in &databases {
        let drilled = vault.drill(c, d, seed).map_err(|e| e.to_string());
        drills.insert(Subject::Database { cluster: c.clone(), db: d.clone() }, drilled);
        bar.inc(1);
    }
    bar.finish_and_clear();
    vault.close()?;
    let rows = rows(storage, drills);
    let ok = rows.iter().all(Row::ok);
    if args.json {
        println!("{}", json(&rows, ok, seed));
    } else {
        print!("{}", text(&rows, ok, seed));
    }
    Ok(if ok { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

fn rows(
    storage: StorageReport,
    mut drills: std::collections::BTreeMap<Subject, std::result::Result<DrillResult, String>>,
) -> Vec<Row> {
    let mut rows: Vec<Row> = storage
        .checks
        .into_iter()
        .map(|(subject, storage)| {
            let drill = drills.remove(&subject);
            Row { subject, storage, drill }
        })
        .collect();
    // A database the storage pass did not see (created meanwhile) still gets its row.
    rows.extend(drills.into_iter().map(|(subject, drill)| Row {
        subject,
        storage: StorageCheck::default(),
        drill: Some(drill),
    }));
    rows
}

fn json(rows: &[Row], ok: bool, seed: u64) -> serde_json::Value {
    let rows: Vec<_> = rows
        .iter()
        .map(|row| {
            let (cluster, db) = match &row.subject {
                Subject::Database { cluster, db } => (Some(cluster), Some(db)),
                _ => (None, None),
            };
            let problems: Vec<_> = row
                .storage
                .problems
                .iter()
                .map(|p| serde_json::json!({"file": p.file, "offset": p.offset, "reason": p.reason}))
                .collect();
            let (drill, drill_error) = match &row.drill {
                Some(Ok(drill)) => (Some(drill_json(drill)), None),
                Some(Err(e)) => (None, Some(e)),
                None => (None, None),
            };
            serde_json::json!({"subject": row.subject.to_string(), "cluster": cluster, "db": db, "ok": row.ok(),
                "files": row.storage.files, "pieces": row.storage.pieces, "bytes": row.storage.bytes,
                "problems": problems, "more_problems": row.storage.more_problems,
                "drill": drill, "drill_error": drill_error})
        })
        .collect();
    serde_json::json!({"ok": ok, "seed": seed.to_string(), "rows": rows})
}

fn text(rows: &[Row], ok: bool, seed: u64) -> String {
    let mut table = vec![["database", "checks", "points drilled", "result", "detail"].map(String::from)];
    let mut details = Vec::new();
    for row in rows {
        let s = &row.storage;
        let checks = match row.subject {
            Subject::Log => {
                format!("{}, {}, {}", count(s.files, "segment"), count(s.pieces, "record"), size(s.bytes))
            }
            Subject::Vault => count(s.files, "file"),
            Subject::Database { .. } => {
                format!("{}, {}, {}", count(s.files, "file"), count(s.pieces, "piece"), size(s.bytes))
            }
        };
        let points = match &row.drill {
            None => "-".to_string(),
            Some(Err(_)) => "0".to_string(),
            Some(Ok(d)) => format!("{}/{}", d.points.iter().filter(|p| p.ok).count(), d.points.len()),
        };
        let mut detail = String::new();
        if let Some(first) = s.problems.first() {
            // The file's name is enough here; the problems below give the path.
            let name = first
                .file
                .file_name()
                .map_or_else(|| first.file.display().to_string(), |n| n.to_string_lossy().into_owned());
            detail = match first.offset {
                Some(offset) => format!("{name} at offset {offset}: {}", first.reason),
                None => format!("{name}: {}", first.reason),
            };
        } else if let Some(Err(e)) = &row.drill {
            detail = format!("drill: {e}");
        } else if let Some(Ok(d)) = &row.drill
            && !d.ok
        {
            detail = format!("drill: {}", d.detail);
        }
        table.push([
            row.subject.to_string(),
            checks,
            points,
            if row.ok() { "ok" } else { "FAILED" }.to_string(),
            one_line(&detail, 100),
        ]);
        for problem in &s.problems {
            details.push(format!("{}: {problem}", row.subject));
        }
        if s.more_problems > 0 {
            details.push(format!("{}: and {} more problems", row.subject, s.more_problems));
        }
        match &row.drill {
            Some(Err(e)) => details.push(format!("{}: the drill did not run: {e}", row.subject)),
            Some(Ok(d)) => {
                for p in d.points.iter().filter(|p| !p.ok) {
                    details.push(format!("{}: drill of TXID {} ({}): {}", row.subject, p.txid, p.choice, p.detail));
                }
            }
            None => {}
        }
    }
    let mut widths = [0; 5];
    for row in &table {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    for row in &table {
        let cells: Vec<_> = row.iter().zip(widths).map(|(cell, width)| format!("{cell:width$}")).collect();
        out.push_str(cells.join("  ").trim_end());
        out.push('\n');
    }
    if !details.is_empty() {
        out.push_str("\nproblems:\n");
        for line in details {
            out.push_str(&format!("  {line}\n"));
        }
    }
    out.push('\n');
    if ok {
        out.push_str(&format!("all well (seed {seed})\n"));
    } else {
        out.push_str(&format!("FAILED (seed {seed}; --seed {seed} drills the same points again)\n"));
    }
    out
}

/// `text` on one line, cut to `max` characters.
fn one_line(text: &str, max: usize) -> String {
    let line: String = text.chars().map(|c| if c == '\n' { ' ' } else { c }).collect();
    if line.chars().count() <= max { line } else { format!("{}…", line.chars().take(max).collect::<String>()) }
}

/// "1 file", "3 files".
fn count(n: u64, what: &str) -> String {
    if n == 1 { format!("1 {what}") } else { format!("{n} {what}s") }
}

/// Bytes for people: "5.1 MiB".
fn size(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 { format!("{bytes} B") } else { format!("{value:.1} {}", UNITS[unit]) }
}

/// A byte-counting progress bar on stderr when it is a terminal; hidden otherwise.
fn bytes_bar() -> indicatif::ProgressBar {
    let bar = indicatif::ProgressBar::with_draw_target(Some(0), indicatif::ProgressDrawTarget::stderr());
    if let Ok(style) = indicatif::ProgressStyle::with_template("verifying {bar:40} {bytes}/{total_bytes} ({eta})") {
        bar.set_style(style);
    }
    bar
}
