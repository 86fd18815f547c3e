//! Content hashes in the bundle's file names, as cargo-leptos 0.3.10 writes them (`hash-files`).
//!
//! A name that changes with the content lets browsers keep the file for good
//! (server/src/routes/caching_and_compression.rs). The server learns the names from `hash.txt` beside its binary,
//! which Leptos reads (`HydrationScripts`, `HashedStylesheet`): its format and the hashes must be
//! cargo-leptos's to the byte.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use md5::{Digest, Md5};

/// The MD5 of `bytes`, base64url without padding (22 characters).
pub fn content_hash(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(Md5::digest(bytes))
}

/// `<stem>.<ext>` becomes `<stem>.<hash>.<ext>`.
pub fn hashed_name(file_name: &str, hash: &str) -> String {
    match file_name.rsplit_once('.') {
        Some((stem, ext)) => format!("{stem}.{hash}.{ext}"),
        None => format!("{file_name}.{hash}"),
    }
}

/// The lines of `hash.txt`: `<extension>: <hash>` for the js, the wasm and the css, in that order.
pub fn hash_file_content(js: &str, wasm: &str, css: &str) -> String {
    format!("js: {js}\nwasm: {wasm}\ncss: {css}\n")
}

/// `js` with every old name of `renames` (old name, new name) replaced by its new one.
///
/// The names are relative to the pkg folder, as in cargo-leptos, where all three files live.
pub fn rewrite_references(js: &str, renames: &[(String, String)]) -> String {
    renames.iter().fold(js.to_owned(), |js, (old, new)| js.replace(old.as_str(), new))
}

/// Renames the three files of the bundle to their hashed names, points the JS at the new names and
/// writes `hash_file`. The hashes are of the files as they were before the JS was rewritten, as
/// cargo-leptos computes them.
pub fn hash_bundle(js: &Path, wasm: &Path, css: &Path, hash_file: &Path) -> Result<()> {
    let mut hashes = Vec::new();
    let mut renames = Vec::new();
    let mut new_js = PathBuf::new();
    for path in [js, wasm, css] {
        let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
        let hash = content_hash(&bytes);
        let name = file_name(path)?;
        let new_name = hashed_name(&name, &hash);
        let new_path = path.with_file_name(&new_name);
        std::fs::rename(path, &new_path)
            .with_context(|| format!("renaming {} to {}", path.display(), new_path.display()))?;
        if path == js {
            new_js = new_path;
        }
        hashes.push(hash);
        renames.push((name, new_name));
    }
    let glue = std::fs::read_to_string(&new_js).with_context(|| format!("reading {}", new_js.display()))?;
    std::fs::write(&new_js, rewrite_references(&glue, &renames))
        .with_context(|| format!("writing {}", new_js.display()))?;

    if let Some(folder) = hash_file.parent() {
        std::fs::create_dir_all(folder).with_context(|| format!("creating {}", folder.display()))?;
    }
    std::fs::write(hash_file, hash_file_content(&hashes[0], &hashes[1], &hashes[2]))
        .with_context(|| format!("writing {}", hash_file.display()))
}

fn file_name(path: &Path) -> Result<String> {
    path.file_name()
        .and_then(|name| name.to_str())
        .map(str::to_owned)
        .with_context(|| format!("no file name in {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_hash_is_md5_in_base64url_without_padding() {
        // MD5("") = d41d8cd98f00b204e9800998ecf8427e
        assert_eq!(content_hash(b""), "1B2M2Y8AsgTpgAmY7PhCfg");
        assert_eq!(content_hash(b"hello"), "XUFAKrxLKna5cZ2REBfFkg");
        // MD5("b") = 92eb5ffee6ae2fec3ad71c777531578f: base64's `/` and `+` are `_` and `-` here.
        assert_eq!(content_hash(b"b"), "kutf_uauL-w61xx3dTFXjw");
        assert_eq!(content_hash(&[0xfb; 100]).len(), 22);
        assert!(!content_hash(&[0xfb; 100]).contains(['+', '/', '=']));
    }

    #[test]
    fn the_hash_goes_between_stem_and_extension() {
        assert_eq!(hashed_name("cqrs-bank.wasm", "abc"), "cqrs-bank.abc.wasm");
        assert_eq!(hashed_name("cqrs-bank.js", "abc"), "cqrs-bank.abc.js");
        assert_eq!(hashed_name("a.b.css", "h"), "a.b.h.css");
    }

    #[test]
    fn hash_txt_names_each_file_by_its_extension() {
        assert_eq!(hash_file_content("J", "W", "C"), "js: J\nwasm: W\ncss: C\n");
    }

    #[test]
    fn references_to_the_old_names_are_rewritten() {
        let renames = [
            ("cqrs-bank.wasm".to_owned(), "cqrs-bank.W.wasm".to_owned()),
            ("cqrs-bank.css".to_owned(), "cqrs-bank.C.css".to_owned()),
        ];
        let js = "fetch('cqrs-bank.wasm'); new URL('cqrs-bank_bg.wasm', import.meta.url)";
        assert_eq!(
            rewrite_references(js, &renames),
            "fetch('cqrs-bank.W.wasm'); new URL('cqrs-bank_bg.wasm', import.meta.url)"
        );
    }

    #[test]
    fn a_bundle_is_renamed_and_described_in_hash_txt() {
        let dir = tempfile::tempdir().unwrap();
        let pkg = dir.path().join("site/pkg");
        std::fs::create_dir_all(&pkg).unwrap();
        let (js, wasm, css) = (pkg.join("b.js"), pkg.join("b.wasm"), pkg.join("b.css"));
        let glue = "import x from './b.wasm';";
        std::fs::write(&js, glue).unwrap();
        std::fs::write(&wasm, b"\0asm").unwrap();
        std::fs::write(&css, "body {}").unwrap();
        let hash_file = dir.path().join("release/hash.txt");

        hash_bundle(&js, &wasm, &css, &hash_file).unwrap();

        let (hj, hw, hc) = (content_hash(glue.as_bytes()), content_hash(b"\0asm"), content_hash(b"body {}"));
        assert_eq!(std::fs::read_to_string(&hash_file).unwrap(), hash_file_content(&hj, &hw, &hc));
        let mut names: Vec<String> =
            std::fs::read_dir(&pkg).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
        names.sort();
        let mut expected = vec![format!("b.{hc}.css"), format!("b.{hj}.js"), format!("b.{hw}.wasm")];
        expected.sort();
        assert_eq!(names, expected);
        // The JS now names the hashed wasm; its own name keeps the hash of what it was before.
        let rewritten = std::fs::read_to_string(pkg.join(format!("b.{hj}.js"))).unwrap();
        assert_eq!(rewritten, format!("import x from './b.{hw}.wasm';"));
    }
}
