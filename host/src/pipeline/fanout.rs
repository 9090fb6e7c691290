//! Stage 3, the consent gate and fan-out: which tags each event runs, and what they may see.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;
use sluice_manifest::Purpose;
use sluice_policy::consent::{AuditRecord, ConsentState};
use sluice_policy::id_cookies;
use sluice_policy::request::Reads;

use super::invoke::Invoked;
use crate::bindings::tag::Fired;
use super::{Container, TagEntry};
use crate::delivery::{ItemKind, TagItem};
use crate::state::{Phase, RequestData, ResponseDraft, SharedEvent};
use crate::preview::EventRecord;
use crate::trace::{EventTrace, Outcome, Phases, TagRun};

impl Container {
    /// Per event: resolve consent, block the tags it does not allow, minimise what the others
    /// see, audit every decision, then start the allowed tags in priority order.
    pub(super) async fn fan_out(
        &self,
        (request, response, deadline): (&Arc<RequestData>, &Arc<Mutex<ResponseDraft>>, Instant),
        events: Vec<Value>,
    ) -> Vec<EventTrace> {
        let consent = &self.services.consent;
        let telemetry = &self.services.telemetry;
        let policy = consent.policy();
        let mut traces = Vec::with_capacity(events.len());
        for event in events {
            let event_name = event.get("event_name").and_then(Value::as_str).unwrap_or("").to_string();
            let matching: Vec<&Arc<TagEntry>> = self.tags.iter().filter(|t| t.trigger.matches(&event)).collect();
            // The preview shows the tags that did not fire too, with the condition that failed.
            let recorded = telemetry.preview.records(&request.id);
            let not_triggered = || {
                self.tags.iter().filter_map(|t| Some((t.template.name.clone(), t.trigger.explain(&event)?))).collect::<Vec<_>>()
            };
            if matching.is_empty() {
                if recorded {
                    let record = EventRecord { data: &event, consent: Value::Null, personal_data_removed: false, removed: &[], not_triggered: not_triggered() };
                    telemetry.preview.event(&request.id, record, &[]);
                }
                traces.push(EventTrace { event_name, tags: Vec::new() });
                continue;
            }
            // Consent is decided here, per event, before any tag is instantiated.
            let state = consent.resolve(&**request, &event, &request.id);
            let mut needed: Vec<&Purpose> = matching.iter().flat_map(|t| &t.purposes).collect();
            needed.sort_by_key(|p| p.index());
            needed.dedup();
            for purpose in needed {
                telemetry.metrics.consent(purpose.name(), state.status(*purpose).name());
            }
            let not_triggered = if recorded { not_triggered() } else { Vec::new() };
            let original = recorded.then(|| event.clone());
            let minimise = policy.minimises(&state);
            let (seen, removed) = if minimise {
                let minimised = policy.minimiser().event(&event);
                (minimised.value, minimised.removed)
            } else {
                (event, Vec::new())
            };
            let seen = Arc::new(SharedEvent::new(seen));
            let decisions: Vec<(&Arc<TagEntry>, Vec<&Purpose>)> =
                matching.into_iter().map(|tag| (tag, policy.missing(&state, &tag.purposes))).collect();
            if consent.audits() {
                let ts_ms = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis()).unwrap_or(0);
                let records: Vec<AuditRecord> = decisions
                    .iter()
                    .map(|(tag, missing)| AuditRecord {
                        ts_ms,
                        request_id: &request.id,
                        event_name: &event_name,
                        tag: &tag.template.name,
                        purposes_needed: &tag.purposes,
                        state: &state,
                        decision: if missing.is_empty() { "run" } else { "blocked" },
                        missing,
                        personal_data_removed: minimise && missing.is_empty(),
                        removed: if missing.is_empty() { &removed } else { &[] },
                    })
                    .collect();
                consent.audit(&records);
            }
            let mut runs = Vec::with_capacity(decisions.len());
            let mut blocked = Vec::new();
            for (tag, missing) in decisions {
                if missing.is_empty() {
                    runs.push(tag);
                } else {
                    blocked.push((tag.template.name.clone(), missing.iter().map(|p| p.name().to_string()).collect()));
                }
            }
            // Their declared id cookies first, in priority order: a tag's `fire` and its queued
            // event see the cookies as this response leaves them.
            for tag in &runs {
                self.set_id_cookies(tag, &seen, (request, response), minimise);
            }
            // A tag without `fire` needs no sandbox here: what it may see goes to its outbox.
            let (queue, runs): (Vec<_>, Vec<_>) = runs.into_iter().partition(|tag| !tag.delivery.fire);
            // `join_all` polls in order, so tags start in priority order and then run concurrently.
            let mut tags = futures::future::join_all(
                runs.iter().map(|tag| self.run_tag(tag, (request, response, deadline), &seen, state, minimise)),
            )
            .await;
            // The response's cookies as name/value pairs, read once for all the tags queued after
            // the sandboxes that could still add some.
            let set = cookie_pairs(&response.lock().unwrap_or_else(|p| p.into_inner()));
            // A tag whose `fire` ran first (to set cookies) and returned `done` has its event queued
            // now, with the cookies its `fire` left in the response.
            for (tag, run) in runs.iter().zip(tags.iter_mut()) {
                if tag.delivery.host_queues_event() && run.outcome == Outcome::Ok {
                    let queued = self.queue_event(tag, &seen, (request, &set), minimise);
                    (run.outcome, run.queued) = (queued.outcome, queued.queued);
                    run.duration += queued.duration;
                }
            }
            tags.extend(queue.into_iter().map(|tag| self.queue_event(tag, &seen, (request, &set), minimise)));
            for (tag, missing) in blocked {
                tags.push(TagRun {
                    tag,
                    outcome: Outcome::BlockedByConsent(missing),
                    denials: Vec::new(),
                    duration: Duration::ZERO,
                    phases: Phases::default(),
                    queued: 0,
                });
            }
            if let Some(original) = &original {
                let record = EventRecord { data: original, consent: state.to_json(), personal_data_removed: minimise, removed: &removed, not_triggered };
                telemetry.preview.event(&request.id, record, &tags);
            }
            traces.push(EventTrace { event_name, tags });
        }
        traces
    }

    async fn run_tag(
        &self,
        tag: &TagEntry,
        request: (&Arc<RequestData>, &Arc<Mutex<ResponseDraft>>, Instant),
        event: &Arc<SharedEvent>,
        consent: ConsentState,
        personal_data_removed: bool,
    ) -> TagRun {
        let started = Instant::now();
        let pre = tag.pre.clone();
        let invoked = self
            .invoke(
                &tag.template,
                request,
                (Some(event.clone()), consent, personal_data_removed),
                (Phase::InRequest, tag.outbox.clone()),
                move |store| Box::pin(async move { pre.instantiate_async(store).await }),
                |instance, store| Box::pin(async move { instance.call_fire(store).await }),
            )
            .await;
        let outcome = match invoked.result {
            Invoked::Returned(Ok(Fired::Done)) => Outcome::Ok,
            Invoked::Returned(Ok(Fired::Skipped(why))) => Outcome::Skipped(why),
            Invoked::Returned(Err(e)) => Outcome::from_template_error(e),
            other => Outcome::from_invocation(other.map_unit()),
        };
        TagRun {
            tag: tag.template.name.clone(),
            outcome: outcome.masked(),
            denials: invoked.denials,
            duration: started.elapsed(),
            phases: invoked.phases,
            queued: invoked.queued,
        }
    }
}

impl Container {
    /// Sets the tag's declared id cookies that are due ([`id_cookies::for_tag`]: within its
    /// grant, read as its `fire` would read them). Nothing once the response has gone (a client
    /// that answers before the tags), as for a `fire`'s cookies.
    fn set_id_cookies(
        &self,
        tag: &TagEntry,
        event: &SharedEvent,
        (request, response): (&RequestData, &Mutex<ResponseDraft>),
        personal_data_removed: bool,
    ) {
        if tag.delivery.id_cookies.is_empty() {
            return;
        }
        let reads = Reads { minimiser: personal_data_removed.then(|| self.services.consent.policy().minimiser()) };
        let mut response = response.lock().unwrap_or_else(|p| p.into_inner());
        if response.sent {
            return;
        }
        let set = cookie_pairs(&response);
        let view = id_cookies::TagView { grant: &tag.template.grant, event: event.value(), request, reads, set: &set };
        let now_ms = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64);
        // `{random}` is an id, not a secret (pixels use Math.random): a fast generator will do.
        for cookie in id_cookies::for_tag(&tag.delivery.id_cookies, view, now_ms, fastrand::u64(..)) {
            if let Err(e) = sluice_policy::response::check_cookie_room(response.cookies.len()) {
                tracing::warn!(tag = %tag.template.name, "id cookie {} not set: {e}", cookie.name);
                break;
            }
            response.cookies.push(cookie.line);
        }
    }

    /// Writes the event, as this tag may see it ([`sluice_manifest::EffectiveGrant::visible_event`]),
    /// to the tag's outbox, with the cookies its grant names as the browser holds them after
    /// this response ([`Reads::cookies_after_response`], read as its `fire` would read them).
    /// Its id is the event id the vendor deduplicates on ([`sluice_manifest::event_id`]), so a
    /// retried hit is one event.
    fn queue_event(
        &self,
        tag: &TagEntry,
        event: &SharedEvent,
        (request, set): (&RequestData, &[(String, String)]),
        personal_data_removed: bool,
    ) -> TagRun {
        let started = Instant::now();
        let no_keys = serde_json::Map::new();
        let grant = &tag.template.grant;
        // The shared event unless the grant narrows it; the id then comes from what the tag may
        // see (as the SDK's `dedup_id` does), not from keys it was not granted.
        let narrowed = grant
            .check_all_event_data()
            .is_err()
            .then(|| SharedEvent::new(Value::Object(grant.visible_event(event.value().as_object().unwrap_or(&no_keys)))));
        let seen = narrowed.as_ref().unwrap_or(event);
        let id = sluice_manifest::event_id(seen.value().as_object().unwrap_or(&no_keys), seen.fingerprint());
        self.services.telemetry.preview.queued(&request.id, &tag.template.name, &id);
        let reads = Reads { minimiser: personal_data_removed.then(|| self.services.consent.policy().minimiser()) };
        let cookies = reads.cookies_after_response(request, set, |name| grant.check_cookie(name).is_ok());
        let outcome = match &tag.outbox {
            Some(outbox) => match outbox.push(ItemKind::Tag, id, TagItem::encode(seen.json().as_bytes(), &cookies)) {
                Ok(()) => Outcome::Queued,
                Err(e) => {
                    tracing::warn!(tag = %tag.template.name, "event not queued: {e}");
                    Outcome::NotQueued(e.to_string())
                }
            },
            None => Outcome::NotQueued("the tag has no outbox".into()),
        };
        let queued = usize::from(outcome == Outcome::Queued);
        TagRun { tag: tag.template.name.clone(), outcome, denials: Vec::new(), duration: started.elapsed(), phases: Phases::default(), queued }
    }
}

/// The cookies the response sets so far, as name/value pairs.
fn cookie_pairs(response: &ResponseDraft) -> Vec<(String, String)> {
    response.cookies.iter().filter_map(|line| sluice_policy::request::set_cookie_pair(line)).collect()
}
