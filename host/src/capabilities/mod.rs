//! Host-call implementations, one module per capability. Each call checks the invocation's
//! effective grant first (`Invocation::allow`) and answers refusals with the WIT
//! `permission-denied` error, never a trap.

mod config;
mod consent;
mod event;
mod http;
mod log;
mod outbox;
mod request;
mod response;
mod storage;

impl crate::bindings::types::Host for crate::state::Invocation {}
// `delivery` declares only types (the `deliver` export's); there is nothing to call.
impl crate::bindings::delivery::Host for crate::state::Invocation {}
