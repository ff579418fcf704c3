//! `soilmon tokens add|list|revoke`: HTTP API tokens in `http.tokens_file`.

use anyhow::{bail, Result};
use clap::Subcommand;

use soilmon::config::Settings;
use soilmon::http::auth::{self, Role};
use soilmon::store::queries::Scope;

use super::{check_counties, write_lines};

#[derive(Subcommand)]
pub enum TokensCommand {
    /// Create a token; prints it once.
    Add {
        /// Token name (shown in logs and batch records).
        name: String,
        /// lab (upload batches), bureau (read its counties' alerts, incidents, readings) or
        /// admin (read everything: points, stations, bureaus).
        #[arg(long)]
        role: String,
        /// County code a bureau may read (GB/T 2260), repeatable; bureau only.
        #[arg(long = "county")]
        counties: Vec<String>,
        /// City-wide bureau: every county.
        #[arg(long, conflicts_with = "counties")]
        all: bool,
    },
    /// List tokens: name, role, counties.
    List,
    /// Revoke a token (the file is rewritten atomically).
    Revoke {
        /// Token name.
        name: String,
    },
}

/// Runs one `soilmon tokens` command.
pub fn tokens(settings: &Settings, c: TokensCommand) -> Result<()> {
    let path = &settings.http.tokens_file;
    if path.as_os_str().is_empty() {
        bail!("http.tokens_file is not set (SOILMON__HTTP__TOKENS_FILE)");
    }
    match c {
        TokensCommand::Add {
            name,
            role,
            counties,
            all,
        } => {
            let Some(role) = Role::parse(&role) else {
                bail!("--role must be lab, bureau, admin or enterprise (name: its credit code)");
            };
            let scope = match role {
                Role::Bureau if all => Scope::All,
                Role::Bureau if counties.is_empty() => {
                    bail!("a bureau token needs --county CODE (repeatable) or --all")
                }
                Role::Bureau => {
                    check_counties(settings, &counties)?;
                    Scope::Counties(counties)
                }
                _ if all || !counties.is_empty() => {
                    bail!("--county and --all apply to bureau tokens only")
                }
                Role::Admin => Scope::All,
                Role::Lab | Role::Enterprise => Scope::Counties(Vec::new()),
            };
            let token = auth::add(path, &name, role, scope)?;
            println!(
                "{role} token {name} added to {}; the token (shown once, stored hashed):",
                path.display()
            );
            println!("token: {token}");
            Ok(())
        }
        TokensCommand::List => {
            let lines: Vec<String> = auth::entries(path)?
                .iter()
                .map(|p| {
                    let scope = match (p.role, &p.scope) {
                        (Role::Bureau, Scope::All) => "\tall counties".to_string(),
                        (Role::Bureau, Scope::Counties(c)) => format!("\tcounties {}", c.join(",")),
                        _ => String::new(),
                    };
                    format!("{}\t{}{scope}", p.name, p.role)
                })
                .collect();
            write_lines(&mut std::io::stdout().lock(), &lines)
        }
        TokensCommand::Revoke { name } => {
            auth::revoke(path, &name)?;
            println!(
                "token {name} revoked; the running service refuses it within {} s",
                auth::RELOAD_CHECK.as_secs()
            );
            Ok(())
        }
    }
}
