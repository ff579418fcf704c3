//! The MQTT side: payload validation, the collector loop, and the quarantine replay that
//! sends a refused message through the same path again.

pub mod collector;
mod order;
pub mod payload;
pub mod replay;
