//! Sluice: a server-side tag host.
//!
//! A site sends one first-party request; Sluice hands it to sandboxed *client* templates
//! (WebAssembly components) until one claims it and turns it into events, then runs the
//! matching *tag* templates, which deliver the events to vendors server to server. Every
//! template can do only what it declared and the operator granted.
//!
//! The public API is small: load a [`ContainerConfig`] into a [`Container`], hand it requests
//! ([`Container::handle`], or [`server::serve`] for HTTP), read what happened in the
//! [`RequestTrace`]. [`Live`] holds the container a reload swaps ([`server::serve_live`], and
//! [`server::serve_admin`] for the admin listener). [`output`] is the masked log subscriber the
//! binary installs.
//!
//! Inside, the modules follow the request and the capabilities (none imports another in a
//! circle):
//! * `config` (the container file) and `template` (loading and checking a `.wasm`);
//! * `pipeline`: the stages — load and validate, claim, consent gate and fan-out, invoke, respond;
//! * `engine` (the wasmtime sandbox) and `limits` (CPU budget, our own `ResourceLimiter`);
//! * `state` (what one invocation holds) and `services` (what all invocations share);
//! * `capabilities/`: one module per host interface a template can call;
//! * `delivery` (the durable outbox per tag, its workers, and `sluice outbox`'s view of it);
//! * `consent` (signals from HTTP, audit sink), `outbound` (the single egress choke point),
//!   `output` (the one masker), `trace`, `request` (the request and the response draft);
//! * `audit` (`sluice audit`: the consent audit's records summarised over a time window);
//! * operating it: `admin` (`[admin]`), `preview` (debug sessions, recorded requests),
//!   `metrics` (Prometheus), `reload` ([`Live`]), `server` (the public and admin front ends).
//!
//! The rules shared with the SDK's mock host live in `sluice-policy` and `sluice-manifest`.

// In tests a panic is the failure report; `unwrap_used` guards production code.
#![cfg_attr(test, allow(clippy::unwrap_used))]

#![deny(missing_docs)]

pub mod audit;
pub mod admin;
mod bindings;
mod capabilities;
pub mod authoring;
pub mod config;
mod consent;
pub mod delivery;
mod engine;
pub mod error;
mod limits;
pub mod metrics;
mod outbound;
pub mod output;
mod pipeline;
pub mod preview;
pub mod reload;
mod request;
pub mod server;
mod services;
mod state;
mod template;
pub mod testing;
pub mod trace;
mod trigger;

#[cfg(test)]
mod layout_test;

pub use config::ContainerConfig;
pub use engine::Runtime;
pub use error::{AuditOpenError, ConfigError, LoadError, TemplateError};
pub use pipeline::{Container, Warning};
pub use reload::Live;
pub use services::Telemetry;
pub use request::{RequestData, ResponseDraft};
pub use template::{Template, read_declaration};
pub use trace::{ClientRun, EventTrace, Outcome, Phases, RequestTrace, TagRun};

/// A JSON value as text, for a template. `serde_json::to_string` writes straight into a buffer;
/// `Value`'s `Display` goes through a formatter per fragment and is several times slower. A
/// `Value` always serialises (its map keys are strings); were it ever not to, `null` is sent.
pub(crate) fn json_text(value: &serde_json::Value) -> String {
    serde_json::to_string(value).unwrap_or_else(|_| "null".into())
}
