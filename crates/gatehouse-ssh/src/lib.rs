//! Gatehouse's SSH broker: a russh server facing operators (the front), a russh client
//! per operator connection facing the target (the back), and the per-channel relay between
//! them.
//!
//! The front turns SSH events into decisions taken by `gatehouse-core` (login names, access,
//! forwarding, rate limiting) and records every session in the store. It never shows an
//! operator the target's credential and never relays a forwarding request policy denies.

mod auth;
mod broker;
mod channels;
mod connection;
mod deny;
mod enforce;
mod forwarding;
pub mod keys;
mod recording;
mod relay;
mod serve;
mod state;
mod upstream;

pub use broker::{Broker, BrokerConfig, SshError};
pub use serve::run;
