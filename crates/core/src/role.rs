//! On-call roles whose schedule an administrator signs (spec/15-roles.md).
//!
//! "On-call cardiology" is an address that follows a schedule: the sender's
//! device resolves it at send time to the users who hold it now. The relay
//! stores and serves schedules, but cannot redirect a role: a schedule is
//! valid only under one of the organisation's administrator keys, which are
//! kept apart from every relay key, and a client takes a version of a role
//! only if it is newer than the one it holds.

use alloc::string::String;
use alloc::vec::Vec;
use core::fmt;

use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use rand_core::CryptoRng;
use ward_proto::Message as _;
use ward_proto::core_v1 as pb;
use zeroize::Zeroizing;

use crate::encoding::{expect_format, fixed, format};
use crate::error::{Error, Result};
use crate::limits::{MAX_GROUP_TEXT_LEN, MAX_ROLE_ASSIGNMENTS, MAX_ROLE_ID_LEN};

/// Whether `id` is a role's directory name: 1 to 32 bytes of
/// `[a-z0-9.-]` (spec/15).
pub fn is_role_id(id: &str) -> bool {
    (1..=MAX_ROLE_ID_LEN).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'.' || b == b'-')
}

/// Signed before every schedule's bytes, so an administrator signature on a
/// schedule passes for nothing else.
const SCHEDULE_LABEL: &[u8] = b"Ward v1 role schedule\0";

/// An administrator's Ed25519 signing key. It signs role schedules only and
/// lives in a file of its own, apart from the relay's TLS and audit keys, so
/// that it can be kept offline.
pub struct AdminKey {
    signing: SigningKey,
}

/// One holder of a role for one interval.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Assignment {
    /// The user who holds the role.
    pub user_id: String,
    /// First second of the interval (seconds since the Unix epoch).
    pub starts_at: u64,
    /// First second after it: the interval is `[starts_at, ends_at)`.
    pub ends_at: u64,
}

/// A role's schedule, whose administrator signature has been verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoleSchedule {
    /// The role's directory name, e.g. `cardiology-oncall`.
    pub role_id: String,
    /// What people read, e.g. "On-call cardiology".
    pub display_name: String,
    /// The department the role belongs to.
    pub department: String,
    /// Strictly increasing per role: a client keeps the highest it has seen.
    pub version: u64,
    /// When the administrator signed it.
    pub issued_at: u64,
    /// Ascending by `(starts_at, user_id)`; gaps and overlaps are allowed
    /// and reported, never dropped.
    pub assignments: Vec<Assignment>,
}

/// A stretch of time in which a role has no holder, or several.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Interval {
    /// First second, inclusive.
    pub from: u64,
    /// First second after it.
    pub to: u64,
}

impl AdminKey {
    /// A new key: 32 bytes drawn from `rng`.
    pub fn generate<R: CryptoRng + ?Sized>(rng: &mut R) -> Self {
        let mut seed = Zeroizing::new([0u8; 32]);
        rng.fill_bytes(seed.as_mut_slice());
        Self {
            signing: SigningKey::from_bytes(&seed),
        }
    }

    /// `0x0f || seed`, for the administrator's key file.
    pub fn to_secret_bytes(&self) -> Zeroizing<[u8; 33]> {
        let mut out = Zeroizing::new([0u8; 33]);
        out[0] = format::ADMIN_KEY_SECRET;
        out[1..].copy_from_slice(self.signing.as_bytes());
        out
    }

    /// Restores a key from [`Self::to_secret_bytes`].
    pub fn from_secret_bytes(bytes: &[u8]) -> Result<Self> {
        let seed = Zeroizing::new(fixed::<32>(
            "admin_key",
            expect_format(bytes, format::ADMIN_KEY_SECRET)?,
        )?);
        Ok(Self {
            signing: SigningKey::from_bytes(&seed),
        })
    }

    /// The public key clients pin.
    pub fn public_key(&self) -> [u8; 32] {
        self.signing.verifying_key().to_bytes()
    }

    /// Signs `schedule`: `0x0e || SignedRoleSchedule`. Checks it first, so
    /// that nothing a client would refuse gets signed.
    pub fn sign(&self, schedule: &RoleSchedule) -> Result<Vec<u8>> {
        schedule.check()?;
        let body = schedule.to_proto().encode_to_vec();
        let signature = self.signing.sign(&signing_input(&body));
        let signed = pb::SignedRoleSchedule {
            schedule: body,
            signature: signature.to_bytes().to_vec(),
        };
        let mut out = Vec::with_capacity(1 + signed.encoded_len());
        out.push(format::ROLE_SCHEDULE);
        signed.encode_raw(&mut out);
        Ok(out)
    }
}

impl RoleSchedule {
    /// Decodes a signed schedule and verifies it under one of
    /// `admin_keys`. Checks, in order: the format byte, the protobuf, the
    /// signature's length, the signature (strictly, under each key in turn:
    /// [`Error::BadSignature`] if none), then the schedule's own rules
    /// ([`Self::check`]).
    pub fn decode_verified(bytes: &[u8], admin_keys: &[[u8; 32]]) -> Result<Self> {
        let body = expect_format(bytes, format::ROLE_SCHEDULE)?;
        let signed = pb::SignedRoleSchedule::decode(body)?;
        let signature = Signature::from_bytes(&fixed::<64>("signature", &signed.signature)?);
        let input = signing_input(&signed.schedule);
        let verified = admin_keys.iter().any(|key| {
            VerifyingKey::from_bytes(key)
                .is_ok_and(|k| !k.is_weak() && k.verify_strict(&input, &signature).is_ok())
        });
        if !verified {
            return Err(Error::BadSignature);
        }
        let schedule = pb::RoleSchedule::decode(signed.schedule.as_slice())?;
        let schedule = Self {
            role_id: schedule.role_id,
            display_name: schedule.display_name,
            department: schedule.department,
            version: schedule.version,
            issued_at: schedule.issued_at,
            assignments: schedule
                .assignments
                .into_iter()
                .map(|a| Assignment {
                    user_id: a.user_id,
                    starts_at: a.starts_at,
                    ends_at: a.ends_at,
                })
                .collect(),
        };
        schedule.check()?;
        Ok(schedule)
    }

    /// The rules every schedule follows: a role id of 1 to 32 bytes of
    /// `[a-z0-9.-]`; names and user ids of at most 128 bytes, user ids not
    /// empty; at most [`MAX_ROLE_ASSIGNMENTS`]; each assignment ending after
    /// it starts; assignments ascending by `(starts_at, user_id)` with no
    /// two equal.
    pub fn check(&self) -> Result<()> {
        if !is_role_id(&self.role_id) {
            return Err(Error::InvalidSchedule("role_id"));
        }
        if self.display_name.len() > MAX_GROUP_TEXT_LEN
            || self.department.len() > MAX_GROUP_TEXT_LEN
        {
            return Err(Error::InvalidSchedule("name too long"));
        }
        if self.assignments.len() > MAX_ROLE_ASSIGNMENTS {
            return Err(Error::InvalidSchedule("too many assignments"));
        }
        for a in &self.assignments {
            if a.user_id.is_empty() || a.user_id.len() > MAX_GROUP_TEXT_LEN {
                return Err(Error::InvalidSchedule("user_id"));
            }
            if a.ends_at <= a.starts_at {
                return Err(Error::InvalidSchedule(
                    "an assignment ends before it starts",
                ));
            }
        }
        let ascending = self.assignments.windows(2).all(|w| {
            (w[0].starts_at, w[0].user_id.as_str()) < (w[1].starts_at, w[1].user_id.as_str())
        });
        if !ascending {
            return Err(Error::InvalidSchedule("assignments not strictly ascending"));
        }
        Ok(())
    }

    /// The users who hold the role at `now`, in schedule order, each once.
    pub fn holders_at(&self, now: u64) -> Vec<&str> {
        let mut holders: Vec<&str> = Vec::new();
        for a in &self.assignments {
            if a.starts_at > now {
                break;
            }
            if now < a.ends_at && !holders.contains(&a.user_id.as_str()) {
                holders.push(&a.user_id);
            }
        }
        holders
    }

    /// The end of the last assignment of `user` that ended in
    /// `(after, now]`, if that ended their hold on the role: an assignment
    /// followed at once by another of theirs (back to back, or
    /// overlapping) does not end it (spec/15, "Handoff").
    pub fn ended_hold(&self, user: &str, after: u64, now: u64) -> Option<u64> {
        self.assignments
            .iter()
            .filter(|a| a.user_id == user && after < a.ends_at && a.ends_at <= now)
            .map(|a| a.ends_at)
            .filter(|&end| !self.holders_at(end).contains(&user))
            .max()
    }

    /// Whether an assignment of `user` ends at `ends_at` exactly.
    pub fn hold_ends_at(&self, user: &str, ends_at: u64) -> bool {
        self.assignments
            .iter()
            .any(|a| a.user_id == user && a.ends_at == ends_at)
    }

    /// Who takes the role over from `user` at `at`: the other holders at
    /// `at`, or, when nobody else holds it then, the other holders at the
    /// first later start of an assignment of someone else. Empty when the
    /// schedule names nobody after `at`.
    pub fn successors(&self, user: &str, at: u64) -> Vec<&str> {
        let others = |t: u64| -> Vec<&str> {
            self.holders_at(t)
                .into_iter()
                .filter(|holder| *holder != user)
                .collect()
        };
        let now = others(at);
        if !now.is_empty() {
            return now;
        }
        self.assignments
            .iter()
            .find(|a| a.starts_at > at && a.user_id != user)
            .map_or_else(Vec::new, |a| others(a.starts_at))
    }

    /// Whether `user` holds the role at some time from `at` on.
    pub fn holds_from(&self, user: &str, at: u64) -> bool {
        self.assignments
            .iter()
            .any(|a| a.user_id == user && a.ends_at > at)
    }

    /// The stretches of `[from, to)` in which nobody holds the role.
    pub fn gaps(&self, from: u64, to: u64) -> Vec<Interval> {
        self.coverage(from, to, |holders| holders == 0)
    }

    /// The stretches of `[from, to)` in which two or more assignments hold it.
    pub fn overlaps(&self, from: u64, to: u64) -> Vec<Interval> {
        self.coverage(from, to, |holders| holders >= 2)
    }

    /// Sweeps the assignments' starts and ends once (n log n), merging
    /// adjacent stretches that match.
    fn coverage(&self, from: u64, to: u64, wanted: impl Fn(usize) -> bool) -> Vec<Interval> {
        // (time, +1 for a start or -1 for an end), clipped to [from, to).
        let mut events: Vec<(u64, i64)> = Vec::with_capacity(2 * self.assignments.len());
        for a in &self.assignments {
            let (start, end) = (a.starts_at.max(from), a.ends_at.min(to));
            if start < end {
                events.push((start, 1));
                events.push((end, -1));
            }
        }
        events.sort_unstable();
        let mut out: Vec<Interval> = Vec::new();
        let mut push = |start: u64, end: u64| {
            if start >= end {
                return;
            }
            match out.last_mut() {
                Some(last) if last.to == start => last.to = end,
                _ => out.push(Interval {
                    from: start,
                    to: end,
                }),
            }
        };
        let mut holders: i64 = 0;
        let mut at = from;
        let mut i = 0;
        while i < events.len() {
            let time = events[i].0;
            if wanted(holders as usize) {
                push(at, time);
            }
            while i < events.len() && events[i].0 == time {
                holders += events[i].1;
                i += 1;
            }
            at = time;
        }
        if from < to && wanted(holders as usize) {
            push(at, to);
        }
        out
    }

    fn to_proto(&self) -> pb::RoleSchedule {
        pb::RoleSchedule {
            role_id: self.role_id.clone(),
            display_name: self.display_name.clone(),
            department: self.department.clone(),
            version: self.version,
            issued_at: self.issued_at,
            assignments: self
                .assignments
                .iter()
                .map(|a| pb::RoleAssignment {
                    user_id: a.user_id.clone(),
                    starts_at: a.starts_at,
                    ends_at: a.ends_at,
                })
                .collect(),
        }
    }
}

fn signing_input(body: &[u8]) -> Vec<u8> {
    let mut input = Vec::with_capacity(SCHEDULE_LABEL.len() + body.len());
    input.extend_from_slice(SCHEDULE_LABEL);
    input.extend_from_slice(body);
    input
}

impl fmt::Debug for AdminKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AdminKey").finish_non_exhaustive()
    }
}
