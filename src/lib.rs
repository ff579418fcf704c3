//! # soilmon
//!
//! soilmon ingests soil heavy-metal readings from field stations (MQTT) and laboratories,
//! judges each reading against GB 15618-2018 / GB 36600-2018, stores it exactly once in
//! TimescaleDB and publishes exceedance alerts to the bureaus of the point's county.
//!
//! # Layout
//!
//! Follow a message from `main` to the database:
//!
//! - [`domain`] — the pure core, no I/O: [`domain::metal`], [`domain::unit`],
//!   [`domain::point`], [`domain::standard`] (threshold tables as validated data),
//!   [`domain::judge`] (reading → level, soil tier), [`domain::incident`] (alert state machine).
//! - [`config`] — typed configuration from `config/default.toml` plus `SOILMON__…` environment
//!   overrides, validated at load; loads the standards files.
//! - [`registry`] — the monitoring-point registry: CSV import format and in-memory lookup.
//! - [`ingest`] — the MQTT side: [`ingest::payload`] (bytes → validated sample or a reason
//!   code), [`ingest::collector`] (the poll task, batching, ordered acks after commit).
//! - [`store`] — PostgreSQL/TimescaleDB: [`store::migrate`] (versioned schema),
//!   [`store::writer`] (one transaction per batch: readings, quarantine, incidents, outbox),
//!   [`store::points`].
//! - [`alert`] — the outbox publisher: alert events and reject replies to MQTT, QoS1, marked
//!   sent only after the broker acknowledged them.
//! - [`simulate`] — a demo station network publishing to the broker.
//! - [`bench`] — `soilmon bench`: end-to-end benchmark against the broker and COPY limits.
//! - `main.rs` — the `soilmon` command line; wires the pieces together.

pub mod alert;
pub mod bench;
pub mod config;
pub mod domain;
pub mod ingest;
pub mod registry;
pub mod simulate;
pub mod store;
