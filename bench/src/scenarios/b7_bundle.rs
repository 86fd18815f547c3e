//! B7: what the browser downloads. The release WASM bundle, its JS glue and the styles: raw,
//! `gzip -9`, and as the server sends them (the `.br` and `.gz` that `--precompress` wrote).
//! Then a first visit of an account page in Chromium, measured by
//! `end2end/measure/first-visit.mjs` against the server started here on the built site: the
//! bytes that cross the wire, and the time from navigation to the first click that works
//! (the page is hydrated), unthrottled and on a throttled network (10 Mbit/s, 40 ms).
//!
//! No natural baseline: sizes are printed beside their raw size. Build the bundle first with
//! `cargo xtask site` (scripts/run does). The visit needs node, `end2end/node_modules`
//! (`npm ci`) and Chromium; without them it says so and is skipped.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::SystemTime;

use leptos::config::LeptosOptions;

use super::Outcome;
use crate::server::Server;
use crate::{Context, report};

const NAME: &str = "cqrs-bank";
/// The issue's targets: the WASM gzip-compressed, and the first working click when throttled.
const WASM_GZIP_TARGET_KIB: f64 = 300.0;
const FIRST_CLICK_TARGET_MS: f64 = 1500.0;

pub async fn run(context: Context) -> Outcome {
    report::heading("b7_bundle", "the bundle raw, gzip -9 and as sent; a first visit in Chromium (no baseline)");
    let Some(pkg) = pkg_dir() else {
        report::note(&format!(
            "target/site/pkg holds no {NAME} bundle: build it with `cargo xtask site` (or scripts/run), \
             then run `bench --only b7_bundle`"
        ));
        return Ok(());
    };
    let hashes = build_hashes();
    for extension in ["wasm", "js", "css"] {
        let Some(path) = bundle_file(&pkg, hashes.as_deref(), extension) else {
            report::note(&format!("no {NAME} .{extension} file of this build in {}", pkg.display()));
            continue;
        };
        let raw = std::fs::metadata(&path)?.len() as f64 / 1024.0;
        let gzipped = gzip_size(&path).await? as f64 / 1024.0;
        let file = path.file_name().map(|name| name.to_string_lossy().into_owned()).unwrap_or_default();
        report::against(&format!("{file}, gzip -9"), gzipped, "raw", raw, "KiB");
        for (encoding, suffix) in [("brotli", "br"), ("gzip", "gz")] {
            if let Ok(sent) = std::fs::metadata(format!("{}.{suffix}", path.display())) {
                report::against(
                    &format!("  as sent, {encoding} (.{suffix})"),
                    sent.len() as f64 / 1024.0,
                    "raw",
                    raw,
                    "KiB",
                );
            }
        }
        if extension == "wasm" {
            report::target(
                &format!("B7: release WASM < {WASM_GZIP_TARGET_KIB:.0} KiB gzip"),
                gzipped < WASM_GZIP_TARGET_KIB,
                &format!("{gzipped:.1} KiB"),
            );
        }
    }
    report::note(&format!("from {}", pkg.display()));
    if let Some(newer) = bundle_file(&pkg, hashes.as_deref(), "wasm").and_then(|bundle| newer_source(&bundle)) {
        report::note(&format!("warning: {} is newer than the bundle: rebuild it for current figures", newer.display()));
    }
    if hashes.is_none() {
        report::note(
            "first visit skipped: no hash.txt beside this binary, so the page would name files the build did not \
             write; build with `cargo xtask site`, then this bench with `--release`",
        );
        return Ok(());
    }
    first_visit(&context, &pkg).await
}

/// What the site build wrote beside the server's binary in target/release (`hash-files`): one
/// `<extension>: <hash>` line per bundle file. The bench binary sits beside it, and the page
/// the server renders names the files by these hashes.
fn build_hashes() -> Option<String> {
    let dir = std::env::current_exe().ok()?.parent()?.to_owned();
    std::fs::read_to_string(dir.join("hash.txt")).ok()
}

/// The build's `cqrs-bank.<hash>.<extension>` (the hash from hash.txt): the very file the page
/// loads. Without hash.txt, the newest `cqrs-bank*.<extension>` (unhashed builds).
fn bundle_file(pkg: &Path, hashes: Option<&str>, extension: &str) -> Option<PathBuf> {
    let Some(hashes) = hashes else {
        return newest_file(pkg, extension);
    };
    let hash = hashes.lines().find_map(|line| line.strip_prefix(&format!("{extension}: ")))?.trim();
    Some(pkg.join(format!("{NAME}.{hash}.{extension}"))).filter(|path| path.is_file())
}

/// Serves the built site and has Chromium visit an account page for the first time.
async fn first_visit(context: &Context, pkg: &Path) -> Outcome {
    let script = workspace().join("end2end/measure/first-visit.mjs");
    let modules = workspace().join("end2end/node_modules");
    let chromium = std::env::var("CHROMIUM_PATH").unwrap_or_else(|_| "/usr/bin/chromium".to_owned());
    if !modules.is_dir() || !Path::new(&chromium).is_file() {
        report::note(
            "first visit skipped: it needs end2end/node_modules (npm ci) and Chromium (scripts/test installs both)",
        );
        return Ok(());
    }
    let site_root = pkg.parent().ok_or("the pkg folder has a parent")?.to_owned();
    // The page names the bundle's files by the hashes the site build wrote beside the server's
    // binary (see `build_hashes`).
    let server = Server::start_with(|settings| {
        settings.leptos_options = LeptosOptions::builder()
            .output_name(NAME)
            .site_root(site_root.display().to_string())
            .hash_files(true)
            .build();
        // Each visit signs a new customer up, as a first visitor would be.
        settings.rate_limits.sign_up = server::routes::rate_limits::Rate::per_hour(10_000);
    })
    .await?;
    let runs = context.size.pick("1", "5");
    let base = server.base.clone();
    let output = tokio::task::spawn_blocking(move || {
        std::process::Command::new("node")
            .arg(&script)
            .arg(&base)
            .args(["--runs", runs, "--warmup", "1"])
            .env("CHROMIUM_PATH", &chromium)
            .stdin(Stdio::null())
            .stderr(Stdio::inherit())
            .output()
    })
    .await?;
    server.stop().await;
    let output = output.map_err(|error| format!("cannot run node: {error}"))?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    let Some(result) = stdout.lines().find_map(|line| line.strip_prefix("RESULT ")) else {
        return Err(format!("the first visit measured nothing ({}): {stdout}", output.status).into());
    };
    let result: serde_json::Value = serde_json::from_str(result)?;
    let number = |key: &str| result[key].as_f64();
    if let Some(bytes) = number("bytes_first_visit") {
        report::figure("first visit of an account page, on the wire", bytes / 1024.0, "KiB");
    }
    if let Some(by_type) = result["bytes_by_type"].as_object() {
        for (kind, bytes) in by_type {
            if let Some(bytes) = bytes.as_f64().filter(|b| *b > 0.0) {
                report::figure(&format!("  {kind}"), bytes / 1024.0, "KiB");
            }
        }
    }
    for (label, key) in [
        ("first working click, unthrottled (median)", "ms_first_click_unthrottled_median"),
        ("  hydrated, unthrottled (median)", "ms_hydrated_unthrottled_median"),
        ("first working click, 10 Mbit/s 40 ms (median)", "ms_first_click_throttled_median"),
        ("  hydrated, 10 Mbit/s 40 ms (median)", "ms_hydrated_throttled_median"),
    ] {
        if let Some(ms) = number(key) {
            report::figure(label, ms, "ms");
        }
    }
    match number("ms_first_click_throttled_median") {
        Some(ms) => report::target(
            &format!("B7: first working click < {FIRST_CLICK_TARGET_MS:.0} ms at 10 Mbit/s, 40 ms"),
            ms < FIRST_CLICK_TARGET_MS,
            &format!("{ms:.0} ms"),
        ),
        None => report::note("no throttled click was measured"),
    }
    Ok(())
}

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// `target/site/pkg` holding a bundle: under `CARGO_TARGET_DIR`, the current directory or the
/// workspace this binary was built from.
fn pkg_dir() -> Option<PathBuf> {
    let candidates = [
        std::env::var_os("CARGO_TARGET_DIR").map(|dir| PathBuf::from(dir).join("site/pkg")),
        Some(PathBuf::from("target/site/pkg")),
        Some(workspace().join("target/site/pkg")),
    ];
    candidates.into_iter().flatten().find(|dir| newest_file(dir, "wasm").is_some())
}

/// The newest `cqrs-bank[.<hash>].<extension>` in `pkg` (names carry a hash with `hash-files`).
fn newest_file(pkg: &Path, extension: &str) -> Option<PathBuf> {
    let suffix = format!(".{extension}");
    std::fs::read_dir(pkg)
        .ok()?
        .flatten()
        .map(|entry| entry.path())
        .filter(|path| {
            path.file_name()
                .and_then(|name| name.to_str())
                .is_some_and(|name| name.starts_with(NAME) && name.ends_with(&suffix))
        })
        .max_by_key(|path| std::fs::metadata(path).and_then(|m| m.modified()).unwrap_or(SystemTime::UNIX_EPOCH))
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
