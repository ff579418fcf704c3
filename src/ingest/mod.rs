//! The ingest side: payload validation, the collector loop and its two sources (the MQTT
//! poll task in the collector, the AMQP consumer in [`amqp`]), what the writer and the
//! sources share ([`source`]; imports run collector → amqp → source, never back), and the
//! quarantine replay that sends a refused message through the same path again.

pub mod amqp;
pub mod collector;
mod order;
pub mod payload;
pub mod replay;
pub mod source;
