//! Stage 4, invoke: one template run in a fresh sandbox, and what it ended with.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use sluice_policy::consent::ConsentState;
use wasmtime::Store;

use super::Container;
use crate::limits::{CpuLimitExceeded, MemoryLimitExceeded};
use crate::delivery::TagOutbox;
use crate::state::{Invocation, Phase, RequestData, ResponseDraft, SharedEvent};
use crate::template::Template;
use crate::trace::{Outcome, Phases};

/// Longest failure or trap message kept in a trace, in bytes.
pub(super) const MAX_MESSAGE: usize = 2048;

/// What a template invocation ended with, before it is mapped to an [`Outcome`].
pub(super) enum Invoked<T> {
    Returned(T),
    Trapped(wasmtime::Error),
    TimedOut,
    /// The request's deadline came first (or had passed before the invocation could start).
    DeadlinePassed,
}

/// An invocation's result with what the host saw of it.
pub(super) struct InvocationReport<T> {
    pub(super) result: Invoked<T>,
    /// Host calls refused along the way (secrets masked).
    pub(super) denials: Vec<String>,
    pub(super) phases: Phases,
    /// Items it put in its outbox.
    pub(super) queued: usize,
}

impl Container {
    /// One sandboxed invocation: a permit of the phase's pool
    /// ([`crate::engine::Runtime::sandbox`]; `instantiate` must use a pre-instance of that
    /// pool's engine), a fresh store, `instantiate`, then `call` on the instance, all inside
    /// `wall_ms` and the request's `deadline`, whichever comes first; then the store is
    /// dropped. Returns what happened, the denials met and how long each phase took.
    pub(super) async fn invoke<I: Send, T: Send + 'static>(
        &self,
        template: &Arc<Template>,
        (request, response, deadline): (&Arc<RequestData>, &Arc<Mutex<ResponseDraft>>, Instant),
        (event, consent, personal_data_removed): (Option<Arc<SharedEvent>>, ConsentState, bool),
        (phase, outbox): (Phase, Option<Arc<TagOutbox>>),
        instantiate: impl for<'a> FnOnce(&'a mut Store<Invocation>) -> BoxFuture<'a, wasmtime::Result<I>> + Send,
        call: impl for<'a> FnOnce(I, &'a mut Store<Invocation>) -> BoxFuture<'a, wasmtime::Result<T>> + Send,
    ) -> InvocationReport<T> {
        let not_started = || InvocationReport { result: Invoked::DeadlinePassed, denials: Vec::new(), phases: Phases::default(), queued: 0 };
        // The semaphore is never closed, so acquiring cannot fail; if it ever did, running
        // without a permit would only risk a pool-exhaustion error, not unsoundness. Waiting
        // for a slot counts against the request's deadline; a free slot needs no timer.
        let sandbox = self.runtime.sandbox(phase);
        let _permit = match sandbox.permits.clone().try_acquire_owned() {
            Ok(permit) => Some(permit),
            Err(_) => match tokio::time::timeout_at(deadline.into(), sandbox.permits.clone().acquire_owned()).await {
                Ok(permit) => permit.ok(),
                Err(_) => return not_started(),
            },
        };
        let started = Instant::now();
        let wall_end = started + Duration::from_millis(self.runtime.limits.wall_ms);
        let (end, cut_by_request) = if deadline < wall_end { (deadline, true) } else { (wall_end, false) };
        if started >= deadline {
            return not_started();
        }
        let mut store = self.runtime.store(sandbox, phase.cpu_scale(), |parts| Invocation {
            wasi: parts.wasi,
            table: Default::default(),
            limits: parts.limits,
            cpu: parts.cpu,
            template: template.clone(),
            services: self.services.clone(),
            request: request.clone(),
            response: response.clone(),
            event,
            consent,
            personal_data_removed,
            denials: Default::default(),
            phase,
            outbox,
            queued: 0,
        });
        let mut instantiated = None;
        // The CPU budget counts the CPU time of this future's polls ([`crate::limits::CpuClock`]).
        let meter = store.data().cpu.meter();
        let result = tokio::time::timeout_at(
            end.into(),
            meter.charged(async {
                let instance = instantiate(&mut store).await?;
                instantiated = Some(Instant::now());
                call(instance, &mut store).await
            }),
        )
        .await;
        let returned = Instant::now();
        let denials = std::mem::take(&mut store.data_mut().denials).into_trace();
        let queued = store.data().queued;
        drop(store);
        let instantiated = instantiated.unwrap_or(returned);
        let phases = Phases {
            instantiate: instantiated - started,
            call: returned - instantiated,
            teardown: returned.elapsed(),
        };
        let result = match result {
            Ok(Ok(value)) => Invoked::Returned(value),
            Ok(Err(trap)) => Invoked::Trapped(trap),
            Err(_) if cut_by_request => Invoked::DeadlinePassed,
            Err(_) => Invoked::TimedOut,
        };
        InvocationReport { result, denials, phases, queued }
    }
}

impl<T> Invoked<T> {
    pub(super) fn map_unit(self) -> Invoked<()> {
        match self {
            Invoked::Returned(_) => Invoked::Returned(()),
            Invoked::Trapped(e) => Invoked::Trapped(e),
            Invoked::TimedOut => Invoked::TimedOut,
            Invoked::DeadlinePassed => Invoked::DeadlinePassed,
        }
    }
}

impl Outcome {
    /// The same outcome with every secret masked ([`crate::output`]) and its message cut to
    /// [`MAX_MESSAGE`] bytes: outcomes are logged and traced, and a template's error message
    /// can quote what it was given or what a vendor echoed, at any length.
    pub(super) fn masked(self) -> Self {
        match self {
            Outcome::Failed(m) => Outcome::Failed(crate::output::bounded(&m, MAX_MESSAGE)),
            Outcome::Skipped(m) => Outcome::Skipped(crate::output::bounded(&m, MAX_MESSAGE)),
            Outcome::Trapped(m) => Outcome::Trapped(crate::output::bounded(&m, MAX_MESSAGE)),
            other => other,
        }
    }

    pub(super) fn from_template_error(e: crate::bindings::types::Error) -> Self {
        use crate::bindings::types::Error;
        Outcome::Failed(match e {
            Error::PermissionDenied(d) => format!("permission denied: {}", d.message),
            Error::Invalid(m) => format!("invalid: {m}"),
            Error::Timeout => "timed out".into(),
            Error::Failed(m) => m,
        })
    }

    pub(super) fn from_invocation(invoked: Invoked<()>) -> Self {
        match invoked {
            Invoked::Returned(()) => Outcome::Ok,
            Invoked::TimedOut => Outcome::TimedOut,
            Invoked::DeadlinePassed => Outcome::DeadlinePassed,
            Invoked::Trapped(e) => {
                if e.downcast_ref::<CpuLimitExceeded>().is_some() {
                    Outcome::CpuLimit
                } else if e.downcast_ref::<MemoryLimitExceeded>().is_some() {
                    Outcome::MemoryLimit
                } else {
                    let mut message = e.to_string();
                    if let Some(trap) = e.downcast_ref::<wasmtime::Trap>() {
                        message = format!("{message} ({trap})");
                    }
                    Outcome::Trapped(message)
                }
            }
        }
    }
}
