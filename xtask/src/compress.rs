//! Precompression: a `.br` and a `.gz` beside every file of the site, as `--precompress` writes.
//!
//! Leptos's file handler sends them to browsers that accept them, so the server never compresses
//! the bundle per request. Brotli at quality 11 (cargo-leptos's default parameters): the largest
//! file, the wasm, is written once per build and read by every first visit.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use brotli::enc::BrotliEncoderParams;
use flate2::Compression;
use flate2::write::GzEncoder;

/// Writes `<file>.br` and `<file>.gz` for every file under `dir`, at any depth, except the
/// `.br` and `.gz` files already there.
pub fn precompress(dir: &Path) -> Result<()> {
    for entry in std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let path = entry?.path();
        if path.is_dir() {
            precompress(&path)?;
        } else if !matches!(path.extension().and_then(|e| e.to_str()), Some("br" | "gz")) {
            compress_file(&path).with_context(|| format!("compressing {}", path.display()))?;
        }
    }
    Ok(())
}

fn compress_file(path: &Path) -> Result<()> {
    let bytes = std::fs::read(path)?;

    let mut gzip = GzEncoder::new(BufWriter::new(File::create(beside(path, ".gz"))?), Compression::best());
    gzip.write_all(&bytes)?;
    gzip.finish()?.flush()?;

    let params = BrotliEncoderParams::default();
    debug_assert_eq!(params.quality, 11);
    let mut brotli = BufWriter::new(File::create(beside(path, ".br"))?);
    brotli::BrotliCompress(&mut bytes.as_slice(), &mut brotli, &params)?;
    brotli.flush()?;
    Ok(())
}

/// `path` with `suffix` added to its name: `a.wasm` and `.br` make `a.wasm.br`.
fn beside(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    #[test]
    fn every_file_gets_a_br_and_a_gz_that_decompress_to_it() {
        let dir = tempfile::tempdir().unwrap();
        let pkg = dir.path().join("pkg");
        std::fs::create_dir_all(&pkg).unwrap();
        let text = "body { color: red }\n".repeat(200);
        std::fs::write(pkg.join("a.css"), &text).unwrap();
        std::fs::write(dir.path().join("b.wasm"), b"\0asm\x01\0\0\0").unwrap();

        precompress(dir.path()).unwrap();

        let mut gunzipped = String::new();
        flate2::read::GzDecoder::new(File::open(pkg.join("a.css.gz")).unwrap()).read_to_string(&mut gunzipped).unwrap();
        assert_eq!(gunzipped, text);
        let mut unbrotlied = String::new();
        brotli::Decompressor::new(File::open(pkg.join("a.css.br")).unwrap(), 4096)
            .read_to_string(&mut unbrotlied)
            .unwrap();
        assert_eq!(unbrotlied, text);
        assert!(dir.path().join("b.wasm.br").exists() && dir.path().join("b.wasm.gz").exists());

        // A second run compresses the originals again, never the compressed files.
        precompress(dir.path()).unwrap();
        let mut names: Vec<String> =
            std::fs::read_dir(&pkg).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
        names.sort();
        assert_eq!(names, ["a.css", "a.css.br", "a.css.gz"]);
    }
}
