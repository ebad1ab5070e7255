//! The configuration file: one TOML file whose keys map onto [`VaultConfig`].
//!
//! ```toml
//! [storage]    io, segment_size, min_free
//! [ingest]     queue_capacity, max_batch, max_upload, enqueue_timeout
//! [levels]     l1_window, l2_window, l3_window, grace
//! [retention]  l0, l1, l2, l3, every
//! [drill]      every
//! [quotas]     default; [quotas.clusters] NAME = size or "off", one per cluster
//! [server]     listen, auth, cluster_id, metrics, max_body, max_uploads, max_connections,
//!              header_timeout, body_idle_timeout, body_timeout, shutdown_grace,
//!              auth_failure_limit, auth_failure_window, auth_failure_sources
//! ```
//!
//! Every key is optional: a missing key keeps the value of the configuration it is applied
//! to (the defaults, for the CLI). An unknown key or section is an error, at every level,
//! so that a misspelt key never silently leaves a default in place. `docs/CONFIG.md`
//! describes each key; [`example`] prints them all at their defaults and is generated from
//! [`VaultConfig::default`], so it cannot drift from them.
//!
//! Values are written for people: durations as a whole number and a unit (`"500ms"`,
//! `"5s"`, `"1m"`, `"24h"`, `"30d"`), sizes as bytes or a whole number and a binary unit
//! (`"64MiB"`, `"1GiB"`, `4096`), retention as a duration or `"off"` (keep forever), the
//! drill schedule as a duration or `"off"`, a quota as a size or `"off"` (no limit).
//!
//! After the keys are applied the whole configuration is checked ([`validate`]): the
//! windows of the levels must nest (L2 a multiple of L1, L3 of L2), because a level file
//! of one window is merged from whole files of the level below; sizes, counts and
//! retention periods must be positive.

use std::ops::Range;
use std::path::Path;
use std::time::Duration;

use serde::Deserialize;
use serde::de::{self, Deserializer, Visitor};

use crate::error::{Error, Result};
use crate::io::engine::IoChoice;
use crate::vault::VaultConfig;

/// The configuration file as written: each section and key optional.
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct ConfigFile {
    /// `[storage]`: the L0 log on disk.
    pub storage: StorageSection,
    /// `[ingest]`: the queue and group commit.
    pub ingest: IngestSection,
    /// `[levels]`: compaction windows.
    pub levels: LevelsSection,
    /// `[retention]`: how long each level keeps its restore points.
    pub retention: RetentionSection,
    /// `[drill]`: the restore drill schedule of `serve`.
    pub drill: DrillSection,
    /// `[quotas]`: how many bytes each cluster may store.
    pub quotas: QuotasSection,
    /// `[server]`: `ltxvault serve` only.
    pub server: ServerSection,
}

/// `[server]`.
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct ServerSection {
    /// Address to listen on.
    pub listen: Option<std::net::SocketAddr>,
    /// How requests are authenticated.
    pub auth: Option<AuthChoice>,
    /// Largest request body.
    pub max_body: Option<Bytes>,
    /// Uploads handled at once.
    pub max_uploads: Option<usize>,
    /// Open connections at once.
    pub max_connections: Option<usize>,
    /// Time to send a request's head.
    pub header_timeout: Option<Millis>,
    /// Longest pause within a request body.
    pub body_idle_timeout: Option<Millis>,
    /// Longest time for a whole request body.
    pub body_timeout: Option<Millis>,
    /// How long shutdown waits for requests in flight.
    pub shutdown_grace: Option<Millis>,
    /// Whether the first `Litefs-Cluster-Id` binds a cluster.
    pub cluster_id: Option<ClusterIdChoice>,
    /// Who may read `GET /metrics`.
    pub metrics: Option<MetricsAccess>,
    /// Failed authentications per source address and window before 429.
    pub auth_failure_limit: Option<u32>,
    /// The window of `auth_failure_limit`.
    pub auth_failure_window: Option<Millis>,
    /// Source addresses remembered at once.
    pub auth_failure_sources: Option<usize>,
}

/// Who may read `GET /metrics`.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum MetricsAccess {
    /// Anyone who can reach the listen address (what Prometheus scrapers expect).
    #[default]
    Open,
    /// Only requests with an admin token (`ltxvault token create --admin`), as
    /// `Authorization: Bearer TOKEN` or the bare token; needs `auth = "tokens"`.
    Admin,
}

impl MetricsAccess {
    /// The value as the file writes it.
    pub fn name(self) -> &'static str {
        match self {
            MetricsAccess::Open => "open",
            MetricsAccess::Admin => "admin",
        }
    }
}

/// Whether `serve` binds each cluster to the LiteFS cluster id it is first written with.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum ClusterIdChoice {
    /// Bind on the first write; refuse other ids (422) until `ltxvault cluster reset-id`.
    #[default]
    Bind,
    /// Ignore the header.
    Off,
}

/// How `serve` authenticates requests.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum AuthChoice {
    /// Per-cluster tokens from `ltxvault token create`.
    #[default]
    Tokens,
    /// None: the request names its cluster (`Authorization: cluster NAME`); trusted
    /// networks only.
    None,
}

/// Everything `serve` takes besides the vault's own settings.
#[derive(Clone, Debug)]
pub struct ServerSettings {
    /// Address to listen on.
    pub listen: std::net::SocketAddr,
    /// How requests are authenticated.
    pub auth: AuthChoice,
    /// Whether clusters bind to their LiteFS cluster id.
    pub cluster_id: ClusterIdChoice,
    /// Who may read `GET /metrics`.
    pub metrics: MetricsAccess,
    /// Limits and timeouts.
    pub limits: crate::server::Limits,
}

impl Default for ServerSettings {
    fn default() -> Self {
        ServerSettings {
            listen: std::net::SocketAddr::from(([127, 0, 0, 1], 2200)),
            auth: AuthChoice::Tokens,
            cluster_id: ClusterIdChoice::Bind,
            metrics: MetricsAccess::Open,
            limits: crate::server::Limits::default(),
        }
    }
}

/// `[storage]`.
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct StorageSection {
    /// I/O engine of the log writer.
    pub io: Option<IoChoice>,
    /// Size of one L0 log segment file.
    pub segment_size: Option<Bytes>,
    /// Free space below which the vault is not ready.
    pub min_free: Option<Bytes>,
}

/// `[ingest]`.
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct IngestSection {
    /// Uploads that may wait in the ingest queue.
    pub queue_capacity: Option<usize>,
    /// Most bytes one group commit writes.
    pub max_batch: Option<Bytes>,
    /// Largest upload accepted.
    pub max_upload: Option<Bytes>,
    /// How long an upload waits for room in a full queue.
    pub enqueue_timeout: Option<Millis>,
}

/// `[levels]`.
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct LevelsSection {
    /// Window of an L1 file.
    pub l1_window: Option<Millis>,
    /// Window of an L2 file; a multiple of the L1 window.
    pub l2_window: Option<Millis>,
    /// Window of an L3 image; a multiple of the L2 window.
    pub l3_window: Option<Millis>,
    /// How long past a window's end a quiet database's window stays open.
    pub grace: Option<Millis>,
}

/// `[retention]`.
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct RetentionSection {
    /// How long L0 keeps its restore points.
    pub l0: Option<Keep>,
    /// How long L1 keeps its restore points.
    pub l1: Option<Keep>,
    /// How long L2 keeps its restore points.
    pub l2: Option<Keep>,
    /// How long L3 keeps its images.
    pub l3: Option<Keep>,
    /// Time between two retention passes.
    pub every: Option<Millis>,
}

/// `[drill]`.
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct DrillSection {
    /// How often `serve` drills each database, or off.
    pub every: Option<Every>,
}

/// How often something runs, in milliseconds, or `None` (written `"off"`) for never.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Every(pub Option<i64>);
/// `[quotas]`.
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct QuotasSection {
    /// The quota of every cluster not named in `clusters`.
    pub default: Option<Limit>,
    /// `[quotas.clusters]`: quotas by cluster name. When the file has this table, it is the
    /// whole list (it replaces the base's, rather than adding to it).
    pub clusters: Option<std::collections::BTreeMap<String, Limit>>,
}

/// A quota in bytes, or `None` (written `"off"`) for no limit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limit(pub Option<u64>);

/// A duration in milliseconds, written `"500ms"`, `"5s"`, `"1m"`, `"24h"` or `"30d"`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Millis(pub i64);

/// A size in bytes, written as an integer or `"64MiB"`, `"1GiB"`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Bytes(pub u64);

/// A retention period in milliseconds, or `None` (written `"off"`) to keep forever.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Keep(pub Option<i64>);

/// Duration units, largest first (the order [`format_duration_ms`] tries them in).
const DURATION_UNITS: [(&str, i64); 5] = [("d", 86_400_000), ("h", 3_600_000), ("m", 60_000), ("s", 1_000), ("ms", 1)];

/// Size units, largest first. Binary only: "MB" would leave it open whether 10^6 or 2^20
/// was meant.
const SIZE_UNITS: [(&str, u64); 5] = [("TiB", 1 << 40), ("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10), ("B", 1)];

/// Splits `"64MiB"` into 64 and `"MiB"`; `None` without leading digits.
fn split_number(text: &str) -> Option<(u64, &str)> {
    let digits = text.bytes().take_while(u8::is_ascii_digit).count();
    let number = text[..digits].parse().ok()?;
    Some((number, &text[digits..]))
}

/// Parses a duration such as `"500ms"`, `"5s"`, `"1m"`, `"24h"`, `"30d"` into milliseconds.
pub fn parse_duration_ms(text: &str) -> std::result::Result<i64, String> {
    let bad = || {
        format!(
            "invalid duration \"{text}\": expected a whole number and a unit (ms, s, m, h or d), \
             like \"500ms\", \"5s\", \"24h\", \"30d\""
        )
    };
    let (number, unit) = split_number(text).ok_or_else(bad)?;
    let (_, unit_ms) = DURATION_UNITS.iter().find(|(name, _)| *name == unit).ok_or_else(bad)?;
    i64::try_from(number)
        .ok()
        .and_then(|n| n.checked_mul(*unit_ms))
        .ok_or_else(|| format!("duration \"{text}\" is too long"))
}

/// Parses a size such as `"64MiB"`, `"1GiB"` or `"4096"` into bytes.
pub fn parse_size_bytes(text: &str) -> std::result::Result<u64, String> {
    let bad = || {
        format!(
            "invalid size \"{text}\": expected a whole number of bytes, or one with a unit \
             (B, KiB, MiB, GiB or TiB), like \"64MiB\""
        )
    };
    let (number, unit) = split_number(text).ok_or_else(bad)?;
    let unit_bytes = match unit {
        "" => 1,
        _ => SIZE_UNITS.iter().find(|(name, _)| *name == unit).ok_or_else(bad)?.1,
    };
    number.checked_mul(unit_bytes).ok_or_else(|| format!("size \"{text}\" is too large"))
}

/// Writes milliseconds in the largest unit that divides them exactly: 86400000 -> "1d".
pub fn format_duration_ms(ms: i64) -> String {
    match DURATION_UNITS.iter().find(|(_, unit_ms)| ms != 0 && ms % unit_ms == 0) {
        Some((name, unit_ms)) => format!("{}{name}", ms / unit_ms),
        None => format!("{ms}ms"),
    }
}

/// Writes bytes in the largest binary unit that divides them exactly: 67108864 -> "64MiB".
pub fn format_size_bytes(bytes: u64) -> String {
    match SIZE_UNITS.iter().find(|(_, unit)| *unit > 1 && bytes != 0 && bytes.is_multiple_of(*unit)) {
        Some((name, unit)) => format!("{}{name}", bytes / unit),
        None => bytes.to_string(),
    }
}

/// Writes a retention period: a duration, or "off" for `None`.
pub fn format_retention(ms: Option<i64>) -> String {
    ms.map_or_else(|| "off".to_string(), format_duration_ms)
}

impl<'de> Deserialize<'de> for Millis {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> std::result::Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Millis;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a duration such as \"500ms\", \"5s\", \"1m\", \"24h\" or \"30d\"")
            }
            fn visit_str<E: de::Error>(self, text: &str) -> std::result::Result<Millis, E> {
                parse_duration_ms(text).map(Millis).map_err(E::custom)
            }
            fn visit_i64<E: de::Error>(self, n: i64) -> std::result::Result<Millis, E> {
                Err(E::custom(format!("duration {n} has no unit: write \"{n}ms\", \"{n}s\", ...")))
            }
        }
        deserializer.deserialize_any(V)
    }
}

impl<'de> Deserialize<'de> for Bytes {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> std::result::Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Bytes;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a size such as 4096, \"64MiB\" or \"1GiB\"")
            }
            fn visit_str<E: de::Error>(self, text: &str) -> std::result::Result<Bytes, E> {
                parse_size_bytes(text).map(Bytes).map_err(E::custom)
            }
            fn visit_i64<E: de::Error>(self, n: i64) -> std::result::Result<Bytes, E> {
                u64::try_from(n).map(Bytes).map_err(|_| E::custom(format!("size {n} is negative")))
            }
        }
        deserializer.deserialize_any(V)
    }
}

impl<'de> Deserialize<'de> for Keep {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> std::result::Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Keep;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a duration such as \"24h\" or \"30d\", or \"off\"")
            }
            fn visit_str<E: de::Error>(self, text: &str) -> std::result::Result<Keep, E> {
                if text == "off" {
                    return Ok(Keep(None));
                }
                parse_duration_ms(text).map(|ms| Keep(Some(ms))).map_err(|e| E::custom(format!("{e}, or \"off\"")))
            }
            fn visit_i64<E: de::Error>(self, n: i64) -> std::result::Result<Keep, E> {
                Err(E::custom(format!("retention {n} has no unit: write \"{n}h\", \"{n}d\", ... or \"off\"")))
            }
        }
        deserializer.deserialize_any(V)
    }
}

impl<'de> Deserialize<'de> for Every {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> std::result::Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Every;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a duration such as \"12h\" or \"1d\", or \"off\"")
            }
            fn visit_str<E: de::Error>(self, text: &str) -> std::result::Result<Every, E> {
                if text == "off" {
                    return Ok(Every(None));
                }
                parse_duration_ms(text).map(|ms| Every(Some(ms))).map_err(|e| E::custom(format!("{e}, or \"off\"")))
            }
            fn visit_i64<E: de::Error>(self, n: i64) -> std::result::Result<Every, E> {
                Err(E::custom(format!("interval {n} has no unit: write \"{n}h\", \"{n}d\", ... or \"off\"")))
            }
        }
        deserializer.deserialize_any(V)
    }
}

impl<'de> Deserialize<'de> for Limit {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> std::result::Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Limit;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a size such as \"10GiB\", or \"off\"")
            }
            fn visit_str<E: de::Error>(self, text: &str) -> std::result::Result<Limit, E> {
                if text == "off" {
                    return Ok(Limit(None));
                }
                parse_size_bytes(text).map(|n| Limit(Some(n))).map_err(|e| E::custom(format!("{e}, or \"off\"")))
            }
            fn visit_i64<E: de::Error>(self, n: i64) -> std::result::Result<Limit, E> {
                u64::try_from(n).map(|n| Limit(Some(n))).map_err(|_| E::custom(format!("quota {n} is negative")))
            }
        }
        deserializer.deserialize_any(V)
    }
}

impl ConfigFile {
    /// Parses the text of a configuration file. Errors say the line and column, and quote
    /// the line.
    pub fn parse(text: &str) -> Result<ConfigFile> {
        toml::from_str(text).map_err(|e| Error::Invalid(locate(text, e.span(), e.message())))
    }

    /// Reads and parses a configuration file; errors carry its path.
    pub fn load(path: &Path) -> Result<ConfigFile> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(format!("read {}", path.display()), e))?;
        ConfigFile::parse(&text).map_err(|e| e.in_file(path))
    }

    /// `base` with every key this file sets replaced, then checked with [`validate`].
    pub fn apply(&self, base: VaultConfig) -> Result<VaultConfig> {
        let mut config = base;
        let ConfigFile { storage, ingest, levels, retention, drill, quotas, server: _ } = self;
        if let Some(io) = storage.io {
            config.io = io;
        }
        if let Some(Bytes(n)) = storage.segment_size {
            config.segment_bytes = n;
        }
        if let Some(Bytes(n)) = storage.min_free {
            config.min_free_bytes = n;
        }
        if let Some(n) = ingest.queue_capacity {
            config.queue_capacity = n;
        }
        if let Some(Bytes(n)) = ingest.max_batch {
            config.max_batch_bytes = n;
        }
        if let Some(Bytes(n)) = ingest.max_upload {
            config.max_upload_bytes = n;
        }
        if let Some(Millis(ms)) = ingest.enqueue_timeout {
            config.enqueue_timeout = duration(ms);
        }
        let windows = [levels.l1_window, levels.l2_window, levels.l3_window];
        set_each(&mut config.level_intervals_ms, windows.map(|w| w.map(|Millis(ms)| ms)), |i| {
            format!("levels.l{}_window", i + 1)
        })?;
        if let Some(Millis(ms)) = levels.grace {
            config.compaction_grace_ms = ms;
        }
        let keeps = [retention.l0, retention.l1, retention.l2, retention.l3];
        set_each(&mut config.retention_ms, keeps.map(|k| k.map(|Keep(ms)| ms)), |i| format!("retention.l{i}"))?;
        if let Some(Millis(ms)) = retention.every {
            config.retention_every = duration(ms);
        }
        if let Some(Every(every)) = drill.every {
            if every.is_some_and(|ms| ms <= 0) {
                return Err(Error::Invalid("drill.every must be positive, or \"off\"".into()));
            }
            config.drill_every = every.map(duration);
        }
        if let Some(Limit(bytes)) = quotas.default {
            config.quotas.default = bytes;
        }
        if let Some(clusters) = &quotas.clusters {
            config.quotas.clusters = clusters.iter().map(|(name, Limit(bytes))| (name.clone(), *bytes)).collect();
        }
        validate(&config)?;
        Ok(config)
    }
}

impl ConfigFile {
    /// `base` with every `[server]` key this file sets replaced, then checked.
    pub fn apply_server(&self, base: ServerSettings) -> Result<ServerSettings> {
        let mut settings = base;
        let ServerSection {
            listen,
            auth,
            max_body,
            max_uploads,
            max_connections,
            header_timeout,
            body_idle_timeout,
            body_timeout,
            shutdown_grace,
            cluster_id,
            metrics,
            auth_failure_limit,
            auth_failure_window,
            auth_failure_sources,
        } = &self.server;
        if let Some(choice) = cluster_id {
            settings.cluster_id = *choice;
        }
        if let Some(access) = metrics {
            settings.metrics = *access;
        }
        let limits = &mut settings.limits;
        if let Some(listen) = listen {
            settings.listen = *listen;
        }
        if let Some(auth) = auth {
            settings.auth = *auth;
        }
        if let Some(Bytes(n)) = max_body {
            limits.max_body_bytes = *n;
        }
        if let Some(n) = max_uploads {
            limits.max_concurrent_uploads = *n;
        }
        if let Some(n) = max_connections {
            limits.max_connections = *n;
        }
        if let Some(n) = auth_failure_limit {
            limits.auth_failure_limit = *n;
        }
        if let Some(n) = auth_failure_sources {
            limits.auth_failure_sources = *n;
        }
        for (slot, value) in [
            (&mut limits.header_timeout, header_timeout),
            (&mut limits.body_idle_timeout, body_idle_timeout),
            (&mut limits.body_timeout, body_timeout),
            (&mut limits.shutdown_grace, shutdown_grace),
            (&mut limits.auth_failure_window, auth_failure_window),
        ] {
            if let Some(Millis(ms)) = value {
                *slot = duration(*ms);
            }
        }
        for (key, value) in [
            ("server.max_body", limits.max_body_bytes),
            ("server.max_uploads", limits.max_concurrent_uploads as u64),
            ("server.max_connections", limits.max_connections as u64),
            ("server.header_timeout", whole_ms(limits.header_timeout) as u64),
            ("server.body_idle_timeout", whole_ms(limits.body_idle_timeout) as u64),
            ("server.body_timeout", whole_ms(limits.body_timeout) as u64),
            ("server.auth_failure_limit", u64::from(limits.auth_failure_limit)),
            ("server.auth_failure_window", whole_ms(limits.auth_failure_window) as u64),
            ("server.auth_failure_sources", limits.auth_failure_sources as u64),
        ] {
            if value == 0 {
                return Err(Error::Invalid(format!("{key} must be positive")));
            }
        }
        Ok(settings)
    }
}

/// `base`, overridden by the `[server]` section of the file at `path` when there is one.
pub fn load_server(path: Option<&Path>, base: ServerSettings) -> Result<ServerSettings> {
    match path {
        Some(path) => ConfigFile::load(path)?.apply_server(base).map_err(|e| match e {
            Error::InFile { .. } => e,
            e => e.in_file(path),
        }),
        None => Ok(base),
    }
}

/// `base`, overridden by the file at `path` when there is one; errors name the file.
pub fn load(path: Option<&Path>, base: VaultConfig) -> Result<VaultConfig> {
    match path {
        Some(path) => ConfigFile::load(path)?.apply(base).map_err(|e| match e {
            Error::InFile { .. } => e,
            e => e.in_file(path),
        }),
        None => {
            validate(&base)?;
            Ok(base)
        }
    }
}

/// Sets `slots[i]` to each given value; a value for a slot the configuration does not have
/// (the file names a level this build lacks) is an error naming the key, `key(i)`.
fn set_each<T: Copy, const N: usize>(
    slots: &mut [T],
    values: [Option<T>; N],
    key: impl Fn(usize) -> String,
) -> Result<()> {
    for (i, value) in values.into_iter().enumerate() {
        let Some(value) = value else { continue };
        let slot =
            slots.get_mut(i).ok_or_else(|| Error::Invalid(format!("{}: this build has no such level", key(i))))?;
        *slot = value;
    }
    Ok(())
}

/// Milliseconds the parser produced as a `Duration` (never negative: it reads no sign).
fn duration(ms: i64) -> Duration {
    Duration::from_millis(ms.unsigned_abs())
}

/// A `Duration` in whole milliseconds, as the file writes it.
fn whole_ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// Checks a whole configuration: positive sizes and counts, positive windows that nest,
/// positive retention periods. Errors name the key as the file writes it.
pub fn validate(config: &VaultConfig) -> Result<()> {
    let invalid = |message: String| Err(Error::Invalid(message));
    for (key, value) in [
        ("storage.segment_size", config.segment_bytes),
        ("ingest.max_batch", config.max_batch_bytes),
        ("ingest.max_upload", config.max_upload_bytes),
        ("ingest.queue_capacity", config.queue_capacity as u64),
    ] {
        if value == 0 {
            return invalid(format!("{key} must be positive"));
        }
    }
    let mut below: Option<(usize, i64)> = None;
    for (i, &window_ms) in config.level_intervals_ms.iter().enumerate() {
        let level = i + 1;
        if window_ms <= 0 {
            return invalid(format!("levels.l{level}_window must be positive"));
        }
        if let Some((below_level, below_ms)) = below
            && window_ms % below_ms != 0
        {
            return invalid(format!(
                "levels.l{level}_window ({}) is not a multiple of levels.l{below_level}_window ({}): \
                 each level's windows must nest in the next level's, so that a window is merged \
                 from whole windows of the level below",
                format_duration_ms(window_ms),
                format_duration_ms(below_ms)
            ));
        }
        below = Some((level, window_ms));
    }
    if config.compaction_grace_ms < 0 {
        return invalid("levels.grace must not be negative".to_string());
    }
    for (level, keep) in config.retention_ms.iter().enumerate() {
        if keep.is_some_and(|ms| ms <= 0) {
            return invalid(format!("retention.l{level} must be positive, or \"off\" to keep the level forever"));
        }
    }
    if config.retention_every.is_zero() {
        return invalid("retention.every must be positive".to_string());
    }
    if config.drill_every.is_some_and(|every| every.is_zero()) {
        return invalid("drill.every must be positive, or \"off\"".to_string());
    }
    if config.quotas.default == Some(0) {
        return invalid("quotas.default must be positive, or \"off\" for no limit".to_string());
    }
    for (cluster, quota) in &config.quotas.clusters {
        crate::names::validate("cluster", cluster).map_err(|e| Error::Invalid(format!("quotas.clusters: {e}")))?;
        if *quota == Some(0) {
            return invalid(format!("quotas.clusters.{cluster} must be positive, or \"off\" for no limit"));
        }
    }
    Ok(())
}

/// `message` with the line and column where `span` starts, and that line quoted.
fn locate(text: &str, span: Option<Range<usize>>, message: &str) -> String {
    let message = message.trim_end();
    let Some(start) = span.map(|s| s.start.min(text.len())) else { return message.to_string() };
    let line_start = text[..start].rfind('\n').map_or(0, |i| i + 1);
    let line_end = text[start..].find('\n').map_or(text.len(), |i| start + i);
    let line_no = text[..start].matches('\n').count() + 1;
    let column = text[line_start..start].chars().count() + 1;
    let line = text[line_start..line_end].trim();
    if line.is_empty() {
        format!("line {line_no}, column {column}: {message}")
    } else {
        format!("line {line_no}, column {column}: {message} (in `{line}`)")
    }
}

/// Writes a quota: a size, or "off" for `None`.
pub fn format_quota(bytes: Option<u64>) -> String {
    bytes.map_or_else(|| "off".to_string(), format_size_bytes)
}

/// A cluster name as a TOML key: bare when TOML allows it, quoted otherwise.
fn toml_key(name: &str) -> String {
    if name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_') {
        name.to_string()
    } else {
        // Names are printable ASCII without `\\`: a quote is the one character to escape.
        format!("\"{}\"", name.replace('"', "\\\""))
    }
}

/// The name of an I/O engine as the file writes it.
fn io_name(io: IoChoice) -> &'static str {
    match io {
        IoChoice::Auto => "auto",
        IoChoice::Uring => "uring",
        IoChoice::Std => "std",
    }
}

/// A complete configuration file with every key at its value in `config` and `server`,
/// each explained. `example(&VaultConfig::default(), &ServerSettings::default())` is what
/// `ltxvault config example` prints.
pub fn example(config: &VaultConfig, server: &ServerSettings) -> String {
    let mut out = String::new();
    let mut line = |text: String| {
        out.push_str(&text);
        out.push('\n');
    };
    line("# ltxvault configuration (see docs/CONFIG.md). Every key is optional; a missing key".into());
    line("# keeps its default, and the values below are the defaults. Unknown keys are errors.".into());
    line("# Durations: a whole number and a unit: ms, s, m, h or d (\"500ms\", \"24h\", \"30d\").".into());
    line("# Sizes: bytes, or a whole number and a unit: KiB, MiB, GiB or TiB (\"64MiB\").".into());
    line(String::new());
    line("[storage]".into());
    line("# I/O engine of the log writer: \"auto\" (io_uring where it works, else std), \"uring\", \"std\".".into());
    line(format!("io = \"{}\"", io_name(config.io)));
    line("# Size of one L0 log segment file (an upload larger than this gets a segment of its own).".into());
    line(format!("segment_size = \"{}\"", format_size_bytes(config.segment_bytes)));
    line("# Free space the vault's file system must keep for `GET /readyz` to answer 200 (an".into());
    line("# alarm before the disk fills; writes are not refused below it).".into());
    line(format!("min_free = \"{}\"", format_size_bytes(config.min_free_bytes)));
    line(String::new());
    line("[ingest]".into());
    line("# Uploads that may wait in the ingest queue.".into());
    line(format!("queue_capacity = {}", config.queue_capacity));
    line("# Most bytes one group commit (one write and one fdatasync) takes from the queue.".into());
    line(format!("max_batch = \"{}\"", format_size_bytes(config.max_batch_bytes)));
    line("# Largest upload accepted; a larger one is refused.".into());
    line(format!("max_upload = \"{}\"", format_size_bytes(config.max_upload_bytes)));
    line("# How long an upload waits for room in a full queue before the vault answers busy.".into());
    line(format!("enqueue_timeout = \"{}\"", format_duration_ms(whole_ms(config.enqueue_timeout))));
    line(String::new());
    line("[levels]".into());
    line("# Compaction windows: one level file (L1, L2) or database image (L3) per window and".into());
    line("# database. Each window must be a multiple of the one below, so that windows nest.".into());
    for (i, &ms) in config.level_intervals_ms.iter().enumerate() {
        line(format!("l{}_window = \"{}\"", i + 1, format_duration_ms(ms)));
    }
    line("# How long past a window's end a quiet database's window stays open.".into());
    line(format!("grace = \"{}\"", format_duration_ms(config.compaction_grace_ms)));
    line(String::new());
    line("[retention]".into());
    line("# How long each level keeps its restore points; \"off\" keeps them forever.".into());
    for (level, &keep) in config.retention_ms.iter().enumerate() {
        line(format!("l{level} = \"{}\"", format_retention(keep)));
    }
    line("# Time between two retention passes.".into());
    line(format!("every = \"{}\"", format_duration_ms(whole_ms(config.retention_every))));
    line(String::new());
    line("[drill]".into());
    line("# `ltxvault serve` only. How often each database gets a restore drill (its latest point and".into());
    line("# a random point of each level restored, checked against the recorded checksum and with".into());
    line("# SQLite's integrity_check; one drill at a time), give or take a tenth; \"off\" for never.".into());
    line(format!(
        "every = \"{}\"",
        config.drill_every.map_or_else(|| "off".to_string(), |d| format_duration_ms(whole_ms(d)))
    ));
    line(String::new());
    line("[quotas]".into());
    line("# Bytes a cluster may store: its databases' L0 log records, level files and images.".into());
    line("# An upload that would take a cluster past its quota is refused (HTTP 507 EQUOTA);".into());
    line("# nothing else is affected. \"off\": no limit.".into());
    line(format!("default = \"{}\"", format_quota(config.quotas.default)));
    line(String::new());
    line("[quotas.clusters]".into());
    line("# Quotas of single clusters, by name, instead of the default (a size or \"off\"), like".into());
    line("#   prod = \"50GiB\"".into());
    for (cluster, &quota) in &config.quotas.clusters {
        line(format!("{} = \"{}\"", toml_key(cluster), format_quota(quota)));
    }
    line(String::new());
    let limits = &server.limits;
    let ms = |d: Duration| format_duration_ms(whole_ms(d));
    line("[server]".into());
    line("# `ltxvault serve` only. Address to listen on.".into());
    line(format!("listen = \"{}\"", server.listen));
    line("# \"tokens\" (from `ltxvault token create`) or \"none\" (the request names its cluster with".into());
    line("# `Authorization: cluster NAME`; trusted networks only).".into());
    line(format!(
        "auth = \"{}\"",
        match server.auth {
            AuthChoice::Tokens => "tokens",
            AuthChoice::None => "none",
        }
    ));
    line("# \"bind\": a cluster is bound to the LiteFS cluster id (Litefs-Cluster-Id) of its first".into());
    line("# write and other ids are refused until `ltxvault cluster reset-id`; \"off\" ignores it.".into());
    line(format!(
        "cluster_id = \"{}\"",
        match server.cluster_id {
            ClusterIdChoice::Bind => "bind",
            ClusterIdChoice::Off => "off",
        }
    ));
    line("# Who may read GET /metrics: \"open\" (anyone who reaches the listen address) or \"admin\"".into());
    line("# (an admin token, as `Authorization: Bearer TOKEN`; needs auth \"tokens\").".into());
    line(format!("metrics = \"{}\"", server.metrics.name()));
    line("# Largest request body; a larger upload is refused (413).".into());
    line(format!("max_body = \"{}\"", format_size_bytes(limits.max_body_bytes)));
    line("# Uploads handled at once; more wait for a slot.".into());
    line(format!("max_uploads = {}", limits.max_concurrent_uploads));
    line("# Open connections at once; more are refused.".into());
    line(format!("max_connections = {}", limits.max_connections));
    line("# Time a client has to send a request's head.".into());
    line(format!("header_timeout = \"{}\"", ms(limits.header_timeout)));
    line("# Longest pause within a request body, and longest time for a whole body (408).".into());
    line(format!("body_idle_timeout = \"{}\"", ms(limits.body_idle_timeout)));
    line(format!("body_timeout = \"{}\"", ms(limits.body_timeout)));
    line("# How long shutdown (SIGTERM, SIGINT) waits for requests in flight.".into());
    line(format!("shutdown_grace = \"{}\"", ms(limits.shutdown_grace)));
    line("# Failed authentications one source address (IPv4, or IPv6 /64) may make within the".into());
    line("# window before its requests are refused (429, Retry-After) until the window ends.".into());
    line(format!("auth_failure_limit = {}", limits.auth_failure_limit));
    line(format!("auth_failure_window = \"{}\"", ms(limits.auth_failure_window)));
    line("# Source addresses remembered at once (bounds the table's memory).".into());
    line(format!("auth_failure_sources = {}", limits.auth_failure_sources));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A configuration that differs from the default in every field the file can set, so
    /// that applying a file onto it shows which fields the file really sets.
    fn unlike_default() -> VaultConfig {
        VaultConfig {
            io: IoChoice::Std,
            segment_bytes: 3,
            queue_capacity: 3,
            max_batch_bytes: 3,
            max_upload_bytes: 3,
            enqueue_timeout: Duration::from_millis(3),
            level_intervals_ms: vec![3, 9, 27],
            retention_ms: vec![Some(3), None, Some(3), None],
            retention_every: Duration::from_millis(3),
            compaction_grace_ms: 3,
            background_compaction: false,
            faults: None,
            min_free_bytes: 3,
            drill_every: None,
            quotas: crate::quota::Quotas {
                default: Some(3),
                clusters: [("c".to_string(), Some(3))].into_iter().collect(),
            },
        }
    }

    #[test]
    fn the_example_sets_every_key_to_its_default() {
        let defaults = VaultConfig::default();
        let text = example(&defaults, &ServerSettings::default());
        let parsed = ConfigFile::parse(&text).unwrap().apply(unlike_default()).unwrap();
        // Destructured without `..`: a field added to VaultConfig fails to compile here
        // until this test (and the file format) say what becomes of it.
        let VaultConfig {
            io,
            segment_bytes,
            queue_capacity,
            max_batch_bytes,
            max_upload_bytes,
            enqueue_timeout,
            level_intervals_ms,
            retention_ms,
            retention_every,
            compaction_grace_ms,
            background_compaction: _, // Not a file setting: each command decides it.
            faults: _,                // Not a file setting: tests inject faults.
            min_free_bytes,
            drill_every,
            quotas,
        } = parsed;
        assert_eq!(io, defaults.io);
        assert_eq!(segment_bytes, defaults.segment_bytes);
        assert_eq!(queue_capacity, defaults.queue_capacity);
        assert_eq!(max_batch_bytes, defaults.max_batch_bytes);
        assert_eq!(max_upload_bytes, defaults.max_upload_bytes);
        assert_eq!(enqueue_timeout, defaults.enqueue_timeout);
        assert_eq!(level_intervals_ms, defaults.level_intervals_ms);
        assert_eq!(retention_ms, defaults.retention_ms);
        assert_eq!(retention_every, defaults.retention_every);
        assert_eq!(compaction_grace_ms, defaults.compaction_grace_ms);
        assert_eq!(min_free_bytes, defaults.min_free_bytes);
        assert_eq!(drill_every, defaults.drill_every);
        assert_eq!(quotas, defaults.quotas);
    }

    #[test]
    fn the_example_reads_like_the_documented_shape() {
        let text = example(&VaultConfig::default(), &ServerSettings::default());
        for line in [
            "io = \"auto\"",
            "segment_size = \"64MiB\"",
            "min_free = \"1GiB\"",
            "queue_capacity = 1024",
            "max_batch = \"16MiB\"",
            "max_upload = \"1GiB\"",
            "enqueue_timeout = \"10s\"",
            "l1_window = \"1m\"",
            "l2_window = \"1h\"",
            "l3_window = \"1d\"",
            "grace = \"5s\"",
            "l0 = \"1d\"",
            "l1 = \"30d\"",
            "every = \"1m\"",
            "every = \"1d\"",
        ] {
            assert!(text.lines().any(|l| l == line), "{line:?} missing from:\n{text}");
        }
    }

    #[test]
    fn the_documentation_lists_every_key_with_its_default() {
        let docs = include_str!("../docs/CONFIG.md");
        let mut section = "";
        for line in example(&VaultConfig::default(), &ServerSettings::default()).lines() {
            if line.starts_with('#') {
                continue;
            }
            if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
                section = name;
            } else if let Some((key, value)) = line.split_once(" = ") {
                let row = format!("| `{section}.{key}` | `{value}` |");
                assert!(docs.lines().any(|l| l.starts_with(&row)), "docs/CONFIG.md has no row {row}");
            }
        }
    }

    #[test]
    fn the_example_sets_every_server_key_to_its_default() {
        let defaults = ServerSettings::default();
        let text = example(&VaultConfig::default(), &defaults);
        let unlike = ServerSettings {
            listen: "10.0.0.1:1".parse().unwrap(),
            auth: AuthChoice::None,
            cluster_id: ClusterIdChoice::Off,
            metrics: MetricsAccess::Admin,
            limits: crate::server::Limits {
                max_body_bytes: 3,
                max_concurrent_uploads: 3,
                max_connections: 3,
                header_timeout: Duration::from_millis(3),
                body_idle_timeout: Duration::from_millis(3),
                body_timeout: Duration::from_millis(3),
                shutdown_grace: Duration::from_millis(3),
                auth_failure_limit: 3,
                auth_failure_window: Duration::from_millis(3),
                auth_failure_sources: 3,
            },
        };
        let parsed = ConfigFile::parse(&text).unwrap().apply_server(unlike).unwrap();
        assert_eq!(parsed.listen, defaults.listen);
        assert_eq!(parsed.auth, defaults.auth);
        assert_eq!(parsed.cluster_id, defaults.cluster_id);
        assert_eq!(parsed.metrics, defaults.metrics);
        let crate::server::Limits {
            max_body_bytes,
            max_concurrent_uploads,
            max_connections,
            header_timeout,
            body_idle_timeout,
            body_timeout,
            shutdown_grace,
            auth_failure_limit,
            auth_failure_window,
            auth_failure_sources,
        } = parsed.limits;
        let d = &defaults.limits;
        assert_eq!(
            (max_body_bytes, max_concurrent_uploads, max_connections),
            (d.max_body_bytes, d.max_concurrent_uploads, d.max_connections)
        );
        assert_eq!(
            (header_timeout, body_idle_timeout, body_timeout, shutdown_grace),
            (d.header_timeout, d.body_idle_timeout, d.body_timeout, d.shutdown_grace)
        );
        assert_eq!(
            (auth_failure_limit, auth_failure_window, auth_failure_sources),
            (d.auth_failure_limit, d.auth_failure_window, d.auth_failure_sources)
        );
        let bad = ConfigFile::parse("[server]\nmax_uploads = 0\n").unwrap().apply_server(ServerSettings::default());
        assert!(bad.unwrap_err().to_string().contains("server.max_uploads"));
        assert!(ConfigFile::parse("[server]\nauth = \"maybe\"\n").is_err());
    }

    #[test]
    fn an_empty_file_keeps_the_base() {
        let config = ConfigFile::parse("").unwrap().apply(VaultConfig::default()).unwrap();
        assert_eq!(config.level_intervals_ms, VaultConfig::default().level_intervals_ms);
        assert_eq!(config.retention_ms, VaultConfig::default().retention_ms);
    }

    #[test]
    fn unknown_keys_are_rejected_by_name_at_every_level() {
        for (text, key) in [
            ("[storage]\nsegment_sise = \"1MiB\"\n", "segment_sise"),
            ("[ingest]\nmax_batch = 1\nqueue = 3\n", "queue"),
            ("[levels]\nl4_window = \"1d\"\n", "l4_window"),
            ("[retention]\nl5 = \"off\"\n", "l5"),
            ("[server]\nlisten_addr = \":20202\"\n", "listen_addr"),
            ("[metrics]\nlisten = \":9090\"\n", "metrics"),
            ("verbose = true\n", "verbose"),
        ] {
            let err = ConfigFile::parse(text).unwrap_err().to_string();
            assert!(err.contains(&format!("unknown field `{key}`")), "{text:?}: {err}");
            assert!(err.contains("line "), "{text:?}: {err}");
        }
    }

    #[test]
    fn errors_from_a_file_name_the_file_and_the_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("vault.toml");
        std::fs::write(&path, "[levels]\ngrace = \"5s\"\nl1_window = \"soon\"\n").unwrap();
        let err = load(Some(&path), VaultConfig::default()).unwrap_err().to_string();
        assert!(err.starts_with(&path.display().to_string()), "{err}");
        assert!(err.contains("line 3"), "{err}");
        assert!(err.contains("l1_window = \"soon\""), "{err}");
        // Validation errors, which have no line, still name the file.
        std::fs::write(&path, "[levels]\nl1_window = \"7m\"\n").unwrap();
        let err = load(Some(&path), VaultConfig::default()).unwrap_err().to_string();
        assert!(err.starts_with(&path.display().to_string()), "{err}");
    }

    #[test]
    fn durations_parse_in_each_unit() {
        assert_eq!(parse_duration_ms("500ms"), Ok(500));
        assert_eq!(parse_duration_ms("5s"), Ok(5_000));
        assert_eq!(parse_duration_ms("1m"), Ok(60_000));
        assert_eq!(parse_duration_ms("24h"), Ok(86_400_000));
        assert_eq!(parse_duration_ms("30d"), Ok(30 * 86_400_000));
        assert_eq!(parse_duration_ms("0s"), Ok(0));
    }

    #[test]
    fn bad_durations_are_rejected() {
        for text in ["", "5", "s", "5 s", "5sec", "-5s", "1.5h", "5S", "1h30m", "99999999999999999999d"] {
            assert!(parse_duration_ms(text).is_err(), "{text:?} accepted");
        }
        let err = ConfigFile::parse("[ingest]\nenqueue_timeout = \"10 seconds\"\n").unwrap_err().to_string();
        assert!(err.contains("invalid duration \"10 seconds\""), "{err}");
        assert!(err.contains("line 2"), "{err}");
        let err = ConfigFile::parse("[levels]\ngrace = 5\n").unwrap_err().to_string();
        assert!(err.contains("no unit"), "{err}");
    }

    #[test]
    fn sizes_parse_with_and_without_units() {
        assert_eq!(parse_size_bytes("64MiB"), Ok(64 << 20));
        assert_eq!(parse_size_bytes("1GiB"), Ok(1 << 30));
        assert_eq!(parse_size_bytes("4096"), Ok(4096));
        assert_eq!(parse_size_bytes("7B"), Ok(7));
        for text in ["", "MiB", "64MB", "64 MiB", "1.5GiB", "-1", "99999999TiB"] {
            assert!(parse_size_bytes(text).is_err(), "{text:?} accepted");
        }
        let file = ConfigFile::parse("[storage]\nsegment_size = 1048576\n").unwrap();
        assert_eq!(file.storage.segment_size, Some(Bytes(1 << 20)));
        assert!(ConfigFile::parse("[storage]\nsegment_size = -1\n").is_err());
    }

    #[test]
    fn formatting_round_trips_through_parsing() {
        for ms in [1, 999, 1_000, 1_500, 60_000, 90_000, 3_600_000, 86_400_000, 30 * 86_400_000, 86_400_001] {
            assert_eq!(parse_duration_ms(&format_duration_ms(ms)), Ok(ms), "{ms}");
        }
        for bytes in [1, 1023, 1024, 1536, 64 << 20, 1 << 30, 3 << 40, (1 << 30) + 1] {
            assert_eq!(parse_size_bytes(&format_size_bytes(bytes)), Ok(bytes), "{bytes}");
        }
        assert_eq!(format_duration_ms(90_000), "90s");
        assert_eq!(format_duration_ms(86_400_000), "1d");
        assert_eq!(format_size_bytes(64 << 20), "64MiB");
        assert_eq!(format_size_bytes(1536), "1536");
    }

    #[test]
    fn retention_off_keeps_a_level_for_ever() {
        let file = ConfigFile::parse("[retention]\nl0 = \"off\"\nl2 = \"7d\"\n").unwrap();
        let config = file.apply(VaultConfig::default()).unwrap();
        let defaults = VaultConfig::default().retention_ms;
        assert_eq!(config.retention_ms, vec![None, defaults[1], Some(7 * 86_400_000), defaults[3]]);
        assert!(ConfigFile::parse("[retention]\nl0 = \"of\"\n").is_err());
        assert!(ConfigFile::parse("[retention]\nevery = \"off\"\n").is_err(), "every is a duration, not a retention");
    }

    #[test]
    fn the_drill_schedule_is_a_duration_or_off() {
        let apply = |text: &str| ConfigFile::parse(text).and_then(|f| f.apply(VaultConfig::default()));
        assert_eq!(apply("[drill]\nevery = \"6h\"\n").unwrap().drill_every, Some(Duration::from_secs(6 * 3600)));
        assert_eq!(apply("[drill]\nevery = \"off\"\n").unwrap().drill_every, None);
        assert_eq!(apply("").unwrap().drill_every, Some(Duration::from_secs(86_400)));
        let err = apply("[drill]\nevery = \"0s\"\n").unwrap_err().to_string();
        assert!(err.contains("drill.every must be positive"), "{err}");
        let err = apply("[drill]\nevery = \"daily\"\n").unwrap_err().to_string();
        assert!(err.contains("or \"off\"") && err.contains("line 2"), "{err}");
        let err = apply("[drill]\nevery = 3\n").unwrap_err().to_string();
        assert!(err.contains("no unit"), "{err}");
        let err = apply("[drill]\nevry = \"1d\"\n").unwrap_err().to_string();
        assert!(err.contains("unknown field `evry`"), "{err}");
    }

    #[test]
    fn windows_that_do_not_nest_are_rejected() {
        let apply = |text: &str| ConfigFile::parse(text).unwrap().apply(VaultConfig::default());
        // 1h is not a multiple of 7m: the L2 default no longer nests.
        let err = apply("[levels]\nl1_window = \"7m\"\n").unwrap_err().to_string();
        assert!(err.contains("levels.l2_window (1h) is not a multiple of levels.l1_window (7m)"), "{err}");
        let err = apply("[levels]\nl2_window = \"7h\"\n").unwrap_err().to_string();
        assert!(err.contains("levels.l3_window (1d) is not a multiple of levels.l2_window (7h)"), "{err}");
        let err = apply("[levels]\nl1_window = \"0s\"\n").unwrap_err().to_string();
        assert!(err.contains("levels.l1_window must be positive"), "{err}");
        // Nesting windows other than the defaults are fine.
        let config = apply("[levels]\nl1_window = \"10s\"\nl2_window = \"10m\"\nl3_window = \"12h\"\n").unwrap();
        assert_eq!(config.level_intervals_ms, vec![10_000, 600_000, 43_200_000]);
    }

    #[test]
    fn quotas_take_sizes_or_off_per_cluster() {
        let text =
            "[quotas]\ndefault = \"10GiB\"\n[quotas.clusters]\nprod = \"5GiB\"\nfree = \"off\"\n\"odd.name\" = 4096\n";
        let config = ConfigFile::parse(text).unwrap().apply(VaultConfig::default()).unwrap();
        assert_eq!(config.quotas.limit("other"), Some(10 << 30));
        assert_eq!(config.quotas.limit("prod"), Some(5 << 30));
        assert_eq!(config.quotas.limit("free"), None);
        assert_eq!(config.quotas.limit("odd.name"), Some(4096));
        // The example of a configuration with overrides reads back as that configuration.
        let again = ConfigFile::parse(&example(&config, &ServerSettings::default()))
            .unwrap()
            .apply(VaultConfig::default())
            .unwrap();
        assert_eq!(again.quotas, config.quotas);
        assert_eq!(VaultConfig::default().quotas.limit("any"), None, "no quota by default");

        let apply = |text: &str| ConfigFile::parse(text).and_then(|f| f.apply(VaultConfig::default()));
        for (text, expected) in [
            ("[quotas]\ndefault = \"10GB\"\n", "invalid size \"10GB\""),
            ("[quotas]\ndefault = \"0B\"\n", "quotas.default must be positive"),
            ("[quotas.clusters]\nprod = 0\n", "quotas.clusters.prod must be positive"),
            ("[quotas.clusters]\n\"a/b\" = \"1GiB\"\n", "quotas.clusters: cluster name \"a/b\""),
            ("[quotas]\nlimit = \"1GiB\"\n", "unknown field `limit`"),
            ("[quotas.clusters]\nprod = -1\n", "negative"),
        ] {
            let err = apply(text).unwrap_err().to_string();
            assert!(err.contains(expected), "{text:?}: {err}");
        }
    }

    #[test]
    fn zero_sizes_and_retention_are_rejected() {
        let apply = |text: &str| ConfigFile::parse(text).unwrap().apply(VaultConfig::default());
        for (text, key) in [
            ("[storage]\nsegment_size = 0\n", "storage.segment_size"),
            ("[ingest]\nqueue_capacity = 0\n", "ingest.queue_capacity"),
            ("[ingest]\nmax_upload = \"0MiB\"\n", "ingest.max_upload"),
            ("[retention]\nl3 = \"0d\"\n", "retention.l3"),
            ("[retention]\nevery = \"0s\"\n", "retention.every"),
        ] {
            let err = apply(text).unwrap_err().to_string();
            assert!(err.contains(key), "{text:?}: {err}");
        }
    }
}
