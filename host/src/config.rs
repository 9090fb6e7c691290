//! The container config: the one TOML file an operator writes.
//!
//! ```toml
//! listen = "0.0.0.0:8080"
//!
//! [limits]              # per template invocation
//! cpu_ms = 50           # guest CPU time (time spent waiting on outbound HTTP not counted)
//! wall_ms = 10000       # whole invocation, outbound waits included
//! memory_mb = 64
//! max_concurrent = 256  # invocations in flight per pool (requests; deliveries); beyond that they wait
//!
//! [outbox]             # durable delivery queues, one per tag (see crate::delivery)
//! commit_ms = 5         # group commit window: at most this much is lost on SIGKILL
//! sync_ms = 100         # fsync window: at most this (plus commit_ms) is lost on power loss
//! quota_mb = 256        # per tag
//!
//! [outbound]
//! timeout_ms = 5000
//! max_response_bytes = 1048576
//! allow_http = []       # origins that may be reached over plain http (test servers)
//! allow_private = []    # CIDRs exempt from the private-address guard, e.g. "127.0.0.1/32"
//!
//! [[client]]
//! name = "collect"
//! wasm = "templates/json_collect_client.wasm"   # relative to this file
//! priority = 10
//! grants = { body = true, response_headers = ["content-type"] }
//!
//! [[tag]]
//! name = "webhook"
//! wasm = "templates/webhook_tag.wasm"
//! trigger = { events = ["purchase"], conditions = [{ key = "currency", equals = "EUR" }] }
//! params = { url = "https://hooks.example.com/in", token = "${HOOK_TOKEN}" }
//! grants = { event_data = ["*"], outbound = ["https://hooks.example.com/"] }
//! delivery = { max_items = 100, max_wait_ms = 1000, concurrency = 2 }
//! ```
//!
//! Unknown keys are errors (a misspelt grant must not silently grant nothing), and every error
//! names the file, the entry and what to change.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_json::Value;
use sluice_manifest::{PermissionSet, Purpose};
use sluice_policy::claim::{EventCaps, PARSE_FACTOR};
use sluice_policy::consent::ConsentConfig;
pub use sluice_policy::params::Param;

use crate::error::ConfigError;
pub use crate::delivery::{OutboxConfig, TagDeliveryConfig};
pub use crate::limits::Limits;
pub use crate::outbound::OutboundConfig;
pub use crate::trigger::{Condition, Trigger};

/// A parsed, validated container config.
#[derive(Debug, Clone)]
pub struct ContainerConfig {
    /// The file it came from (for messages).
    pub path: PathBuf,
    /// Address to listen on.
    pub listen: SocketAddr,
    /// Per-invocation limits.
    pub limits: Limits,
    /// Outbound network policy.
    pub outbound: OutboundConfig,
    /// Incoming-request handling.
    pub server: ServerConfig,
    /// Consent sources, defaults, stripping and the audit sink.
    pub consent: ConsentConfig,
    /// The delivery queues.
    pub outbox: OutboxConfig,
    /// Where the queues live (`[outbox] dir`, or beside the config file).
    pub outbox_dir: PathBuf,
    /// The admin listener (preview UI, `/metrics`, reload), when configured.
    pub admin: Option<crate::admin::AdminConfig>,
    /// Clients, in file order.
    pub clients: Vec<ClientConfig>,
    /// Tags, in file order.
    pub tags: Vec<TagConfig>,
}

/// How incoming requests are read.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerConfig {
    /// Largest request body accepted (GA4 itself caps hits at about 130 kB).
    pub max_body_bytes: usize,
    /// How many reverse proxies in front of Sluice append to `X-Forwarded-For`. 0: the
    /// visitor's IP is the connection's peer. N: it is the entry N places from the right,
    /// the address the outermost trusted proxy saw; entries left of it are what the visitor
    /// (or an untrusted hop) wrote, so they are never used.
    pub trusted_proxies: usize,
    /// Replaced by `trusted_proxies`; kept only to say so when an old config sets it.
    trust_forwarded_for: Option<bool>,
    /// Time to receive a request's headers, and then its body, in milliseconds. A client that
    /// trickles bytes slower is cut off (408 for a body), so idle connections cannot pile up.
    pub read_timeout_ms: u64,
    /// Most events one request may turn into; the rest are dropped and the drop logged. A
    /// batched GA4 hit carries one event per body line, so without a cap one 256 kB request of
    /// short lines would become tens of thousands of events, each running every matching tag
    /// and calling vendors: an amplifier for anyone on the internet.
    pub max_events_per_request: usize,
    /// Most bytes of event JSON the claiming client may return for one request, all events
    /// together. The host parses them outside the client's sandbox, and parsed JSON takes up
    /// to [`PARSE_FACTOR`] times its text, so this must stay within `[limits] memory_mb`
    /// divided by that factor: parsing is charged to the client's memory budget. Unset: 1 MiB,
    /// or that bound if it is lower ([`Self::event_bytes`]).
    pub max_event_bytes: Option<usize>,
}

impl ServerConfig {
    /// Load-time validation, against the limits the events are charged to.
    pub fn validate(&self, limits: &Limits) -> Result<(), String> {
        if let Some(trust) = self.trust_forwarded_for {
            let hint = if trust { "trusted_proxies = 1 behind one proxy that appends to X-Forwarded-For (2 behind two, ...)" } else { "trusted_proxies = 0, the default" };
            return Err(format!("trust_forwarded_for was replaced by trusted_proxies: write {hint}"));
        }
        let most = limits.memory_bytes() / PARSE_FACTOR;
        if self.max_event_bytes.is_some_and(|n| n == 0 || n > most) {
            return Err(format!(
                "max_event_bytes must be between 1 and {most} ([limits] memory_mb / {PARSE_FACTOR}: parsed events are charged to the client's memory); raise memory_mb or lower max_event_bytes"
            ));
        }
        Ok(())
    }

    /// The cap on one request's event JSON, in bytes: `max_event_bytes`, or by default 1 MiB
    /// within the client's memory budget.
    pub fn event_bytes(&self, limits: &Limits) -> usize {
        self.max_event_bytes.unwrap_or(EventCaps::default().max_bytes.min(limits.memory_bytes() / PARSE_FACTOR))
    }

    /// [`Self::read_timeout_ms`] as a duration.
    pub fn read_timeout(&self) -> std::time::Duration {
        std::time::Duration::from_millis(self.read_timeout_ms)
    }
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            max_body_bytes: 256 * 1024,
            trusted_proxies: 0,
            trust_forwarded_for: None,
            read_timeout_ms: 10_000,
            max_events_per_request: EventCaps::default().max_events,
            max_event_bytes: None,
        }
    }
}

/// Fields common to clients and tags.
#[derive(Debug, Clone)]
pub struct TemplateConfig {
    /// Unique name of this instance.
    pub name: String,
    /// Resolved path of the `.wasm`.
    pub wasm: PathBuf,
    /// Higher runs first.
    pub priority: i32,
    /// Parameters, `${ENV}` references resolved.
    pub params: Vec<(String, Param)>,
    /// The operator's grant.
    pub grants: PermissionSet,
    /// Outbound requests are checked as usual, then recorded (shown in the preview) instead
    /// of sent, and answered `200 {}`: a destination to try a container without a vendor.
    pub record_only: bool,
}

/// A client entry.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// Name, wasm, priority, params, grants.
    pub template: TemplateConfig,
    /// Answer the browser as soon as the client has claimed, and run the tags afterwards
    /// (tags can then no longer set cookies).
    pub respond_before_tags: bool,
}

/// A tag entry.
#[derive(Debug, Clone)]
pub struct TagConfig {
    /// Name, wasm, priority, params, grants.
    pub template: TemplateConfig,
    /// When it fires.
    pub trigger: Trigger,
    /// Consent purposes it needs; `None` takes the template's declared default.
    pub consent: Option<Vec<String>>,
    /// The operator's narrowing of its batch limits.
    pub delivery: TagDeliveryConfig,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    #[serde(default = "default_listen")]
    listen: SocketAddr,
    #[serde(default)]
    limits: Limits,
    #[serde(default)]
    outbound: OutboundConfig,
    #[serde(default)]
    server: ServerConfig,
    #[serde(default)]
    consent: ConsentConfig,
    #[serde(default)]
    outbox: OutboxConfig,
    admin: Option<crate::admin::RawAdmin>,
    #[serde(default, rename = "client")]
    clients: Vec<RawClient>,
    #[serde(default, rename = "tag")]
    tags: Vec<RawTag>,
}

fn default_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 8080))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawClient {
    name: String,
    wasm: PathBuf,
    #[serde(default)]
    priority: i32,
    #[serde(default)]
    respond_before_tags: bool,
    #[serde(default)]
    params: toml::Table,
    #[serde(default)]
    record_only: bool,
    #[serde(default)]
    grants: PermissionSet,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTag {
    name: String,
    wasm: PathBuf,
    #[serde(default)]
    priority: i32,
    trigger: Trigger,
    consent: Option<Vec<String>>,
    #[serde(default)]
    params: toml::Table,
    #[serde(default)]
    record_only: bool,
    #[serde(default)]
    grants: PermissionSet,
    #[serde(default)]
    delivery: TagDeliveryConfig,
}

impl ContainerConfig {
    /// Reads and validates a config file, resolving `${ENV_VAR}` from the process environment.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| ConfigError::Read { file: path.to_path_buf(), error: e })?;
        Self::parse(&text, path, &|name| std::env::var(name).ok())
    }

    /// Parses config text. `path` locates relative `.wasm` paths and names the file in errors;
    /// `env` resolves `${ENV_VAR}` references.
    pub fn parse(text: &str, path: &Path, env: &dyn Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let file = path.to_path_buf();
        let raw: RawFile =
            toml::from_str(text).map_err(|e| ConfigError::Parse { file: file.clone(), message: e.to_string() })?;
        let base = path.parent().unwrap_or(Path::new("."));
        let entry_err = |entry: String, message: String| ConfigError::Entry { file: file.clone(), entry, message };

        // Each capability validates its own section.
        raw.limits.validate().map_err(|m| entry_err("[limits]".into(), m.to_string()))?;
        raw.server.validate(&raw.limits).map_err(|m| entry_err("[server]".into(), m))?;
        raw.outbound.rules().map_err(|e| entry_err("[outbound]".into(), e.to_string()))?;
        raw.outbox.validate().map_err(|m| entry_err("[outbox]".into(), m))?;

        let mut seen = std::collections::HashSet::new();
        let mut template = |kind: &str, name: String, wasm: PathBuf, priority, params: toml::Table, grants: PermissionSet, record_only: bool| {
            let entry = format!("{kind} {name:?}");
            if name.is_empty() || !seen.insert(name.clone()) {
                return Err(entry_err(entry, "names must be non-empty and unique across clients and tags".into()));
            }
            grants.validate().map_err(|e| entry_err(entry.clone(), format!("grants: {e}")))?;
            let params = params
                .into_iter()
                .map(|(key, value)| {
                    let param = resolve_param(value, env)
                        .map_err(|m| entry_err(entry.clone(), format!("params.{key}: {m}")))?;
                    Ok((key, param))
                })
                .collect::<Result<Vec<_>, ConfigError>>()?;
            Ok(TemplateConfig { name, wasm: base.join(wasm), priority, params, grants, record_only })
        };

        let clients = raw
            .clients
            .into_iter()
            .map(|c| {
                Ok(ClientConfig {
                    template: template("client", c.name, c.wasm, c.priority, c.params, c.grants, c.record_only)?,
                    respond_before_tags: c.respond_before_tags,
                })
            })
            .collect::<Result<Vec<_>, ConfigError>>()?;
        let tags = raw
            .tags
            .into_iter()
            .map(|t| {
                let entry = format!("tag {:?}", t.name);
                t.trigger.validate().map_err(|m| entry_err(entry.clone(), format!("trigger: {m}")))?;
                if let Some(bad) = t.consent.iter().flatten().find(|p| Purpose::named(p).is_none()) {
                    return Err(entry_err(entry, format!("consent purpose {bad:?} is unknown: use one of {}", Purpose::all_names())));
                }
                Ok(TagConfig {
                    template: template("tag", t.name, t.wasm, t.priority, t.params, t.grants, t.record_only)?,
                    trigger: t.trigger,
                    consent: t.consent,
                    delivery: t.delivery,
                })
            })
            .collect::<Result<Vec<_>, ConfigError>>()?;
        if clients.is_empty() {
            return Err(entry_err("[[client]]".into(), "no client is configured, so every request would get 400: add at least one [[client]]".into()));
        }

        let admin = raw
            .admin
            .map(|a| crate::admin::AdminConfig::new(a, raw.listen, &|v| resolve_param(v, env)))
            .transpose()
            .map_err(|m| entry_err("[admin]".into(), m))?;
        let outbox_dir = base.join(raw.outbox.dir_for(&file));
        Ok(ContainerConfig {
            outbox_dir,
            outbox: raw.outbox,
            path: file,
            listen: raw.listen,
            limits: raw.limits,
            outbound: raw.outbound,
            server: raw.server,
            consent: raw.consent,
            admin,
            clients,
            tags,
        })
    }
}

impl ContainerConfig {
    /// Offline access to this container's delivery queues (`sluice outbox`).
    pub fn outboxes(&self) -> crate::delivery::OutboxDir {
        let templates = self.clients.iter().map(|c| &c.template).chain(self.tags.iter().map(|t| &t.template));
        let secrets: Vec<(&str, Vec<String>)> =
            templates.map(|t| (t.name.as_str(), t.params.iter().flat_map(|(_, p)| p.secrets.iter().cloned()).collect())).collect();
        crate::delivery::OutboxDir::new(&self.outbox_dir, &self.outbox, &self.consent, secrets.iter().map(|(n, s)| (*n, s.as_slice())))
    }
}

/// Converts a TOML value to JSON, replacing `${ENV_VAR}` references in strings; the values
/// substituted are the parameter's secrets.
fn resolve_param(value: toml::Value, env: &dyn Fn(&str) -> Option<String>) -> Result<Param, String> {
    let mut secrets = Vec::new();
    let value = to_json(value, env, &mut secrets)?;
    Ok(Param { value, secrets })
}

fn to_json(value: toml::Value, env: &dyn Fn(&str) -> Option<String>, secrets: &mut Vec<String>) -> Result<Value, String> {
    Ok(match value {
        toml::Value::String(s) => Value::String(expand(&s, env, secrets)?),
        toml::Value::Integer(i) => Value::from(i),
        toml::Value::Float(f) => serde_json::Number::from_f64(f).map(Value::Number).unwrap_or(Value::Null),
        toml::Value::Boolean(b) => Value::Bool(b),
        toml::Value::Datetime(d) => Value::String(d.to_string()),
        toml::Value::Array(items) => {
            Value::Array(items.into_iter().map(|v| to_json(v, env, secrets)).collect::<Result<_, _>>()?)
        }
        toml::Value::Table(t) => Value::Object(
            t.into_iter().map(|(k, v)| Ok((k, to_json(v, env, secrets)?))).collect::<Result<_, String>>()?,
        ),
    })
}

/// Replaces each `${NAME}` with the environment variable's value, recording it as a secret.
fn expand(s: &str, env: &dyn Fn(&str) -> Option<String>, secrets: &mut Vec<String>) -> Result<String, String> {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some((before, after)) = rest.split_once("${") {
        out.push_str(before);
        let (name, tail) = after.split_once('}').ok_or_else(|| format!("unclosed \"${{\" in {s:?}: write ${{ENV_VAR}}"))?;
        if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
            return Err(format!("{name:?} is not an environment variable name (letters, digits, _)"));
        }
        let value = env(name).ok_or_else(|| format!("environment variable {name} is not set: export it before starting sluice"))?;
        out.push_str(&value);
        secrets.push(value);
        rest = tail;
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<ContainerConfig, ConfigError> {
        let env = |name: &str| (name == "TOKEN").then(|| "t0ken".to_string());
        ContainerConfig::parse(text, Path::new("/etc/sluice/container.toml"), &env)
    }

    const MINIMAL: &str = r#"
        [[client]]
        name = "collect"
        wasm = "c.wasm"
    "#;

    #[test]
    fn relative_wasm_paths_resolve_against_the_config_file() {
        let c = parse(MINIMAL).expect("valid");
        assert_eq!(c.clients[0].template.wasm, PathBuf::from("/etc/sluice/c.wasm"));
        assert_eq!(c.listen, default_listen());
    }

    #[test]
    fn env_references_become_secret_params() {
        let c = parse(&format!("{MINIMAL}\nparams = {{ auth = \"Bearer ${{TOKEN}}\", plain = 3 }}")).expect("valid");
        let params = &c.clients[0].template.params;
        let auth = &params.iter().find(|(k, _)| k == "auth").expect("auth").1;
        assert_eq!(auth.value, Value::String("Bearer t0ken".into()));
        assert_eq!(auth.secrets, ["t0ken"], "the substituted value is the secret, wherever it is composed");
        assert_eq!(format!("{auth:?}"), "\"[secret]\"");
        assert!(!params.iter().find(|(k, _)| k == "plain").expect("plain").1.is_secret());
    }

    #[test]
    fn queues_live_beside_the_config_unless_configured() {
        let at = |text: &str, path: &str| ContainerConfig::parse(text, Path::new(path), &|_| None).expect("valid").outbox_dir;
        assert_eq!(at(MINIMAL, "conf/c.toml"), PathBuf::from("conf/c.toml.outbox"), "relative, once");
        assert_eq!(at(MINIMAL, "/etc/sluice/c.toml"), PathBuf::from("/etc/sluice/c.toml.outbox"));
        assert_eq!(at(&format!("[outbox]\ndir = \"q\"\n{MINIMAL}"), "conf/c.toml"), PathBuf::from("conf/q"));
        assert_eq!(at(&format!("[outbox]\ndir = \"/var/lib/sluice\"\n{MINIMAL}"), "conf/c.toml"), PathBuf::from("/var/lib/sluice"));
    }

    #[test]
    fn errors_name_the_file_the_entry_and_the_fix() {
        let msg = parse(&format!("{MINIMAL}\nparams = {{ auth = \"${{MISSING}}\" }}")).unwrap_err().to_string();
        assert!(msg.contains("container.toml") && msg.contains("client \"collect\"") && msg.contains("MISSING is not set"), "{msg}");

        let msg = parse(&format!("{MINIMAL}\ngrants = {{ request_header = [\"x\"] }}")).unwrap_err().to_string();
        assert!(msg.contains("unknown field `request_header`"), "{msg}");

        let msg = parse(&format!("{MINIMAL}\ngrants = {{ outbound = [\"graph.facebook.com\"] }}")).unwrap_err().to_string();
        assert!(msg.contains("client \"collect\"") && msg.contains("https://"), "{msg}");

        let msg = parse(&format!("{MINIMAL}\n[[client]]\nname = \"collect\"\nwasm = \"d.wasm\"")).unwrap_err().to_string();
        assert!(msg.contains("unique"), "{msg}");

        let msg = parse("listen = 5").unwrap_err().to_string();
        assert!(msg.contains("container.toml"), "{msg}");

        let msg = parse("").unwrap_err().to_string();
        assert!(msg.contains("add at least one [[client]]"), "{msg}");
    }
}
