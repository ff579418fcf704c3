//! `soilmon upload`: send a lab batch to a running service and print its report.

use std::path::PathBuf;

use anyhow::{Context as _, Result};

use soilmon::config::Settings;

#[derive(clap::Args)]
pub struct UploadArgs {
    /// The batch file (CSV, see config/lab/template.csv; `.json` is sent as JSON).
    pub file: PathBuf,
    /// Service URL; default http://{http.addr}.
    #[arg(long)]
    pub server: Option<String>,
    /// File holding the bearer token; default: the SOILMON_TOKEN environment variable.
    #[arg(long)]
    pub token_file: Option<PathBuf>,
    /// Print the full JSON report instead of the summary.
    #[arg(long)]
    pub json: bool,
    /// Errors shown in the summary.
    #[arg(long, default_value_t = 20)]
    pub max_errors: usize,
}

/// Uploads the batch; exits 2 when it was refused (422), 1 on any other failure.
pub async fn upload(settings: &Settings, a: &UploadArgs) -> Result<()> {
    let token = match &a.token_file {
        Some(f) => std::fs::read_to_string(f)
            .with_context(|| format!("reading {}", f.display()))?
            .trim()
            .to_string(),
        None => std::env::var("SOILMON_TOKEN").unwrap_or_default(),
    };
    let server = a
        .server
        .clone()
        .unwrap_or_else(|| format!("http://{}", settings.http.addr));
    let answer = soilmon::http::client::upload(&server, &token, &a.file).await?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&answer.body)?);
    } else {
        print!("{}", soilmon::http::client::summary(&answer, a.max_errors));
    }
    match answer.status {
        200 | 201 => Ok(()),
        422 => std::process::exit(2),
        _ => std::process::exit(1),
    }
}
