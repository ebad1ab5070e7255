//! Commands that read a vault, from its directory or through a server: `restore`, `info`,
//! `ls`, `export`; and `import-litestream`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Args, ValueEnum};

use crate::config::{self, format_duration_ms};
use crate::error::{Error, Result};
use crate::import::import_litestream;
use crate::ltx::TxId;
use crate::report::window_ms;
use crate::restore::Target;
use crate::vault::{SnapshotFormat, Vault, VaultConfig};

/// Where the vault is: a directory, or a running server.
#[derive(Args, Debug)]
pub(crate) struct SourceArgs {
    /// The vault directory.
    #[arg(long, required_unless_present = "endpoint", conflicts_with = "endpoint")]
    pub data: Option<PathBuf>,
    /// A running `ltxvault serve` to ask instead of opening the directory (which the server
    /// holds locked), e.g. http://127.0.0.1:2200.
    #[arg(long)]
    pub endpoint: Option<String>,
    /// The token for `--endpoint` (sent as the Authorization header).
    #[arg(long, env = "LTXVAULT_TOKEN", requires = "endpoint", hide_env_values = true)]
    pub token: Option<String>,
}

impl SourceArgs {
    /// The vault directory, for commands that work on one directly.
    pub(crate) fn local(&self) -> Result<&Path> {
        self.data
            .as_deref()
            .ok_or_else(|| Error::Invalid("this command needs --data DIR (it cannot go through --endpoint)".into()))
    }

    /// The server, when the command goes through one.
    pub(crate) fn remote(&self) -> Result<Option<super::remote::Remote>> {
        self.endpoint.as_deref().map(|e| super::remote::Remote::new(e, self.token.as_deref())).transpose()
    }
}

/// Which database, in a vault directory or behind a running server.
#[derive(Args, Debug)]
pub(crate) struct DbArgs {
    #[command(flatten)]
    pub source: SourceArgs,
    /// Cluster name.
    #[arg(long)]
    pub cluster: String,
    /// Database name.
    #[arg(long)]
    pub db: String,
}

/// How to configure the vault: a file, and flags that override it.
#[derive(Args, Debug)]
pub(crate) struct ConfigArgs {
    /// Configuration file (TOML; `ltxvault config example` prints one with every key).
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// `off` keeps every level forever, whatever the file says; `on` keeps each level as
    /// long as the file (or the default) says.
    #[arg(long, value_enum, default_value_t = RetentionSwitch::On)]
    pub retention: RetentionSwitch,
}

/// The values of `--retention`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub(crate) enum RetentionSwitch {
    /// Retention as configured.
    On,
    /// No retention: keep everything.
    Off,
}

impl ConfigArgs {
    /// The defaults, overridden by the file, overridden by the flags. A command runs no
    /// compactor threads of its own (import compacts once, in the foreground).
    pub(crate) fn vault_config(&self) -> Result<VaultConfig> {
        let base = VaultConfig { background_compaction: false, ..VaultConfig::default() };
        let config = config::load(self.config.as_deref(), base)?;
        Ok(match self.retention {
            RetentionSwitch::On => config,
            RetentionSwitch::Off => config.retention_off(),
        })
    }
}

/// A point in a database's history; neither means the latest.
#[derive(Args, Debug)]
pub(crate) struct PointArgs {
    /// This TXID (decimal, or the 16-digit hex LTX file names use).
    #[arg(long, conflicts_with = "timestamp")]
    pub txid: Option<String>,
    /// The state after the last transaction at or before this time (RFC 3339 or Unix
    /// milliseconds).
    #[arg(long)]
    pub timestamp: Option<String>,
}

impl PointArgs {
    pub(crate) fn target(&self) -> Result<Target> {
        target(self.txid.as_deref(), self.timestamp.as_deref())
    }

    /// The point as query parameters of `GET /db/snapshot`.
    pub(crate) fn query(&self) -> Vec<(&'static str, &str)> {
        let txid = self.txid.as_deref().map(|t| ("txid", t));
        let timestamp = self.timestamp.as_deref().map(|t| ("timestamp", t));
        txid.into_iter().chain(timestamp).collect()
    }
}

/// `ltxvault restore`.
#[derive(Args, Debug)]
pub(crate) struct RestoreArgs {
    #[command(flatten)]
    pub target_db: DbArgs,
    #[command(flatten)]
    pub config: ConfigArgs,
    #[command(flatten)]
    pub point: PointArgs,
    /// The database file to write.
    #[arg(short = 'o', long = "output")]
    pub output: PathBuf,
    /// Replace the output file if it exists.
    #[arg(long)]
    pub force: bool,
    /// Print the plan (point, inputs, bytes) without writing anything.
    #[arg(long)]
    pub dry_run: bool,
    /// Print the result as JSON.
    #[arg(long)]
    pub json: bool,
}

/// `ltxvault export`.
#[derive(Args, Debug)]
pub(crate) struct ExportArgs {
    #[command(flatten)]
    pub target_db: DbArgs,
    #[command(flatten)]
    pub config: ConfigArgs,
    #[command(flatten)]
    pub point: PointArgs,
    /// `sqlite` (the plain database file) or `ltx` (one LTX v1 snapshot, as LiteFS reads).
    #[arg(long, value_enum, default_value_t = SnapshotFormat::Sqlite)]
    pub format: SnapshotFormat,
    /// The file to write.
    #[arg(short = 'o', long = "output")]
    pub output: PathBuf,
    /// Replace the output file if it exists.
    #[arg(long)]
    pub force: bool,
}

/// `ltxvault export`: the database at a point as a file, from a vault directory or through
/// a server; the file is checked before it is renamed into place (an SQLite file against
/// the point's checksum, an LTX file by decoding it whole).
pub(crate) fn export(args: ExportArgs) -> Result<ExitCode> {
    let DbArgs { cluster, db, .. } = &args.target_db;
    if !args.force && args.output.exists() {
        return Err(Error::Invalid(format!("{} exists; pass --force to replace it", args.output.display())));
    }
    let temp = crate::io::TempFile::create_output(&args.output)?;
    let (txid, checksum, page_size) = match args.target_db.source.remote()? {
        Some(remote) => {
            let mut query = vec![("db", db.as_str()), ("cluster", cluster.as_str()), ("format", args.format.name())];
            query.extend(args.point.query());
            let point = remote.download("/db/snapshot", &query, temp.file())?;
            (point.txid, point.checksum, point.page_size)
        }
        None => {
            let vault = open(args.target_db.source.local()?, args.config.vault_config()?)?;
            let target = args.point.target()?;
            let mut out = std::io::BufWriter::with_capacity(1 << 20, temp.file());
            let info = vault.write_snapshot(cluster, db, target, args.format, &mut out)?;
            std::io::Write::flush(&mut out).map_err(|e| Error::io(format!("write {}", temp.path().display()), e))?;
            drop(out);
            vault.close()?;
            (info.position.txid, info.position.checksum, info.page_size)
        }
    };
    match args.format {
        SnapshotFormat::Sqlite => {
            let got = crate::ltx::database_file_checksum(temp.path(), page_size)?;
            if got != checksum {
                return Err(Error::Corrupt {
                    file: temp.path().to_path_buf(),
                    offset: 0,
                    reason: format!("exported database has checksum {got}, the vault recorded {checksum}"),
                });
            }
        }
        SnapshotFormat::Ltx => {
            let map = crate::io::MappedFile::open(temp.path())?;
            let mut decoder = crate::ltx::Decoder::new(&map).map_err(|e| Error::from(e).in_file(temp.path()))?;
            while decoder.next_page().map_err(|e| Error::from(e).in_file(temp.path()))?.is_some() {}
            let trailer = decoder.trailer().unwrap_or_default();
            if decoder.header().max_txid != txid || trailer.post_apply_checksum != checksum {
                return Err(Error::Corrupt {
                    file: temp.path().to_path_buf(),
                    offset: 0,
                    reason: format!("exported snapshot is not the point TXID {txid} with checksum {checksum}"),
                });
            }
        }
    }
    temp.commit()?;
    println!("exported {cluster}/{db} at TXID {txid} (checksum {checksum}) to {}", args.output.display());
    Ok(ExitCode::SUCCESS)
}

/// Opens an existing vault (never creates one).
pub(crate) fn open(data: &Path, config: VaultConfig) -> Result<Vault> {
    if !data.join("l0").is_dir() {
        return Err(Error::Invalid(format!("{} is not a vault (no l0/ directory)", data.display())));
    }
    Vault::open(data, config)
}

fn target(txid: Option<&str>, timestamp: Option<&str>) -> Result<Target> {
    match (txid, timestamp) {
        (Some(t), _) => TxId::parse(t)
            .map(Target::TxId)
            .ok_or_else(|| Error::Invalid(format!("--txid {t}: expected decimal or 16 hex digits"))),
        (None, Some(ts)) => Target::parse_timestamp(ts).map(Target::Timestamp),
        (None, None) => Ok(Target::Latest),
    }
}

pub(crate) fn restore(args: RestoreArgs) -> Result<ExitCode> {
    if let Some(remote) = args.target_db.source.remote()? {
        return remote_restore(&remote, &args);
    }
    let DbArgs { cluster, db, .. } = &args.target_db;
    let data = args.target_db.source.local()?;
    let config = args.config.vault_config()?;
    let vault = open(data, config.clone())?;
    let target = args.point.target()?;
    let (plan, page_size) = vault.plan_restore(cluster, db, target)?;
    if args.dry_run {
        if args.json {
            let inputs: Vec<_> = plan
                .inputs
                .iter()
                .map(|r| serde_json::json!({"level": r.level, "min_txid": r.min_txid.to_string(), "max_txid": r.max_txid.to_string(), "bytes": r.bytes}))
                .collect();
            println!(
                "{}",
                serde_json::json!({"txid": plan.txid.to_string(), "checksum": plan.checksum.to_string(),
                    "timestamp_ms": plan.timestamp_ms, "commit": plan.commit, "page_size": page_size,
                    "granularity": granularity(plan.granularity_level, &config), "inputs": inputs, "bytes": plan.bytes})
            );
        } else {
            println!(
                "would restore {cluster}/{db} to TXID {} ({} pages of {page_size} bytes, checksum {}) from {} input(s), {} bytes; granularity here: {}",
                plan.txid,
                plan.commit,
                plan.checksum,
                plan.inputs.len(),
                plan.bytes,
                granularity(plan.granularity_level, &config)
            );
            for run in &plan.inputs {
                println!("  L{} {}-{} {} bytes", run.level, run.min_txid, run.max_txid, run.bytes);
            }
        }
        return Ok(ExitCode::SUCCESS);
    }
    let bar = progress_bar("restoring", "pages");
    let summary = vault.restore_with_progress(cluster, db, target, &args.output, args.force, &mut |done, total| {
        bar.set_length(total);
        bar.set_position(done);
    })?;
    bar.finish_and_clear();
    let granularity = granularity(plan.granularity_level, &config);
    if args.json {
        println!(
            "{}",
            serde_json::json!({"output": args.output, "txid": summary.position.txid.to_string(),
                "checksum": summary.position.checksum.to_string(), "commit": summary.commit,
                "page_size": summary.page_size, "inputs": summary.inputs, "granularity": granularity,
                "peak_rss_kib": peak_rss_kib()})
        );
    } else {
        println!(
            "restored {cluster}/{db} to TXID {} ({} pages of {} bytes, checksum {}) into {}; granularity here: {granularity}",
            summary.position.txid,
            summary.commit,
            summary.page_size,
            summary.position.checksum,
            args.output.display()
        );
    }
    vault.close()?;
    Ok(ExitCode::SUCCESS)
}

/// `ltxvault ls`.
#[derive(Args, Debug)]
pub(crate) struct LsArgs {
    #[command(flatten)]
    pub source: SourceArgs,
    /// Only this cluster (with `--endpoint`, the token's cluster when not given).
    #[arg(long)]
    pub cluster: Option<String>,
    #[command(flatten)]
    pub config: ConfigArgs,
    /// Print JSON: one object per database, as `info --json` prints it.
    #[arg(long)]
    pub json: bool,
}

pub(crate) fn ls(args: LsArgs) -> Result<ExitCode> {
    // The databases, and what each cluster stores against its quota.
    let (reports, usages): (Vec<serde_json::Value>, Vec<(String, serde_json::Value)>) = match args.source.remote()? {
        Some(remote) => {
            let query: Vec<(&str, &str)> = args.cluster.iter().map(|c| ("cluster", c.as_str())).collect();
            let reply = remote.json("/dbs", &query)?;
            let cluster = reply["cluster"].as_str().unwrap_or_default().to_string();
            (reply["databases"].as_array().cloned().unwrap_or_default(), vec![(cluster, reply["usage"].clone())])
        }
        None => {
            let config = args.config.vault_config()?;
            let vault = open(args.source.local()?, config.clone())?;
            let reports = vault
                .databases(args.cluster.as_deref())
                .iter()
                .map(|info| crate::report::info_json(info, &config))
                .collect();
            let usages = match args.cluster.as_deref() {
                Some(cluster) => vec![(cluster.to_string(), vault.usage(cluster))],
                None => vault.usages(),
            };
            vault.close()?;
            (reports, usages.into_iter().map(|(c, u)| (c, crate::report::usage_json(u))).collect())
        }
    };
    if args.json {
        for report in &reports {
            println!("{report}");
        }
    } else {
        print!("{}", crate::report::list_text(&reports));
        for (cluster, usage) in usages.iter().filter(|(_, usage)| usage.is_object()) {
            print!("{}", crate::report::usage_text(cluster, usage));
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `restore --endpoint`: downloads the database at the point from the server, checks its
/// checksum against the one the server recorded for the point, renames it into place.
fn remote_restore(remote: &super::remote::Remote, args: &RestoreArgs) -> Result<ExitCode> {
    let DbArgs { cluster, db, .. } = &args.target_db;
    if args.dry_run {
        return Err(Error::Invalid("--dry-run needs --data: the server does not show plans".into()));
    }
    if !args.force && args.output.exists() {
        return Err(Error::Invalid(format!("{} exists; pass --force to replace it", args.output.display())));
    }
    let mut query = vec![("db", db.as_str()), ("cluster", cluster.as_str()), ("format", "sqlite")];
    query.extend(args.point.query());
    let temp = crate::io::TempFile::create_output(&args.output)?;
    let point = remote.download("/db/snapshot", &query, temp.file())?;
    let checksum = crate::ltx::database_file_checksum(temp.path(), point.page_size)?;
    if checksum != point.checksum {
        return Err(Error::Corrupt {
            file: temp.path().to_path_buf(),
            offset: 0,
            reason: format!("downloaded database has checksum {checksum}, the server recorded {}", point.checksum),
        });
    }
    temp.commit()?;
    if args.json {
        println!(
            "{}",
            serde_json::json!({"output": args.output, "txid": point.txid.to_string(), "checksum": point.checksum.to_string(),
                "commit": point.commit, "page_size": point.page_size})
        );
    } else {
        println!(
            "restored {cluster}/{db} to TXID {} ({} pages of {} bytes, checksum {}) into {}",
            point.txid,
            point.commit,
            point.page_size,
            point.checksum,
            args.output.display()
        );
    }
    Ok(ExitCode::SUCCESS)
}

pub(crate) fn info(args: DbArgs, config: ConfigArgs, json: bool) -> Result<ExitCode> {
    if let Some(remote) = args.source.remote()? {
        let report = remote.json("/db/info", &[("db", args.db.as_str()), ("cluster", args.cluster.as_str())])?;
        if json {
            println!("{report}");
        } else {
            print!("{}", crate::report::info_text(&report));
        }
        return Ok(ExitCode::SUCCESS);
    }
    let config = config.vault_config()?;
    let vault = open(args.source.local()?, config.clone())?;
    let info = vault
        .databases(Some(&args.cluster))
        .into_iter()
        .find(|i| i.db == args.db)
        .ok_or_else(|| Error::NotFound { cluster: args.cluster.clone(), db: args.db.clone() })?;
    let report = crate::report::info_json(&info, &config);
    if json {
        println!("{report}");
    } else {
        print!("{}", crate::report::info_text(&report));
    }
    vault.close()?;
    Ok(ExitCode::SUCCESS)
}

pub(crate) fn import(args: DbArgs, config: ConfigArgs, replica: PathBuf) -> Result<ExitCode> {
    // Vault::open creates the directory, readable by its owner only.
    let vault = Vault::open(args.source.local()?, config.vault_config()?)
        .map_err(|e| super::ops_cmd::offline_only(e, "import-litestream"))?;
    let bar = progress_bar("importing", "files");
    let report = import_litestream(&vault, &args.cluster, &args.db, &replica, |done, total| {
        bar.set_length(total as u64);
        bar.set_position(done as u64);
    })?;
    bar.finish_and_clear();
    match report.range {
        Some((first, last)) => println!(
            "imported {} file(s), {} bytes, TXID {first}..{last} into {}/{}",
            report.files, report.bytes, args.cluster, args.db
        ),
        None => {
            println!("nothing new to import: {}/{} already holds everything the replica has", args.cluster, args.db)
        }
    }
    // Imported history is old: its compaction windows are closed, so compact it now.
    let compacted = vault.compact_now()?;
    if compacted > 0 {
        println!("compacted the imported history into {compacted} level file(s)");
    }
    if let Some(gap) = report.stopped_at_gap {
        eprintln!("ltxvault: warning: the replica has no file starting at TXID {gap}; later files were not imported");
    }
    vault.close()?;
    Ok(ExitCode::SUCCESS)
}

/// Words for the restore granularity a level gives.
fn granularity(level: u8, config: &VaultConfig) -> String {
    match window_ms(config, level) {
        None => "every transaction (L0)".to_string(),
        Some(ms) => format!("one point per L{level} window ({})", format_duration_ms(ms)),
    }
}

/// This process's peak resident memory (VmHWM), KiB; 0 where /proc does not say.
fn peak_rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
            line.split_whitespace().nth(1)?.parse().ok()
        })
        .unwrap_or(0)
}

/// A progress bar on stderr when it is a terminal; hidden (and free) otherwise, so that
/// scripts and logs see only the result lines.
pub(crate) fn progress_bar(verb: &str, unit: &str) -> indicatif::ProgressBar {
    let bar = indicatif::ProgressBar::with_draw_target(Some(0), indicatif::ProgressDrawTarget::stderr());
    let template = format!("{verb} {{bar:40}} {{pos}}/{{len}} {unit} ({{eta}})");
    if let Ok(style) = indicatif::ProgressStyle::with_template(&template) {
        bar.set_style(style);
    }
    bar
}
