//! Sluice's Kafka front end: framing, version negotiation and one handler per API,
//! translating Kafka requests into calls on [`sluice_core::Broker`].

pub mod consumer_protocol;
pub mod errors;
pub mod fetch_response;
mod handlers;
pub mod lazy_alloc;
pub mod server;
pub mod versions;
pub mod wire;

pub use server::{serve, KafkaServerConfig};
