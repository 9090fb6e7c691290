//! Shared set-up for the benchmarks: containers built from the real template components, with
//! outbound requests stopped at the egress choke point (the vendor endpoints are loopback
//! addresses the network policy refuses), so figures measure Sluice, not a network.

#![allow(missing_docs)]

pub mod load;
pub mod procfs;

use std::sync::Arc;

use sluice::Container;
use sluice_tests::{parse_config, template};

/// What an operator grants the GA4 client: everything it declares, as `examples/container.toml`
/// does. (A narrower grant is legitimate, but each refused header is then a denial per request.)
pub const GA4_CLIENT_GRANTS: &str = r#"grants = { query = true, body = true, remote_address = true, request_headers = ["user-agent", "origin", "access-control-request-headers", "sec-ch-ua", "sec-ch-ua-mobile", "sec-ch-ua-platform"], response_headers = ["access-control-allow-origin", "access-control-allow-credentials", "access-control-allow-methods", "access-control-allow-headers", "content-type"] }"#;

/// A GA4 hit from the corpus (granted consent, one add_to_cart with an item).
pub fn ga4_hit_query() -> String {
    sluice_tests::corpus_hit_query("ga4_03_add_to_cart_items.txt")
}

/// The request the pipeline benchmarks handle.
pub fn request(query: &str) -> sluice::RequestData {
    let mut r = sluice_tests::hit_request(query);
    r.headers.insert("user-agent", http::HeaderValue::from_static("Mozilla/5.0 (bench)"));
    r
}

/// The GA4 client plus `tags` vendor tags (0 to 3: Meta, TikTok, GA4), audit off.
pub fn container(tags: usize) -> Arc<Container> {
    vendor_container(tags, Extra::None)
}

/// The GA4 client plus one tag that returns at once (the probe tag in `fail` mode): the cost of
/// instantiating, calling and dropping a tag with almost no work inside.
pub fn noop_tag_container() -> Arc<Container> {
    vendor_container(0, Extra::Noop)
}

/// The GA4 client plus the smallest possible tag (`benches/fixtures/empty-tag.wat`: no WASI,
/// no host calls, one page of memory): the host's own floor per invocation.
pub fn empty_tag_container() -> Arc<Container> {
    vendor_container(0, Extra::Empty)
}

/// The empty tag (`benches/fixtures/empty-tag.wat`) as a component binary.
pub fn empty_tag_bytes() -> Vec<u8> {
    let wat = concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures/empty-tag.wat");
    wat::parse_file(wat).unwrap_or_else(|e| panic!("{wat}: {e}"))
}

/// The empty tag written where a container can load it.
fn empty_tag() -> std::path::PathBuf {
    let path = std::env::temp_dir().join(format!("sluice-empty-tag-{}.wasm", std::process::id()));
    std::fs::write(&path, empty_tag_bytes()).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    path
}

/// The GA4 client plus the bundled webhook tag (reads the whole event, POSTs it as JSON): a
/// realistic small template.
pub fn webhook_container() -> Arc<Container> {
    vendor_container(0, Extra::Webhook)
}

/// A tag added after the vendor tags.
#[derive(Clone, Copy, PartialEq)]
enum Extra {
    None,
    Empty,
    Noop,
    Webhook,
}

/// The GA4 client plus `tags` vendor tags whose requests really go out, to a sink listening on
/// `sink` (loopback): the in-process cost of the outbound HTTP calls.
pub fn container_with_sink(tags: usize, sink: std::net::SocketAddr) -> Arc<Container> {
    container_with_sink_from(None, tags, sink)
}

/// [`container_with_sink`] with the templates of `templates` (a directory of `.wasm` files, as
/// `cargo xtask templates` writes them) instead of the current build's.
pub fn container_with_sink_from(templates: Option<&std::path::Path>, tags: usize, sink: std::net::SocketAddr) -> Arc<Container> {
    build_container(templates, tags, Extra::None, &format!("http://{sink}"), "\nallow_private = [\"127.0.0.1/32\"]")
}

fn vendor_container(tags: usize, extra: Extra) -> Arc<Container> {
    // 127.0.0.9 is loopback and not in allow_private: every send stops at the choke point.
    build_container(None, tags, extra, "http://127.0.0.9:9", "")
}

fn build_container(templates: Option<&std::path::Path>, tags: usize, extra: Extra, sink: &str, outbound: &str) -> Arc<Container> {
    let template = |package: &str| templates.map_or_else(|| template(package), |dir| dir.join(format!("{package}.wasm")));
    let all = [
        format!(
            "[[tag]]\nname = \"meta\"\nwasm = \"{}\"\ntrigger = {{ events = [\"*\"] }}\nparams = {{ pixel_id = \"1\", access_token = \"${{TEST_SECRET}}\", endpoint = \"{sink}\" }}\ngrants = {{ event_data = [\"*\"], cookies = [\"_fbp\", \"_fbc\"], response_cookies = [\"_fbp\", \"_fbc\"], outbound = [\"{sink}/\"] }}\n",
            template("meta-capi-tag").display()
        ),
        format!(
            "[[tag]]\nname = \"tiktok\"\nwasm = \"{}\"\ntrigger = {{ events = [\"*\"] }}\nparams = {{ pixel_code = \"C1\", access_token = \"${{TEST_SECRET}}\", endpoint = \"{sink}\" }}\ngrants = {{ event_data = [\"*\"], cookies = [\"ttclid\", \"_ttp\"], outbound = [\"{sink}/\"] }}\n",
            template("tiktok-events-tag").display()
        ),
        format!(
            "[[tag]]\nname = \"ga4-tag\"\nwasm = \"{}\"\ntrigger = {{ events = [\"*\"] }}\nparams = {{ endpoint = \"{sink}\" }}\ngrants = {{ event_data = [\"*\"], outbound = [\"{sink}/\"] }}\n",
            template("ga4-tag").display()
        ),
    ];
    let config = format!(
        "[outbound]\nallow_http = [\"{sink}\"]{outbound}\n[consent]\naudit = \"off\"\n\n[[client]]\nname = \"ga4\"\nwasm = \"{}\"\n{GA4_CLIENT_GRANTS}\n{}",
        template("ga4-client").display(),
        all[..tags].concat()
            + &match extra {
                Extra::None => String::new(),
                Extra::Empty => format!(
                    "[[tag]]\nname = \"empty\"\nwasm = \"{}\"\ntrigger = {{ events = [\"*\"] }}\n",
                    empty_tag().display()
                ),
                Extra::Noop => format!(
                    "[[tag]]\nname = \"noop\"\nwasm = \"{}\"\ntrigger = {{ events = [\"*\"] }}\nparams = {{ sink = \"{sink}/\", label = \"n\", mode = \"fail\" }}\n",
                    template("probe-tag").display()
                ),
                Extra::Webhook => format!(
                    "[[tag]]\nname = \"webhook\"\nwasm = \"{}\"\ntrigger = {{ events = [\"*\"] }}\nparams = {{ url = \"{sink}/hook\" }}\ngrants = {{ event_data = [\"*\"], outbound = [\"{sink}/\"] }}\n",
                    template("webhook-tag").display()
                ),
            }
    );
    let config = parse_config(&config).unwrap_or_else(|e| panic!("{e}"));
    Arc::new(Container::load(&config).unwrap_or_else(|e| panic!("{e}")))
}

#[cfg(test)]
mod tests {
    /// The floor the benchmarks measure must be a tag the host runs, not one it refuses to
    /// load (the fixture is hand-written WAT and has to follow every change to the tag world).
    #[test]
    fn the_empty_tag_loads_and_fires_ok() {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
        let container = super::empty_tag_container();
        let (_, trace) = rt.block_on(container.handle(super::request(&super::ga4_hit_query())));
        let run = trace.tag_run(0, "empty").expect("the empty tag ran");
        assert_eq!(run.outcome, sluice::Outcome::Ok);
    }
}
