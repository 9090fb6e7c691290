//! Builds every template crate (`templates/*`, `tests/fixtures/*`) into a component with
//! `cargo build --target wasm32-wasip2 --profile template`, and collects them as
//! `target/templates/<package>.wasm`.
//!
//! Used by `cargo xtask templates` and by `tests/build.rs`, so `cargo test` builds what it
//! tests. Each template is built in its own cargo invocation: a template enables exactly one of
//! sluice-sdk's `client`/`tag` features, and one invocation would unify them. The wasm build
//! uses its own target directory (`target/wasm`), so a build script can run it without
//! waiting on the lock of the build that runs the script.

#![deny(missing_docs)]

use std::path::{Path, PathBuf};
use std::process::Command;

/// The repository root.
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().map(Path::to_path_buf).unwrap_or_default()
}

/// Template packages: (package name, crate directory).
pub fn template_crates(root: &Path) -> Result<Vec<(String, PathBuf)>, String> {
    let mut out = Vec::new();
    for group in ["templates", "tests/fixtures"] {
        let dir = root.join(group);
        let entries = std::fs::read_dir(&dir).map_err(|e| format!("cannot list {}: {e}", dir.display()))?;
        for entry in entries.flatten() {
            let manifest = entry.path().join("Cargo.toml");
            let Ok(text) = std::fs::read_to_string(&manifest) else { continue };
            let doc: toml::Table = toml::from_str(&text).map_err(|e| format!("{}: {e}", manifest.display()))?;
            let name = doc
                .get("package")
                .and_then(|p| p.get("name"))
                .and_then(|n| n.as_str())
                .ok_or_else(|| format!("{} has no package.name", manifest.display()))?;
            out.push((name.to_string(), entry.path()));
        }
    }
    out.sort();
    Ok(out)
}

/// The guest target every template is built for.
pub const TARGET: &str = "wasm32-wasip2";

/// Makes sure the active toolchain has the [`TARGET`] standard library, installing it with
/// rustup when it is missing (rust-toolchain.toml lists it, but rustup only honours that list
/// when it installs the toolchain itself, not for a toolchain that is already there).
pub fn ensure_wasm_target() -> Result<(), String> {
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let sysroot = Command::new(&rustc)
        .args(["--print", "sysroot"])
        .output()
        .map_err(|e| format!("cannot run {rustc}: {e}"))?;
    let sysroot = PathBuf::from(String::from_utf8_lossy(&sysroot.stdout).trim());
    if sysroot.join("lib").join("rustlib").join(TARGET).join("lib").is_dir() {
        return Ok(());
    }
    eprintln!("installing the {TARGET} target: rustup target add {TARGET}");
    let status = Command::new("rustup")
        .args(["target", "add", TARGET])
        .status()
        .map_err(|e| format!("the {TARGET} target is missing and rustup could not be run ({e}): install the target for your toolchain"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("`rustup target add {TARGET}` failed"))
    }
}

/// Builds all templates; returns the directory holding `<package>.wasm` files.
pub fn build_templates(root: &Path) -> Result<PathBuf, String> {
    ensure_wasm_target()?;
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let wasm_target = root.join("target").join("wasm");
    let out_dir = root.join("target").join("templates");
    std::fs::create_dir_all(&out_dir).map_err(|e| format!("cannot create {}: {e}", out_dir.display()))?;
    for (package, _) in template_crates(root)? {
        let status = Command::new(&cargo)
            .current_dir(root)
            .args(["build", "--quiet", "--target", TARGET, "--profile", "template", "-p", &package])
            .env("CARGO_TARGET_DIR", &wasm_target)
            // Flags meant for the host build (coverage, sanitizers) break the wasm build.
            .env_remove("RUSTFLAGS")
            .env_remove("CARGO_ENCODED_RUSTFLAGS")
            .env_remove("CARGO_BUILD_RUSTFLAGS")
            .env_remove("CARGO_BUILD_TARGET")
            .status()
            .map_err(|e| format!("cannot run {cargo}: {e}"))?;
        if !status.success() {
            return Err(format!(
                "building template {package} for wasm32-wasip2 failed (see the errors above). \
                 If the target is missing: rustup target add wasm32-wasip2 (rust-toolchain.toml lists it)"
            ));
        }
        let artifact = wasm_target.join(TARGET).join("template").join(format!("{}.wasm", package.replace('-', "_")));
        let dest = out_dir.join(format!("{package}.wasm"));
        std::fs::copy(&artifact, &dest).map_err(|e| format!("cannot copy {} to {}: {e}", artifact.display(), dest.display()))?;
    }
    Ok(out_dir)
}

/// The whole-server load run: builds the release `sluice` binary, the load generator and the
/// templates, then runs the load generator pinned to CPU 1 (it pins each server to CPU 0).
/// `args` pass through (`--seconds N`, `--tags 1,3,10`).
pub fn load(root: &Path, args: Vec<String>) -> Result<(), String> {
    let templates = build_templates(root)?;
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = Command::new(&cargo)
        .current_dir(root)
        .args(["build", "--release", "-p", "sluice", "--bin", "sluice", "-p", "sluice-benches", "--bin", "sluice-load"])
        .status()
        .map_err(|e| format!("cannot run {cargo}: {e}"))?;
    if !status.success() {
        return Err("building the release binaries failed (see the errors above)".into());
    }
    let release = root.join("target").join("release");
    let driver = release.join("sluice-load");
    // One core for the server, the other for the load generator and the vendor sink.
    let two_cores = std::thread::available_parallelism().map_or(1, |n| n.get()) >= 2;
    let pin = two_cores && Command::new("taskset").arg("--version").output().is_ok();
    let mut command = if pin {
        let mut c = Command::new("taskset");
        c.args(["-c", "1"]).arg(&driver).arg("--pin");
        c
    } else {
        eprintln!("not pinning: needs taskset and two CPUs; figures will not be per-core");
        Command::new(&driver)
    };
    command
        .arg("--sluice")
        .arg(release.join("sluice"))
        .arg("--templates")
        .arg(&templates)
        .arg("--out")
        .arg(root.join("target").join("load"))
        .args(args);
    let status = command.status().map_err(|e| format!("cannot run {}: {e}", driver.display()))?;
    if status.success() { Ok(()) } else { Err(format!("the load run failed ({status})")) }
}
