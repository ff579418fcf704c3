//! `soilmon bench`: forwards to the `soilmon-bench` binary, so the benchmark (which creates
//! and drops databases and kills processes) is not part of the service binary.

use std::path::Path;

use anyhow::{bail, Context as _, Result};

/// Runs the `soilmon-bench` binary that sits next to this executable with `--config` and
/// `args`, and exits with its status (on Unix it replaces this process).
pub fn forward(config: &Path, args: &[std::ffi::OsString]) -> Result<()> {
    let exe = std::env::current_exe().context("locating the soilmon executable")?;
    let bench = exe.with_file_name(format!("soilmon-bench{}", std::env::consts::EXE_SUFFIX));
    if !bench.is_file() {
        bail!(
            "soilmon bench runs {}, which does not exist: build both binaries with \
             `cargo build --release`",
            bench.display()
        );
    }
    let mut command = std::process::Command::new(&bench);
    command.arg("--config").arg(config).args(args);
    #[cfg(unix)]
    {
        use std::os::unix::process::CommandExt as _;
        let e = command.exec();
        Err(e).with_context(|| format!("running {}", bench.display()))
    }
    #[cfg(not(unix))]
    {
        let status = command
            .status()
            .with_context(|| format!("running {}", bench.display()))?;
        std::process::exit(status.code().unwrap_or(1));
    }
}
