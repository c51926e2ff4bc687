//! Ward's relay (issue 3; DESIGN.md, "Relay").
//!
//! This first part is the relay's storage: the directory (users, devices,
//! enrollment tokens), prekeys, the store-and-forward queues and the
//! verifiable audit log, behind one trait, [`storage::Storage`], with the
//! embedded SQLite backend [`storage::SqliteStorage`]. The QUIC server and
//! the admin CLI build on it.
//!
//! The relay stores only ciphertext plus metadata: message bodies and
//! prekeys are opaque bytes, and audit entries ([`ward_audit::AuditEntry`])
//! have no field that could hold them.

#![forbid(unsafe_code)]

pub mod admin;
pub mod config;
pub mod keys;
pub mod metrics;
pub mod roles;
pub mod server;
pub mod storage;
pub mod tls;
