//! Every real hit in `shared/corpus/ga4/` parses into the expected events, and a hit rebuilt
//! from an event model sGTM's own GA4 client produced maps to exactly that model.

#![allow(clippy::unwrap_used)]

use ga4_client::hit;
use serde_json::{Map, Value, json};

fn corpus(name: &str) -> String {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/corpus");
    std::fs::read_to_string(dir.join(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
}

/// (query, body) of a captured hit: a bare query, a URL, or a "Copy as cURL" command.
fn hit_of(file: &str) -> (String, String) {
    let text = corpus(&format!("ga4/{file}"));
    let line = text.lines().find(|l| !l.starts_with('#') && !l.trim().is_empty()).expect("a hit line");
    let url = line.strip_prefix("curl '").map_or(line, |rest| rest.split('\'').next().unwrap_or(rest));
    let query = url.split_once('?').map_or(url, |(_, q)| q).to_string();
    let body = text
        .split("--data-raw $'")
        .nth(1)
        .map(|rest| rest.split('\'').next().unwrap_or("").replace("\\r\\n", "\r\n"))
        .unwrap_or_default();
    (query, body)
}

fn events(file: &str) -> Vec<Map<String, Value>> {
    let (query, body) = hit_of(file);
    hit::parse(&query, body.as_bytes()).unwrap_or_else(|e| panic!("{file}: {e:?}"))
}

fn one(file: &str) -> Map<String, Value> {
    let mut all = events(file);
    assert_eq!(all.len(), 1, "{file}");
    all.remove(0)
}

const FILES: &[&str] = &[
    "ga4_01_page_view_granted_default_sst.txt",
    "ga4_02_page_view_granted_update.txt",
    "ga4_03_add_to_cart_items.txt",
    "ga4_04_select_item_items.txt",
    "ga4_05_scroll_consent_denied.txt",
    "ga4_06_add_to_cart_consent_denied.txt",
    "ga4_07_remove_from_cart_debug.txt",
    "ga4_08_page_view_homemade.txt",
    "ga4_09_add_to_cart_sst_debug.txt",
    "ga4_10_page_view_first_visit_session_start.txt",
    "ga4_11_purchase_conversion.txt",
    "ga4_12_purchase_items_sgtm_custom_path.txt",
    "ga4_13_form_start_enhanced_measurement.txt",
    "ga4_14_page_view_analytics_google_com.txt",
    "ga4_15_page_view_new_user_2024.txt",
    "ga4_17_batched_post_scroll_page_view.txt",
];

#[test]
fn every_corpus_hit_parses_with_the_event_model_types() {
    let names = [
        "page_view", "page_view", "add_to_cart", "select_item", "scroll", "add_to_cart", "remove_from_cart", "page_view",
        "add_to_cart", "page_view", "purchase", "purchase", "form_start", "page_view",
    ];
    for (file, name) in FILES.iter().zip(names) {
        let ev = one(file);
        assert_eq!(ev["event_name"], name, "{file}");
    }
    for file in FILES {
        for ev in events(file) {
            assert!(ev["client_id"].is_string(), "{file}");
            assert_eq!(ev["x-ga-protocol_version"], "2", "{file}");
            assert!(ev["x-ga-measurement_id"].as_str().is_some_and(|t| t.starts_with("G-")), "{file}");
            for numeric in ["ga_session_number", "engagement_time_msec", "x-ga-page_id", "x-ga-request_count", "x-ga-tfd"] {
                assert!(ev.get(numeric).is_none_or(Value::is_number), "{file}: {numeric} = {:?}", ev.get(numeric));
            }
            for text in ["ga_session_id", "page_location", "language", "x-ga-gcd"] {
                assert!(ev.get(text).is_none_or(Value::is_string), "{file}: {text}");
            }
        }
    }
}

#[test]
fn the_batched_capture_is_two_events_with_per_line_overrides() {
    let evs = events("ga4_17_batched_post_scroll_page_view.txt");
    assert_eq!(evs.len(), 2);
    assert_eq!((evs[0]["event_name"].as_str(), evs[1]["event_name"].as_str()), (Some("scroll"), Some("page_view")));
    assert_eq!(evs[0]["percent_scrolled"], 90);
    assert_eq!(evs[0]["engagement_time_msec"], 30);
    assert_eq!(evs[1]["engagement_time_msec"], 944);
    assert_eq!(evs[1]["page_referrer"], "https://factors.directory/en", "the second line's dr");
    assert!(evs[0].get("page_referrer").is_none(), "the query has no dr; the first line sets none");
    for ev in &evs {
        assert_eq!(ev["client_id"], "2012860115.1777104652", "shared query parameters reach both events");
        assert_eq!(ev["ga_session_number"], 3);
    }
    // uafvl is percent-encoded twice: brand names come out clean.
    assert_eq!(evs[0]["client_hints"]["full_version_list"][0], json!({"brand": "Google Chrome", "version": "147.0.7727.102"}));
    assert_eq!(evs[0]["client_hints"]["mobile"], false);
}

#[test]
fn items_decode_every_two_letter_key() {
    let ev = one("ga4_03_add_to_cart_items.txt");
    assert_eq!(
        ev["items"][0],
        json!({
            "item_id": "SKU_12345", "item_name": "Stan and Friends Tee", "affiliation": "Google Merchandise Store",
            "coupon": "SUMMER_FUN", "discount": 2.22, "index": 0, "item_brand": "Google", "item_category": "Apparel",
            "item_category2": "Adult", "item_category3": "Shirts", "item_category4": "Crew", "item_category5": "Short sleeve",
            "item_list_id": "related_products", "item_list_name": "Related Products", "item_variant": "green",
            "location_id": "ChIJIQBpAG2ahYAR_6128GcTUEo", "price": 10.01, "quantity": 3
        })
    );
    assert_eq!((ev["value"].clone(), ev["currency"].clone()), (json!(30.03), json!("USD")));
    assert_eq!(ev["x-ga-system_properties"]["c"], "1", "_c (key event) is a system property");
}

#[test]
fn custom_item_parameters_and_string_values_and_user_data() {
    let ev = one("ga4_12_purchase_items_sgtm_custom_path.txt");
    let item = &ev["items"][0];
    assert_eq!(item["variant_name"], "Lithograph - Height: 9\" x Width: 12\"", "kvariant_name pairs with v0");
    assert_eq!(item["item_url"], "/products/example-t-shirt");
    assert_eq!(item["price"], 7600);
    assert_eq!(ev["value"], 7630, "ep.value is coerced to a number");
    assert_eq!(ev["cart_total"], "7630", "other ep.* stay strings");
    assert_eq!(ev["shipping"], 30, "epn.* are numbers");
    assert_eq!(ev["user_data"]["email"], "user@example.com");
    assert_eq!(ev["user_data"]["address"]["city"], "New York");
    assert_eq!(ev["x-ga-mp2-richsstsse"], "");
    assert_eq!(ev["x-sst-system_properties"]["etld"], "example.com");

    let purchase = one("ga4_11_purchase_conversion.txt");
    assert_eq!(purchase["value"], 1);
    assert_eq!(purchase["transaction_id"], "_14:37:53");
    assert_eq!(purchase["currency"], "JPY");
}

#[test]
fn consent_keys_carry_through() {
    let granted = one("ga4_02_page_view_granted_update.txt");
    assert_eq!((granted["x-ga-gcs"].as_str(), granted["x-ga-gcd"].as_str()), (Some("G111"), Some("13r3r3r2r5l1")));
    assert_eq!(granted["x-ga-dma"], true);
    assert_eq!(granted["x-ga-dma_cps"], "syphamo");
    let denied = one("ga4_05_scroll_consent_denied.txt");
    assert_eq!((denied["x-ga-gcs"].as_str(), denied["x-ga-npa"].as_str()), (Some("G100"), Some("1")));
    let old = one("ga4_07_remove_from_cart_debug.txt");
    assert_eq!(old["x-ga-gcd"], "13l3l3l2l1");
    assert!(old.get("x-ga-gcs").is_none(), "absent gcs stays absent");
    assert_eq!(old["x-ga-system_properties"]["dbg"], "1");
}

/// eventmodel_03 is what sGTM's GA4 client produced for a tanelytics.com page view. Rebuild the
/// hit from it and compare every key and type (except the server-managed client id).
#[test]
fn matches_sgtm_event_model_03() {
    let query = "v=2&tid=G-FBVKWPGDPE&gtm=2re540&_p=1940542384&_z=ccd.tbB&_eu=Q&tt=internal_cookie\
        &cid=2024456455.1647778941&ul=en&sr=1536x960&ir=1&_s=1&sid=1652075867&sct=18&seg=1\
        &dl=https%3A%2F%2Ftanelytics.com%2Fip-filtering-in-server-side-gtm%2F\
        &dr=https%3A%2F%2Ftanelytics.com%2F%3FinternalTraffic%3D1\
        &dt=IP%20Filtering%20in%20Server-side%20Tag%20Manager%20-%20tanelytics.com&en=page_view&_et=1\
        &ep.page_type=post&epn.page_post_id=237.1&ep.page_post_date=2022-05-05\
        &ep.page_post_category=ga4%2Cserver-side-tag-manager&ep.page_post_tags1=ga4%2Cserver-side-gtm\
        &ep.page_type2=single-post&epn.custom_timestamp=1652077511712&up._npa=1&richsstsse";
    let mut ev = hit::parse(query, b"").expect("parses").remove(0);
    let text = corpus("eventmodel/eventmodel_03_ga4_client_page_view_custom_params.json");
    let json = text.lines().find(|l| l.starts_with('{')).expect("json line");
    let mut expected: Map<String, Value> = serde_json::from_str(json).expect("event model");
    // Added by the client from the request (tested in the client tests), and the FPID mode.
    for key in ["ip_override", "user_agent", "x-ga-js_client_id", "client_id"] {
        expected.remove(key);
    }
    ev.remove("client_id");
    assert_eq!(Value::Object(ev), Value::Object(expected));
}

#[test]
fn items_come_in_index_order_and_a_repeated_index_replaces_the_earlier_item() {
    let ev = hit::parse("v=2&tid=G-1&en=x&pr2=idB&pr1=idA&pr2=idC", b"").expect("parses").remove(0);
    assert_eq!(ev["items"], json!([{"item_id": "A"}, {"item_id": "C"}]));
    // A custom parameter takes its index's first value.
    let ev = hit::parse("v=2&tid=G-1&en=x&pr1=idA~k0color~v0red~v0blue~k1size~v1L", b"").expect("parses").remove(0);
    assert_eq!(ev["items"], json!([{"item_id": "A", "color": "red", "size": "L"}]));
}

#[test]
fn invalid_hits_are_rejected_with_a_reason_never_half_built() {
    let reject = |q: &str, body: &str| hit::parse(q, body.as_bytes()).unwrap_err().0;
    assert!(reject("tid=G-1&en=x", "").contains("v=2"));
    assert!(reject("v=2&en=x", "").contains("tid"));
    assert!(reject("v=2&tid=G-1", "").contains("event name"));
    assert!(reject("v=2&tid=G-1", "en=ok\r\n_et=5").contains("event 1"), "one bad line rejects the batch");
    assert!(hit::parse("v=2&tid=G-1&en=x", &[0xff, 0xfe]).is_err());
    // Garbage never panics.
    for junk in ["", "&&&", "=", "v=2&tid=G-1&en=x&pr1=~~~&pr99999999999=a", "v=2&tid=G-1&en=x&pr1=k~v~kk~vv~x"] {
        let _ = hit::parse(junk, b"%%%\n\n=\r\n");
    }
}

/// Mutated corpus hits (bytes flipped, truncated, lines spliced) never panic the parser.
#[test]
fn mutated_hits_never_panic() {
    let mut seed: u64 = 0x5eed;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let alphabet = b"=&~%|;.\r\n0123456789abcdefkvpr_+ \xff";
    for file in FILES {
        let (query, body) = hit_of(file);
        for _ in 0..200 {
            let mut q = query.clone().into_bytes();
            let mut b = body.clone().into_bytes();
            for _ in 0..(next() % 8) {
                let target = if next() % 2 == 0 { &mut q } else { &mut b };
                if target.is_empty() || next() % 4 == 0 {
                    target.push(alphabet[(next() % alphabet.len() as u64) as usize]);
                } else {
                    let i = (next() % target.len() as u64) as usize;
                    match next() % 3 {
                        0 => target[i] = alphabet[(next() % alphabet.len() as u64) as usize],
                        1 => target.truncate(i),
                        _ => target.insert(i, b'%'),
                    }
                }
            }
            let _ = hit::parse(&String::from_utf8_lossy(&q), &b);
        }
    }
    assert_eq!(hit::brands(r#""A;B";v="1", "C""#).len(), 2, "quoted brands with ';' and no version");
}
