//! Role schedules taken by this device (spec/11, `role_schedules`; spec/15,
//! ROLE-4): the signed bytes of the highest version verified per role, so
//! that a relay cannot hand back an older schedule, even after a restart.

use rusqlite::{OptionalExtension, params};

use super::Store;
use super::codec::blob;
use super::error::Result;

pub(super) const ROLE_SCHEDULES: &str = "role_schedules";

/// # Role schedules
impl Store {
    /// The signed schedule kept for `role_id`, if any. The caller verifies
    /// it again: the store keeps bytes.
    pub fn role_schedule(&self, role_id: &str) -> Result<Option<Vec<u8>>> {
        let keys = self.keys()?;
        let tag = keys.tag(ROLE_SCHEDULES, &[role_id.as_bytes()]);
        let sealed = self
            .conn
            .prepare_cached("SELECT value FROM role_schedules WHERE tag = ?1")?
            .query_row([tag.as_slice()], |row| Ok(blob(row, 0, ROLE_SCHEDULES)))
            .optional()?;
        match sealed {
            None => Ok(None),
            Some(sealed) => Ok(Some(keys.open(ROLE_SCHEDULES, &tag, &sealed?)?.to_vec())),
        }
    }

    /// Keeps `signed` as the schedule of `role_id`, replacing the one kept.
    /// The caller has verified it and checked that its version is higher.
    pub fn put_role_schedule(&mut self, role_id: &str, signed: &[u8]) -> Result<()> {
        self.write(|conn, keys| {
            let tag = keys.tag(ROLE_SCHEDULES, &[role_id.as_bytes()]);
            let sealed = keys.seal(ROLE_SCHEDULES, &tag, signed)?;
            conn.prepare_cached(
                "INSERT OR REPLACE INTO role_schedules (tag, value) VALUES (?1, ?2)",
            )?
            .execute(params![tag.as_slice(), sealed])?;
            Ok(())
        })
    }
}
