//! Alert delivery: the outbox publisher.

pub mod publisher;
