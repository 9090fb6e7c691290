//! Sluice: a server-side tag host.
//!
//! A site sends one first-party request; Sluice hands it to sandboxed *client* templates
//! (WebAssembly components) until one claims it and turns it into events, then runs the
//! matching *tag* templates, which deliver the events to vendors server to server. Every
//! template can do only what it declared and the operator granted.
//!
//! Where things are:
//! * [`config`]: the container file an operator writes;
//! * [`pipeline`]: the request pipeline (claim → events → tags → response);
//! * [`engine`]: the wasmtime sandbox (pooling, CPU and memory limits, minimal WASI);
//! * [`template`]: loading and checking a template `.wasm`;
//! * `capabilities/`: one module per host interface a template can call;
//! * [`outbound`]: the single egress choke point; [`consent`], [`storage`]: those capabilities'
//!   state; [`server`]: the hyper front end; [`trace`]: what happened to a request.

// In tests a panic is the failure report; `unwrap_used` guards production code.
#![cfg_attr(test, allow(clippy::unwrap_used))]

#![deny(missing_docs)]

pub mod bindings;
mod capabilities;
pub mod config;
pub mod consent;
pub mod engine;
pub mod error;
pub mod limits;
pub mod outbound;
pub mod output;
pub mod pipeline;
pub mod server;
pub mod services;
pub mod state;
pub mod template;
pub mod trace;
pub mod trigger;

pub use config::ContainerConfig;
pub use error::{ConfigError, LoadError};
pub use pipeline::Container;
pub use trace::{Outcome, RequestTrace};

/// A JSON value as text, for a template. `serde_json::to_string` writes straight into a buffer;
/// `Value`'s `Display` goes through a formatter per fragment and is several times slower. A
/// `Value` always serialises (its map keys are strings); were it ever not to, `null` is sent.
pub(crate) fn json_text(value: &serde_json::Value) -> String {
    serde_json::to_string(value).unwrap_or_else(|_| "null".into())
}
