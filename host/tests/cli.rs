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

/// A one-shot HTTP server on loopback answering every connection with `status_line`.
fn answering(status_line: &'static str) -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            use std::io::{Read, Write};
            let mut stream = stream;
            // The whole request head, as a server reads it.
            let (mut head, mut buf) = (Vec::new(), [0u8; 256]);
            while !head.ends_with(b"\r\n\r\n") {
                match stream.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => head.extend_from_slice(&buf[..n]),
                }
            }
            let _ = write!(stream, "{status_line}\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok");
        }
    });
    format!("http://{addr}/healthz")
}

#[test]
fn healthcheck_exits_zero_only_on_a_200() {
    let (ok, stderr) = sluice(&["healthcheck", "--url", &answering("HTTP/1.1 200 OK")]);
    assert!(ok, "{stderr}");
    let (ok, stderr) = sluice(&["healthcheck", "--url", &answering("HTTP/1.1 503 Service Unavailable")]);
    assert!(!ok && stderr.contains("503"), "{stderr}");
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let (ok, stderr) = sluice(&["healthcheck", "--url", &format!("http://{closed}/healthz")]);
    assert!(!ok && stderr.contains("cannot connect"), "{stderr}");
}

#[test]
fn audit_sums_a_file_and_says_what_it_skipped() {
    let record = |ts: u64, tag: &str, decision: &str, missing: &str| {
        format!(
            r#"{{"ts_ms":{ts},"request_id":"r","event_name":"purchase","tag":"{tag}","purposes_needed":["ad_storage"],"state":{{"ad_storage":{{"status":"{}","source":"gcs"}}}},"decision":"{decision}","missing":[{missing}],"personal_data_removed":false,"removed":[]}}"#,
            if missing.is_empty() { "granted" } else { "denied" }
        )
    };
    let lines = [
        record(1_000, "meta", "run", ""),
        record(2_000, "meta", "blocked", r#""ad_storage""#),
        record(3_000, "meta", "blocked", r#""ad_storage""#),
        "2026-12-01T10:00:00Z INFO a log line".to_string(),
        r#"{"ts_ms":4000,"tag":"meta","decis"#.to_string(),
    ];
    let path = temp_file("audit.jsonl", lines.join("\n").as_bytes());
    let out = Command::new(env!("CARGO_BIN_EXE_sluice")).args(["audit", "--file", path.to_str().unwrap(), "--json"]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let summary: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let text = summary.to_string();
    assert!(text.contains(r#""allowed":1"#) && text.contains(r#""blocked":2"#), "{text}");
    let (ok, stderr) = sluice(&["audit", "--file", "/nonexistent/audit.jsonl"]);
    assert!(!ok && stderr.contains("/nonexistent/audit.jsonl") && stderr.contains("--file"), "{stderr}");
}
