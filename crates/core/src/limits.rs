//! Every bound the protocol enforces, in one place (spec/05-double-ratchet.md, "Bounds").

/// Most message keys one incoming message may make the receiver skip in one
/// chain. A header asking for more is refused with [`crate::Error::TooFarAhead`]
/// before any key is derived, which bounds the work a forged header can cause.
pub const MAX_SKIP: u32 = 1000;

/// Most skipped message keys kept for one chain; past it the oldest of that
/// chain are evicted.
pub const MAX_SKIPPED_PER_CHAIN: usize = 1000;

/// Most skipped message keys kept in one session; past it the oldest are evicted.
pub const MAX_SKIPPED_PER_SESSION: usize = 2000;

/// Largest plaintext one ratchet message carries (16 MiB): bigger payloads are
/// attachments, encrypted separately and referenced from a message.
pub const MAX_PLAINTEXT_LEN: usize = 16 * 1024 * 1024;

/// How many remote ratchet keys a session remembers after moving past them,
/// so that a replay from an old chain is recognised as one.
pub const MAX_PREVIOUS_REMOTE_RATCHETS: usize = 8;

/// Most message keys one group message may make the receiver skip in one
/// sender chain (spec/13-sender-keys.md, "Bounds"). Twice the default
/// rotation count: a chain never legitimately runs further ahead than that.
pub const MAX_SENDER_SKIP: u32 = 2000;

/// Most skipped message keys kept for one received sender chain; past it the
/// oldest are evicted.
pub const MAX_SENDER_SKIPPED_KEYS: usize = 2000;

/// Most users in one group (spec/14-groups.md, "Bounds").
pub const MAX_GROUP_MEMBERS: usize = 1000;

/// Most devices of one user in one group.
pub const MAX_GROUP_DEVICES_PER_USER: usize = 16;

/// Longest user id and group name, in bytes of UTF-8.
pub const MAX_GROUP_TEXT_LEN: usize = 128;

/// How many applied changes a group keeps to resolve a competing change
/// that arrives late; a change building on an older head is refused.
pub const MAX_GROUP_HISTORY: usize = 16;

/// Most received sender chains kept per member device: the newest, plus a
/// few older ones for messages that arrive after a rotation.
pub const MAX_CHAINS_PER_DEVICE: usize = 4;

/// Most assignments in one role schedule: a year of hourly shifts fits.
pub const MAX_ROLE_ASSIGNMENTS: usize = 10_000;

/// Longest role id, in bytes: short enough to name in an audit detail.
pub const MAX_ROLE_ID_LEN: usize = 32;
