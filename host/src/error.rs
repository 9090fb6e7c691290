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
    #[error("{entry}: {message}")]
    Template {
        /// Which entry (or file, for `inspect`).
        entry: String,
        /// What is wrong and how to fix it.
        message: String,
    },
    /// The wasm engine could not be set up.
    #[error("cannot set up the wasm engine: {0}")]
    Engine(String),
}
