//! `redvault acl print` and `redvault acl check`: the least-privilege user
//! of each role (`crate::acl`), printed or checked against a server.

use super::args;
use super::output::Output;
use crate::settings::Config;
use clap::Subcommand;

#[derive(Debug, Subcommand)]
pub enum AclCommand {
    /// Print the ACL SETUSER line allowing exactly what a role sends.
    Print {
        /// backup, daemon, scan (export --method scan), import, restore, feed
        /// (import/restore --via replication) or drill (drill --target).
        #[arg(long)]
        role: String,
        /// The user name (default redvault-ROLE).
        #[arg(long)]
        user: Option<String>,
        /// Keys the role may write (import, restore), as an ACL glob; the
        /// scan role reads every key.
        #[arg(long, default_value = "*")]
        keys: String,
        /// A user that signs in with Entra ID tokens (no password).
        #[arg(long)]
        nopass: bool,
        /// Also allow FLUSHALL (import/restore --flush).
        #[arg(long)]
        with_flush: bool,
        /// Leave out the commands this Redis does not know (ACL SETUSER
        /// refuses unknown ones; the restore role lists writes of newer servers).
        #[command(flatten)]
        redis: args::RedisArgs,
    },
    /// Check a user against a role with ACL DRYRUN: each command the role
    /// needs, allowed or missing, and admin commands it may run beyond the
    /// role. Exit 1 if anything is missing. --redis connects as a user that
    /// may run ACL (an admin).
    Check {
        #[arg(long)]
        role: String,
        /// The user to check.
        #[arg(long)]
        user: String,
        #[arg(long, default_value = "*")]
        keys: String,
        #[arg(long)]
        with_flush: bool,
        #[command(flatten)]
        redis: args::RedisArgs,
    },
}

fn parse_role(role: &str) -> anyhow::Result<crate::acl::Role> {
    crate::acl::Role::parse(role).ok_or_else(|| {
        anyhow::anyhow!(
            "unknown --role {role}; one of {}",
            crate::acl::Role::NAMES.join(", ")
        )
    })
}

pub async fn run(cmd: AclCommand, config: &Config, out: &Output) -> anyhow::Result<()> {
    match cmd {
        AclCommand::Check {
            role,
            user,
            keys,
            with_flush,
            redis,
        } => {
            let r = parse_role(&role)?;
            let mut conn =
                crate::resp::connect(&redis.url(config)?, &redis.connect_options(config)?).await?;
            let report = crate::acl::check(&mut conn, &user, r, &keys, with_flush).await?;
            if out.json {
                println!("{}", serde_json::to_string(&report)?);
            } else {
                for c in &report.allowed {
                    println!("allowed  +{c}");
                }
                for (c, why) in &report.missing {
                    println!("MISSING  +{c}: {why}");
                }
                for (c, why) in &report.unchecked {
                    println!("unchecked {c}: {why}");
                }
                for c in &report.unknown {
                    println!("unknown  {c} (this server has no such command)");
                }
                for c in &report.excess {
                    println!(
                        "EXCESS   {c}: allowed, though the {} role never sends it",
                        r.name()
                    );
                }
            }
            if !report.missing.is_empty() {
                anyhow::bail!(
                    "user {user} lacks {} of the {} role: {}",
                    report.missing.len(),
                    r.name(),
                    report
                        .missing
                        .iter()
                        .map(|(c, _)| format!("+{c}"))
                        .collect::<Vec<_>>()
                        .join(" ")
                );
            }
            Ok(())
        }
        AclCommand::Print {
            role,
            user,
            keys,
            nopass,
            with_flush,
            redis,
        } => {
            let r = parse_role(&role)?;
            if r == crate::acl::Role::Scan && keys != "*" {
                anyhow::bail!("--keys {keys}: the scan role reads every key (SCAN is not limited by key permissions, and DUMP of any other key would be refused)");
            }
            let user = user.unwrap_or_else(|| format!("redvault-{}", r.name()));
            let known = match redis.redis.is_some() {
                true => Some(
                    known_commands(
                        &redis.url(config)?,
                        &redis.connect_options(config)?,
                        &r.commands(with_flush),
                    )
                    .await?,
                ),
                false => None,
            };
            let line = r.setuser(&user, &keys, nopass, with_flush, known.as_deref());
            if out.json {
                println!(
                    "{}",
                    serde_json::json!({"role": r.name(), "user": user, "acl": line, "commands": r.commands(with_flush)})
                );
            } else {
                println!("{line}");
            }
            Ok(())
        }
    }
}

/// The top-level commands of `wanted` that the server knows (COMMAND INFO
/// answers nil for the others).
async fn known_commands(
    url: &crate::resp::RedisUrl,
    link: &crate::resp::ConnectOptions,
    wanted: &[String],
) -> anyhow::Result<Vec<String>> {
    let mut conn = crate::resp::connect(url, link).await?;
    let names: Vec<String> = wanted
        .iter()
        .map(|c| c.split('|').next().unwrap_or(c).to_string())
        .collect();
    let mut args: Vec<&[u8]> = vec![b"COMMAND", b"INFO"];
    args.extend(names.iter().map(|n| n.as_bytes()));
    match conn.command(&args).await? {
        crate::resp::Reply::Array(items) => Ok(names
            .into_iter()
            .zip(items)
            .filter(|(_, i)| match i {
                crate::resp::Reply::Bulk(None) => false,
                crate::resp::Reply::Array(v) => !v.is_empty(),
                _ => true,
            })
            .map(|(n, _)| n)
            .collect()),
        other => anyhow::bail!("COMMAND INFO answered {other:?}"),
    }
}
