//! The seam between the template API and whatever implements it: the Sluice host on wasm, the
//! mock host natively. Both modules expose the same free functions with the same signatures.

#[cfg(target_arch = "wasm32")]
pub(crate) mod wasm;
#[cfg(target_arch = "wasm32")]
pub(crate) use wasm::*;

#[cfg(not(target_arch = "wasm32"))]
pub(crate) use crate::mock::sys::*;
