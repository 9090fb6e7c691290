//! End-to-end tests: the real server on loopback, real template components built from this
//! repository, and fake vendors on loopback.

#![allow(clippy::unwrap_used)]

mod audit;
mod admin;
mod authoring;
mod config;
mod consent;
mod delivery;
mod front;
mod hardening;
mod image;
mod ga4;
mod logs;
mod parity;
mod permissions;
mod personal_data;
mod pipeline;
mod sandbox;
mod secrets;
mod vendors;
