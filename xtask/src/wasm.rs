//! From the compiled frontend to the browser bundle: bindings, wasm-opt, the JS glue minified.
//!
//! The bindings come from wasm-bindgen's own library at exactly the version of the wasm-bindgen
//! the frontend links (both pinned in the root Cargo.toml), so there is no CLI to install. wasm-opt
//! and terser come from the npm registry (`xtask/package.json`, locked by its package-lock.json):
//! binaryen 116, and only 116, because Debian's binaryen (108 on bookworm) writes release builds
//! that silently never hydrate.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};
use wasm_bindgen_cli_support::Bindgen;

use crate::hashing;

/// The binaryen release whose wasm-opt the site is optimised with.
const WASM_OPT_VERSION: &str = "116";

/// cargo-leptos 0.3.10's wasm-opt flags for a release build.
const WASM_OPT_ARGS: [&str; 3] = ["-Oz", "--enable-bulk-memory", "--enable-nontrapping-float-to-int"];

/// The two files of the bundle wasm-bindgen writes, in the pkg folder.
pub struct Bundle {
    pub js: PathBuf,
    pub wasm: PathBuf,
}

/// Writes `<name>.js` and `<name>.wasm` (and any JS snippets) into `out_dir`, as `wasm-bindgen
/// --target=web --out-name=<name>` does with the CLI's defaults, without the TypeScript
/// declarations, which nothing on the site loads.
pub fn bindgen(input: &Path, out_dir: &Path, name: &str) -> Result<Bundle> {
    let mut bindgen = Bindgen::new();
    bindgen
        .input_path(input)
        .web(true)?
        .out_name(name)
        .typescript(false)
        // The CLI's default (the library's is `true`): the same JS glue as wasm-bindgen-cli.
        .omit_default_module_path(false);
    bindgen
        .generate_output()
        .and_then(|mut output| output.emit(out_dir))
        .with_context(|| format!("wasm-bindgen on {}", input.display()))?;
    // cargo-leptos does the same: Leptos's HydrationScripts loads `<name>.wasm`, not `<name>_bg.wasm`.
    let emitted = out_dir.join(format!("{name}_bg.wasm"));
    let wasm = out_dir.join(format!("{name}.wasm"));
    std::fs::rename(&emitted, &wasm)
        .with_context(|| format!("renaming {} to {}", emitted.display(), wasm.display()))?;
    Ok(Bundle { js: out_dir.join(format!("{name}.js")), wasm })
}

/// The npm tools of the build, checked.
pub struct Tools {
    wasm_opt: PathBuf,
    terser: PathBuf,
}

impl Tools {
    /// `WASM_OPT` from the environment, or the npm project's tools (`npm ci` first when they are
    /// missing or older than its lock file); fails unless wasm-opt reports binaryen 116.
    pub fn find_or_install(npm_project: &Path) -> Result<Tools> {
        let bin = npm_project.join("node_modules").join(".bin");
        let terser = bin.join("terser");
        let from_env = std::env::var_os("WASM_OPT").map(PathBuf::from);
        let wasm_opt = from_env.clone().unwrap_or_else(|| bin.join("wasm-opt"));
        // npm writes node_modules/.package-lock.json on every install.
        let installed = npm_project.join("node_modules").join(".package-lock.json");
        let lock = npm_project.join("package-lock.json");
        let stale = modified(&lock).zip(modified(&installed)).is_none_or(|(lock, installed)| lock > installed);
        if stale || !terser.exists() || (from_env.is_none() && !wasm_opt.exists()) {
            npm_ci(npm_project)?;
        }
        let tools = Tools { wasm_opt, terser };
        tools.check_wasm_opt()?;
        Ok(tools)
    }

    fn check_wasm_opt(&self) -> Result<()> {
        let output = Command::new(&self.wasm_opt)
            .arg("--version")
            .output()
            .with_context(|| format!("could not run {} --version", self.wasm_opt.display()))?;
        let text = String::from_utf8_lossy(&output.stdout);
        // "wasm-opt version 116 (version_116)"
        let version = text.split_whitespace().nth(2).unwrap_or("");
        if !output.status.success() || version != WASM_OPT_VERSION {
            bail!(
                "{} reports {:?}, not binaryen version {WASM_OPT_VERSION}. Only wasm-opt {WASM_OPT_VERSION} is \
                 accepted (Debian's binaryen 108 writes release builds that never hydrate): unset WASM_OPT to \
                 use the one from xtask/package.json",
                self.wasm_opt.display(),
                text.trim()
            );
        }
        Ok(())
    }

    /// `wasm-opt -Oz` in place, with cargo-leptos 0.3.10's flags; true if it reused the output
    /// of an earlier run instead.
    ///
    /// wasm-opt run by node takes a minute or more on two cores, and its output depends only on
    /// its input (same binaryen, same flags): the last output is kept in `cache` under a hash
    /// of both, and copied back when the same input comes again (a rebuild in which the wasm
    /// did not change, e.g. a change to the server only).
    pub fn optimize(&self, wasm: &Path, cache: &Path) -> Result<bool> {
        let input = std::fs::read(wasm).with_context(|| format!("reading {}", wasm.display()))?;
        let key = hashing::content_hash(&[WASM_OPT_ARGS.join(" ").as_bytes(), &input].concat());
        let cached = cache.join(format!("{WASM_OPT_VERSION}-{key}.wasm"));
        if cached.is_file() {
            std::fs::copy(&cached, wasm).with_context(|| format!("copying {}", cached.display()))?;
            return Ok(true);
        }
        let mut command = Command::new(&self.wasm_opt);
        command.args(WASM_OPT_ARGS).arg(wasm).arg("-o").arg(wasm);
        crate::run(&mut command)?;
        // Only the last output is kept; written whole (a rename), so that an interrupted copy
        // is never taken for an output.
        if cache.exists() {
            std::fs::remove_dir_all(cache).with_context(|| format!("emptying {}", cache.display()))?;
        }
        std::fs::create_dir_all(cache).with_context(|| format!("creating {}", cache.display()))?;
        let partial = cached.with_extension("partial");
        std::fs::copy(wasm, &partial).with_context(|| format!("writing {}", partial.display()))?;
        std::fs::rename(&partial, &cached).with_context(|| format!("writing {}", cached.display()))?;
        Ok(false)
    }

    /// Minifies the JS glue in place with cargo-leptos's options for swc: an ES module,
    /// compressed and mangled.
    pub fn minify(&self, js: &Path) -> Result<()> {
        let mut command = Command::new(&self.terser);
        command.arg(js).args(["--module", "--compress", "--mangle", "--output"]).arg(js);
        crate::run(&mut command)
    }
}

fn modified(path: &Path) -> Option<std::time::SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

/// `npm ci` in the npm project of the build tools.
fn npm_ci(npm_project: &Path) -> Result<()> {
    if Command::new("npm").arg("--version").output().is_err() {
        bail!(
            "npm not found: the site build takes wasm-opt and terser from the npm registry; install \
             Node.js and npm (Debian: apt-get install nodejs npm), or run scripts/run, which does"
        );
    }
    crate::announce(&format!("npm ci (in {})", npm_project.display()));
    let mut command = Command::new("npm");
    command.args(["ci", "--no-audit", "--no-fund"]).current_dir(npm_project);
    crate::run(&mut command)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn wasm_opt_runs_once_per_input_and_its_output_is_reused() {
        let dir = tempfile::tempdir().unwrap();
        // A stand-in that appends a mark: `wasm-opt <flags...> IN -o OUT`, IN and OUT the same.
        let fake = dir.path().join("wasm-opt");
        std::fs::write(&fake, "#!/bin/sh\n{ cat \"$4\"; printf ' optimised'; } >\"$6.new\" && mv \"$6.new\" \"$6\"\n")
            .unwrap();
        std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).unwrap();
        let tools = Tools { wasm_opt: fake.clone(), terser: PathBuf::new() };
        let (wasm, cache) = (dir.path().join("b.wasm"), dir.path().join("cache"));

        std::fs::write(&wasm, "one").unwrap();
        assert!(!tools.optimize(&wasm, &cache).unwrap());
        assert_eq!(std::fs::read_to_string(&wasm).unwrap(), "one optimised");

        // The same input again: the kept output, without running the tool (gone now).
        std::fs::remove_file(&fake).unwrap();
        std::fs::write(&wasm, "one").unwrap();
        assert!(tools.optimize(&wasm, &cache).unwrap());
        assert_eq!(std::fs::read_to_string(&wasm).unwrap(), "one optimised");

        // Another input needs the tool.
        std::fs::write(&wasm, "two").unwrap();
        assert!(tools.optimize(&wasm, &cache).is_err());
        assert_eq!(std::fs::read_dir(&cache).unwrap().count(), 1);
    }
}
