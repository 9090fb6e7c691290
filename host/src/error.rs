//! The host library's error types. Each message names the thing and the fix.

use std::path::PathBuf;

/// The container config could not be read or is not valid.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The file could not be read.
    #[error("{}: cannot read the container config: {error}", file.display())]
    Read {
        /// The config file.
        file: PathBuf,
        /// The I/O error (in the message, not chained as a source, so it prints once).
        error: std::io::Error,
    },
    /// The file is not valid TOML, or has unknown or mistyped keys.
    #[error("{}: {message}", file.display())]
    Parse {
        /// The config file.
        file: PathBuf,
        /// The parser's message (with line and column).
        message: String,
    },
    /// One entry is not valid.
    #[error("{}: {entry}: {message}", file.display())]
    Entry {
        /// The config file.
        file: PathBuf,
        /// Which entry, e.g. `tag "meta"`.
        entry: String,
        /// What is wrong and how to fix it.
        message: String,
    },
}

/// A template could not be loaded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LoadError {
    /// The container config is not valid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The `.wasm` file could not be read.
    #[error("{entry}: cannot read {}: {error} (build the templates with `cargo xtask templates`, or fix the `wasm` path)", path.display())]
    ReadWasm {
        /// Which entry.
        entry: String,
        /// The file.
        path: PathBuf,
        /// The I/O error (in the message, not chained as a source, so it prints once).
        error: std::io::Error,
    },
    /// The file is not a Sluice template, or its manifest/params/grants do not fit the config.
    #[error("{entry}: {error}")]
    Template {
        /// Which entry, e.g. `tag "meta"`.
        entry: String,
        /// What is wrong and how to fix it.
        error: TemplateError,
    },
    /// The consent audit file cannot be opened.
    #[error(transparent)]
    Audit(#[from] AuditOpenError),
    /// The wasm engine could not be set up.
    #[error("cannot set up the wasm engine: {0}")]
    Engine(String),
}

/// What is wrong with one template (its file, its manifest, or how the config uses it).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TemplateError {
    /// Not a WebAssembly file, or a malformed one.
    #[error("{}: not a WebAssembly file: {reason}", file.display())]
    NotWasm {
        /// The file.
        file: PathBuf,
        /// The parser's message.
        reason: String,
    },
    /// No `sluice-manifest` custom section.
    #[error("{}: has no Sluice manifest: it was not built with sluice-sdk's export_client!/export_tag!", file.display())]
    NoManifest {
        /// The file.
        file: PathBuf,
    },
    /// The manifest does not decode or declares something invalid.
    #[error("{}: {source}", file.display())]
    Manifest {
        /// The file.
        file: PathBuf,
        /// Why.
        source: sluice_manifest::DeclarationError,
    },
    /// A client in a `[[tag]]` section, or the reverse.
    #[error("{} is a {actual} template ({name:?}); move it to the [[{actual}]] section", file.display())]
    WrongKind {
        /// The file.
        file: PathBuf,
        /// What it is.
        actual: sluice_manifest::Kind,
        /// Its declared name.
        name: String,
    },
    /// Its initial memory exceeds `[limits] memory_mb`.
    #[error("starts with {:.1} MiB of linear memory, more than [limits] memory_mb = {memory_mb}: raise memory_mb to at least {}", *initial as f64 / f64::from(1 << 20), initial.div_ceil(1 << 20))]
    InitialMemory {
        /// Bytes it starts with.
        initial: u64,
        /// The configured cap.
        memory_mb: u64,
    },
    /// A parameter problem.
    #[error(transparent)]
    Params(#[from] sluice_policy::params::ParamError),
    /// The operator's grant does not parse.
    #[error("template {template:?} declares an invalid permission: {source}")]
    Grant {
        /// The template's declared name.
        template: String,
        /// Why.
        source: sluice_manifest::DeclarationError,
    },
    /// The component does not compile.
    #[error("does not compile: {0}")]
    Compile(String),
    /// The component imports something the host does not provide.
    #[error("cannot be linked: {0}. Templates may import only the Sluice world and the WASI clocks, random, io and cli interfaces (no filesystem, no sockets)")]
    Link(String),
    /// Its delivery settings, or its outbox, are not usable.
    #[error("delivery: {0}")]
    Delivery(String),
}

/// The audit sink could not be opened.
#[derive(Debug, thiserror::Error)]
#[error("[consent] audit: cannot open the consent audit file {path}: {error} (fix the path, or set audit = \"stdout\" or \"off\")")]
pub struct AuditOpenError {
    /// The configured path.
    pub path: String,
    /// Why.
    pub error: std::io::Error,
}

