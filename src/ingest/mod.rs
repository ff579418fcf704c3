//! The MQTT side: payload validation and the collector loop.

pub mod collector;
mod order;
pub mod payload;
