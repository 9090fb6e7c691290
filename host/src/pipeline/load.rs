//! Stage 1, load and validate: everything that can be decided before traffic arrives is
//! decided here, so a mistake stops the host at start with a message naming the entry.

use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use sluice_manifest::{Kind, Purpose};
use tokio_util::task::TaskTracker;

use super::{ClientEntry, Container, TagEntry, run_order};
use crate::bindings::client::ClientPre;
use crate::bindings::tag::TagPre;
use crate::config::ContainerConfig;
use crate::consent::Consent;
use crate::engine::Runtime;
use crate::error::{LoadError, TemplateError};
use crate::outbound::Outbound;
use crate::services::Services;
use crate::template;

impl Container {
    /// Loads every template in the config: reads manifests, checks parameters and grants,
    /// compiles and pre-instantiates. Fails on the first problem, naming the entry.
    pub fn load(config: &ContainerConfig) -> Result<Self, LoadError> {
        let runtime = Runtime::new(&config.limits)?;
        let outbound = Outbound::new(&config.outbound).map_err(LoadError::Engine)?;
        let consent = Consent::new(config.consent.clone())?;
        let services = Arc::new(Services { outbound, metrics: Default::default(), consent });

        let pre_err = |name: &str, e: wasmtime::Error| LoadError::Template { entry: name.to_string(), error: TemplateError::Link(e.to_string()) };
        let mut clients = Vec::new();
        for c in &config.clients {
            let (template, component) = template::load(&runtime.engine, runtime.limits.memory_mb, Kind::Client, &c.template)?;
            let entry = format!("client {:?}", c.template.name);
            let pre = runtime.client_linker.instantiate_pre(&component).map_err(|e| pre_err(&entry, e))?;
            let pre = ClientPre::new(pre).map_err(|e| pre_err(&entry, e))?;
            clients.push(ClientEntry { template: Arc::new(template), pre, respond_before_tags: c.respond_before_tags });
        }
        let mut tags = Vec::new();
        for t in &config.tags {
            let (template, component) = template::load(&runtime.engine, runtime.limits.memory_mb, Kind::Tag, &t.template)?;
            let entry = format!("tag {:?}", t.template.name);
            let pre = runtime.tag_linker.instantiate_pre(&component).map_err(|e| pre_err(&entry, e))?;
            let pre = TagPre::new(pre).map_err(|e| pre_err(&entry, e))?;
            // Both lists were checked against the purpose names when read (config, manifest).
            let names = t.consent.as_ref().unwrap_or(&template.declaration.consent);
            let purposes = names.iter().filter_map(|name| Purpose::named(name)).collect();
            tags.push(Arc::new(TagEntry { template: Arc::new(template), pre, trigger: t.trigger.clone(), purposes }));
        }
        crate::output::register_secrets(clients.iter().map(|c| &c.template).chain(tags.iter().map(|t| &t.template)).flat_map(|t| t.secrets()));
        clients.sort_by(|a, b| run_order(&a.template, &b.template));
        tags.sort_by(|a, b| run_order(&a.template, &b.template));

        Ok(Container {
            runtime,
            services,
            clients,
            tags,
            server: config.server.clone(),
            next_id: AtomicU64::new(1),
            background: TaskTracker::new(),
            background_slots: Arc::new(tokio::sync::Semaphore::new((config.limits.max_concurrent as usize / 2).max(1))),
        })
    }
}
