//! Protobuf wire types of the Ward protocol.
//!
//! These are the raw encodings only; `ward-core` validates them and turns them
//! into domain types. The normative description of every field is in
//! `spec/03-encodings.md` (core), `spec/08-relay-protocol.md` (relay) and
//! `spec/12-message-content.md` (message content).
#![no_std]
#![forbid(unsafe_code)]
#![warn(clippy::std_instead_of_core, clippy::alloc_instead_of_core)]

extern crate alloc;

/// The relay protocol's ALPN id (spec/08, "Transport").
pub const ALPN: &[u8] = b"ward/1";

pub mod auth;
pub mod frame;

/// Version 1 of the ward-core schemas (`proto/schemas/ward_core.proto`).
#[allow(missing_docs, unreachable_pub, clippy::all)]
pub mod core_v1 {
    include!(concat!(env!("OUT_DIR"), "/ward.core.v1.rs"));
}

/// Version 1 of the relay protocol (`proto/schemas/ward_relay.proto`).
#[allow(missing_docs, unreachable_pub, clippy::all)]
pub mod relay_v1 {
    include!(concat!(env!("OUT_DIR"), "/ward.relay.v1.rs"));
}

/// Version 1 of the message content format
/// (`proto/schemas/ward_content.proto`, spec/12).
#[allow(missing_docs, unreachable_pub, clippy::all)]
pub mod content_v1 {
    include!(concat!(env!("OUT_DIR"), "/ward.content.v1.rs"));
}

pub use prost::{DecodeError, Message};
