//! The PostgreSQL wire protocol (v3), as much of it as a transparent broker needs, with no
//! I/O: split a byte stream into messages ([`frame`]), read startup packets and the messages
//! Gatehouse inspects ([`message`]), write the backend messages Gatehouse itself sends
//! ([`backend`]), run SCRAM-SHA-256 on both sides ([`scram`], [`scram_client`]), follow statements and
//! their results for the audit log ([`tracker`]) and show binary parameter values as text
//! ([`binary`]).
//!
//! Hand-written rather than `pgwire`/`postgres-protocol`: the relay forwards every message
//! byte-for-byte and only *looks* at a few (it never decodes a `DataRow`), which needs a
//! zero-copy framer and borrowed views rather than a decode/encode round trip; and
//! `postgres-protocol` is client-side only. Every parser here takes a byte slice, returns
//! "need more bytes" as a value, never panics on hostile input, and has a fuzz target in
//! `fuzz/`. The upstream (client-side) SCRAM is [`scram_client`] (it keeps salted passwords:
//! see there); md5 uses `postgres-protocol`.

pub mod backend;
pub mod binary;
mod executions;
pub mod frame;
pub mod message;
pub mod scram;
pub mod scram_client;
pub mod tracker;

pub use frame::{
    FrameError, MAX_LOGIN_MESSAGE, MAX_MESSAGE, MAX_SESSION_MESSAGE, frame_len, frame_len_within,
    startup_len,
};
pub use message::{Backend, Frontend, ProtoError, Startup};

pub use gatehouse_core::TlsMode;
