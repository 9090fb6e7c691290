//! A native mock host for template authors' unit tests.
//!
//! [`MockHost`] runs a template's Rust code directly (no wasm), answering its host calls from
//! the request, event, consent, parameters and outbound stubs the test set up, and recording what
//! the template did: the response, the outbound requests, log lines and permission denials.
//!
//! The mock is the host without the sandbox: every rule the host applies comes from the same
//! code (`sluice-manifest` for grants, `sluice-policy` for the rest), so a test passes or fails
//! exactly where production would:
//!
//! * **permissions**: [`EffectiveGrant`] against the template's own [`crate::Manifest`] and the
//!   grant the test gives (by default: everything the template declares);
//! * **parameters**: an undeclared parameter, a missing required one, or a secret given with
//!   [`MockHost::param`] instead of [`MockHost::secret_param`] fails the run as the host refuses
//!   to start;
//! * **consent**: resolved from the request's `x-consent` header, consent cookie and the
//!   event's `gcd`/`gcs`/Measurement Protocol/`consent_state` signals, with
//!   [`MockHost::consent`] taking precedence; a tag whose purposes are not all granted does not
//!   run ([`MockHost::blocked_by_consent`]); with `ad_user_data` not granted the tag sees the
//!   event and the request with personal data removed, as in production;
//! * **egress**: https only and no private addresses unless [`MockHost::allow_http`] /
//!   [`MockHost::allow_private`] say otherwise, as `[outbound]` does;
//! * **response**: the host-owned headers, statuses and cookie attributes are refused, and the
//!   number and size of headers, cookies and the body are capped;
//! * **claims**: a client's events past the host's default caps (100 events, 1 MiB of JSON) or
//!   that are not JSON objects are dropped, as the host drops them
//!   ([`MockHost::dropped_events`]);
//! * **storage**: the same store with the same bounds;
//! * **delivery**: a tag without `fire` has its event queued, as the host queues it (with the
//!   request cookies its grant names, [`crate::Item::cookies`]);
//!   `enqueue` and `send-later` are checked by the host's rules (ids, 16 per run, item size,
//!   grant); [`MockHost::deliver_queued`] runs `deliver` over the queue and applies the host's
//!   rules to its answers (`sluice_policy::delivery`: batching, halving a batch refused whole,
//!   retry, dead letter), and request, event and consent calls answer `Invalid` in `deliver`;
//! * **secrets**: log lines and denial messages are masked as the host masks its output.
//!
//! ```
//! use sluice_sdk::mock::MockHost;
//! # use sluice_sdk::*;
//! # struct Hello;
//! # impl Tag for Hello {
//! #     const MANIFEST: Manifest = Manifest { kind: Kind::Tag, name: "hello", version: "0",
//! #         description: "", permissions: Permissions { outbound: &["https://example.com/"], ..Permissions::NONE },
//! #         consent: &[], parameters: &[], delivery: Delivery::IN_REQUEST };
//! #     fn fire(host: &TagHost) -> Result<(), Error> {
//! #         host.http().send(&HttpRequest::post("https://example.com/hit"))?.error_for_status()?; Ok(())
//! #     }
//! # }
//! let mut mock = MockHost::new().stub("https://example.com/", HttpResponse::new(204, ""));
//! mock.run_tag::<Hello>().expect("fires");
//! assert_eq!(mock.sent()[0].url, "https://example.com/hit");
//! ```

use std::cell::RefCell;
use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use serde::Serialize;
use serde_json::{Map, Value};
use sluice_manifest::{Batch, Declaration, Denial, EffectiveGrant, Kind, Manifest, PermissionSet, Url};
use sluice_policy::consent::{ConsentConfig, ConsentPolicy, ConsentState, Source};
use sluice_policy::egress::EgressRules;
use sluice_policy::params::Param;
use sluice_policy::personal_data::Minimiser;
use sluice_policy::request::{Reads, RequestSource};
use sluice_policy::response::{self as rules, CookieSpec};
use sluice_policy::secrets::Masker;
use sluice_policy::storage::TemplateStorage;

use crate::{BatchFailure, Claim, Client, ConsentStatus, Cookie, Denied, Error, HttpRequest, HttpResponse, Item, ItemResult, Level, Purpose, SameSite, Tag};

/// What [`MockHost::deliver_queued`] did with the queued items.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeliveryReport {
    /// Each `deliver` call's item ids, in call order (a split batch shows as its halves).
    pub batches: Vec<Vec<String>>,
    /// Ids the vendor took.
    pub delivered: Vec<String>,
    /// Ids dead-lettered, with the reason.
    pub dead: Vec<(String, String)>,
    /// Ids to retry, with the wait asked for (ms): they stay queued for the next call.
    pub retry: Vec<(String, Option<u32>)>,
}

fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

/// The response a client (or tag) set, as recorded by the mock.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RecordedResponse {
    /// Status set with `set_status`.
    pub status: Option<u16>,
    /// Headers set with `set_header` (lower-cased names, last value wins).
    pub headers: Vec<(String, String)>,
    /// Body set with `set_body`.
    pub body: Option<Vec<u8>>,
    /// Cookies set with `set_cookie`, and the id cookies the host set for the tag (declared in
    /// its manifest, `Delivery::with_id_cookies`), in the order set.
    pub cookies: Vec<Cookie>,
}

impl RecordedResponse {
    /// The value of a header the template set.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    /// The cookie the template set with this name.
    pub fn cookie(&self, name: &str) -> Option<&Cookie> {
        self.cookies.iter().find(|c| c.name == name)
    }
}

#[derive(Default)]
struct State {
    method: String,
    path: String,
    query: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    remote_address: Option<String>,
    event: Value,
    consent: HashMap<Purpose, ConsentStatus>,
    consent_config: ConsentConfig,
    purposes: Option<Vec<String>>,
    params: Vec<(String, Param)>,
    grant: Option<PermissionSet>,
    allow_http: Vec<String>,
    allow_private: Vec<String>,
    /// Answers by URL prefix, in order; the last one repeats.
    stubs: Vec<(String, VecDeque<Result<HttpResponse, Error>>)>,
    storage: TemplateStorage,
    /// Items queued for `deliver`, in order, across runs.
    queued: Vec<Item>,
    /// Plain requests queued with `send-later`, with their ids.
    queued_requests: Vec<(String, HttpRequest)>,

    run: Option<Run>,
    response: RecordedResponse,
    sent: Vec<HttpRequest>,
    logs: Vec<(Level, String)>,
    denials: Vec<Denial>,
    blocked: Option<Vec<Purpose>>,
    removed: Vec<String>,
    dropped_events: Vec<String>,
}

impl RequestSource for State {
    fn query(&self) -> &str {
        &self.query
    }

    fn header_values(&self, name: &str) -> Vec<&str> {
        self.headers.iter().filter(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str()).collect()
    }

    fn body(&self) -> &[u8] {
        &self.body
    }

    fn remote_address(&self) -> Option<String> {
        self.remote_address.clone()
    }
}

/// What one run is allowed, decided before the template is called (as the host decides at
/// load and per event).
struct Run {
    grant: EffectiveGrant,
    egress: EgressRules,
    masker: Masker,
    params: HashMap<String, Param>,
    consent: ConsentState,
    /// `ad_user_data` not granted: request reads go through this.
    minimiser: Option<Minimiser>,
    /// The template's declared batch (for `enqueue`).
    batch: Option<Batch>,
    /// Running `deliver`: request, response, event and consent calls are refused.
    delivering: bool,
    /// Items this run queued.
    queued: usize,
}

thread_local! {
    static CURRENT: RefCell<Option<State>> = const { RefCell::new(None) };
}

/// A scripted host for unit tests. Build it, run a template, inspect what it did.
pub struct MockHost {
    state: State,
}

impl Default for MockHost {
    fn default() -> Self {
        Self::new()
    }
}

impl MockHost {
    /// A `GET /` request with no headers, an empty event, no consent, no parameters, and a grant
    /// of everything the template declares.
    pub fn new() -> Self {
        MockHost { state: State { method: "GET".into(), path: "/".into(), event: Value::Object(Map::new()), ..State::default() } }
    }

    /// Sets the request method.
    pub fn method(mut self, method: &str) -> Self {
        self.state.method = method.to_ascii_uppercase();
        self
    }

    /// Sets the request path; a `?query` suffix sets the query string too.
    pub fn path(mut self, path: &str) -> Self {
        match path.split_once('?') {
            Some((p, q)) => {
                self.state.path = p.into();
                self.state.query = q.into();
            }
            None => self.state.path = path.into(),
        }
        self
    }

    /// Sets the raw query string (no leading `?`).
    pub fn query(mut self, query: &str) -> Self {
        self.state.query = query.into();
        self
    }

    /// Adds a request header.
    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.state.headers.push((name.to_ascii_lowercase(), value.into()));
        self
    }

    /// Adds a request cookie (to the `cookie` header, as a browser sends it).
    pub fn cookie(mut self, name: &str, value: &str) -> Self {
        let pair = format!("{name}={}", rules::encode_cookie_value(value));
        match self.state.headers.iter_mut().find(|(n, _)| n == "cookie") {
            Some((_, header)) => {
                header.push_str("; ");
                header.push_str(&pair);
            }
            None => self.state.headers.push(("cookie".into(), pair)),
        }
        self
    }

    /// Sets the request body.
    pub fn body(mut self, body: impl Into<Vec<u8>>) -> Self {
        self.state.body = body.into();
        self
    }

    /// Sets the visitor's IP address.
    pub fn remote_address(mut self, ip: &str) -> Self {
        self.state.remote_address = Some(ip.into());
        self
    }

    /// Sets the event a tag runs for (a JSON object).
    pub fn event(mut self, event: Value) -> Self {
        self.state.event = event;
        self
    }

    /// Sets one purpose's consent state. It takes precedence over the request's and the
    /// event's consent signals (which the mock resolves as the host does); purposes nobody
    /// sets stay `Unset`, which blocks a tag that needs them (the host's default `unset = "deny"`).
    pub fn consent(mut self, purpose: Purpose, status: ConsentStatus) -> Self {
        self.state.consent.insert(purpose, status);
        self
    }

    /// Grants every purpose, as a visitor accepting everything would.
    pub fn consent_all_granted(mut self) -> Self {
        for p in Purpose::ALL {
            self.state.consent.insert(p, ConsentStatus::Granted);
        }
        self
    }

    /// The container's `[consent]` section (sources, header and cookie names, `unset`, extra
    /// keys to strip); the default is the host's.
    pub fn consent_config(mut self, config: ConsentConfig) -> Self {
        self.state.consent_config = config;
        self
    }

    /// The purposes this tag needs, overriding its manifest's, as `consent = [...]` on a
    /// `[[tag]]` does.
    pub fn consent_purposes(mut self, purposes: &[&str]) -> Self {
        self.state.purposes = Some(purposes.iter().map(|p| p.to_string()).collect());
        self
    }

    /// Sets a parameter, as the operator would in the container config.
    pub fn param(mut self, name: &str, value: impl Serialize) -> Self {
        let value = serde_json::to_value(value).unwrap_or(Value::Null);
        self.state.params.retain(|(n, _)| n != name);
        self.state.params.push((name.into(), Param::plain(value)));
        self
    }

    /// Sets a secret parameter, as the operator would with `"${ENV_VAR}"`. A parameter the
    /// template declares secret must be set this way (the host refuses it in clear); its value
    /// is masked in log lines and denials, as the host masks its output.
    pub fn secret_param(mut self, name: &str, value: &str) -> Self {
        self.state.params.retain(|(n, _)| n != name);
        self.state.params.push((name.into(), Param::secret(value)));
        self
    }

    /// Lets the template reach this origin over plain http, as `[outbound] allow_http` does
    /// (a test server: `"http://127.0.0.1:9000"`; exact to the port, `"http://127.0.0.1:*"`
    /// for any). Private addresses also need
    /// [`MockHost::allow_private`].
    pub fn allow_http(mut self, origin: &str) -> Self {
        self.state.allow_http.push(origin.into());
        self
    }

    /// Exempts a CIDR from the private-address guard, as `[outbound] allow_private` does.
    pub fn allow_private(mut self, cidr: &str) -> Self {
        self.state.allow_private.push(cidr.into());
        self
    }

    /// Replaces the default grant (everything declared) with the operator grant given.
    pub fn grant(mut self, grant: PermissionSet) -> Self {
        self.state.grant = Some(grant);
        self
    }

    /// Answers outbound requests whose URL starts with `url_prefix` with `response`. The most
    /// recently added matching stub wins (so a test can override a shared setup); a request with
    /// no stub fails with [`Error::Failed`].
    pub fn stub(mut self, url_prefix: &str, response: HttpResponse) -> Self {
        self.state.stubs.push((url_prefix.into(), VecDeque::from([Ok(response)])));
        self
    }

    /// Makes outbound requests whose URL starts with `url_prefix` fail with `error` (a vendor
    /// outage, a timeout).
    pub fn stub_error(mut self, url_prefix: &str, error: Error) -> Self {
        self.state.stubs.push((url_prefix.into(), VecDeque::from([Err(error)])));
        self
    }

    /// Pre-fills template storage.
    ///
    /// # Panics
    /// If the entry exceeds the host's storage bounds.
    pub fn stored(self, key: &str, value: &[u8]) -> Self {
        if let Err(e) = self.state.storage.set(key, value, None) {
            panic!("MockHost::stored({key:?}): {e}");
        }
        self
    }

    /// Runs a client template against the request.
    ///
    /// A claim comes back as [`Claim::Claimed`] with the events as the host admits them (also
    /// when the client returned [`Claim::ClaimedJson`]); what it drops is in
    /// [`MockHost::dropped_events`]. A configuration the host would refuse to load (an
    /// undeclared or missing parameter, a secret in clear) returns [`Error::Invalid`] naming it.
    ///
    /// # Panics
    /// If `C`'s manifest is not a valid client manifest, or the grant does not parse: those are
    /// mistakes in the test or the template, not outcomes to assert on.
    pub fn run_client<C: Client>(&mut self) -> Result<Claim, Error> {
        self.prepare(&C::MANIFEST, Kind::Client)?;
        self.state.dropped_events.clear();
        // As the host receives them: JSON text, admitted within its default caps.
        let texts: Vec<String> = match self.with_current(|| C::run(&crate::Host::new())).map_err(Error::skip_as_failure)? {
            Claim::Pass => return Ok(Claim::Pass),
            Claim::Claimed(events) => events.iter().map(Value::to_string).collect(),
            Claim::ClaimedJson(texts) => texts,
        };
        let admitted = sluice_policy::claim::admit(&texts, sluice_policy::claim::EventCaps::default());
        self.state.dropped_events = admitted.dropped;
        Ok(Claim::Claimed(admitted.events))
    }

    /// Runs a tag template against the event, if consent lets it run.
    ///
    /// As the host, the mock resolves consent first: a tag whose purposes are not all granted
    /// is not run, and this returns [`Error::PermissionDenied`] saying so (also in
    /// [`MockHost::blocked_by_consent`]). With `ad_user_data` not granted the tag runs on the
    /// event and request with personal data removed ([`MockHost::removed`] lists what).
    ///
    /// # Panics
    /// As [`MockHost::run_client`].
    pub fn run_tag<T: Tag>(&mut self) -> Result<(), Error> {
        let decl = self.prepare(&T::MANIFEST, Kind::Tag)?;
        if let Some(missing) = self.gate(&decl) {
            let names: Vec<&str> = missing.iter().map(|p| p.name()).collect();
            return Err(Error::PermissionDenied(Denied::new(
                "consent",
                names.join(", "),
                format!(
                    "blocked by consent: {} not granted; the host does not run this tag (grant it with .consent(..) or a consent signal)",
                    names.join(", ")
                ),
            )));
        }
        self.set_id_cookies(&decl);
        if !decl.delivery.fire {
            // As the host: no sandbox runs; the event goes to the outbox.
            self.queue_event();
            return Ok(());
        }
        let fired = self.with_current(|| T::fire(&crate::TagHost::new()));
        if fired.is_ok() && decl.delivery.host_queues_event() {
            self.queue_event();
        }
        fired
    }

    /// Sets the tag's declared id cookies that are due, as the host does before its `fire` or
    /// queueing (`sluice_policy::id_cookies`): within the grant, from the `page_location` the
    /// tag may see, with the cookies as the response leaves them.
    fn set_id_cookies(&mut self, decl: &Declaration) {
        let run = self.state.run.as_ref().expect("prepared before run");
        let declared = sluice_policy::id_cookies::enabled(&decl.delivery.id_cookies, &run.params);
        if declared.is_empty() {
            return;
        }
        let set: Vec<(String, String)> = self.state.response.cookies.iter().map(|c| (c.name.clone(), c.value.clone())).collect();
        let view = sluice_policy::id_cookies::TagView {
            grant: &run.grant,
            event: &self.state.event,
            request: &self.state,
            reads: Reads { minimiser: run.minimiser.as_ref() },
            set: &set,
        };
        let random = std::hash::BuildHasher::hash_one(&std::collections::hash_map::RandomState::new(), now_ms());
        for c in sluice_policy::id_cookies::for_tag(&declared, view, now_ms(), random) {
            if rules::check_cookie_room(self.state.response.cookies.len()).is_err() {
                break;
            }
            self.state.response.cookies.push(Cookie { max_age: Some(c.max_age_secs), ..Cookie::new(c.name, c.value) });
        }
    }

    /// Queues the event as the host queues it for a tag without `fire` (or after it): the part
    /// the grant covers, with the cookies the grant names as the response leaves them.
    fn queue_event(&mut self) {
        let run = self.state.run.as_ref().expect("prepared before run");
        // What the tag may see, and the id derived from it (the whole event's, with `*`).
        let visible = run.grant.visible_event(&self.state.event.as_object().cloned().unwrap_or_default());
        let data = Value::Object(visible.clone()).to_string();
        let id = sluice_manifest::event_id(&visible, &sluice_manifest::fingerprint(&data));
        let reads = Reads { minimiser: run.minimiser.as_ref() };
        let set: Vec<(String, String)> = self.state.response.cookies.iter().map(|c| (c.name.clone(), c.value.clone())).collect();
        let cookies = reads.cookies_after_response(&self.state, &set, |name| run.grant.check_cookie(name).is_ok());
        self.state.queued.push(Item { id, attempt: 0, created_ms: now_ms(), data, cookies });
    }


    /// Runs a tag's `deliver` once on `batch`, as the host would outside any request (request,
    /// response, event and consent calls answer `Invalid`), with the stubs answering its
    /// requests. For the host's whole handling of the answer, see [`MockHost::deliver_queued`].
    ///
    /// # Panics
    /// As [`MockHost::run_client`]; also if the tag declares no batch, or `batch` is larger
    /// than its declared `max_items` (the host never sends it more).
    pub fn deliver<T: Tag>(&mut self, batch: &[Item]) -> Result<Vec<ItemResult>, BatchFailure> {
        let decl = self.prepare(&T::MANIFEST, Kind::Tag).unwrap_or_else(|e| panic!("{e}"));
        let declared = decl.delivery.batch.unwrap_or_else(|| panic!("template {:?} declares no batch, so the host never calls deliver", decl.name));
        assert!(batch.len() <= declared.max_items as usize, "the host sends at most {} items per batch", declared.max_items);
        if let Some(run) = self.state.run.as_mut() {
            run.delivering = true;
        }
        self.with_current(|| T::deliver(&crate::DeliverHost::new(), batch))
    }

    /// Delivers every queued item as the host would, without waiting: batches within the
    /// tag's declared limits, `deliver` per batch, and the host's rules on the answers
    /// (`sluice_policy::delivery`): a whole-batch rejection is split until the bad item stands
    /// alone, per-item results are applied, retries are reported (and stay queued, their
    /// `attempt` counted, for the next call) instead of slept on.
    pub fn deliver_queued<T: Tag>(&mut self) -> DeliveryReport {
        use sluice_policy::delivery::{self as rules, Plan};
        let decl = self.prepare(&T::MANIFEST, Kind::Tag).unwrap_or_else(|e| panic!("{e}"));
        let limits = decl.delivery.batch.unwrap_or_else(|| panic!("template {:?} declares no batch, so the host never calls deliver", decl.name));
        let mut report = DeliveryReport::default();
        let mut ready: VecDeque<Vec<Item>> = VecDeque::new();
        let mut queue: VecDeque<Item> = std::mem::take(&mut self.state.queued).into();
        let mut retry = Vec::new();
        while !queue.is_empty() || !ready.is_empty() {
            let batch = match ready.pop_front() {
                Some(batch) => batch,
                None => {
                    let (mut batch, mut bytes) = (Vec::new(), 0);
                    while let Some(item) = queue.front() {
                        if batch.len() == limits.max_items as usize || (!batch.is_empty() && bytes + item.data.len() > limits.max_bytes as usize) {
                            break;
                        }
                        bytes += item.data.len();
                        batch.extend(queue.pop_front());
                    }
                    batch
                }
            };
            report.batches.push(batch.iter().map(|i| i.id.clone()).collect());
            let answer = self.deliver::<T>(&batch).map_err(Some);
            let retry_all = |batch: Vec<Item>, after: Option<u32>, retry: &mut Vec<Item>, report: &mut DeliveryReport| {
                for mut item in batch {
                    report.retry.push((item.id.clone(), after));
                    item.attempt += 1;
                    retry.push(item);
                }
            };
            match rules::plan(batch.len(), batch.first().map_or(0, |i| i.attempt), answer, String::new) {
                Plan::PerItem(results) => {
                    for (item, result) in batch.into_iter().zip(results) {
                        match result {
                            rules::ItemResult::Delivered => report.delivered.push(item.id),
                            rules::ItemResult::Rejected(why) => report.dead.push((item.id, why)),
                            rules::ItemResult::Retry(after) => retry_all(vec![item], after, &mut retry, &mut report),
                        }
                    }
                }
                Plan::Split(n) => {
                    let mut first = batch;
                    let rest = first.split_off(n);
                    ready.push_front(rest);
                    ready.push_front(first);
                }
                Plan::RetryAll(after) => retry_all(batch, after, &mut retry, &mut report),
            }
        }
        self.state.queued = retry;
        report
    }

    /// Decodes the manifest and decides the run's grant, egress rules, parameters and masker,
    /// as the host does at load.
    fn prepare(&mut self, manifest: &Manifest, kind: Kind) -> Result<Declaration, Error> {
        let decl = Declaration::from_json(&manifest.to_json())
            .unwrap_or_else(|e| panic!("template manifest does not decode: {e}"));
        assert_eq!(decl.kind, kind, "template {:?} is a {}, not a {kind}", decl.name, decl.kind);
        let refused = |e: String| Error::Invalid(format!("the host refuses to load this configuration: {e}"));
        let params = sluice_policy::params::check(&decl, &self.state.params).map_err(|e| refused(e.to_string()))?;
        let egress = EgressRules::new(&self.state.allow_http, &self.state.allow_private).map_err(|e| refused(e.to_string()))?;
        let declared = sluice_policy::params::resolved_permissions(&decl, &params).map_err(|e| refused(e.to_string()))?;
        let granted = self.state.grant.clone().unwrap_or_else(|| declared.clone());
        let grant = EffectiveGrant::new(kind, &declared, &granted).unwrap_or_else(|e| panic!("grant is not valid: {e}"));
        let masker = Masker::new(params.values().flat_map(|p| p.secrets.iter()));
        let batch = decl.delivery.batch;
        self.state.run = Some(Run { grant, egress, masker, params, consent: ConsentState::default(), minimiser: None, batch, delivering: false, queued: 0 });
        Ok(decl)
    }

    /// Resolves consent as the host does; `Some(missing)` when the tag must not run.
    fn gate(&mut self, decl: &Declaration) -> Option<Vec<Purpose>> {
        let state = &mut self.state;
        let policy = ConsentPolicy::new(state.consent_config.clone());
        let mut consent = ConsentState::default();
        // The test's explicit states first: the first source to speak wins.
        for (p, s) in &state.consent {
            consent.set_if_unset(*p, *s, Source::Default);
        }
        let resolved = policy.resolve(&*state, &state.event).state;
        for p in Purpose::ALL {
            consent.set_if_unset(p, resolved.status(p), resolved.source(p));
        }
        let names = state.purposes.as_ref().unwrap_or(&decl.consent);
        let needed: Vec<Purpose> = names
            .iter()
            .map(|n| Purpose::named(n).unwrap_or_else(|| panic!("consent purpose {n:?} is unknown: use one of {}", Purpose::all_names())))
            .collect();
        let missing: Vec<Purpose> = policy.missing(&consent, &needed).into_iter().copied().collect();
        let run = state.run.as_mut().expect("prepared");
        run.consent = consent;
        if !missing.is_empty() {
            state.blocked = Some(missing.clone());
            return Some(missing);
        }
        state.blocked = None;
        if policy.minimises(&consent) {
            let minimised = policy.minimiser().event(&state.event);
            state.event = minimised.value;
            state.removed = minimised.removed;
            run.minimiser = Some(policy.minimiser().clone());
        }
        None
    }

    fn with_current<R>(&mut self, f: impl FnOnce() -> R) -> R {
        CURRENT.with(|c| *c.borrow_mut() = Some(std::mem::take(&mut self.state)));
        // Put the state back even if the template panics, so the test can still inspect it.
        struct Restore<'a>(&'a mut State);
        impl Drop for Restore<'_> {
            fn drop(&mut self) {
                if let Some(s) = CURRENT.with(|c| c.borrow_mut().take()) {
                    *self.0 = s;
                }
            }
        }
        let _restore = Restore(&mut self.state);
        f()
    }

    /// Items queued for `deliver` (by `enqueue`, or the events of a tag without `fire`) and
    /// not yet delivered by [`MockHost::deliver_queued`].
    pub fn queued(&self) -> &[Item] {
        &self.state.queued
    }

    /// Plain requests queued with `send-later`, with their ids, in order.
    pub fn queued_requests(&self) -> &[(String, HttpRequest)] {
        &self.state.queued_requests
    }

    /// Answers requests whose URL starts with `url_prefix` with `answers` in turn, the last
    /// one repeating: a vendor that is down, then throttles, then takes the batch.
    pub fn stub_sequence(mut self, url_prefix: &str, answers: Vec<Result<HttpResponse, Error>>) -> Self {
        assert!(!answers.is_empty(), "a stub sequence needs at least one answer");
        self.state.stubs.push((url_prefix.into(), answers.into()));
        self
    }

    /// The response the template set.
    pub fn response(&self) -> &RecordedResponse {
        &self.state.response
    }

    /// The outbound requests the template sent (allowed ones only), in order.
    pub fn sent(&self) -> &[HttpRequest] {
        &self.state.sent
    }

    /// Log lines the template wrote.
    pub fn logs(&self) -> &[(Level, String)] {
        &self.state.logs
    }

    /// Host calls that were refused, in order.
    pub fn denials(&self) -> &[Denial] {
        &self.state.denials
    }

    /// Template storage after the run.
    pub fn storage(&self, key: &str) -> Option<Vec<u8>> {
        self.state.storage.get(key)
    }

    /// Why events of the last [`MockHost::run_client`]'s claim were dropped (the host's caps
    /// on a request's events, or an event that is not a JSON object), one line each. The
    /// returned [`Claim`] holds only the events the host would pass to tags.
    pub fn dropped_events(&self) -> &[String] {
        &self.state.dropped_events
    }

    /// The purposes that were not granted, when the last [`MockHost::run_tag`] was blocked by
    /// consent (the tag did not run).
    pub fn blocked_by_consent(&self) -> Option<&[Purpose]> {
        self.state.blocked.as_deref()
    }

    /// The event key paths removed as personal data before the tag ran (`ad_user_data` not
    /// granted), as the host's consent audit lists them.
    pub fn removed(&self) -> &[String] {
        &self.state.removed
    }

    /// The event as the tag saw it (after personal data was removed, if it was).
    pub fn event_seen(&self) -> &Value {
        &self.state.event
    }
}

/// The host-call implementations the SDK's `sys` seam routes to off wasm.
pub(crate) mod sys {
    use super::*;

    fn with<R>(f: impl FnOnce(&mut State) -> R) -> R {
        CURRENT.with(|c| {
            let mut slot = c.borrow_mut();
            let state = slot
                .as_mut()
                .expect("a sluice-sdk host call was made outside MockHost::run_client/run_tag");
            f(state)
        })
    }

    fn run(state: &State) -> &Run {
        state.run.as_ref().expect("prepared before run")
    }

    /// A request the `[outbound]` rules refused, as the host reports it.
    fn network_refusal(run: &Run, url: &Url, refusal: &sluice_policy::egress::EgressRefusal) -> Error {
        let (permission, name, message) = refusal.denial_parts(url);
        Error::PermissionDenied(Denied::new(permission, run.masker.mask(&name).into_owned(), run.masker.mask(&message).into_owned()))
    }

    /// Runs `check` against the effective grant; a denial is recorded and returned as an error
    /// (its text masked, as the host masks what it logs and traces).
    fn allowed(state: &mut State, check: impl FnOnce(&EffectiveGrant) -> Result<(), Denial>) -> Result<(), Error> {
        let run = run(state);
        match check(&run.grant) {
            Ok(()) => Ok(()),
            Err(denial) => {
                let msg = run.masker.mask(&denial.to_string()).into_owned();
                let (permission, name) = denial.scope.permission();
                let name = run.masker.mask(&name).into_owned();
                state.denials.push(denial);
                Err(Error::PermissionDenied(Denied::new(permission, name, msg)))
            }
        }
    }

    /// Refuses request, response, event and consent calls in `deliver`, as the host does.
    fn in_request(state: &State, what: &str) -> Result<(), Error> {
        match run(state).delivering {
            false => Ok(()),
            true => Err(Error::Invalid(sluice_policy::delivery::not_in_deliver(what))),
        }
    }

    fn reads(state: &State) -> Reads<'_> {
        Reads { minimiser: run(state).minimiser.as_ref() }
    }

    pub(crate) fn method() -> String {
        with(|s| s.method.clone())
    }
    pub(crate) fn path() -> String {
        with(|s| s.path.clone())
    }
    pub(crate) fn query_string() -> Result<String, Error> {
        with(|s| in_request(s, "the request").and_then(|()| allowed(s, |g| g.check_query()).map(|()| reads(s).query_string(s))))
    }
    pub(crate) fn query_param(name: &str) -> Result<Option<String>, Error> {
        with(|s| in_request(s, "the request").and_then(|()| allowed(s, |g| g.check_query()).map(|()| reads(s).query_param(s, name))))
    }
    pub(crate) fn header(name: &str) -> Result<Option<String>, Error> {
        with(|s| in_request(s, "the request").and_then(|()| allowed(s, |g| g.check_request_header(name)).map(|()| reads(s).header(s, name))))
    }
    pub(crate) fn cookie(name: &str) -> Result<Vec<String>, Error> {
        with(|s| in_request(s, "the request").and_then(|()| allowed(s, |g| g.check_cookie(name)).map(|()| reads(s).cookie(s, name))))
    }
    pub(crate) fn body() -> Result<Vec<u8>, Error> {
        with(|s| in_request(s, "the request").and_then(|()| allowed(s, |g| g.check_body()).map(|()| reads(s).body(s))))
    }
    pub(crate) fn remote_address() -> Result<Option<String>, Error> {
        with(|s| in_request(s, "the request").and_then(|()| allowed(s, |g| g.check_remote_address()).map(|()| reads(s).remote_address(s))))
    }

    pub(crate) fn set_status(status: u16) -> Result<(), Error> {
        with(|s| {
            in_request(s, "the response")?;
            allowed(s, |g| g.check_response_status())?;
            rules::check_status(status).map_err(|e| Error::Invalid(e.to_string()))?;
            s.response.status = Some(status);
            Ok(())
        })
    }
    pub(crate) fn set_header(name: &str, value: &str) -> Result<(), Error> {
        with(|s| {
            in_request(s, "the response")?;
            allowed(s, |g| g.check_response_header(name))?;
            let name = rules::check_header(name, value).map_err(|e| Error::Invalid(e.to_string()))?;
            rules::check_header_room(s.response.headers.iter().map(|(n, _)| n.as_str()), &name).map_err(|e| Error::Invalid(e.to_string()))?;
            s.response.headers.retain(|(n, _)| *n != name);
            s.response.headers.push((name, value.into()));
            Ok(())
        })
    }
    pub(crate) fn set_body(body: &[u8]) -> Result<(), Error> {
        with(|s| {
            in_request(s, "the response")?;
            allowed(s, |g| g.check_response_body())?;
            rules::check_body(body.len()).map_err(|e| Error::Invalid(e.to_string()))?;
            s.response.body = Some(body.to_vec());
            Ok(())
        })
    }
    pub(crate) fn set_cookie(cookie: &Cookie) -> Result<(), Error> {
        with(|s| {
            in_request(s, "the response")?;
            allowed(s, |g| g.check_response_cookie(&cookie.name))?;
            let same_site = cookie.same_site.map(|s| match s {
                SameSite::Strict => "Strict",
                SameSite::Lax => "Lax",
                SameSite::None => "None",
            });
            let spec = CookieSpec {
                name: &cookie.name,
                value: &cookie.value,
                domain: cookie.domain.as_deref(),
                path: cookie.path.as_deref(),
                max_age: cookie.max_age,
                secure: cookie.secure,
                http_only: cookie.http_only,
                same_site,
            };
            rules::cookie_line(&spec).map_err(|e| Error::Invalid(e.to_string()))?;
            rules::check_cookie_room(s.response.cookies.len()).map_err(|e| Error::Invalid(e.to_string()))?;
            s.response.cookies.push(cookie.clone());
            Ok(())
        })
    }

    pub(crate) fn event_get(path: &str) -> Result<Option<String>, Error> {
        with(|s| {
            in_request(s, "the event")?;
            allowed(s, |g| g.check_event_key(path))?;
            Ok(sluice_manifest::event_value(&s.event, path).map(Value::to_string))
        })
    }
    pub(crate) fn event_all() -> Result<String, Error> {
        with(|s| in_request(s, "the event").and_then(|()| allowed(s, |g| g.check_all_event_data())).map(|()| s.event.to_string()))
    }
    /// As the host computes it ([`sluice_manifest::fingerprint`]).
    pub(crate) fn event_fingerprint() -> Result<String, Error> {
        with(|s| {
            in_request(s, "the event")?;
            allowed(s, |g| g.check_all_event_data()).map(|()| sluice_manifest::fingerprint(&s.event.to_string()))
        })
    }
    pub(crate) fn consent_status(purpose: Purpose) -> Result<ConsentStatus, Error> {
        with(|s| {
            in_request(s, "consent")?;
            allowed(s, |g| g.check_consent())?;
            Ok(run(s).consent.status(purpose))
        })
    }

    pub(crate) fn http_send(request: &HttpRequest) -> Result<HttpResponse, Error> {
        with(|s| {
            let url = Url::parse(&request.url).map_err(|e| {
                Error::Invalid(run(s).masker.mask(&format!("outbound URL {:?}: {e}", request.url)).into_owned())
            })?;
            allowed(s, |g| g.check_outbound(&url))?;
            run(s).egress.check_url(&url).map_err(|e| network_refusal(run(s), &url, &e))?;
            s.sent.push(request.clone());
            match s.stubs.iter_mut().rev().find(|(prefix, _)| request.url.starts_with(prefix.as_str())) {
                Some((_, answers)) if answers.len() > 1 => answers.pop_front().unwrap_or_else(|| Err(Error::Failed("no answer".into()))),
                Some((_, answers)) => answers.front().cloned().unwrap_or_else(|| Err(Error::Failed("no answer".into()))),
                None => Err(Error::Failed(format!(
                    "MockHost has no stub for {}: add .stub(\"{}\", HttpResponse::new(200, \"\"))",
                    request.url,
                    url.origin().ascii_serialization() + "/"
                ))),
            }
        })
    }

    /// As the host: at most 64, each checked and answered as `send` would (the mock sends in
    /// order; the host sends at once).
    pub(crate) fn http_send_all(requests: &[HttpRequest]) -> Result<Vec<Result<HttpResponse, Error>>, Error> {
        if requests.len() > 64 {
            return Err(Error::Invalid(format!("send-all takes at most 64 requests (got {})", requests.len())));
        }
        Ok(requests.iter().map(http_send).collect())
    }
    pub(crate) fn outbox_enqueue(id: &str, item: &str) -> Result<(), Error> {
        use sluice_policy::delivery as rules;
        with(|s| {
            let run = s.run.as_mut().expect("prepared before run");
            if run.delivering {
                return Err(Error::Invalid(rules::NO_QUEUEING_IN_DELIVER.into()));
            }
            rules::check_queueing(id, run.queued).map_err(Error::Invalid)?;
            let batch = run.batch.ok_or_else(|| Error::Invalid(rules::NO_DELIVER_PHASE.into()))?;
            rules::check_item(item, batch.max_bytes).map_err(Error::Invalid)?;
            run.queued += 1;
            s.queued.push(Item { id: id.into(), attempt: 0, created_ms: now_ms(), data: item.into(), cookies: Vec::new() });
            Ok(())
        })
    }
    pub(crate) fn outbox_send_later(id: &str, request: &HttpRequest) -> Result<(), Error> {
        use sluice_policy::delivery as rules;
        with(|s| {
            let current = run(s);
            if current.delivering {
                return Err(Error::Invalid(rules::NO_QUEUEING_IN_DELIVER.into()));
            }
            rules::check_queueing(id, current.queued).map_err(Error::Invalid)?;
            if current.grant.summary().outbound.is_empty() {
                return Err(Error::Invalid(rules::NO_OUTBOX.into()));
            }
            let url = Url::parse(&request.url)
                .map_err(|e| Error::Invalid(current.masker.mask(&format!("outbound URL {:?}: {e}", request.url)).into_owned()))?;
            allowed(s, |g| g.check_outbound(&url))?;
            run(s).egress.check_url(&url).map_err(|e| network_refusal(run(s), &url, &e))?;
            if let Some(run) = s.run.as_mut() {
                run.queued += 1;
            }
            s.queued_requests.push((id.into(), request.clone()));
            Ok(())
        })
    }

    pub(crate) fn storage_get(key: &str) -> Result<Option<Vec<u8>>, Error> {
        with(|s| allowed(s, |g| g.check_storage()).map(|()| s.storage.get(key)))
    }
    pub(crate) fn storage_set(key: &str, value: &[u8], ttl_ms: Option<u64>) -> Result<(), Error> {
        with(|s| {
            allowed(s, |g| g.check_storage())?;
            s.storage.set(key, value, ttl_ms.map(Duration::from_millis)).map_err(|e| Error::Invalid(e.to_string()))
        })
    }
    pub(crate) fn storage_delete(key: &str) -> Result<(), Error> {
        with(|s| {
            allowed(s, |g| g.check_storage())?;
            s.storage.delete(key);
            Ok(())
        })
    }

    /// As the host writes them: masked.
    pub(crate) fn log(level: Level, message: &str) -> Result<(), Error> {
        with(|s| {
            allowed(s, |g| g.check_logging())?;
            let line = run(s).masker.mask(message).into_owned();
            s.logs.push((level, line));
            Ok(())
        })
    }

    pub(crate) fn config_get(name: &str) -> Option<String> {
        with(|s| run(s).params.get(name).map(|p| p.value.to_string()))
    }
}
