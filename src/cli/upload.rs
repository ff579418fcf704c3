//! `soilmon upload`: send a lab batch to a running service and print its report; `soilmon
//! lab-xlsx`: write a CSV batch as an xlsx sheet.

use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result};

use soilmon::config::Settings;

#[derive(clap::Args)]
pub struct UploadArgs {
    /// The batch file (CSV, see config/lab/template.csv; `.json` is sent as JSON, `.xlsx` as
    /// an Excel workbook, its first sheet read like the CSV template).
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

/// `soilmon lab-xlsx CSV OUT`: writes the CSV batch as an xlsx sheet.
pub fn to_xlsx(csv: &Path, out: &Path) -> Result<()> {
    let body = std::fs::read(csv).with_context(|| format!("reading {}", csv.display()))?;
    let xlsx = soilmon::lab::xlsx::csv_to_xlsx(&body)?;
    std::fs::write(out, xlsx).with_context(|| format!("writing {}", out.display()))?;
    println!("wrote {}", out.display());
    Ok(())
}
