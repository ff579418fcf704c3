//! soilmon
