//! What the relay accepts, per frame, message, device and connection.

use std::time::Duration;

use serde::Deserialize;

/// The relay's limits. Every one is enforced with a typed error
/// (spec/08, "Limits"); start from [`Default`].
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    /// The largest request frame body, in bytes.
    pub max_frame_len: u32,
    /// The largest ciphertext for one recipient device, in bytes.
    pub max_ciphertext_len: u32,
    /// The most envelopes in one send.
    pub max_envelopes: u32,
    /// The most messages queued for one device.
    pub max_queue_depth: u32,
    /// The most one-time prekeys stored for one device.
    pub max_one_time_prekeys: u32,
    /// Below this many one-time prekeys a device is told to upload more.
    pub prekeys_low_threshold: u32,
    /// Requests per second one connection may make, sustained.
    pub requests_per_second: u32,
    /// Requests one connection may make in a burst above the rate.
    pub request_burst: u32,
    /// Time to live of a message whose send names none, in milliseconds.
    pub default_ttl_ms: u64,
    /// The longest time to live a send may ask for, in milliseconds.
    pub max_ttl_ms: u64,
    /// The most messages returned by one fetch.
    pub max_fetch: u32,
    /// The most concurrent request streams on one connection.
    pub max_concurrent_requests: u32,
    /// A connection silent this long is closed, in milliseconds.
    pub idle_timeout_ms: u64,
    /// How long a client has to authenticate after connecting, in milliseconds.
    pub auth_timeout_ms: u64,
    /// Failed authentications after which a connection is closed.
    pub max_auth_failures: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_frame_len: 4 * 1024 * 1024,
            max_ciphertext_len: 256 * 1024,
            max_envelopes: 256,
            max_queue_depth: 10_000,
            max_one_time_prekeys: 1_000,
            prekeys_low_threshold: 20,
            requests_per_second: 2_000,
            request_burst: 4_000,
            default_ttl_ms: 14 * 24 * 3600 * 1000,
            max_ttl_ms: 30 * 24 * 3600 * 1000,
            max_fetch: 500,
            max_concurrent_requests: 16,
            idle_timeout_ms: 30_000,
            auth_timeout_ms: 10_000,
            max_auth_failures: 3,
        }
    }
}

impl Limits {
    /// [`idle_timeout_ms`](Self::idle_timeout_ms) as a duration.
    pub fn idle_timeout(&self) -> Duration {
        Duration::from_millis(self.idle_timeout_ms)
    }

    /// [`auth_timeout_ms`](Self::auth_timeout_ms) as a duration.
    pub fn auth_timeout(&self) -> Duration {
        Duration::from_millis(self.auth_timeout_ms)
    }
}
