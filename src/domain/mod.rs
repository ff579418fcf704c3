//! The pure domain core: analytes, units, points, standards, judgement and incidents.
//! Nothing here does I/O; adapters (`ingest`, `store`, `alert`) call into it.

pub mod incident;
pub mod judge;
pub mod metal;
pub mod point;
pub mod reading;
pub mod sample;
pub mod standard;
pub mod unit;
