//! Host-side bindings generated from `sdk/wit/sluice.wit`. The contract lives inside the SDK's
//! package, so a template built outside this repository compiles against the file the host
//! is built from.
//!
//! The tag world reuses the client world's generated interfaces (`with`), so each shared
//! interface has one Rust trait and the capability modules implement it once for both worlds.

#![allow(missing_docs)]

/// The `client` world.
pub mod client {
    wasmtime::component::bindgen!({
        world: "client",
        path: "../sdk/wit",
        imports: { default: async },
        exports: { default: async },
    });
}

/// The `tag` world.
pub mod tag {
    wasmtime::component::bindgen!({
        world: "tag",
        path: "../sdk/wit",
        imports: { default: async },
        exports: { default: async },
        with: {
            "sluice:template/types": super::client::sluice::template::types,
            "sluice:template/request": super::client::sluice::template::request,
            "sluice:template/response": super::client::sluice::template::response,
            "sluice:template/http": super::client::sluice::template::http,
            "sluice:template/outbox": super::client::sluice::template::outbox,
            "sluice:template/storage": super::client::sluice::template::storage,
            "sluice:template/log": super::client::sluice::template::log,
            "sluice:template/config": super::client::sluice::template::config,
        },
    });
}

pub use client::sluice::template::{config, http, log, outbox, request, response, storage, types};
pub use tag::sluice::template::{consent, delivery, event};
