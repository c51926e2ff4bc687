//! `ward-relay admin role ...`: the administrator key, signing a schedule,
//! publishing it to the relay's directory, and showing who holds a role
//! (spec/15; spec/08, "Role schedules").
//!
//! Signing needs only the administrator key file and the schedule, so it can
//! run on a machine that is not the relay; publishing needs the relay's data
//! directory and checks the signature under the configured administrator
//! keys before storing anything.

mod ics;

use std::fmt;
use std::path::Path;

use serde::Deserialize;
use ward_core::{AdminKey, Assignment, Interval, RoleSchedule};

use crate::admin::Utc;
use crate::keys::write_new_file;
use crate::storage::{RoleScheduleRecord, Storage, StorageError};

pub use self::ics::{ImportOptions, Imported, import, parse_map};

/// The largest schedule file read, in bytes.
const MAX_SCHEDULE_FILE_LEN: u64 = 16 * 1024 * 1024;

/// How far ahead `role show` looks for gaps and overlaps.
const SHOW_AHEAD_SECS: u64 = 7 * 24 * 60 * 60;

/// Why a role command failed; printed as one line.
#[derive(Debug, thiserror::Error)]
pub enum RoleError {
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// What went wrong.
        source: std::io::Error,
    },
    /// The output file exists; nothing was written.
    #[error("{0}: exists already; not replaced")]
    Exists(String),
    /// The schedule file is not valid TOML of the expected shape.
    #[error("{path}: {message}")]
    ScheduleFile {
        /// The file.
        path: String,
        /// The parser's message.
        message: String,
    },
    /// The schedule, the key or the signature was refused by ward-core.
    #[error("{0}")]
    Refused(#[from] ward_core::Error),
    /// No administrator key is configured, so nothing can be checked.
    #[error("no role_admin_keys in the relay's configuration: nothing to check a schedule against")]
    NoAdminKeys,
    /// A configured administrator key is not 64 hexadecimal digits.
    #[error("role_admin_keys: {0:?} is not 64 hexadecimal digits")]
    BadAdminKey(String),
    /// An iCalendar file could not be turned into a schedule; names the
    /// event and why.
    #[error("import: {0}")]
    Import(String),
    /// The storage refused or failed.
    #[error(transparent)]
    Storage(#[from] StorageError),
}

/// A schedule as an administrator writes it (TOML).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ScheduleFile {
    role_id: String,
    display_name: String,
    #[serde(default)]
    department: String,
    version: u64,
    #[serde(default, rename = "assignment")]
    assignments: Vec<AssignmentFile>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AssignmentFile {
    user: String,
    /// Seconds since the Unix epoch, inclusive.
    from: u64,
    /// Seconds since the Unix epoch, exclusive.
    to: u64,
}

fn read_file(path: &Path) -> Result<Vec<u8>, RoleError> {
    let io = |source| RoleError::Io {
        path: path.display().to_string(),
        source,
    };
    let len = std::fs::metadata(path).map_err(io)?.len();
    if len > MAX_SCHEDULE_FILE_LEN {
        return Err(io(std::io::Error::other("file too large")));
    }
    std::fs::read(path).map_err(io)
}

fn write_new(path: &Path, contents: &[u8]) -> Result<(), RoleError> {
    let written = write_new_file(path, contents, 0o600).map_err(|source| RoleError::Io {
        path: path.display().to_string(),
        source,
    })?;
    if !written {
        return Err(RoleError::Exists(path.display().to_string()));
    }
    Ok(())
}

/// `role keygen --out FILE`: a new administrator key, mode 0600. Returns
/// its public key in hex, for `role_admin_keys` and the devices.
pub fn keygen(out: &Path) -> Result<String, RoleError> {
    let key = AdminKey::generate(&mut ward_core::os_rng());
    write_new(out, &*key.to_secret_bytes())?;
    Ok(hex::encode(key.public_key()))
}

/// Reads a TOML schedule; assignments are sorted as the format requires.
pub fn read_schedule(path: &Path, now_secs: u64) -> Result<RoleSchedule, RoleError> {
    let text = read_file(path)?;
    let bad = |message: String| RoleError::ScheduleFile {
        path: path.display().to_string(),
        message,
    };
    let text = std::str::from_utf8(&text).map_err(|e| bad(e.to_string()))?;
    let file: ScheduleFile = toml::from_str(text).map_err(|e| bad(e.message().to_owned()))?;
    let mut assignments: Vec<Assignment> = file
        .assignments
        .into_iter()
        .map(|a| Assignment {
            user_id: a.user,
            starts_at: a.from,
            ends_at: a.to,
        })
        .collect();
    assignments.sort_by(|a, b| (a.starts_at, &a.user_id).cmp(&(b.starts_at, &b.user_id)));
    Ok(RoleSchedule {
        role_id: file.role_id,
        display_name: file.display_name,
        department: file.department,
        version: file.version,
        issued_at: now_secs,
        assignments,
    })
}

/// `role sign --key KEY --schedule FILE --out OUT`: signs a schedule.
pub fn sign(key: &Path, schedule: &Path, out: &Path, now_secs: u64) -> Result<Signed, RoleError> {
    let key = AdminKey::from_secret_bytes(&zeroize::Zeroizing::new(read_file(key)?))?;
    let schedule = read_schedule(schedule, now_secs)?;
    let signed = key.sign(&schedule)?;
    write_new(out, &signed)?;
    Ok(Signed {
        role_id: schedule.role_id,
        version: schedule.version,
        assignments: schedule.assignments.len(),
    })
}

fn admin_keys(configured: &[String]) -> Result<Vec<[u8; 32]>, RoleError> {
    if configured.is_empty() {
        return Err(RoleError::NoAdminKeys);
    }
    configured
        .iter()
        .map(|text| {
            hex::decode(text)
                .ok()
                .and_then(|b| <[u8; 32]>::try_from(b).ok())
                .ok_or_else(|| RoleError::BadAdminKey(text.clone()))
        })
        .collect()
}

/// `role publish FILE`: checks a signed schedule under the configured
/// administrator keys and stores it, if its version is newer.
pub fn publish(
    storage: &dyn Storage,
    configured_keys: &[String],
    signed_file: &Path,
    now_ms: u64,
) -> Result<Signed, RoleError> {
    let keys = admin_keys(configured_keys)?;
    let signed = read_file(signed_file)?;
    let schedule = RoleSchedule::decode_verified(&signed, &keys)?;
    storage.publish_role_schedule(
        &RoleScheduleRecord {
            role_id: schedule.role_id.clone(),
            version: schedule.version,
            signed,
            published_at: now_ms,
        },
        None,
        now_ms,
    )?;
    Ok(Signed {
        role_id: schedule.role_id,
        version: schedule.version,
        assignments: schedule.assignments.len(),
    })
}

/// `role show ROLE`: who holds it now, and its gaps and overlaps over the
/// next seven days. Checked under the configured keys like a device would.
pub fn show(
    storage: &dyn Storage,
    configured_keys: &[String],
    role_id: &str,
    now_secs: u64,
) -> Result<RoleReport, RoleError> {
    let keys = admin_keys(configured_keys)?;
    let record = storage.get_role_schedule(role_id)?;
    let schedule = RoleSchedule::decode_verified(&record.signed, &keys)?;
    let until = now_secs.saturating_add(SHOW_AHEAD_SECS);
    Ok(RoleReport {
        holders: schedule
            .holders_at(now_secs)
            .into_iter()
            .map(str::to_owned)
            .collect(),
        gaps: schedule.gaps(now_secs, until),
        overlaps: schedule.overlaps(now_secs, until),
        schedule,
    })
}

/// `role list`: every role the relay holds a schedule for.
pub fn list(storage: &dyn Storage) -> Result<RoleList, RoleError> {
    Ok(RoleList(storage.list_role_schedules()?))
}

/// What `sign` and `publish` print.
#[derive(Debug)]
pub struct Signed {
    /// The role.
    pub role_id: String,
    /// Its version.
    pub version: u64,
    /// How many assignments.
    pub assignments: usize,
}

impl fmt::Display for Signed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "role {} version {}: {} assignments",
            self.role_id, self.version, self.assignments
        )
    }
}

/// What `show` prints.
#[derive(Debug)]
pub struct RoleReport {
    /// The verified schedule.
    pub schedule: RoleSchedule,
    /// Who holds the role now.
    pub holders: Vec<String>,
    /// Stretches of the next seven days without a holder.
    pub gaps: Vec<Interval>,
    /// Stretches with two or more.
    pub overlaps: Vec<Interval>,
}

impl fmt::Display for RoleReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = &self.schedule;
        writeln!(
            f,
            "role {} ({}), version {}",
            s.role_id, s.display_name, s.version
        )?;
        match self.holders.is_empty() {
            true => writeln!(f, "held now by: nobody")?,
            false => writeln!(f, "held now by: {}", self.holders.join(", "))?,
        }
        for (what, list) in [("gap", &self.gaps), ("overlap", &self.overlaps)] {
            for i in list.iter() {
                let (from, to) = (
                    Utc(i.from.saturating_mul(1000)),
                    Utc(i.to.saturating_mul(1000)),
                );
                writeln!(f, "{what}: {from} to {to}")?;
            }
        }
        write!(
            f,
            "{} gaps and {} overlaps in the next 7 days",
            self.gaps.len(),
            self.overlaps.len()
        )
    }
}

/// What `list` prints.
#[derive(Debug)]
pub struct RoleList(pub Vec<RoleScheduleRecord>);

impl fmt::Display for RoleList {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            return write!(f, "no role schedules");
        }
        for (i, r) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{} version {}", r.role_id, r.version)?;
        }
        Ok(())
    }
}
