//! B7: what the browser downloads: the release WASM bundle and its wasm-bindgen JS glue, raw
//! and gzipped (`gzip -9`, as a server would precompress them).
//!
//! No natural baseline: the figures are reported as they are, each beside its raw size (the
//! ratio is the compression ratio). Build the bundle first with `cargo leptos build --release`.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::SystemTime;

use super::Outcome;
use crate::{Context, report};

const BUNDLE: &str = "cqrs-bank.wasm";
const GLUE: &str = "cqrs-bank.js";

pub async fn run(_context: Context) -> Outcome {
    report::heading("b7_bundle", "release WASM bundle and JS glue, raw and gzip -9 (no baseline)");
    let Some(pkg) = pkg_dir() else {
        report::note(&format!(
            "target/site/pkg/{BUNDLE} does not exist: build it with `cargo leptos build --release` \
             (or scripts/run), then run `bench --only b7_bundle`"
        ));
        return Ok(());
    };
    for file in [BUNDLE, GLUE] {
        let path = pkg.join(file);
        let Ok(raw) = std::fs::metadata(&path).map(|m| m.len()) else {
            report::note(&format!("{} is missing", path.display()));
            continue;
        };
        let gzipped = gzip_size(&path).await?;
        report::against(&format!("{file}, gzip -9"), gzipped as f64 / 1024.0, "raw", raw as f64 / 1024.0, "KiB");
    }
    report::note(&format!("from {}", pkg.display()));
    if let Some(newer) = newer_source(&pkg.join(BUNDLE)) {
        report::note(&format!("warning: {} is newer than the bundle: rebuild it for current figures", newer.display()));
    }
    Ok(())
}

/// `target/site/pkg` holding the bundle: under `CARGO_TARGET_DIR`, the current directory or
/// the workspace this binary was built from.
fn pkg_dir() -> Option<PathBuf> {
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let candidates = [
        std::env::var_os("CARGO_TARGET_DIR").map(|dir| PathBuf::from(dir).join("site/pkg")),
        Some(PathBuf::from("target/site/pkg")),
        Some(workspace.join("target/site/pkg")),
    ];
    candidates.into_iter().flatten().find(|dir| dir.join(BUNDLE).is_file())
}

async fn gzip_size(path: &Path) -> Result<usize, Box<dyn std::error::Error>> {
    let path_buf = path.to_owned();
    let output = tokio::task::spawn_blocking(move || {
        std::process::Command::new("gzip").arg("-9").arg("-c").arg(path_buf).stderr(Stdio::inherit()).output()
    })
    .await?
    .map_err(|e| format!("cannot run gzip: {e}"))?;
    if !output.status.success() {
        return Err(format!("gzip failed on {}", path.display()).into());
    }
    Ok(output.stdout.len())
}

/// A source file of the browser bundle modified after the bundle was built, if any.
fn newer_source(bundle: &Path) -> Option<PathBuf> {
    let built = std::fs::metadata(bundle).and_then(|m| m.modified()).ok()?;
    let root = bundle.parent()?.parent()?.parent()?.parent()?;
    ["app/src", "frontend/src", "style"].iter().find_map(|dir| newest_after(&root.join(dir), built))
}

fn newest_after(dir: &Path, moment: SystemTime) -> Option<PathBuf> {
    for entry in std::fs::read_dir(dir).ok()?.flatten() {
        let path = entry.path();
        if path.is_dir() {
            if let Some(found) = newest_after(&path, moment) {
                return Some(found);
            }
        } else if entry.metadata().and_then(|m| m.modified()).is_ok_and(|modified| modified > moment) {
            return Some(path);
        }
    }
    None
}
