//! Reload without dropping a request: the running container, swapped atomically.
//!
//! [`Live`] holds the container every new request runs on. A reload (`SIGHUP`, or `POST
//! /api/reload` on the admin listener) reads the config file again and loads it in full —
//! every template compiled, every parameter and grant checked — on a blocking thread, while
//! the old container keeps serving. Only then is the new one swapped in:
//!
//! * a request holds the container it started on (an `Arc`) to its end, so in-flight requests
//!   finish on the old templates and new ones start on the new;
//! * the queues are not reopened: the new container takes over each same-named tag's queue
//!   (files, lock, counters), and the old container's workers finish their batches in flight
//!   and hand their other items back ([`crate::Container`]'s retirement), so nothing queued is
//!   lost or waits for a restart;
//! * metrics, the preview and request ids live in [`crate::Telemetry`], shared by both;
//! * with the same `[limits]` the engine, its instance pool and permits are shared too, and a
//!   template whose file did not change is not compiled again: a reload that only changes
//!   parameters, grants or triggers costs milliseconds, and does not take the CPU the requests
//!   in flight need (compiling every template on each reload starved them enough, on two
//!   cores, for a client to overrun its CPU budget).
//!
//! A config that fails to load changes nothing: the error (file, entry, fix) is returned to the
//! caller and logged, the old container keeps serving. Reloads run one at a time. The listen
//! addresses are bound once: a changed `listen` or `[admin] listen` takes effect at restart,
//! and the reload says so.

use std::path::PathBuf;
use std::sync::{Arc, RwLock};

use crate::config::ContainerConfig;
use crate::error::{ConfigError, LoadError};
use crate::pipeline::Container;
use crate::services::Telemetry;

/// Why a reload did not happen. The old container keeps serving in every case.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    /// The server was started from a container, not a file.
    #[error("this server was not started from a config file, so there is nothing to reload")]
    NoFile,
    /// The file does not parse or validate.
    #[error("{0}; the running container keeps serving")]
    Config(#[from] ConfigError),
    /// A template does not load.
    #[error("{}: {error}; the running container keeps serving", file.display())]
    Load {
        /// The config file.
        file: PathBuf,
        /// Which entry, and why.
        error: Box<LoadError>,
    },
    /// The loading thread died.
    #[error("the reload's loading thread failed ({0}); the running container keeps serving")]
    Join(String),
}

/// What a reload did.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Reloaded {
    /// Templates now serving.
    pub templates: usize,
    /// Of those, how many were compiled (new or changed files, or all of them when `[limits]`
    /// changed); the others reuse the running container's components.
    pub compiled: usize,
    /// Settings that changed but apply only at restart.
    pub at_restart: Vec<String>,
}

/// The container serving new requests, and how to replace it.
pub struct Live {
    path: Option<PathBuf>,
    current: RwLock<Arc<Container>>,
    /// The config the current container was loaded from.
    config: RwLock<Option<ContainerConfig>>,
    reloading: tokio::sync::Mutex<()>,
}

impl std::fmt::Debug for Live {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Live").field("path", &self.path).finish_non_exhaustive()
    }
}

impl Live {
    /// Loads the container in `config` (read from its file, which reloads read again).
    pub fn load(config: ContainerConfig) -> Result<Arc<Live>, LoadError> {
        let container = Arc::new(Container::load(&config)?);
        Ok(Arc::new(Live {
            path: Some(config.path.clone()),
            current: RwLock::new(container),
            config: RwLock::new(Some(config)),
            reloading: tokio::sync::Mutex::new(()),
        }))
    }

    /// A container that cannot be reloaded (tests, embedders).
    pub fn fixed(container: Arc<Container>) -> Arc<Live> {
        Arc::new(Live { path: None, current: RwLock::new(container), config: RwLock::new(None), reloading: tokio::sync::Mutex::new(()) })
    }

    /// The container for a new request.
    pub fn current(&self) -> Arc<Container> {
        self.current.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Metrics, preview and request ids: the same across reloads.
    pub fn telemetry(&self) -> Arc<Telemetry> {
        self.current().telemetry().clone()
    }

    /// The config the running container came from, if it came from a file.
    pub fn config(&self) -> Option<ContainerConfig> {
        self.config.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Reads the config file again and, if everything in it loads, swaps the new container in
    /// (see the module docs). Returns once the old container's workers have handed over.
    pub async fn reload(&self) -> Result<Reloaded, ReloadError> {
        let _one_at_a_time = self.reloading.lock().await;
        let result = self.load_next().await;
        let telemetry = self.telemetry();
        telemetry.metrics.reload(result.is_ok());
        let (next, mut config) = match result {
            Ok(loaded) => loaded,
            Err(e) => {
                tracing::error!("reload failed: {}", crate::output::mask(&e.to_string()));
                return Err(e);
            }
        };
        let running = self.config();
        if let (Some(next), Some(running)) = (config.admin.as_mut(), running.as_ref().and_then(|c| c.admin.as_ref())) {
            next.keep_generated_token(running);
        }
        let at_restart = running.map(|old| at_restart(&old, &config)).unwrap_or_default();
        let templates = next.templates().count();
        let compiled = next.compiled_since(&self.current());
        let next = Arc::new(next);
        next.start_delivery();
        let old = std::mem::replace(&mut *self.current.write().unwrap_or_else(|p| p.into_inner()), next);
        *self.config.write().unwrap_or_else(|p| p.into_inner()) = Some(config);
        old.retire().await;
        for note in &at_restart {
            tracing::warn!("reload: {note}");
        }
        tracing::info!(templates, compiled, "reloaded the container");
        Ok(Reloaded { templates, compiled, at_restart })
    }

    async fn load_next(&self) -> Result<(Container, ContainerConfig), ReloadError> {
        let path = self.path.clone().ok_or(ReloadError::NoFile)?;
        let current = self.current();
        // Compiling templates takes seconds of CPU: not on the threads serving requests.
        tokio::task::spawn_blocking(move || {
            let config = ContainerConfig::load(&path)?;
            let next = Container::load_with(&config, current.telemetry().clone(), Some(&current)).map_err(|error| ReloadError::Load { file: path, error: Box::new(error) })?;
            Ok((next, config))
        })
        .await
        .map_err(|e| ReloadError::Join(e.to_string()))?
    }
}

/// `SIGHUP` reloads the container; the outcome is logged (a failure keeps the old one serving).
pub async fn on_sighup(live: Arc<Live>) {
    #[cfg(unix)]
    {
        let Ok(mut hangups) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) else {
            tracing::warn!("SIGHUP cannot be caught here: reload through the admin listener instead");
            return;
        };
        while hangups.recv().await.is_some() {
            tracing::info!("SIGHUP: reloading the container");
            // The outcome is logged by `reload` itself.
            let _ = live.reload().await;
        }
    }
    #[cfg(not(unix))]
    drop(live);
}

/// What changed between two configs that a reload cannot apply.
fn at_restart(old: &ContainerConfig, new: &ContainerConfig) -> Vec<String> {
    let mut notes = Vec::new();
    if old.listen != new.listen {
        notes.push(format!("listen changed from {} to {}: the server keeps {} until it restarts", old.listen, new.listen, old.listen));
    }
    let admin = |c: &ContainerConfig| c.admin.as_ref().map(|a| a.listen);
    if admin(old) != admin(new) {
        notes.push("[admin] listen changed: the admin listener keeps its address until the server restarts".into());
    }
    if old.outbox != new.outbox || old.outbox_dir != new.outbox_dir {
        notes.push("[outbox] changed: queues already open keep their settings (commit_ms, sync_ms, quota_mb, segment_mb, dir) until the server restarts".into());
    }
    notes
}
