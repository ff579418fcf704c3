//! The pure domain core: analytes, units, points, standards, judgement, incidents, and the
//! input rules (ids, concentration and ceiling, time window, pH) shared by the station payload
//! parser and the lab checks, and the human incident workflow beside the reading-driven state
//! ([`workflow`]). Nothing here does I/O; adapters (`ingest`, `lab`, `store`,
//! `alert`) call into it.

pub mod crop;
pub mod enterprise;
pub mod incident;
pub mod judge;
pub mod metal;
pub mod obligation;
pub mod point;
pub mod reading;
pub mod rules;
pub mod sample;
pub mod standard;
pub mod unit;
pub mod workflow;
