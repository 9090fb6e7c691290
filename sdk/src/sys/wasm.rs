//! Host calls on wasm: the generated WIT bindings, converted to the SDK's types.

#[cfg(all(feature = "client", feature = "tag"))]
compile_error!(
    "a template is either a client or a tag: enable only one of sluice-sdk's `client` and `tag` features \
     (when building several templates for wasm, build them one `-p` at a time)"
);
#[cfg(not(any(feature = "client", feature = "tag")))]
compile_error!("enable sluice-sdk's `client` feature (for a client template) or `tag` feature (for a tag template)");

/// Bindings for the world this template is built against.
#[cfg(feature = "client")]
#[allow(missing_docs)]
pub mod bindings {
    wit_bindgen::generate!({
        world: "client",
        path: "wit",
        pub_export_macro: true,
        export_macro_name: "__sluice_export",
        default_bindings_module: "sluice_sdk::__private::bindings",
        runtime_path: "sluice_sdk::__private::wit_bindgen::rt",
    });
}

/// Bindings for the world this template is built against.
#[cfg(all(feature = "tag", not(feature = "client")))]
#[allow(missing_docs)]
pub mod bindings {
    wit_bindgen::generate!({
        world: "tag",
        path: "wit",
        pub_export_macro: true,
        export_macro_name: "__sluice_export",
        default_bindings_module: "sluice_sdk::__private::bindings",
        runtime_path: "sluice_sdk::__private::wit_bindgen::rt",
    });
}

use bindings::sluice::template as wit;

#[cfg(feature = "client")]
use crate::Claim;
use crate::{ConsentStatus, Cookie, Denied, Error, HttpRequest, HttpResponse, Level, Purpose, SameSite};

fn err(e: wit::types::Error) -> Error {
    match e {
        wit::types::Error::PermissionDenied(d) => Error::PermissionDenied(Denied { permission: d.permission, name: d.name, message: d.message }),
        wit::types::Error::Invalid(m) => Error::Invalid(m),
        wit::types::Error::Timeout => Error::Timeout,
        wit::types::Error::Failed(m) => Error::Failed(m),
    }
}

fn to_wit(e: Error) -> wit::types::Error {
    // Only a tag's `fire` can skip (`run_tag` maps it first); anywhere else it is a failure.
    match e.skip_as_failure() {
        Error::PermissionDenied(d) => wit::types::Error::PermissionDenied(wit::types::Denial { permission: d.permission, name: d.name, message: d.message }),
        Error::Invalid(m) => wit::types::Error::Invalid(m),
        Error::Timeout => wit::types::Error::Timeout,
        Error::Failed(m) | Error::Skipped(m) => wit::types::Error::Failed(m),
    }
}

/// Entry point glue for [`crate::export_client!`].
#[cfg(feature = "client")]
pub fn run_client<C: crate::Client>() -> Result<bindings::Claim, wit::types::Error> {
    match C::run(&crate::Host::new()) {
        Ok(Claim::Pass) => Ok(bindings::Claim::Pass),
        // `serde_json::to_string` writes straight into a buffer; `Value`'s `Display` goes through a
        // formatter per fragment and measured several times slower. A map of JSON values always
        // serialises; were it ever not to, the host would drop and report the empty event.
        Ok(Claim::Claimed(events)) => {
            Ok(bindings::Claim::Claimed(events.iter().map(|e| serde_json::to_string(e).unwrap_or_default()).collect()))
        }
        Ok(Claim::ClaimedJson(events)) => Ok(bindings::Claim::Claimed(events)),
        Err(e) => Err(to_wit(e)),
    }
}

/// Entry point glue for [`crate::export_tag!`].
#[cfg(all(feature = "tag", not(feature = "client")))]
pub fn run_tag<T: crate::Tag>() -> Result<bindings::Fired, wit::types::Error> {
    match T::fire(&crate::TagHost::new()) {
        Ok(()) => Ok(bindings::Fired::Done),
        Err(Error::Skipped(why)) => Ok(bindings::Fired::Skipped(why)),
        Err(e) => Err(to_wit(e)),
    }
}

/// Entry point glue for [`crate::export_tag!`]'s `deliver`.
#[cfg(all(feature = "tag", not(feature = "client")))]
pub fn run_deliver<T: crate::Tag>(batch: Vec<wit::delivery::Item>) -> Result<Vec<wit::delivery::ItemResult>, wit::delivery::BatchFailure> {
    use crate::{BatchFailure, Item, ItemResult};
    let items: Vec<Item> =
        batch.into_iter().map(|i| Item { id: i.id, attempt: i.attempt, created_ms: i.created_ms, data: i.data, cookies: i.cookies }).collect();
    match T::deliver(&crate::DeliverHost::new(), &items) {
        Ok(results) => Ok(results
            .into_iter()
            .map(|r| match r {
                ItemResult::Delivered => wit::delivery::ItemResult::Delivered,
                ItemResult::Retry(after) => wit::delivery::ItemResult::Retry(after),
                ItemResult::Rejected(why) => wit::delivery::ItemResult::Rejected(why),
            })
            .collect()),
        Err(BatchFailure::Retry(after)) => Err(wit::delivery::BatchFailure::Retry(after)),
        Err(BatchFailure::Reject(why)) => Err(wit::delivery::BatchFailure::Reject(why)),
    }
}

#[cfg(feature = "client")]
#[doc(hidden)]
pub fn run_deliver<T>(_: Vec<()>) -> Result<(), wit::types::Error> {
    unreachable!("export_tag! needs sluice-sdk's `tag` feature")
}

#[cfg(feature = "client")]
#[doc(hidden)]
pub fn run_tag<T>() -> Result<(), wit::types::Error> {
    unreachable!("export_tag! needs sluice-sdk's `tag` feature")
}

#[cfg(not(feature = "client"))]
#[doc(hidden)]
pub fn run_client<C>() -> Result<(), wit::types::Error> {
    unreachable!("export_client! needs sluice-sdk's `client` feature")
}

pub(crate) fn method() -> String {
    wit::request::method()
}
pub(crate) fn path() -> String {
    wit::request::path()
}
pub(crate) fn query_string() -> Result<String, Error> {
    wit::request::query_string().map_err(err)
}
pub(crate) fn query_param(name: &str) -> Result<Option<String>, Error> {
    wit::request::query_param(name).map_err(err)
}
pub(crate) fn header(name: &str) -> Result<Option<String>, Error> {
    wit::request::header(name).map_err(err)
}
pub(crate) fn cookie(name: &str) -> Result<Vec<String>, Error> {
    wit::request::cookie(name).map_err(err)
}
pub(crate) fn body() -> Result<Vec<u8>, Error> {
    wit::request::body().map_err(err)
}
pub(crate) fn remote_address() -> Result<Option<String>, Error> {
    wit::request::remote_address().map_err(err)
}

pub(crate) fn set_status(status: u16) -> Result<(), Error> {
    wit::response::set_status(status).map_err(err)
}
pub(crate) fn set_header(name: &str, value: &str) -> Result<(), Error> {
    wit::response::set_header(name, value).map_err(err)
}
pub(crate) fn set_body(body: &[u8]) -> Result<(), Error> {
    wit::response::set_body(body).map_err(err)
}
pub(crate) fn set_cookie(c: &Cookie) -> Result<(), Error> {
    let same_site = c.same_site.map(|s| match s {
        SameSite::Strict => wit::response::SameSite::Strict,
        SameSite::Lax => wit::response::SameSite::Lax,
        SameSite::None => wit::response::SameSite::None,
    });
    wit::response::set_cookie(&wit::response::Cookie {
        name: c.name.clone(),
        value: c.value.clone(),
        domain: c.domain.clone(),
        path: c.path.clone(),
        max_age: c.max_age,
        secure: c.secure,
        http_only: c.http_only,
        same_site,
    })
    .map_err(err)
}

#[cfg(feature = "tag")]
pub(crate) fn event_get(path: &str) -> Result<Option<String>, Error> {
    wit::event::get(path).map_err(err)
}
#[cfg(feature = "tag")]
pub(crate) fn event_all() -> Result<String, Error> {
    wit::event::all().map_err(err)
}
#[cfg(feature = "tag")]
pub(crate) fn event_fingerprint() -> Result<String, Error> {
    wit::event::fingerprint().map_err(err)
}
#[cfg(feature = "tag")]
pub(crate) fn consent_status(purpose: Purpose) -> Result<ConsentStatus, Error> {
    use wit::types::Purpose as P;
    let p = match purpose {
        Purpose::AdStorage => P::AdStorage,
        Purpose::AnalyticsStorage => P::AnalyticsStorage,
        Purpose::AdUserData => P::AdUserData,
        Purpose::AdPersonalization => P::AdPersonalization,
        Purpose::FunctionalityStorage => P::FunctionalityStorage,
        Purpose::PersonalizationStorage => P::PersonalizationStorage,
        Purpose::SecurityStorage => P::SecurityStorage,
    };
    Ok(match wit::consent::status(p).map_err(err)? {
        wit::types::ConsentStatus::Granted => ConsentStatus::Granted,
        wit::types::ConsentStatus::Denied => ConsentStatus::Denied,
        wit::types::ConsentStatus::Unset => ConsentStatus::Unset,
    })
}

// A client's world has no event or consent interface; `TagHost` (the only way to reach these)
// is never handed to a client, so these are unreachable there.
#[cfg(not(feature = "tag"))]
pub(crate) fn event_get(_: &str) -> Result<Option<String>, Error> {
    Err(Error::Invalid("event data is only available to tags".into()))
}
#[cfg(not(feature = "tag"))]
pub(crate) fn event_all() -> Result<String, Error> {
    Err(Error::Invalid("event data is only available to tags".into()))
}
#[cfg(not(feature = "tag"))]
pub(crate) fn event_fingerprint() -> Result<String, Error> {
    Err(Error::Invalid("event data is only available to tags".into()))
}
#[cfg(not(feature = "tag"))]
pub(crate) fn consent_status(_: Purpose) -> Result<ConsentStatus, Error> {
    Err(Error::Invalid("consent is only available to tags".into()))
}

fn outgoing(r: &HttpRequest) -> wit::http::OutgoingRequest {
    wit::http::OutgoingRequest {
        method: r.method.clone(),
        url: r.url.clone(),
        headers: r.headers.clone(),
        body: r.body.clone(),
        timeout_ms: r.timeout_ms,
    }
}

pub(crate) fn http_send(r: &HttpRequest) -> Result<HttpResponse, Error> {
    let res = wit::http::send(&outgoing(r)).map_err(err)?;
    Ok(HttpResponse { status: res.status, headers: res.headers, body: res.body })
}

pub(crate) fn http_send_all(requests: &[HttpRequest]) -> Result<Vec<Result<HttpResponse, Error>>, Error> {
    let outgoing: Vec<wit::http::OutgoingRequest> = requests.iter().map(outgoing).collect();
    Ok(wit::http::send_all(&outgoing)
        .map_err(err)?
        .into_iter()
        .map(|r| r.map(|res| HttpResponse { status: res.status, headers: res.headers, body: res.body }).map_err(err))
        .collect())
}

pub(crate) fn outbox_enqueue(id: &str, item: &str) -> Result<(), Error> {
    wit::outbox::enqueue(id, item).map_err(err)
}
pub(crate) fn outbox_send_later(id: &str, r: &HttpRequest) -> Result<(), Error> {
    wit::outbox::send_later(id, &outgoing(r)).map_err(err)
}

pub(crate) fn storage_get(key: &str) -> Result<Option<Vec<u8>>, Error> {
    wit::storage::get(key).map_err(err)
}
pub(crate) fn storage_set(key: &str, value: &[u8], ttl_ms: Option<u64>) -> Result<(), Error> {
    wit::storage::set(key, value, ttl_ms).map_err(err)
}
pub(crate) fn storage_delete(key: &str) -> Result<(), Error> {
    wit::storage::delete(key).map_err(err)
}

pub(crate) fn log(level: Level, message: &str) -> Result<(), Error> {
    let level = match level {
        Level::Trace => wit::log::Level::Trace,
        Level::Debug => wit::log::Level::Debug,
        Level::Info => wit::log::Level::Info,
        Level::Warn => wit::log::Level::Warn,
        Level::Error => wit::log::Level::Error,
    };
    wit::log::write(level, message).map_err(err)
}

pub(crate) fn config_get(name: &str) -> Option<String> {
    wit::config::get(name)
}
