//! The MQTT side: payload validation and the collector loop.

pub mod collector;
pub mod payload;
