//! Loading templates: read the manifest from the `.wasm`, check it against the container
//! config, compile once and pre-instantiate.
//!
//! Everything that can be decided before traffic arrives is decided here, so a mistake (a
//! template of the wrong kind, a misspelt parameter, a secret written in clear, a grant that
//! does not parse, a template importing the filesystem) stops the host at start with a message
//! naming the entry, instead of surfacing on some request later.

use std::collections::HashMap;
use std::path::Path;

use sluice_manifest::{Declaration, EffectiveGrant, Kind, MANIFEST_SECTION};
use wasmtime::component::Component;

use std::sync::Arc;

use sluice_policy::storage::TemplateStorage;

use crate::config::{Param, TemplateConfig};
use crate::error::{LoadError, TemplateError};

/// A loaded template instance: its declaration, effective grant and parameters.
pub struct Template {
    /// The instance name from the container config.
    pub name: String,
    /// Priority (higher runs first).
    pub priority: i32,
    /// What the `.wasm` declares.
    pub declaration: Declaration,
    /// Declared ∩ granted.
    pub grant: EffectiveGrant,
    /// Parameters, by name.
    pub params: HashMap<String, Param>,
    /// Its private storage (kept across a reload for the same template name).
    pub storage: Arc<TemplateStorage>,
    /// Its outbound requests are recorded, not sent (`record_only` in the config).
    pub record_only: bool,
}

impl Template {
    /// Every secret value in its parameters (for the output masker).
    pub fn secrets(&self) -> impl Iterator<Item = &str> {
        self.params.values().flat_map(|p| p.secrets.iter().map(String::as_str))
    }
}

/// Reads the manifest embedded in a template `.wasm` without compiling or running it; `file`
/// names it in errors.
pub fn read_declaration(file: &Path, bytes: &[u8]) -> Result<Declaration, TemplateError> {
    scan(file, bytes).map(|(declaration, _)| declaration)
}

/// Why a file without the WebAssembly magic is not a template, in words (not its bytes).
fn not_wasm_reason(bytes: &[u8]) -> String {
    if bytes.starts_with(b"!<arch>\n") {
        "it is a library archive (an .rlib), not a component: the crate needs `[lib] crate-type = [\"cdylib\", \"rlib\"]`, \
         and the component is target/wasm32-wasip2/release/<crate>.wasm (`sluice build` prints its path)"
            .into()
    } else if bytes.starts_with(b"\x7fELF") {
        "it is a native executable or library (ELF), not a component: build the template with `sluice build` \
         (cargo build --release --target wasm32-wasip2)"
            .into()
    } else {
        "it does not start with the WebAssembly magic bytes (\\0asm): give the .wasm that `sluice build` prints".into()
    }
}

/// One pass over a template's sections: its manifest, and the largest initial linear memory
/// among its core modules in bytes.
fn scan(file: &Path, bytes: &[u8]) -> Result<(Declaration, u64), TemplateError> {
    let not_wasm = |reason: String| TemplateError::NotWasm { file: file.to_path_buf(), reason };
    if !bytes.starts_with(b"\0asm") {
        return Err(not_wasm(not_wasm_reason(bytes)));
    }
    let mut manifest = None;
    let mut largest = 0u64;
    for payload in wasmparser::Parser::new(0).parse_all(bytes) {
        match payload.map_err(|e| not_wasm(e.to_string()))? {
            wasmparser::Payload::CustomSection(section) if section.name() == MANIFEST_SECTION && manifest.is_none() => {
                let declaration = Declaration::from_json(section.data())
                    .map_err(|source| TemplateError::Manifest { file: file.to_path_buf(), source })?;
                manifest = Some(declaration);
            }
            wasmparser::Payload::MemorySection(memories) => {
                for memory in memories {
                    let memory = memory.map_err(|e| not_wasm(format!("invalid memory section: {e}")))?;
                    let page = 1u64 << memory.page_size_log2.unwrap_or(16);
                    largest = largest.max(memory.initial.saturating_mul(page));
                }
            }
            _ => {}
        }
    }
    let declaration = manifest.ok_or_else(|| TemplateError::NoManifest { file: file.to_path_buf() })?;
    Ok((declaration, largest))
}

/// Components already compiled by an engine, by the SHA-256 of their bytes: a reload on the
/// same engine compiles only the templates whose files changed.
pub(crate) type Compiled = HashMap<[u8; 32], Component>;

/// Reads, checks and compiles one configured template (or takes it from `compiled` when the
/// same bytes were compiled before); returns it with its component and the bytes' digest.
pub(crate) fn load(
    compiled: &Compiled,
    engine: &wasmtime::Engine,
    memory_mb: u64,
    kind: Kind,
    cfg: &TemplateConfig,
) -> Result<(Template, Component, [u8; 32]), LoadError> {
    let entry = format!("{kind} {:?}", cfg.name);
    let bytes = std::fs::read(&cfg.wasm).map_err(|error| LoadError::ReadWasm {
        entry: entry.clone(),
        path: cfg.wasm.clone(),
        error,
    })?;
    let fail = |error: TemplateError| LoadError::Template { entry: entry.clone(), error };
    let (declaration, initial) = scan(&cfg.wasm, &bytes).map_err(fail)?;
    if declaration.kind != kind {
        return Err(fail(TemplateError::WrongKind { file: cfg.wasm.clone(), actual: declaration.kind, name: declaration.name }));
    }
    if initial > memory_mb.saturating_mul(1 << 20) {
        return Err(fail(TemplateError::InitialMemory { initial, memory_mb }));
    }
    let params = sluice_policy::params::check(&declaration, &cfg.params).map_err(|e| fail(e.into()))?;
    let grant_err = |source| fail(TemplateError::Grant { template: declaration.name.clone(), source });
    let declared = sluice_policy::params::resolved_permissions(&declaration, &params).map_err(grant_err)?;
    let grant = EffectiveGrant::new(kind, &declared, &cfg.grants).map_err(grant_err)?;
    let digest: [u8; 32] = {
        use sha2::Digest;
        sha2::Sha256::digest(&bytes).into()
    };
    let component = match compiled.get(&digest) {
        Some(component) => component.clone(),
        None => Component::new(engine, &bytes).map_err(|e| fail(TemplateError::Compile(e.to_string())))?,
    };
    let template = Template {
        name: cfg.name.clone(),
        priority: cfg.priority,
        declaration,
        grant,
        params,
        storage: Arc::default(),
        record_only: cfg.record_only,
    };
    Ok((template, component, digest))
}

/// `component`, compiled by the request pool's engine, loaded into `engine` (the delivery
/// pool's, configured to compile alike: `crate::engine`) without compiling it again.
#[allow(unsafe_code)]
pub(crate) fn copy_to(component: &Component, engine: &wasmtime::Engine) -> Result<Component, TemplateError> {
    let bytes = component.serialize().map_err(|e| TemplateError::Compile(e.to_string()))?;
    // SAFETY: `deserialize` trusts `bytes` to be machine code wasmtime produced, since it will
    // run it. They are: `serialize` just wrote them, in this process, from a component wasmtime
    // compiled. Wasmtime itself refuses (an error, not UB) an artifact from an engine that
    // compiles differently.
    let copy = unsafe { Component::deserialize(engine, &bytes) };
    copy.map_err(|e| TemplateError::Compile(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_that_is_not_a_component_is_named_in_words_with_the_fix() {
        let refused = |bytes: &[u8]| read_declaration(Path::new("t.wasm"), bytes).expect_err("not a template").to_string();
        let rlib = refused(b"!<arch>\n/               0           0     0     0       8         `\n\x00\x00\x00\x00");
        assert!(rlib.contains("an .rlib") && rlib.contains("crate-type = [\"cdylib\", \"rlib\"]"), "{rlib}");
        assert!(!rlib.contains("0x21"), "no raw bytes: {rlib}");
        assert!(refused(b"\x7fELF\x02\x01\x01").contains("native executable"));
        assert!(refused(b"hello").contains("magic bytes"));
        assert!(refused(b"").contains("magic bytes"));
    }
}
