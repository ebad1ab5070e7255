//! `ltxvault token create|list|revoke` and `ltxvault cluster reset-id`. They change files
//! under `<vault>/auth/` that a running `serve` re-reads on its next request, and do not take
//! the vault's LOCK, so they work while `serve` runs (see `auth`).

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Args, Subcommand};

use crate::auth::{ClusterIds, Scope, TokenInfo, TokenStore};
use crate::error::{Error, Result};

/// API tokens for `ltxvault serve`.
#[derive(Subcommand, Debug)]
pub(crate) enum TokenCommand {
    /// Create a token and print it once on stdout. LiteFS sends it as is: set it as
    /// LITEFS_CLOUD_TOKEN (or backup.auth-token) on the cluster's nodes.
    Create(CreateArgs),
    /// List the tokens: id, scope, creation time, note (never the secret).
    List {
        /// The vault directory.
        #[arg(long)]
        data: PathBuf,
        /// Print JSON: an array of {"id", "scope": {"kind", "name"}, "note", "created"}.
        #[arg(long)]
        json: bool,
    },
    /// Revoke a token: a running server refuses it from its next request.
    Revoke {
        /// The vault directory.
        #[arg(long)]
        data: PathBuf,
        /// The token's id (16 hex digits, as `token list` shows it).
        id: String,
    },
}

/// `ltxvault token create`.
#[derive(Args, Debug)]
pub(crate) struct CreateArgs {
    /// The vault directory.
    #[arg(long)]
    data: PathBuf,
    #[command(flatten)]
    scope: ScopeArgs,
    /// A note for `token list` (who or what the token is for).
    #[arg(long)]
    note: Option<String>,
}

/// Exactly one of `--cluster` and `--admin`.
#[derive(Args, Debug)]
#[group(required = true, multiple = false)]
struct ScopeArgs {
    /// The one cluster the token may read and write (what a LiteFS node needs).
    #[arg(long, value_name = "CLUSTER")]
    cluster: Option<String>,
    /// The token may act on every cluster.
    #[arg(long)]
    admin: bool,
}

/// Per-cluster settings.
#[derive(Subcommand, Debug)]
pub(crate) enum ClusterCommand {
    /// Forget the LiteFS cluster id the cluster is bound to, so that the next write binds it
    /// again (after the LiteFS cluster was rebuilt with a new id).
    ResetId {
        /// The vault directory.
        #[arg(long)]
        data: PathBuf,
        /// The cluster.
        #[arg(long)]
        cluster: String,
    },
}

pub(crate) fn token(command: TokenCommand) -> Result<ExitCode> {
    match command {
        TokenCommand::Create(CreateArgs { data, scope, note }) => {
            let scope = match scope.cluster {
                Some(cluster) => Scope::Cluster(cluster),
                None => Scope::Admin,
            };
            let store = TokenStore::open(existing(&data)?)?;
            let (info, token) = store.create(scope, note.as_deref())?;
            println!("{token}");
            let use_it = match info.scope {
                Scope::Cluster(_) => "put this in LITEFS_CLOUD_TOKEN",
                Scope::Admin => "send this as the Authorization header value",
            };
            eprintln!(
                "created token {} ({}); {use_it}; it is not stored and cannot be shown again",
                info.id,
                describe(&info.scope)
            );
        }
        TokenCommand::List { data, json } => {
            let tokens = TokenStore::open(existing(&data)?)?.list()?;
            if json {
                let text = serde_json::to_string_pretty(&tokens)
                    .map_err(|e| Error::Invalid(format!("serialise the token list: {e}")))?;
                println!("{text}");
            } else {
                print_table(&tokens);
            }
        }
        TokenCommand::Revoke { data, id } => {
            let info = TokenStore::open(existing(&data)?)?.revoke(&id)?;
            eprintln!("revoked token {} ({})", info.id, describe(&info.scope));
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub(crate) fn cluster(command: ClusterCommand) -> Result<ExitCode> {
    match command {
        ClusterCommand::ResetId { data, cluster } => match ClusterIds::open(existing(&data)?)?.reset(&cluster)? {
            Some(id) => eprintln!("cluster \"{cluster}\" is no longer bound to {id}; the next write binds its id"),
            None => eprintln!("cluster \"{cluster}\" was not bound to a cluster id; nothing to do"),
        },
    }
    Ok(ExitCode::SUCCESS)
}

/// The vault directory, which must exist: a mistyped `--data` should fail, not create a
/// token store nobody reads.
fn existing(data: &Path) -> Result<&Path> {
    if data.is_dir() {
        Ok(data)
    } else {
        Err(Error::Invalid(format!(
            "{} is not a directory; give the vault directory `ltxvault serve --data` uses (create it first if the server has not run yet)",
            data.display()
        )))
    }
}

fn describe(scope: &Scope) -> String {
    match scope {
        Scope::Cluster(name) => format!("cluster \"{name}\""),
        Scope::Admin => "admin: every cluster".to_string(),
    }
}

fn print_table(tokens: &[TokenInfo]) {
    if tokens.is_empty() {
        eprintln!("no tokens");
        return;
    }
    let scopes: Vec<String> = tokens.iter().map(|t| t.scope.to_string()).collect();
    let width = scopes.iter().map(String::len).max().unwrap_or(0).max("SCOPE".len());
    println!("{:<16}  {:<width$}  {:<20}  NOTE", "ID", "SCOPE", "CREATED");
    for (token, scope) in tokens.iter().zip(&scopes) {
        println!("{:<16}  {scope:<width$}  {:<20}  {}", token.id, token.created, token.note.as_deref().unwrap_or(""));
    }
}
