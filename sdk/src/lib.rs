//! Write Sluice templates in Rust.
//!
//! A template is a plain Rust library crate built with
//! `cargo build --release --target wasm32-wasip2`. It depends only on this crate (with the
//! `client` or the `tag` feature), implements [`Client`] or [`Tag`], and exports itself with
//! [`export_client!`] or [`export_tag!`]:
//!
//! ```
//! use sluice_sdk::prelude::*; // the host traits: host.config(), host.http(), ...
//! use sluice_sdk::{Delivery, Error, HttpRequest, Kind, Manifest, Parameter, Permissions, Tag, TagHost};
//!
//! pub struct Webhook;
//!
//! impl Tag for Webhook {
//!     const MANIFEST: Manifest = Manifest {
//!         kind: Kind::Tag,
//!         name: "webhook",
//!         version: env!("CARGO_PKG_VERSION"),
//!         description: "POSTs each event as JSON to a URL.",
//!         permissions: Permissions { event_data: &["*"], outbound: &["*"], ..Permissions::NONE },
//!         consent: &[],
//!         parameters: &[Parameter::required("url", "Where to send events.")],
//!         delivery: Delivery::IN_REQUEST,
//!     };
//!
//!     fn fire(host: &TagHost) -> Result<(), Error> {
//!         let url = host.config().require_str("url")?;
//!         let event = host.event().all()?;
//!         host.http().send(&HttpRequest::post(url).json(&event))?.error_for_status()?;
//!         Ok(())
//!     }
//! }
//!
//! sluice_sdk::export_tag!(Webhook);
//!
//! // Off wasm, the same code runs against the mock host:
//! use sluice_sdk::{mock::MockHost, HttpResponse, json};
//! let mut mock = MockHost::new()
//!     .event(json!({ "event_name": "purchase", "value": 30 }))
//!     .param("url", "https://hooks.example.com/in")
//!     .stub("https://hooks.example.com/", HttpResponse::new(204, ""));
//! mock.run_tag::<Webhook>().expect("fires");
//! assert_eq!(mock.sent()[0].url, "https://hooks.example.com/in");
//! ```
//!
//! The [`Manifest`] is the template's declaration: it is embedded in the `.wasm` (read by
//! `sluice inspect` and by the host at load) and the operator's grant can only narrow it.
//!
//! # Testing
//!
//! Off wasm, every host call goes to [`mock::MockHost`], which applies the host's own rules
//! (permissions from `sluice-manifest`; consent, personal data, parameters, egress, response,
//! storage and masking from `sluice-policy`). Set up a request or an event, consent, grants,
//! parameters and outbound stubs, run the template with `cargo test`, and assert on the
//! response, the outbound requests, the logs and the permission denials. For a tag with a
//! `deliver` phase, `run_tag` queues what the host would queue and
//! [`mock::MockHost::deliver_queued`] delivers it by the host's rules, against scripted vendor
//! answers ([`mock::MockHost::stub_sequence`]).

// In tests a panic is the failure report; `unwrap_used` guards production code.
#![cfg_attr(test, allow(clippy::unwrap_used))]

#![warn(missing_docs)]

extern crate self as sluice_sdk;

pub mod data;
mod error;
pub mod fields;
pub mod identity;
mod host;
mod sys;
mod types;

#[cfg(not(target_arch = "wasm32"))]
pub mod mock;

pub use error::{Denied, Error, UnlessDenied};
pub use host::{Config, Consent, DeliverHost, Event, Host, Http, InRequest, Log, Outbox, Request, Response, Selected, Services, Storage, TagHost};

/// The host traits and [`UnlessDenied`], for `use sluice_sdk::prelude::*`: their methods
/// (`host.http()`, `host.request()`, `.unless_denied()`) need them in scope.
pub mod prelude {
    pub use crate::{InRequest, Services, UnlessDenied};
}
pub use serde_json::{self as json, Value, json};
pub use sluice_manifest::{Batch, Delivery, IdCookie, Kind, Manifest, Parameter, PermissionSet, Permissions};
pub use types::{BatchFailure, Claim, ConsentStatus, Cookie, HttpRequest, HttpResponse, Item, ItemResult, Level, Prepared, Purpose, SameSite};

/// A client template: decides whether an incoming request is its own and turns it into events.
pub trait Client {
    /// The template's declaration (kind must be [`Kind::Client`]).
    const MANIFEST: Manifest;

    /// Looks at the current request. Return [`Claim::Pass`] to let the next client try, or
    /// [`Claim::Claimed`] with the events for the tags ([`Claim::ClaimedJson`] when they are
    /// already written as JSON text); set the response through `host`.
    fn run(host: &Host) -> Result<Claim, Error>;
}

/// A tag template: delivers events, per event in the visitor's request ([`Tag::fire`]), in
/// batches from the host's durable outbox ([`Tag::deliver`]), or both. Its manifest's
/// [`Delivery`] says which the host calls; the other keeps its default.
pub trait Tag {
    /// The template's declaration (kind must be [`Kind::Tag`]).
    const MANIFEST: Manifest;

    /// Handles the current event, inside the visitor's request: read the request, set cookies,
    /// send, or queue items for [`Tag::deliver`] with [`Host::outbox`]. An error marks the tag
    /// as failed in the host's trace.
    fn fire(host: &TagHost) -> Result<(), Error> {
        let _ = host;
        Err(Error::Invalid("this tag has no fire phase (its manifest declares Delivery::batched)".into()))
    }

    /// Delivers a batch of queued items (at most the declared [`Batch`] limits), outside any
    /// request: one [`ItemResult`] per item, in order, or a [`BatchFailure`] for them all.
    fn deliver(host: &DeliverHost, batch: &[Item]) -> Result<Vec<ItemResult>, BatchFailure> {
        let _ = (host, batch);
        Err(BatchFailure::Reject("this tag has no deliver phase (its manifest declares no batch)".into()))
    }
}

/// Exports a [`Client`] implementation as the template's entry point and embeds its manifest.
#[macro_export]
macro_rules! export_client {
    ($ty:ty) => {
        $crate::__embed_manifest!(<$ty as $crate::Client>::MANIFEST);
        $crate::__client_glue!($ty);
    };
}

/// The client world's export glue; a compile error naming the fix when the SDK was built for
/// the tag world.
#[doc(hidden)]
#[cfg(any(feature = "client", not(target_arch = "wasm32")))]
#[macro_export]
macro_rules! __client_glue {
    ($ty:ty) => {
        #[cfg(target_arch = "wasm32")]
        const _: () = {
            struct __SluiceGlue;
            impl $crate::__private::bindings::Guest for __SluiceGlue {
                fn run() -> ::core::result::Result<
                    $crate::__private::bindings::Claim,
                    $crate::__private::bindings::sluice::template::types::Error,
                > {
                    $crate::__private::run_client::<$ty>()
                }
            }
            $crate::__private::bindings::__sluice_export!(__SluiceGlue with_types_in $crate::__private::bindings);
        };
    };
}

#[doc(hidden)]
#[cfg(all(not(feature = "client"), target_arch = "wasm32"))]
#[macro_export]
macro_rules! __client_glue {
    ($ty:ty) => {
        ::core::compile_error!(
            "export_client! needs sluice-sdk's `client` feature, and this build has the `tag` one: \
             in Cargo.toml write sluice-sdk = { ..., features = [\"client\"] }"
        );
    };
}

/// Exports a [`Tag`] implementation as the template's entry point and embeds its manifest.
#[macro_export]
macro_rules! export_tag {
    ($ty:ty) => {
        $crate::__embed_manifest!(<$ty as $crate::Tag>::MANIFEST);
        $crate::__tag_glue!($ty);
    };
}

/// The tag world's export glue; a compile error naming the fix when the SDK was built for the
/// client world.
#[doc(hidden)]
#[cfg(any(all(feature = "tag", not(feature = "client")), not(target_arch = "wasm32")))]
#[macro_export]
macro_rules! __tag_glue {
    ($ty:ty) => {
        #[cfg(target_arch = "wasm32")]
        const _: () = {
            struct __SluiceGlue;
            impl $crate::__private::bindings::Guest for __SluiceGlue {
                fn fire() -> ::core::result::Result<
                    $crate::__private::bindings::Fired,
                    $crate::__private::bindings::sluice::template::types::Error,
                > {
                    $crate::__private::run_tag::<$ty>()
                }
                fn deliver(
                    batch: ::std::vec::Vec<$crate::__private::bindings::sluice::template::delivery::Item>,
                ) -> ::core::result::Result<
                    ::std::vec::Vec<$crate::__private::bindings::sluice::template::delivery::ItemResult>,
                    $crate::__private::bindings::sluice::template::delivery::BatchFailure,
                > {
                    $crate::__private::run_deliver::<$ty>(batch)
                }
            }
            $crate::__private::bindings::__sluice_export!(__SluiceGlue with_types_in $crate::__private::bindings);
        };
    };
}

#[doc(hidden)]
#[cfg(all(not(all(feature = "tag", not(feature = "client"))), target_arch = "wasm32"))]
#[macro_export]
macro_rules! __tag_glue {
    ($ty:ty) => {
        ::core::compile_error!(
            "export_tag! needs sluice-sdk's `tag` feature (and not `client`): \
             in Cargo.toml write sluice-sdk = { ..., features = [\"tag\"] }"
        );
    };
}

// Without a feature there is no world to build a component against.
#[cfg(all(target_arch = "wasm32", not(any(feature = "client", feature = "tag"))))]
compile_error!(
    "sluice-sdk needs the `client` or the `tag` feature to build a template: in Cargo.toml write \
     sluice-sdk = { ..., features = [\"tag\"] } (for export_tag!) or [\"client\"] (for export_client!)"
);

/// Places a manifest's JSON in the `sluice-manifest` custom section of the `.wasm`.
#[doc(hidden)]
#[macro_export]
macro_rules! __embed_manifest {
    ($manifest:expr) => {
        #[cfg(target_arch = "wasm32")]
        const _: () = {
            const LEN: usize = $manifest.encoded_len();
            #[allow(unsafe_code)]
            #[unsafe(link_section = "sluice-manifest")]
            #[used]
            static MANIFEST: [u8; LEN] = $manifest.encode::<LEN>().bytes;
        };
    };
}

/// Implementation details of the export macros. Not a stable API.
#[doc(hidden)]
pub mod __private {
    #[cfg(target_arch = "wasm32")]
    pub use crate::sys::wasm::{bindings, run_client, run_deliver, run_tag};
    #[cfg(target_arch = "wasm32")]
    pub use wit_bindgen;
}
