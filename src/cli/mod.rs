//! The command line: one subcommand per job. Settings come from flags, REDVAULT_*
//! environment variables and a TOML config file, in that order of precedence.

mod acl;
mod args;
mod daemon;
mod drill;
mod drill_report;
mod export;
mod feed;
mod files;
mod import;
mod keys;
mod output;
mod progress;
mod restore;
mod seal;

use crate::audit::Audit;
use clap::{Parser, Subcommand};
use std::path::PathBuf;

/// `redvault --version`: the version, and the formats it reads and writes.
const LONG_VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    "\nsealed objects: format 2 written; formats 1 and 2 read",
    "\nmanifests: version 2 written; versions 1 and 2 read",
    "\nRedis RDB: versions 1 to 12 read; 9 to 12 written (export --rdb-version)"
);

use crate::settings::LogFormat;

#[derive(Debug, Parser)]
#[command(
    name = "redvault",
    version,
    long_version = LONG_VERSION,
    about = "Encrypted, point-in-time backups of Redis in object storage"
)]
pub struct Cli {
    /// Log lines as text, JSON or journal text (the level from
    /// REDVAULT_LOG); else the config's log_format, else text.
    #[arg(long, global = true, value_enum, env = "REDVAULT_LOG_FORMAT")]
    pub log_format: Option<LogFormat>,
    /// TOML config file (see config/redvault.toml).
    #[arg(long, global = true, env = "REDVAULT_CONFIG")]
    pub config: Option<PathBuf>,
    /// Print the summary as one JSON object, and no progress.
    #[arg(long, global = true)]
    pub json: bool,
    /// Append one JSON record per command to this file (created 0600).
    #[arg(long, global = true, env = "REDVAULT_AUDIT_LOG")]
    pub audit_log: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Manage key-encryption keys.
    #[command(subcommand)]
    Keys(keys::KeysCommand),
    /// Seal a file: compress and encrypt it under a fresh data key wrapped by the KEK.
    Seal(seal::SealFileArgs),
    /// Open a sealed file (or a backup object, with the keyring.json beside it).
    Unseal(seal::UnsealArgs),
    /// Stream a consistent snapshot of a live Redis into storage, sealed.
    Export(export::ExportArgs),
    /// List the backup generations in storage.
    List(export::ListArgs),
    /// Load a backup, or plain RDB files, into a Redis (pipelined RESTORE).
    Import(import::ImportArgs),
    /// Show what an RDB or a backup holds: version, aux fields, keys per db and type, biggest keys.
    Inspect(import::InspectArgs),
    /// Run continuously: base snapshots and AOF segments, durable ACKs, retention.
    Daemon(daemon::DaemonArgs),
    /// Restore a source into a Redis: the newest state, or --at a time, or --offset.
    Restore(restore::RestoreArgs),
    /// Read every object of the chosen generations and check it; report holes.
    Verify(restore::VerifyArgs),
    /// Restore a backup into a scratch Redis, check it, and report RTO and RPO.
    Drill(drill::DrillArgs),
    /// Print shell completions (bash, zsh, fish, ...) for redvault.
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print the man page (roff) for redvault.
    Man,
    /// Delete generations outside the retention policy (never the newest complete).
    Prune(restore::PruneArgs),
    /// Least privilege: the ACL SETUSER line of each role.
    #[command(subcommand)]
    Acl(acl::AclCommand),
}

impl Command {
    /// The name of the action, for the audit log.
    fn action(&self) -> &'static str {
        match self {
            Command::Keys(keys::KeysCommand::Generate { .. }) => "keys generate",
            Command::Keys(keys::KeysCommand::Signer { .. }) => "keys signer",
            Command::Keys(keys::KeysCommand::SignerPublic { .. }) => "keys signer-public",
            Command::Keys(keys::KeysCommand::Rewrap { .. }) => "keys rewrap",
            Command::Keys(keys::KeysCommand::Status { .. }) => "keys status",
            Command::Seal(_) => "seal",
            Command::Unseal(_) => "unseal",
            Command::Export(_) => "export",
            Command::List(_) => "list",
            Command::Import(_) => "import",
            Command::Inspect(_) => "inspect",
            Command::Daemon(_) => "daemon",
            Command::Restore(_) => "restore",
            Command::Verify(_) => "verify",
            Command::Drill(_) => "drill",
            Command::Completions { .. } => "completions",
            Command::Man => "man",
            Command::Prune(_) => "prune",
            Command::Acl(_) => "acl",
        }
    }
}

/// Runs the command line; returns the process exit code. Failures print one line
/// naming the cause.
pub fn run() -> i32 {
    not_dumpable();
    let cli = Cli::parse();
    let from_config = cli
        .config
        .as_deref()
        .and_then(crate::settings::log_format_of);
    init_logging(cli.log_format.or(from_config).unwrap_or(LogFormat::Text));
    let out = output::Output {
        json: cli.json,
        last: Default::default(),
    };
    let action = cli.command.action();
    let mut audit = Audit::new(cli.audit_log.clone(), action);
    let result = (|| -> anyhow::Result<()> {
        let mut config = crate::settings::Config::load(cli.config.as_deref())?;
        audit = Audit::new(cli.audit_log.clone().or(config.audit_log.clone()), action);
        if action == "daemon" {
            audit.record("start", None, None)?;
        }
        let rt = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()?;
        let result = rt.block_on(async {
            match cli.command {
                Command::Keys(k) => keys::run(k, &config, &out).await,
                Command::Acl(a) => acl::run(a, &config, &out).await,
                Command::Seal(a) => seal::seal(a, &config, &out).await,
                Command::Unseal(a) => seal::unseal(a, &config, &out).await,
                Command::Export(a) => export::run_export(a, &config, &out).await,
                Command::List(a) => export::run_list(a, &config, &out).await,
                Command::Import(a) => import::run_import(a, &config, &out).await,
                Command::Inspect(a) => import::run_inspect(a, &config, &out).await,
                Command::Daemon(a) => {
                    daemon::run_daemon(
                        a,
                        cli.config.clone(),
                        std::mem::take(&mut config),
                        audit.clone(),
                    )
                    .await
                }
                Command::Restore(a) => restore::run_restore(a, &config, &out).await,
                Command::Verify(a) => restore::run_verify(a, &config, &out).await,
                Command::Drill(a) => drill::run_drill(a, &config, &out).await,
                Command::Completions { shell } => {
                    use clap::CommandFactory;
                    let mut cmd = Cli::command();
                    clap_complete::generate(shell, &mut cmd, "redvault", &mut std::io::stdout());
                    Ok(())
                }
                Command::Man => {
                    use clap::CommandFactory;
                    clap_mangen::Man::new(Cli::command()).render(&mut std::io::stdout())?;
                    Ok(())
                }
                Command::Prune(a) => restore::run_prune(a, &config, &out).await,
            }
        });
        audit.set_identity(config.used_identity());
        result
    })();
    let details = out.last.lock().ok().and_then(|l| l.clone());
    let line = result.as_ref().err().map(one_line);
    let result = match audit.record("end", details, line.as_deref()) {
        Err(e) if result.is_ok() => Err(e.into()),
        _ => result,
    };
    match result {
        Ok(()) => 0,
        Err(e) => {
            let line = one_line(&e);
            if cli.json {
                println!("{}", serde_json::json!({ "error": line }));
            }
            eprintln!("redvault: error: {line}");
            1
        }
    }
}

/// No core dumps and no ptrace by other processes of the user: this process
/// may hold a private KEK and unwrapped data keys.
fn not_dumpable() {
    // SAFETY: prctl(PR_SET_DUMPABLE) takes plain integers and touches no memory
    // of ours.
    unsafe {
        libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0);
    }
}

fn init_logging(format: LogFormat) {
    use std::io::IsTerminal;
    let filter = tracing_subscriber::EnvFilter::try_from_env("REDVAULT_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
        // Escape codes only where a person reads them: a file or the
        // journal gets plain text.
        LogFormat::Text => builder
            .with_ansi(std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none())
            .try_init(),
        LogFormat::Journal => builder.with_ansi(false).without_time().try_init(),
    };
}

/// The error and its causes on one line, each cause once: library errors often
/// already embed their source in their own message.
fn one_line(e: &anyhow::Error) -> String {
    let mut line = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if !line.contains(&text) {
            if !line.is_empty() {
                line.push_str(": ");
            }
            line.push_str(&text);
        }
    }
    line.replace('\n', " ")
}
