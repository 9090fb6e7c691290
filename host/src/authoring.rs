//! For template authors: `sluice new` (a crate that builds and whose test passes, outside this
//! repository) and `sluice build` (the component, checked before and after the compiler runs).
//!
//! Why the checks live here and not in the author's head: the mistakes that cost a newcomer an
//! afternoon are silent or cryptic by the time they surface — a crate without `cdylib` builds
//! an `.rlib` and no `.wasm`, a missing SDK feature fails only the wasm build, a crate built
//! without the embedded manifest loads nowhere. Each is caught before `cargo` runs, or right
//! after, with the line to add.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The wasm target templates are built for.
pub const TARGET: &str = "wasm32-wasip2";

/// What `sluice new` and `sluice build` refuse, each naming the fix.
#[derive(Debug, thiserror::Error)]
pub enum AuthoringError {
    /// The name is not usable as a package and template name.
    #[error("`{0}` is not a template name: use lowercase letters, digits and `-`, starting with a letter (e.g. `slack-tag`)")]
    BadName(String),
    /// `sluice new` would overwrite something.
    #[error("{0} already exists: choose another name or --dir")]
    Exists(PathBuf),
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The crate's `Cargo.toml` is not one a template can be built from.
    #[error("{path}: {problem}")]
    Manifest {
        /// The `Cargo.toml`.
        path: PathBuf,
        /// What is wrong and what to write instead.
        problem: String,
    },
    /// `cargo` could not be started or failed.
    #[error("{0}")]
    Cargo(String),
}

/// A client or a tag.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TemplateKind {
    /// Claims requests and turns them into events.
    Client,
    /// Receives events and delivers them.
    Tag,
}

impl TemplateKind {
    fn feature(self) -> &'static str {
        match self {
            TemplateKind::Client => "client",
            TemplateKind::Tag => "tag",
        }
    }
}

/// Where the new crate gets `sluice-sdk` from.
#[derive(Debug, Clone)]
pub enum SdkSource {
    /// A checkout's `sdk/` directory.
    Path(PathBuf),
    /// A git repository holding the workspace.
    Git(String),
}

impl SdkSource {
    /// The repository the SDK is developed in (`Cargo.toml`'s `repository`).
    pub fn upstream() -> SdkSource {
        SdkSource::Git(env!("CARGO_PKG_REPOSITORY").to_string())
    }

    fn dependency(&self, feature: &str) -> String {
        let source = match self {
            SdkSource::Path(p) => format!("path = {}", toml_string(&p.display().to_string())),
            SdkSource::Git(url) => format!("git = {}", toml_string(url)),
        };
        format!("sluice-sdk = {{ {source}, features = [\"{feature}\"] }}")
    }
}

/// Creates `dir/name/` holding a template crate of `kind`: `Cargo.toml` (a `cdylib`, the SDK
/// with the kind's feature, the small fast release profile), `rust-toolchain.toml` (the
/// toolchain and the wasm target), `.cargo/config.toml` (the bundled templates' initial
/// memory), `src/lib.rs` (a working template with a mock-host test) and a `README.md`. Returns the crate's directory.
pub fn create(kind: TemplateKind, name: &str, dir: &Path, sdk: &SdkSource) -> Result<PathBuf, AuthoringError> {
    if !valid_name(name) {
        return Err(AuthoringError::BadName(name.to_string()));
    }
    let root = dir.join(name);
    if root.exists() {
        return Err(AuthoringError::Exists(root));
    }
    let fill = |text: &str| {
        text.replace("__NAME__", name)
            .replace("__TYPE__", &camel_case(name))
            .replace("__SDK__", &sdk.dependency(kind.feature()))
            .replace("__KIND__", kind.feature())
    };
    let lib = match kind {
        TemplateKind::Client => CLIENT_LIB,
        TemplateKind::Tag => TAG_LIB,
    };
    let files = [
        ("Cargo.toml", CARGO_TOML),
        ("rust-toolchain.toml", TOOLCHAIN),
        (".cargo/config.toml", CARGO_CONFIG),
        ("src/lib.rs", lib),
        ("README.md", README),
        (".gitignore", "/target\n"),
    ];
    for (file, text) in files {
        let path = root.join(file);
        let io = |source| AuthoringError::Io { path: path.clone(), source };
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(io)?;
        }
        std::fs::write(&path, fill(text)).map_err(io)?;
    }
    Ok(root)
}

/// Checks the crate in `dir`, builds it for [`TARGET`] in release, and returns the `.wasm`.
/// The caller checks the result loads ([`crate::template::read_declaration`]).
pub fn build(dir: &Path) -> Result<PathBuf, AuthoringError> {
    let manifest_path = dir.join("Cargo.toml");
    let package = check_crate(&manifest_path)?;
    let status = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .current_dir(dir)
        .args(["build", "--release", "--target", TARGET])
        .status()
        .map_err(|e| AuthoringError::Cargo(format!("cannot run cargo: {e}")))?;
    if !status.success() {
        return Err(AuthoringError::Cargo(format!(
            "cargo build --release --target {TARGET} failed (the compiler's errors are above). \
             If the target is missing: rustup target add {TARGET}"
        )));
    }
    let artifact = target_dir(dir)?.join(TARGET).join("release").join(format!("{}.wasm", package.replace('-', "_")));
    if !artifact.is_file() {
        return Err(AuthoringError::Cargo(format!("the build finished but {} is missing", artifact.display())));
    }
    Ok(artifact)
}

/// The package name, if `Cargo.toml` describes a crate a template can be built from.
fn check_crate(path: &Path) -> Result<String, AuthoringError> {
    let text = std::fs::read_to_string(path).map_err(|source| AuthoringError::Io { path: path.to_path_buf(), source })?;
    let problem = |problem: String| AuthoringError::Manifest { path: path.to_path_buf(), problem };
    let doc: toml::Table = text.parse().map_err(|e| problem(format!("not valid TOML: {e}")))?;
    let package = doc
        .get("package")
        .and_then(|p| p.get("name"))
        .and_then(toml::Value::as_str)
        .ok_or_else(|| problem("no [package] name: a template is a package (run `sluice new tag NAME` for one)".into()))?;
    let crate_types: Vec<&str> = doc
        .get("lib")
        .and_then(|l| l.get("crate-type"))
        .and_then(toml::Value::as_array)
        .map(|a| a.iter().filter_map(toml::Value::as_str).collect())
        .unwrap_or_default();
    if !crate_types.contains(&"cdylib") {
        return Err(problem(
            "the library is not a `cdylib`, so the build makes no .wasm component: add\n  [lib]\n  crate-type = [\"cdylib\", \"rlib\"]\n(`rlib` keeps `cargo test` working)".into(),
        ));
    }
    let sdk = doc.get("dependencies").and_then(|d| d.get("sluice-sdk"));
    let Some(sdk) = sdk else {
        return Err(problem("no `sluice-sdk` dependency: add sluice-sdk = { ..., features = [\"tag\"] } (or \"client\")".into()));
    };
    let features: Vec<&str> = sdk
        .get("features")
        .and_then(toml::Value::as_array)
        .map(|a| a.iter().filter_map(toml::Value::as_str).collect())
        .unwrap_or_default();
    match (features.contains(&"client"), features.contains(&"tag")) {
        (true, true) => Err(problem("sluice-sdk has both the `client` and the `tag` feature: a template is one or the other; keep the one its export macro needs".into())),
        (false, false) => Err(problem(
            "sluice-sdk has neither the `client` nor the `tag` feature, so there is no world to export: add features = [\"tag\"] (for export_tag!) or [\"client\"] (for export_client!) to the sluice-sdk dependency".into(),
        )),
        _ => Ok(package.to_string()),
    }
}

/// Where cargo puts the crate's build (honours `CARGO_TARGET_DIR` and `.cargo/config.toml`).
fn target_dir(dir: &Path) -> Result<PathBuf, AuthoringError> {
    let out = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .current_dir(dir)
        .args(["metadata", "--format-version", "1", "--no-deps"])
        .output()
        .map_err(|e| AuthoringError::Cargo(format!("cannot run cargo metadata: {e}")))?;
    let meta: serde_json::Value = serde_json::from_slice(&out.stdout)
        .map_err(|e| AuthoringError::Cargo(format!("cargo metadata printed no JSON ({e}): {}", String::from_utf8_lossy(&out.stderr))))?;
    meta["target_directory"]
        .as_str()
        .map(PathBuf::from)
        .ok_or_else(|| AuthoringError::Cargo("cargo metadata did not say where the target directory is".into()))
}

fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_lowercase())
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !name.ends_with('-')
        && name.len() <= 64
}

fn camel_case(name: &str) -> String {
    name.split('-')
        .map(|part| {
            let mut chars = part.chars();
            chars.next().map(|c| c.to_ascii_uppercase().to_string() + chars.as_str()).unwrap_or_default()
        })
        .collect()
}

fn toml_string(s: &str) -> String {
    toml::Value::String(s.to_string()).to_string()
}

const CARGO_TOML: &str = r#"[package]
name = "__NAME__"
version = "0.1.0"
edition = "2024"
publish = false

# A template is a library the host loads as a WebAssembly component: `cdylib` makes the
# .wasm, `rlib` lets `cargo test` link it against the SDK's mock host.
[lib]
crate-type = ["cdylib", "rlib"]

[dependencies]
__SDK__

# What the bundled templates use: fast first (opt-level 3), then small.
[profile.release]
opt-level = 3
lto = true
codegen-units = 1
strip = true
debug = false
panic = "abort"

# Its own workspace, so it builds wherever it is created.
[workspace]
"#;

const TOOLCHAIN: &str = r#"# The toolchain the SDK is tested with, and the target templates are built for.
[toolchain]
channel = "1.95.0"
targets = ["wasm32-wasip2"]
"#;

const CARGO_CONFIG: &str = r#"# 4 MiB of initial memory, as the bundled templates have: a template that never grows its
# memory saves the host two mprotect calls per run.
[target.wasm32-wasip2]
rustflags = ["-C", "link-arg=--initial-memory=4194304"]
"#;

const TAG_LIB: &str = r#"//! __NAME__: a Sluice tag that POSTs each event's name to the `endpoint` parameter.

use sluice_sdk::prelude::*;
use sluice_sdk::{Delivery, Error, HttpRequest, Kind, Manifest, Parameter, Permissions, Tag, TagHost, json};

/// The tag.
pub struct __TYPE__;

impl Tag for __TYPE__ {
    const MANIFEST: Manifest = Manifest {
        kind: Kind::Tag,
        name: "__NAME__",
        version: env!("CARGO_PKG_VERSION"),
        description: "POSTs each event's name to a URL.",
        // What it asks for; the operator's grant can only narrow it. `{endpoint}`: exactly the
        // URL the parameter names, so `sluice inspect` and `sluice check` show the real host.
        permissions: Permissions { event_data: &["event_name"], outbound: &["{endpoint}"], ..Permissions::NONE },
        consent: &[],
        parameters: &[Parameter::required("endpoint", "Where to POST the events.")],
        delivery: Delivery::IN_REQUEST,
    };

    fn fire(host: &TagHost) -> Result<(), Error> {
        let endpoint = host.config().require_str("endpoint")?;
        // Nothing to send is not a failure: the log line and the trace say `skipped: <why>`.
        let name = host.event().get_str("event_name")?.ok_or_else(|| Error::skipped("the event has no event_name"))?;
        host.http().send(&HttpRequest::post(endpoint).json(&json!({ "event": name })))?.error_for_status()?;
        Ok(())
    }
}

sluice_sdk::export_tag!(__TYPE__);

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_sdk::mock::MockHost;
    use sluice_sdk::{HttpResponse, PermissionSet, Value};

    #[test]
    fn posts_the_event_name() {
        let grant = PermissionSet { event_data: vec!["event_name".into()], outbound: vec!["https://hooks.example.com/".into()], ..Default::default() };
        let mut mock = MockHost::new()
            .event(json!({ "event_name": "purchase", "value": 30 }))
            .param("endpoint", "https://hooks.example.com/in")
            .grant(grant)
            .stub("https://hooks.example.com/", HttpResponse::new(204, ""));
        mock.run_tag::<__TYPE__>().expect("fires");
        let sent = &mock.sent()[0];
        assert_eq!(sent.url, "https://hooks.example.com/in");
        let body: Value = sluice_sdk::json::from_slice(&sent.body).expect("a JSON body");
        assert_eq!(body, json!({ "event": "purchase" }));
    }
}
"#;

const CLIENT_LIB: &str = r#"//! __NAME__: a Sluice client that claims `GET /collect?en=NAME` and makes one event of it.

use sluice_sdk::prelude::*;
use sluice_sdk::{Claim, Client, Error, Host, Kind, Manifest, Permissions, json};

/// The client.
pub struct __TYPE__;

impl Client for __TYPE__ {
    const MANIFEST: Manifest = Manifest {
        kind: Kind::Client,
        name: "__NAME__",
        version: env!("CARGO_PKG_VERSION"),
        description: "Claims GET /collect?en=NAME as one event.",
        permissions: Permissions { query: true, ..Permissions::NONE },
        consent: &[],
        parameters: &[],
        delivery: sluice_sdk::Delivery::IN_REQUEST,
    };

    fn run(host: &Host) -> Result<Claim, Error> {
        let request = host.request();
        if request.method() != "GET" || request.path() != "/collect" {
            return Ok(Claim::Pass);
        }
        let Some(name) = request.query_param("en")? else {
            host.response().set_status(400)?;
            return Ok(Claim::Claimed(Vec::new()));
        };
        host.response().set_status(204)?;
        Ok(Claim::Claimed(vec![json!({ "event_name": name })]))
    }
}

sluice_sdk::export_client!(__TYPE__);

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_sdk::mock::MockHost;

    #[test]
    fn claims_collect_and_names_the_event() {
        let mut mock = MockHost::new().method("GET").path("/collect").query("en=sign_up");
        match mock.run_client::<__TYPE__>().expect("runs") {
            Claim::Claimed(events) => assert_eq!(events, vec![json!({ "event_name": "sign_up" })]),
            Claim::Pass => panic!("did not claim /collect"),
        }
        assert_eq!(mock.response().status, Some(204));
    }
}
"#;

const README: &str = r#"# __NAME__

A Sluice __KIND__ template.

* Test it against the SDK's mock host: `cargo test`
* Build the component: `sluice build` (prints where the `.wasm` is)
* See what it declares: `sluice inspect target/wasm32-wasip2/release/<crate>.wasm`
* Run it: add it to a container config (`[[__KIND__]]` with `name`, `wasm` and `grants`), then
  `sluice check --config sluice.toml` and `sluice serve --config sluice.toml`
"#;

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("sluice-authoring-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("scratch dir");
        dir
    }

    #[test]
    fn names_are_package_names() {
        assert!(valid_name("slack-tag") && valid_name("a1"));
        for bad in ["", "Slack", "1tag", "slack_tag", "slack-", "a b", "../x"] {
            assert!(!valid_name(bad), "{bad}");
        }
        assert_eq!(camel_case("slack-notify-tag"), "SlackNotifyTag");
    }

    #[test]
    fn a_new_crate_passes_the_checks_and_refuses_to_be_overwritten() {
        let dir = scratch("new");
        let root = create(TemplateKind::Tag, "slack-tag", &dir, &SdkSource::Path("/x/sdk".into())).expect("created");
        assert_eq!(check_crate(&root.join("Cargo.toml")).expect("checks pass"), "slack-tag");
        let lib = std::fs::read_to_string(root.join("src/lib.rs")).expect("lib.rs");
        assert!(lib.contains("export_tag!(SlackTag)") && !lib.contains("__"), "{lib}");
        let cargo = std::fs::read_to_string(root.join("Cargo.toml")).expect("Cargo.toml");
        assert!(cargo.contains(r#"sluice-sdk = { path = "/x/sdk", features = ["tag"] }"#), "{cargo}");
        assert!(matches!(create(TemplateKind::Tag, "slack-tag", &dir, &SdkSource::upstream()), Err(AuthoringError::Exists(_))));
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn each_crate_mistake_names_its_fix() {
        let dir = scratch("mistakes");
        let path = dir.join("Cargo.toml");
        let check = |text: &str| {
            std::fs::write(&path, text).expect("write");
            check_crate(&path).expect_err("refused").to_string()
        };
        let no_cdylib = check("[package]\nname = \"t\"\n[dependencies]\nsluice-sdk = { path = \"x\", features = [\"tag\"] }\n");
        assert!(no_cdylib.contains("not a `cdylib`") && no_cdylib.contains(r#"crate-type = ["cdylib", "rlib"]"#), "{no_cdylib}");
        let no_feature = check("[package]\nname = \"t\"\n[lib]\ncrate-type = [\"cdylib\"]\n[dependencies]\nsluice-sdk = { path = \"x\" }\n");
        assert!(no_feature.contains("neither the `client` nor the `tag` feature") && no_feature.contains(r#"features = ["tag"]"#), "{no_feature}");
        let both = check("[package]\nname = \"t\"\n[lib]\ncrate-type = [\"cdylib\"]\n[dependencies]\nsluice-sdk = { path = \"x\", features = [\"tag\", \"client\"] }\n");
        assert!(both.contains("one or the other"), "{both}");
        let no_sdk = check("[package]\nname = \"t\"\n[lib]\ncrate-type = [\"cdylib\"]\n");
        assert!(no_sdk.contains("no `sluice-sdk` dependency"), "{no_sdk}");
        let _ = std::fs::remove_dir_all(dir);
    }
}
