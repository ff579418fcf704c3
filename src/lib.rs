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
//!   [`domain::judge`] (reading → level at a point, soil tier), [`domain::incident`] (alert
//!   state machine), [`domain::rules`] (the input rules shared by station payloads and lab rows:
//!   ids, point ids, negative value and ceiling, time window, pH), [`domain::sample`] (a parsed
//!   station sample or its reason code), [`domain::reading`] (the judged reading every source
//!   stores, and its one constructor), [`domain::workflow`] (the human incident workflow
//!   beside the reading-driven state: actions and their rules), [`domain::obligation`]
//!   (monitoring obligations as validated data: which points owe which metals how often,
//!   overdue metals, coverage), [`domain::crop`] (GB 2762 food limits, the farmland category
//!   table, a point's classification and history per campaign), [`domain::enterprise`] (credit
//!   code check, plot status, land-bureau candidates, the lab-first standing reading).
//! - [`config`] — typed configuration from `config/default.toml` plus `SOILMON__…` environment
//!   overrides, validated at load; loads the standards files.
//! - [`registry`] — the monitoring-point registry: CSV import format, in-memory lookup and
//!   the [`registry::SharedRegistry`] snapshot handle.
//! - [`ingest`] — the ingest side: [`ingest::payload`] (bytes → validated sample or a reason
//!   code; [`ingest::payload::scan`], the lenient `msg_id` scan of refused bytes),
//!   [`ingest::replay`] (a quarantined message through the same path again),
//!   [`ingest::collector`] (the MQTT poll task, natural batching, three batches in the
//!   database at once, copying side by side, committing in order, ordered acks after
//!   commit, whatever the source: it knows a message's ack only as an `AckTag`),
//!   [`ingest::amqp`] (cluster mode's source: a RabbitMQ quorum-queue consumer feeding the
//!   same writer), [`ingest::source`] (what the writer and both sources share, so imports
//!   run collector → amqp → source) and `ingest/order.rs` (the pure primitive that releases batches in arrival
//!   order).
//! - [`lab`] — lab batches, pure: [`lab::csv`] (CSV/JSON body → rows), [`lab::xlsx`] (an
//!   Excel sheet → the same rows; a CSV → a sheet), [`lab::checks`]
//!   (row and batch checks with codes and line numbers), [`lab::qc`] (duplicates, blanks,
//!   CRM, spikes), [`lab::crop`] (crop rows: known matrix, linked farmland point).
//! - [`http`] — the axum API inside `soilmon run`: lab uploads, reports, health, readiness,
//!   Prometheus metrics ([`http::metrics`]), bearer tokens ([`http::auth`]), the role
//!   extractor ([`http::caller`]), the handlers' error type ([`http::error`]), the admin
//!   quarantine browser and replay ([`http::admin`]), the management API ([`http::manage`]),
//!   alert subscriptions and failed deliveries ([`http::subscriptions`], through
//!   [`deliver::manage`]),
//!   the route table and its OpenAPI document ([`http::openapi`]),
//!   the `soilmon upload` client ([`http::client`]), and the web console and public
//!   disclosure page ([`http::console`]: sign-in sessions, pages, JSON for the page scripts,
//!   CSV / xlsx / GeoJSON downloads, embedded templates and scripts, npm-installed browser
//!   libraries).
//! - [`store`] — PostgreSQL/TimescaleDB: [`store::migrate`] (versioned schema),
//!   [`store::writer`] (one transaction per batch, in three phases: stage (messages as `samples`
//!   rows under their keys, judging), copy (readings), finish (incidents, quarantine, outbox, archive,
//!   COMMIT)), [`store::chunks`] (which hypertable chunks exist, so batches may copy side by
//!   side),
//!   [`store::readings`] (judged readings as lean rows, shared by every source),
//!   `store/samples.rs` (their `samples` rows by binary COPY, shared by both writers),
//!   [`store::keys`] (metal and level codes, unit and judgement-basis keys),
//!   [`store::incidents`]
//!   (incident tracks and their alert events; [`store::incidents::TrackCache`], the station
//!   writer's memory of the tracks it committed), [`store::outbox`] (every outbox statement),
//!   [`store::lab`] (lab batches: idempotency, stored-data checks, binary COPY of the rows),
//!   [`store::points`], [`store::quarantine`] (the quarantine browser, replay and its log),
//!   [`store::console`] (console sessions, the incident workflow in one transaction with its
//!   archive entry and outbox event, the console's scoped reads), [`store::network`] (point
//!   programs, last samples through `readings_full`, the overdue check and coverage),
//!   [`store::crops`] (crop results, farmland categories), [`store::plots`] (development-land
//!   plots, their status changes by hand, the land bureau's candidate list),
//!   [`store::snapshots`] (the soil tier snapshot the console and public page read).
//! - [`alert`] — the outbox publisher: alert events and reject replies to MQTT, QoS1 (or to
//!   RabbitMQ over AMQP with confirms in cluster mode), marked sent only after the broker
//!   acknowledged them; of N instances one publishes at a time (the outbox lock).
//! - [`deliver`] — alert delivery to bureau subscriptions: the pure parts
//!   [`deliver::filter`], [`deliver::backoff`], [`deliver::ratelimit`], [`deliver::render`],
//!   [`deliver::schedule`] (digest times); the channels [`deliver::webhook`],
//!   [`deliver::robot`] (DingTalk, WeCom) and [`deliver::email`] (SMTP); the secrets file
//!   [`deliver::secrets`]; [`deliver::manage`] (the subscription rules every interface calls:
//!   add with its scope and filter checks, test, pause, resume, remove, dead letters, retry;
//!   who may manage which); [`deliver::engine`] (outbox → `deliveries` fan-out, batched
//!   claims with leases per incident key, sends — one task per claimed batch, the private
//!   `deliver::batch` —, retries, dead letters, batched marks) and [`deliver::digest`] (daily
//!   digests and reminders). Its SQL is in [`store::subscriptions`],
//!   [`store::deliveries`] and [`store::digests`].
//! - [`mqtt`] — MQTT client options, back-off and cancellable sleep shared by the collector
//!   and the publisher.
//! - [`amqp`] — cluster mode's AMQP 0-9-1 adapter (lapin): connecting to the first RabbitMQ
//!   node that answers, the topology `soilmon broker setup` declares, routing probes for
//!   `soilmon broker check`, MQTT topic ↔ routing key.
//! - [`telemetry`] — one function per event (batch committed, message refused, alerts
//!   published, lab batch…): its log line and its metric together; the metric names.
//! - [`broker`] — Mosquitto password and ACL files generated from the broker identities in
//!   [`store::identities`], and the broker reload; [`broker::rabbitmq`], the same identities
//!   as RabbitMQ users and permissions through the management HTTP API (cluster mode).
//! - [`store::archive`] — the tamper-evident archive (hash chain over raw inputs and the
//!   readings derived from them), `soilmon verify` and the admin correction path.
//! - [`simulate`] — `soilmon simulate`, a demo station network publishing to the broker:
//!   [`simulate::generate`] (pure message generation, shared with the `soilmon-bench` load
//!   generator), [`simulate::publish`] (the MQTT client and pacing).
//! - [`network`] — network management inside `soilmon run`: the periodic overdue check
//!   (rules in [`domain::obligation`], state and events in [`store::network`]); coverage
//!   reports for `soilmon coverage` and `GET /v1/coverage`.
//! - [`snapshots`] — the soil tier snapshot's refresh inside `soilmon run` (the SQL in
//!   [`store::snapshots`]): the map, point and public pages read it instead of scanning every
//!   reading.
//! - [`service`] — what `soilmon run` starts (migrate, registry refresher, publisher, HTTP,
//!   collector) behind a handle a test can start in-process and shut down.
//! - `main.rs` — the `soilmon` command line: parses arguments and dispatches to `cli/`, one
//!   file per command group (the command layer, where `anyhow` is allowed).
//! - `bin/soilmon-bench/` — the `soilmon-bench` binary (`soilmon bench` forwards to it): the
//!   end-to-end benchmark against the broker and COPY limits, a client of this library only,
//!   kept out of the service binary.

#![warn(missing_docs)]

pub mod alert;
pub mod amqp;
pub mod broker;
pub mod config;
pub mod deliver;
pub mod domain;
pub mod http;
pub mod ingest;
pub mod lab;
pub mod mqtt;
pub mod network;
pub mod registry;
pub mod service;
pub mod simulate;
pub mod snapshots;
pub mod store;
pub mod telemetry;
