//! The workspace's build steps, run as `cargo xtask <command>` (the alias is in .cargo/config.toml).
//!
//! `cargo xtask site` builds what `cargo leptos build --release --precompress` builds, into the same
//! `target/site` the server serves, with nothing to install but the npm tools in `xtask/package.json`:
//! cargo-leptos and wasm-bindgen-cli took more than half an hour to compile on a two-core machine
//! before the site could be built at all. The steps follow cargo-leptos 0.3.10:
//!
//! 1. the frontend to wasm (`wasm-release` profile, cargo-leptos's `target/front` target folder)
//!    and the server (`--release`; the dev profile with `--server debug`, for the browser
//!    tests), two cargo builds at the same time: their target folders
//!    differ, so neither waits for the other's lock, and the wasm build's long single-threaded LTO
//!    tail leaves a core to the server build;
//! 2. bindings with wasm-bindgen's own library (`wasm.rs`), then `wasm-opt -Oz` (binaryen 116; its
//!    last output is reused while its input stays the same) and the JS glue minified with terser,
//!    where cargo-leptos uses swc (same options: module, compress, mangle; the bytes differ);
//! 3. the stylesheet, copied: cargo-leptos runs lightningcss over it, which only makes it smaller;
//! 4. content-hashed names and `hash.txt` beside the server binary (`hashing.rs`);
//! 5. a `.br` and a `.gz` beside every file of the site (`compress.rs`).
//!
//! The server is compiled with no `LEPTOS_*` variable in its environment (cargo-leptos sets them):
//! leptos_config reads `LEPTOS_OUTPUT_NAME` with `option_env!`, so a value set only here would
//! make every other release build of the workspace recompile leptos and all above it. The server
//! reads them at run time instead (`SITE_ENV` in scripts/lib/common.sh).
//!
//! `[[workspace.metadata.leptos]]` in the root Cargo.toml stays the one description of the site,
//! read here and by cargo-leptos (`cargo leptos watch` for hot reload).

mod compress;
mod hashing;
mod wasm;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde::Deserialize;

const USAGE: &str = "\
Usage: cargo xtask <command>

Commands:
  site                  build the site into target/site and the server into target/release,
                        as `cargo leptos build --release --precompress` does (see
                        xtask/src/main.rs)
  site --server debug   the same site, and the server in the dev profile (target/debug):
                        what the browser tests of scripts/test run, beside the build the
                        integration tests made";

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let outcome = match args.iter().map(String::as_str).collect::<Vec<_>>().as_slice() {
        ["site"] | ["site", "--server", "release"] => site(ServerProfile::Release),
        ["site", "--server", "debug"] => site(ServerProfile::Debug),
        ["help" | "-h" | "--help"] => {
            println!("{USAGE}");
            Ok(())
        }
        _ => {
            eprintln!("{USAGE}");
            std::process::exit(2);
        }
    };
    if let Err(error) = outcome {
        eprintln!("xtask: error: {error:#}");
        std::process::exit(1);
    }
}

/// Which build of the server the site is for. Leptos reads `hash.txt` beside the running
/// binary, so the site names the folder of one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ServerProfile {
    /// `--release`, in target/release: what scripts/run serves.
    Release,
    /// The dev profile, in target/debug: the browser tests' server, whose dependencies the
    /// integration tests have built already (a release build of the server is the longest
    /// part of a first run). The bundle is release either way: it is what breaks when
    /// optimised.
    Debug,
}

impl ServerProfile {
    /// Cargo's folder for the profile, under the target folder.
    fn folder(self) -> &'static str {
        match self {
            ServerProfile::Release => "release",
            ServerProfile::Debug => "debug",
        }
    }
}

/// The site as `[[workspace.metadata.leptos]]` describes it (the keys cargo-leptos reads).
#[derive(Debug, Deserialize)]
#[serde(rename_all = "kebab-case")]
struct SiteConfig {
    /// The bundle's name: `<name>.js`, `<name>.wasm`, `<name>.css`.
    name: String,
    bin_package: String,
    lib_package: String,
    lib_profile_release: String,
    /// Relative to the workspace root, as the server reads `LEPTOS_SITE_ROOT` from its own.
    site_root: PathBuf,
    site_pkg_dir: PathBuf,
    style_file: PathBuf,
    #[serde(default)]
    hash_files: bool,
}

/// Reads the one `[[workspace.metadata.leptos]]` entry of the workspace's Cargo.toml.
fn read_site_config(manifest: &str) -> Result<SiteConfig> {
    #[derive(Deserialize)]
    struct Manifest {
        workspace: Workspace,
    }
    #[derive(Deserialize)]
    struct Workspace {
        metadata: Metadata,
    }
    #[derive(Deserialize)]
    struct Metadata {
        leptos: Vec<SiteConfig>,
    }
    let manifest: Manifest = toml::from_str(manifest).context("reading [[workspace.metadata.leptos]]")?;
    let mut sites = manifest.workspace.metadata.leptos;
    if sites.len() != 1 {
        bail!("expected one [[workspace.metadata.leptos]] entry, found {}", sites.len());
    }
    Ok(sites.remove(0))
}

/// The workspace root: the folder above this crate's.
fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("xtask lives in the workspace root").to_path_buf()
}

/// Cargo's target folder for this workspace: `CARGO_TARGET_DIR` if set, else `target`.
fn target_dir(root: &Path) -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) => root.join(dir),
        None => root.join("target"),
    }
}

/// `cargo xtask site`: see the crate's documentation.
fn site(profile: ServerProfile) -> Result<()> {
    let started = Instant::now();
    let root = workspace_root();
    std::env::set_current_dir(&root).with_context(|| format!("entering {}", root.display()))?;
    let manifest = std::fs::read_to_string("Cargo.toml").context("reading the workspace Cargo.toml")?;
    let config = read_site_config(&manifest)?;
    let target = target_dir(&root);
    let front_target = target.join("front");
    let pkg_dir = config.site_root.join(&config.site_pkg_dir);

    // The npm tools first: a missing node fails here, not after minutes of compiling.
    let tools = step("npm tools (wasm-opt 116, terser)", || wasm::Tools::find_or_install(&root.join("xtask")))?;

    // The server builds on its own thread while the frontend goes through its steps here.
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut server_build = Command::new(&cargo);
    server_build.args(["build", "--package", &config.bin_package]);
    if profile == ServerProfile::Release {
        server_build.arg("--release");
    }
    let mut wasm_build = Command::new(&cargo);
    wasm_build.args(["build", "--package", &config.lib_package, "--lib", "--target", "wasm32-unknown-unknown"]);
    wasm_build.args(["--profile", &config.lib_profile_release]).arg("--target-dir").arg(&front_target);

    announce(&format!("server build ({server_build:?}), in the background"));
    let server = thread::spawn(move || {
        let started = Instant::now();
        let status = server_build.status();
        (status, started.elapsed())
    });

    let hash_file = target.join(profile.folder()).join("hash.txt");
    let frontend =
        step("wasm build (cargo build --package frontend --target wasm32-unknown-unknown)", || run(&mut wasm_build))
            .and_then(|()| bundle(&config, &tools, &front_target, &hash_file));

    let (server_status, server_took) = server.join().expect("the server build's thread does not panic");
    let server_outcome = match server_status {
        Ok(status) if status.success() => Ok(()),
        Ok(status) => Err(anyhow::anyhow!("the server build failed ({status})")),
        Err(error) => Err(anyhow::anyhow!("could not run cargo for the server build: {error}")),
    };
    eprintln!(
        "xtask: server build: {} ({})",
        if server_outcome.is_ok() { "done" } else { "FAILED" },
        secs(server_took)
    );
    frontend?;
    server_outcome?;
    eprintln!(
        "xtask: site built in {} ({} and target/{}/{})",
        secs(started.elapsed()),
        pkg_dir.display(),
        profile.folder(),
        config.bin_package
    );
    Ok(())
}

/// The compiled frontend made a site: bindings, wasm-opt, terser, the stylesheet, content hashes
/// in the names and the precompressed copies, in a clean `pkg` folder.
fn bundle(config: &SiteConfig, tools: &wasm::Tools, front_target: &Path, hash_file: &Path) -> Result<()> {
    let pkg_dir = config.site_root.join(&config.site_pkg_dir);
    let wasm_input = front_target
        .join("wasm32-unknown-unknown")
        .join(&config.lib_profile_release)
        .join(format!("{}.wasm", config.lib_package.replace('-', "_")));
    // A clean folder: hashed names change with every build, and old ones would pile up.
    if pkg_dir.exists() {
        std::fs::remove_dir_all(&pkg_dir).with_context(|| format!("emptying {}", pkg_dir.display()))?;
    }
    let bundle = step("bindings (wasm-bindgen, target web)", || wasm::bindgen(&wasm_input, &pkg_dir, &config.name))?;
    let reused = step("wasm-opt -Oz", || tools.optimize(&bundle.wasm, &front_target.join("wasm-opt-cache")))?;
    if reused {
        eprintln!("xtask:     (the output of the last run: the same input)");
    }
    step("terser (the JS glue)", || tools.minify(&bundle.js))?;
    let css = pkg_dir.join(format!("{}.css", config.name));
    step("stylesheet (copied)", || {
        std::fs::copy(&config.style_file, &css)
            .with_context(|| format!("copying {} to {}", config.style_file.display(), css.display()))
    })?;
    if config.hash_files {
        step("content hashes in the names, hash.txt", || {
            hashing::hash_bundle(&bundle.js, &bundle.wasm, &css, hash_file)
        })?;
    }
    step("precompress (.br, .gz)", || compress::precompress(&config.site_root))
}

/// Runs one step, saying which and, once it ends, how long it took.
fn step<T>(name: &str, work: impl FnOnce() -> Result<T>) -> Result<T> {
    announce(name);
    let started = Instant::now();
    let outcome = work().with_context(|| format!("step failed: {name}"));
    if outcome.is_ok() {
        eprintln!("xtask:     done in {}", secs(started.elapsed()));
    }
    outcome
}

fn announce(name: &str) {
    eprintln!("xtask: ==> {name}");
}

fn secs(duration: Duration) -> String {
    format!("{:.1}s", duration.as_secs_f64())
}

/// Runs a command to its end; fails unless it succeeds.
fn run(command: &mut Command) -> Result<()> {
    let status = command.status().with_context(|| format!("could not run {command:?}"))?;
    if !status.success() {
        bail!("{command:?} failed ({status})");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_workspace_manifest_describes_the_site() {
        let manifest = std::fs::read_to_string(workspace_root().join("Cargo.toml")).unwrap();
        let config = read_site_config(&manifest).unwrap();
        assert_eq!(config.name, "cqrs-bank");
        assert_eq!(config.lib_package, "frontend");
        assert_eq!(config.bin_package, "server");
        assert_eq!(config.site_root, Path::new("target/site"));
        assert!(config.hash_files);
    }

    /// wasm-bindgen-cli-support writes the JS glue for the wasm-bindgen the frontend links: a
    /// version apart, it refuses the wasm or writes glue that does not fit it.
    #[test]
    fn bindgen_library_and_wasm_bindgen_are_locked_at_the_same_version() {
        #[derive(Deserialize)]
        struct Lock {
            package: Vec<Package>,
        }
        #[derive(Deserialize)]
        struct Package {
            name: String,
            version: String,
        }
        let lock = std::fs::read_to_string(workspace_root().join("Cargo.lock")).unwrap();
        let lock: Lock = toml::from_str(&lock).unwrap();
        let versions = |name: &str| -> Vec<String> {
            lock.package.iter().filter(|p| p.name == name).map(|p| p.version.clone()).collect()
        };
        let bindgen = versions("wasm-bindgen");
        let support = versions("wasm-bindgen-cli-support");
        assert_eq!(bindgen.len(), 1, "one wasm-bindgen in Cargo.lock: {bindgen:?}");
        assert_eq!(support, bindgen, "wasm-bindgen-cli-support must be locked at wasm-bindgen's version");
    }
}
