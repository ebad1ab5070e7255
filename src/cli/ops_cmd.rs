//! Commands that change what a vault holds or copy it out: `clone`, `delete`,
//! `export-litestream`.

use std::io::{BufRead, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Args;

use super::vault_cmd::{ConfigArgs, DbArgs, PointArgs, SourceArgs, open, progress_bar};
use crate::error::{Error, Result};
use crate::vault::{Vault, VaultConfig};

/// `ltxvault clone`.
#[derive(Args, Debug)]
pub(crate) struct CloneArgs {
    #[command(flatten)]
    pub source: SourceArgs,
    /// The cluster to clone from.
    #[arg(long)]
    pub cluster: String,
    /// The database to clone; without it, every database of the cluster.
    #[arg(long)]
    pub db: Option<String>,
    /// The cluster to clone into [default: --cluster; a whole-cluster clone needs it].
    #[arg(long)]
    pub to_cluster: Option<String>,
    /// The name of the clone [default: --db].
    #[arg(long, requires = "db")]
    pub to_db: Option<String>,
    #[command(flatten)]
    pub point: PointArgs,
    #[command(flatten)]
    pub config: ConfigArgs,
    /// Print the result as JSON.
    #[arg(long)]
    pub json: bool,
}

/// `ltxvault clone`: a database, or every database of a cluster, at a point (the latest by
/// default) becomes a new database with that state as its first restore point, through
/// the vault directory or a server.
pub(crate) fn clone(args: CloneArgs) -> Result<ExitCode> {
    match args.db.clone() {
        Some(db) => clone_database(&args, &db),
        None => clone_cluster(&args),
    }
}

fn clone_database(args: &CloneArgs, db: &str) -> Result<ExitCode> {
    let to_cluster = args.to_cluster.as_deref().unwrap_or(&args.cluster);
    let to_db = args.to_db.as_deref().unwrap_or(db);
    if (to_cluster, to_db) == (args.cluster.as_str(), db) {
        return Err(Error::Invalid(format!(
            "the clone would be {}/{db} itself; give --to-cluster or --to-db",
            args.cluster
        )));
    }
    let txid = match args.source.remote()? {
        Some(remote) => {
            let mut query = vec![("cluster", args.cluster.as_str()), ("db", db)];
            query.extend([("to_cluster", to_cluster), ("to_db", to_db)]);
            query.extend(args.point.query());
            let reply = remote.change(false, "/db/clone", &query)?;
            reply["txID"].as_str().unwrap_or_default().to_string()
        }
        None => {
            let vault = open_local(&args.source, &args.config)?;
            let ack = vault.clone_database((&args.cluster, db), (to_cluster, to_db), args.point.target()?)?;
            vault.close()?;
            ack.position.txid.to_string()
        }
    };
    if args.json {
        println!(
            "{}",
            serde_json::json!({"from": {"cluster": args.cluster, "db": db},
                "to": {"cluster": to_cluster, "db": to_db}, "txid": txid})
        );
    } else {
        println!("cloned {}/{db} at TXID {txid} into {to_cluster}/{to_db}", args.cluster);
    }
    Ok(ExitCode::SUCCESS)
}

/// A database's name and what became of it.
type Pair = (String, String);

fn clone_cluster(args: &CloneArgs) -> Result<ExitCode> {
    let to_cluster = match args.to_cluster.as_deref() {
        Some(to) if to != args.cluster => to,
        _ => {
            return Err(Error::Invalid(
                "a whole-cluster clone (no --db) needs --to-cluster, another cluster".to_string(),
            ));
        }
    };
    // (database, TXID of its clone) and (database, why it was skipped).
    let (cloned, skipped): (Vec<Pair>, Vec<Pair>) = match args.source.remote()? {
        Some(remote) => {
            let mut query = vec![("cluster", args.cluster.as_str()), ("to_cluster", to_cluster)];
            query.extend(args.point.query());
            let reply = remote.change(false, "/cluster/clone", &query)?;
            let pairs = |list: &str, value: &str| -> Vec<Pair> {
                reply[list]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|item| {
                        let text = |key: &str| item[key].as_str().unwrap_or_default().to_string();
                        (text("db"), text(value))
                    })
                    .collect()
            };
            (pairs("cloned", "txID"), pairs("skipped", "error"))
        }
        None => {
            let vault = open_local(&args.source, &args.config)?;
            let report = vault.clone_cluster(&args.cluster, to_cluster, args.point.target()?)?;
            vault.close()?;
            (
                report.cloned.into_iter().map(|(db, ack)| (db, ack.position.txid.to_string())).collect(),
                report.skipped.into_iter().map(|(db, e)| (db, e.to_string())).collect(),
            )
        }
    };
    if args.json {
        let cloned: Vec<_> = cloned.iter().map(|(db, txid)| serde_json::json!({"db": db, "txid": txid})).collect();
        let skipped: Vec<_> = skipped.iter().map(|(db, why)| serde_json::json!({"db": db, "error": why})).collect();
        println!(
            "{}",
            serde_json::json!({"from": args.cluster, "to": to_cluster, "cloned": cloned, "skipped": skipped})
        );
    } else {
        println!("cloned {} database(s) of {} into {to_cluster}", cloned.len(), args.cluster);
        for (db, txid) in &cloned {
            println!("  {db} at TXID {txid}");
        }
        for (db, why) in &skipped {
            eprintln!("ltxvault: skipped {}/{db}: {why}", args.cluster);
        }
    }
    if cloned.is_empty() && skipped.is_empty() {
        return Err(Error::Invalid(format!("cluster \"{}\" has no databases", args.cluster)));
    }
    Ok(ExitCode::SUCCESS)
}

/// `ltxvault delete`.
#[derive(Args, Debug)]
pub(crate) struct DeleteArgs {
    #[command(flatten)]
    pub target_db: DbArgs,
    #[command(flatten)]
    pub config: ConfigArgs,
    /// Delete without asking (needed when standard input is not a terminal).
    #[arg(long)]
    pub yes: bool,
}

/// `ltxvault delete`: a database and its whole history, for good, after the operator
/// typed its name on the terminal (or gave `--yes`). Without a terminal to ask on and
/// without `--yes`, nothing is deleted.
pub(crate) fn delete(args: DeleteArgs) -> Result<ExitCode> {
    let DbArgs { cluster, db, source } = &args.target_db;
    match source.remote()? {
        Some(remote) => {
            let report = remote.json("/db/info", &[("cluster", cluster), ("db", db)])?;
            confirm(cluster, db, &report, args.yes)?;
            remote.change(true, "/db", &[("cluster", cluster), ("db", db)])?;
        }
        None => {
            let config = args.config.vault_config()?;
            let vault = open(source.local()?, config.clone())?;
            let info = vault
                .databases(Some(cluster))
                .into_iter()
                .find(|info| &info.db == db)
                .ok_or_else(|| Error::NotFound { cluster: cluster.clone(), db: db.clone() })?;
            // The vault stays locked while the operator answers: what was shown is what goes.
            confirm(cluster, db, &crate::report::info_json(&info, &config), args.yes)?;
            vault.delete_database(cluster, db)?;
            vault.close()?;
        }
    }
    println!("deleted {cluster}/{db} and its whole history");
    Ok(ExitCode::SUCCESS)
}

/// Asks, on the terminal, for the database's name before it is deleted; `yes` skips the
/// question. Refuses when standard input is not a terminal.
fn confirm(cluster: &str, db: &str, report: &serde_json::Value, yes: bool) -> Result<()> {
    if yes {
        return Ok(());
    }
    let stdin = std::io::stdin();
    if !stdin.is_terminal() {
        return Err(Error::Invalid(format!(
            "not deleting {cluster}/{db}: standard input is not a terminal to confirm on; pass --yes to delete without asking"
        )));
    }
    let text = |v: &serde_json::Value| v.as_str().unwrap_or("-").to_string();
    let stored: u64 = report["levels"].as_array().into_iter().flatten().filter_map(|l| l["bytes"].as_u64()).sum();
    let mut stderr = std::io::stderr().lock();
    let prompt = format!(
        "This deletes {cluster}/{db} (position {}, {} stored, restorable from {} to {}) and every restore point \
         of it, for good.\nType the database name ({db}) to delete it: ",
        text(&report["position"]),
        crate::quota::human_bytes(stored),
        text(&report["oldest"]["time"]),
        text(&report["newest"]["time"]),
    );
    stderr.write_all(prompt.as_bytes()).and_then(|()| stderr.flush()).map_err(|e| Error::io("write the prompt", e))?;
    let mut answer = String::new();
    stdin.lock().read_line(&mut answer).map_err(|e| Error::io("read the answer", e))?;
    if answer.trim_end_matches(['\n', '\r']) != db {
        return Err(Error::Invalid(format!("not deleted: the answer was not \"{db}\"")));
    }
    Ok(())
}

/// `ltxvault export-litestream`.
#[derive(Args, Debug)]
pub(crate) struct ExportLitestreamArgs {
    /// The vault directory.
    #[arg(long)]
    pub data: PathBuf,
    /// Cluster name.
    #[arg(long)]
    pub cluster: String,
    /// Database name.
    #[arg(long)]
    pub db: String,
    #[command(flatten)]
    pub config: ConfigArgs,
    /// Replace OUT_DIR when it holds a Litestream replica already (only its ltx/ tree).
    #[arg(long)]
    pub force: bool,
    /// The replica directory to write (it will hold ltx/); new or empty unless --force.
    #[arg(value_name = "OUT_DIR")]
    pub out_dir: PathBuf,
}

/// `ltxvault export-litestream`: the database's history as a Litestream 0.5 file replica
/// (see `export`), built in a staging directory next to OUT_DIR and renamed into place
/// once every file and directory is synced. OUT_DIR therefore holds either what it held
/// before or the whole export; an interrupted export leaves only the staging directory,
/// `.<name>.export-incomplete`, which the next export removes.
pub(crate) fn export_litestream(args: ExportLitestreamArgs) -> Result<ExitCode> {
    let out_dir = &args.out_dir;
    let replace = check_out_dir(out_dir, args.force)?;
    let (parent, staging) = staging_dir(out_dir)?;
    if staging.exists() {
        eprintln!("ltxvault: removing {}, left by an interrupted export", staging.display());
        std::fs::remove_dir_all(&staging).map_err(|e| Error::io(format!("remove {}", staging.display()), e))?;
    }
    let vault = open_offline_only(&args.data, args.config.vault_config()?, "export-litestream")?;
    let bar = progress_bar("exporting", "files");
    let exported = crate::export::export_litestream_with_progress(
        &vault,
        &args.cluster,
        &args.db,
        &staging,
        &mut |done, total| {
            bar.set_length(total as u64);
            bar.set_position(done as u64);
        },
    );
    bar.finish_and_clear();
    let report = match exported {
        Ok(report) => report,
        Err(e) => {
            // Nothing half-written stays behind; OUT_DIR was never touched.
            let _ = std::fs::remove_dir_all(&staging);
            return Err(e);
        }
    };
    vault.close()?;
    if replace {
        // Swap the old replica and the new one in one step, then remove the old one.
        exchange(&staging, out_dir)?;
        std::fs::remove_dir_all(&staging).map_err(|e| Error::io(format!("remove {}", staging.display()), e))?;
    } else {
        std::fs::rename(&staging, out_dir).map_err(|e| {
            Error::io(
                format!("rename {} to {} (the export is complete there)", staging.display(), out_dir.display()),
                e,
            )
        })?;
    }
    crate::io::sync_dir(&parent)?;
    let l0 = match report.l0_range {
        Some((first, last)) => format!("{} level-0 file(s), TXID {first}..{last}", report.l0_files),
        None => "no level-0 files (the vault keeps no log records of it)".to_string(),
    };
    println!(
        "exported {}/{} to {}: a snapshot at TXID {} and {l0}, {} bytes; restore with `litestream restore -o DB file://{}`",
        args.cluster,
        args.db,
        out_dir.display(),
        report.snapshot,
        report.bytes,
        std::path::absolute(out_dir).unwrap_or_else(|_| out_dir.clone()).display()
    );
    if report.growth_pages > 0 {
        eprintln!("ltxvault: {} zero page(s) were added where the database grew (see docs)", report.growth_pages);
    }
    Ok(ExitCode::SUCCESS)
}

/// Whether OUT_DIR is to be replaced (it holds a replica and `force` is given). A missing
/// or empty directory is written; anything else is refused, and with `force` only a
/// directory holding nothing but an `ltx/` tree is replaced.
fn check_out_dir(out_dir: &Path, force: bool) -> Result<bool> {
    let entries = match std::fs::read_dir(out_dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
        Err(e) if e.kind() == std::io::ErrorKind::NotADirectory => {
            return Err(Error::Invalid(format!("{} exists and is not a directory", out_dir.display())));
        }
        Err(e) => return Err(Error::io(format!("read {}", out_dir.display()), e)),
    };
    let mut names = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| Error::io(format!("read {}", out_dir.display()), e))?;
        names.push(entry.file_name().to_string_lossy().into_owned());
    }
    if names.is_empty() {
        return Ok(false);
    }
    if !force {
        return Err(Error::Invalid(format!(
            "{} is not empty; export into a new or empty directory, or pass --force to replace the replica it holds",
            out_dir.display()
        )));
    }
    if let Some(other) = names.iter().find(|name| *name != "ltx" || !out_dir.join(name).is_dir()) {
        return Err(Error::Invalid(format!(
            "{} holds {other:?}, which is not part of a Litestream replica (only ltx/ is); not replacing it, even with --force",
            out_dir.display()
        )));
    }
    Ok(true)
}

/// The directory an export is built in before it becomes OUT_DIR: beside it, so that the
/// final rename stays on one file system. Returns (OUT_DIR's parent, staging directory).
fn staging_dir(out_dir: &Path) -> Result<(PathBuf, PathBuf)> {
    let absolute = std::path::absolute(out_dir).map_err(|e| Error::io(format!("resolve {}", out_dir.display()), e))?;
    let (Some(parent), Some(name)) = (absolute.parent(), absolute.file_name()) else {
        return Err(Error::Invalid(format!("{} cannot be an export directory", out_dir.display())));
    };
    if !parent.is_dir() {
        return Err(Error::Invalid(format!("{} does not exist; create it first", parent.display())));
    }
    let staging = parent.join(format!(".{}.export-incomplete", name.to_string_lossy()));
    Ok((parent.to_path_buf(), staging))
}

/// Swaps two directories atomically (`renameat2` with `RENAME_EXCHANGE`).
fn exchange(a: &Path, b: &Path) -> Result<()> {
    use std::os::unix::ffi::OsStrExt;
    let c = |p: &Path| {
        std::ffi::CString::new(p.as_os_str().as_bytes())
            .map_err(|_| Error::Invalid(format!("{} contains a NUL byte", p.display())))
    };
    let (ca, cb) = (c(a)?, c(b)?);
    // SAFETY: both pointers are NUL-terminated strings that live across the call.
    let rc =
        unsafe { libc::renameat2(libc::AT_FDCWD, ca.as_ptr(), libc::AT_FDCWD, cb.as_ptr(), libc::RENAME_EXCHANGE) };
    if rc != 0 {
        let e = std::io::Error::last_os_error();
        return Err(Error::io(
            format!("swap {} with {} (the new export is complete at the first)", a.display(), b.display()),
            e,
        ));
    }
    Ok(())
}

/// Opens the vault of a command that works on the directory itself, as `--data` says.
fn open_local(source: &SourceArgs, config: &ConfigArgs) -> Result<Vault> {
    open(source.local()?, config.vault_config()?)
}

/// Opens an existing vault for a command that has no `--endpoint` mode: when a server holds
/// it, the error says that the server must be stopped first.
pub(crate) fn open_offline_only(data: &Path, config: VaultConfig, command: &str) -> Result<Vault> {
    open(data, config).map_err(|e| offline_only(e, command))
}

/// [`Error::Locked`] by a server, reworded for a command that cannot go through it.
pub(crate) fn offline_only(e: Error, command: &str) -> Error {
    match e {
        Error::Locked { dir, holder, endpoint: Some(endpoint) } => Error::Invalid(format!(
            "vault {} is in use by {holder}, which serves it at {endpoint}; `ltxvault {command}` works on the \
             directory only (it has no --endpoint mode): stop the server, run it, then start the server again",
            dir.display()
        )),
        e => e,
    }
}
