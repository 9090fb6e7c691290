//! The `sluice` binary as an operator runs it: bad input gives a clear message and exit code 1.

#![allow(clippy::unwrap_used)]

use std::process::Command;

fn sluice(args: &[&str]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_sluice")).args(args).output().expect("runs");
    (out.status.success(), String::from_utf8_lossy(&out.stderr).into_owned())
}

fn temp_file(name: &str, contents: &[u8]) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("sluice-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let path = dir.join(name);
    std::fs::write(&path, contents).expect("write");
    path
}

#[test]
fn check_rejects_a_malformed_config_naming_file_and_key() {
    let path = temp_file("bad.toml", b"[[client]]\nname = \"c\"\nwasm = \"c.wasm\"\nprioritee = 3\n");
    let (ok, stderr) = sluice(&["check", "--config", path.to_str().expect("utf-8")]);
    assert!(!ok);
    assert!(stderr.contains("bad.toml") && stderr.contains("unknown field `prioritee`"), "{stderr}");
}

#[test]
fn check_and_serve_name_a_missing_template_file() {
    let path = temp_file("missing.toml", b"[[client]]\nname = \"c\"\nwasm = \"nowhere/c.wasm\"\n");
    for command in ["check", "serve"] {
        let (ok, stderr) = sluice(&[command, "--config", path.to_str().expect("utf-8")]);
        assert!(!ok, "{command}");
        assert!(stderr.contains("client \"c\"") && stderr.contains("nowhere/c.wasm"), "{command}: {stderr}");
    }
}

#[test]
fn inspect_says_when_a_file_is_not_a_template() {
    let path = temp_file("plain.wasm", b"\0asm\x01\0\0\0");
    let (ok, stderr) = sluice(&["inspect", path.to_str().expect("utf-8")]);
    assert!(!ok);
    assert!(stderr.contains("no Sluice manifest") && stderr.contains("export_client!/export_tag!"), "{stderr}");
    let (ok, stderr) = sluice(&["inspect", "/nonexistent.wasm"]);
    assert!(!ok && stderr.contains("cannot read /nonexistent.wasm"), "{stderr}");
}
