//! Stage 1, load and validate: everything that can be decided before traffic arrives is
//! decided here, so a mistake stops the host at start with a message naming the entry.

use std::sync::Arc;

use sluice_manifest::{Kind, Purpose};
use tokio_util::task::TaskTracker;

use super::{ClientEntry, Container, TagEntry, run_order};
use crate::bindings::client::ClientPre;
use crate::bindings::tag::TagPre;
use crate::config::ContainerConfig;
use crate::config::TagDeliveryConfig;
use crate::consent::Consent;
use crate::delivery::{Outboxes, TagOutbox, open_store};
use crate::engine::Runtime;
use crate::error::{LoadError, TemplateError};
use crate::outbound::Outbound;
use crate::services::Services;
use crate::template;

impl Container {
    /// Loads every template in the config: reads manifests, checks parameters and grants,
    /// compiles and pre-instantiates. Fails on the first problem, naming the entry.
    pub fn load(config: &ContainerConfig) -> Result<Self, LoadError> {
        Self::load_with(config, Arc::default(), None)
    }

    /// [`Container::load`] for a reload: the process's `telemetry` carries on, and every queue
    /// and template storage `previous` has for a template of the same name is taken over
    /// (the same files and lock, its counters) instead of opened again. Nothing of `previous`
    /// changes if this fails.
    pub(crate) fn load_with(config: &ContainerConfig, telemetry: Arc<crate::services::Telemetry>, previous: Option<&Container>) -> Result<Self, LoadError> {
        // The same limits: the same engine, whose components can be reused.
        let reused = previous.filter(|p| p.runtime.limits == config.limits);
        let runtime = match reused {
            Some(p) => p.runtime.clone(),
            None => Arc::new(Runtime::new(&config.limits)?),
        };
        let cache = reused.map(|p| p.compiled.clone()).unwrap_or_default();
        let delivery_cache = reused.map(|p| p.compiled_for_delivery.clone()).unwrap_or_default();
        let mut compiled = crate::template::Compiled::new();
        let mut compiled_for_delivery = crate::template::Compiled::new();
        let outbound = Outbound::new(&config.outbound).map_err(LoadError::Engine)?;
        let consent = Consent::new(config.consent.clone())?;
        telemetry.preview.configure(config.admin.as_ref().map(|a| a.preview.clone()).unwrap_or_default());
        let services = Arc::new(Services { outbound, denials: Default::default(), consent, telemetry });

        let pre_err = |name: &str, e: wasmtime::Error| LoadError::Template { entry: name.to_string(), error: TemplateError::Link(e.to_string()) };
        let outbox_err = |entry: &str, message: String| LoadError::Template { entry: entry.to_string(), error: TemplateError::Delivery(message) };
        let mut outboxes = Outboxes::default();
        // A template gets an outbox when it can use one: a declared batch, or an outbound grant
        // (for `send-later`).
        let mut outbox_for = |entry: &str, name: &str, batch: Option<sluice_manifest::Batch>, concurrency: Option<u32>, grant: &sluice_manifest::EffectiveGrant| {
            if batch.is_none() && grant.summary().outbound.is_empty() {
                return Ok(None);
            }
            let taken_over = previous
                .and_then(|p| p.outboxes.by_tag.get(name))
                .filter(|o| o.store.dir() == crate::delivery::queue_dir(&config.outbox_dir, name))
                .map(|o| (o.store.clone(), o.counters.clone()));
            let (store, counters) = match taken_over {
                Some(shared) => shared,
                None => (open_store(&config.outbox_dir, name, &config.outbox).map_err(|e| outbox_err(entry, e.to_string()))?, Default::default()),
            };
            let outbox = Arc::new(TagOutbox { tag: name.to_string(), store, batch, concurrency: concurrency.unwrap_or(2) as usize, counters });
            outboxes.by_tag.insert(name.to_string(), outbox.clone());
            Ok::<_, LoadError>(Some(outbox))
        };
        let mut clients = Vec::new();
        for c in &config.clients {
            let (mut template, component, digest) = template::load(&cache, &runtime.request.engine, runtime.limits.memory_mb, Kind::Client, &c.template)?;
            compiled.insert(digest, component.clone());
            keep_storage(&mut template, previous);
            let entry = format!("client {:?}", c.template.name);
            let pre = runtime.client_linker.instantiate_pre(&component).map_err(|e| pre_err(&entry, e))?;
            let pre = ClientPre::new(pre).map_err(|e| pre_err(&entry, e))?;
            let outbox = outbox_for(&entry, &c.template.name, None, None, &template.grant)?;
            clients.push(ClientEntry { template: Arc::new(template), pre, respond_before_tags: c.respond_before_tags, outbox });
        }
        let mut tags = Vec::new();
        for t in &config.tags {
            let (mut template, component, digest) = template::load(&cache, &runtime.request.engine, runtime.limits.memory_mb, Kind::Tag, &t.template)?;
            compiled.insert(digest, component.clone());
            keep_storage(&mut template, previous);
            let entry = format!("tag {:?}", t.template.name);
            let pre = runtime.request.tag_linker.instantiate_pre(&component).map_err(|e| pre_err(&entry, e))?;
            let pre = TagPre::new(pre).map_err(|e| pre_err(&entry, e))?;
            // Both lists were checked against the purpose names when read (config, manifest).
            let names = t.consent.as_ref().unwrap_or(&template.declaration.consent);
            let purposes = names.iter().filter_map(|name| Purpose::named(name)).collect();
            let mut delivery = template.declaration.delivery.clone();
            delivery.id_cookies = sluice_policy::id_cookies::enabled(&delivery.id_cookies, &template.params);
            delivery.batch = delivery.batch.map(|b| t.delivery.apply(b)).transpose().map_err(|m| outbox_err(&entry, m))?;
            if delivery.batch.is_none() && t.delivery != TagDeliveryConfig::default() {
                return Err(outbox_err(&entry, "delivery settings given, but the template declares no batch (it sends from fire)".into()));
            }
            // A tag that delivers batches runs `deliver` in the delivery pool: the same
            // component, loaded into that pool's engine.
            let deliver_pre = match delivery.batch {
                None => None,
                Some(_) => {
                    let copy = match delivery_cache.get(&digest) {
                        Some(copy) => copy.clone(),
                        None => template::copy_to(&component, &runtime.delivery.engine)
                            .map_err(|error| LoadError::Template { entry: entry.clone(), error })?,
                    };
                    compiled_for_delivery.insert(digest, copy.clone());
                    let pre = runtime.delivery.tag_linker.instantiate_pre(&copy).map_err(|e| pre_err(&entry, e))?;
                    Some(TagPre::new(pre).map_err(|e| pre_err(&entry, e))?)
                }
            };
            let outbox = outbox_for(&entry, &t.template.name, delivery.batch, t.delivery.concurrency, &template.grant)?;
            tags.push(Arc::new(TagEntry { template: Arc::new(template), pre, deliver_pre, trigger: t.trigger.clone(), purposes, delivery, outbox }));
        }
        crate::output::register_secrets(clients.iter().map(|c| &c.template).chain(tags.iter().map(|t| &t.template)).flat_map(|t| t.secrets()));
        clients.sort_by(|a, b| run_order(&a.template, &b.template));
        tags.sort_by(|a, b| run_order(&a.template, &b.template));

        Ok(Container {
            runtime,
            compiled,
            compiled_for_delivery,
            services,
            clients,
            tags,
            server: config.server.clone(),
            background: TaskTracker::new(),
            background_slots: Arc::new(tokio::sync::Semaphore::new((config.limits.max_concurrent as usize / 2).max(1))),
            outboxes,
            delivery: super::deliver::Workers::new(config.outbox.clone()),
            answer_after_commit: config.outbox.answer_after_commit,
        })
    }
}

/// On a reload, a template keeps the storage of the one it replaces (same name, same
/// template): what it cached survives, as it would without the reload.
fn keep_storage(template: &mut template::Template, previous: Option<&Container>) {
    if let Some(old) = previous.and_then(|p| p.templates().find(|o| o.name == template.name && o.declaration.name == template.declaration.name)) {
        template.storage = old.storage.clone();
    }
}

/// Something that loads and will fail, or surprise, on live traffic: what `sluice check` warns
/// about, so the problems do not surface one live event at a time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Warning {
    /// The template's name in the config.
    pub template: String,
    /// What will happen, and the line that fixes it.
    pub message: String,
}

impl Container {
    /// Every [`Warning`]: declared permissions the grant leaves out, granted outbound origins
    /// the `[outbound]` rules refuse, and trigger conditions on keys the tag cannot read.
    pub fn warnings(&self) -> Vec<Warning> {
        let mut out = Vec::new();
        let rules = self.services.outbound.policy();
        for t in self.templates() {
            let mut warn = |message: String| out.push(Warning { template: t.name.clone(), message });
            for note in t.grant.ungranted() {
                warn(note);
            }
            for pattern in t.grant.granted_outbound() {
                // Patterns with wildcards are not URLs; the exact ones are what operators write.
                let Ok(url) = url::Url::parse(pattern) else { continue };
                if let Err(refusal) = rules.check_url(&url) {
                    warn(format!("outbound grant {pattern:?} will be refused on every request: {refusal}"));
                }
            }
        }
        for tag in &self.tags {
            for condition in &tag.trigger.conditions {
                if tag.template.grant.check_event_key(&condition.key).is_err() {
                    out.push(Warning {
                        template: tag.template.name.clone(),
                        message: format!(
                            "its trigger tests {:?}, which the tag cannot read: triggers see the whole event, so it fires on a value it is not given; add {:?} to its event_data grant (and manifest) or drop the condition",
                            condition.key, condition.key
                        ),
                    });
                }
            }
        }
        out
    }
}
