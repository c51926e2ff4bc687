//! Role threads (spec/11, `role_threads`, `role_handoffs`; spec/15,
//! "Threads and handoff"): the recent messages of each role's threads
//! that this device sent, received or was handed, kept so that the
//! role's next holder can be handed them; and, per role, the end of the
//! last hold this user's devices handed off.

use rusqlite::{OptionalExtension, params};
use zeroize::Zeroizing;

use super::Store;
use super::codec::{blob, put_name, reader};
use super::error::{Result, StoreError, corrupt};

const ROLE_THREADS: &str = "role_threads";
const ROLE_HANDOFFS: &str = "role_handoffs";

/// The most thread messages kept, all roles together: past it the oldest
/// go first (spec/11, STO-31).
pub const MAX_ROLE_THREAD_ENTRIES: u64 = 20_000;

/// A message of a role thread, as this device keeps it.
#[derive(Clone, PartialEq, Eq)]
pub struct RoleThreadEntry {
    /// The role.
    pub role_id: String,
    /// Who wrote it.
    pub from_user: String,
    /// The id it was sent with.
    pub message_id: [u8; 16],
    /// When this device sent, received or was handed it, ms since the
    /// Unix epoch.
    pub at_ms: u64,
    /// The encoded content (spec/12): a `Message` whose `role` is set.
    /// Patient data: zeroized on drop.
    pub content: Zeroizing<Vec<u8>>,
}

impl core::fmt::Debug for RoleThreadEntry {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("RoleThreadEntry")
            .field("role_id", &self.role_id)
            .field("len", &self.content.len())
            .finish_non_exhaustive()
    }
}

/// `role_threads` value: `name(role_id) || name(from_user) || message_id
/// (16) || u64be(at_ms) || content`.
fn encode(entry: &RoleThreadEntry) -> Result<Zeroizing<Vec<u8>>> {
    let mut out = Zeroizing::new(Vec::with_capacity(64 + entry.content.len()));
    put_name(&mut out, &entry.role_id, "role id")?;
    put_name(&mut out, &entry.from_user, "user id")?;
    out.extend_from_slice(&entry.message_id);
    out.extend_from_slice(&entry.at_ms.to_be_bytes());
    out.extend_from_slice(&entry.content);
    Ok(out)
}

fn decode(value: &Zeroizing<Vec<u8>>) -> Result<RoleThreadEntry> {
    let mut r = reader(ROLE_THREADS, value);
    let role_id = r.name()?;
    let from_user = r.name()?;
    let message_id = r.array()?;
    let at_ms = r.u64()?;
    let content = Zeroizing::new(r.rest().to_vec());
    if content.is_empty() {
        return Err(corrupt(ROLE_THREADS, "no content"));
    }
    Ok(RoleThreadEntry {
        role_id,
        from_user,
        message_id,
        at_ms,
        content,
    })
}

fn sql_ms(ms: u64) -> Result<i64> {
    i64::try_from(ms).map_err(|_| StoreError::TooLarge { what: "time" })
}

/// # Role threads
impl Store {
    /// Keeps a message of a role thread, unless one of that role with its
    /// id is kept already; true if it was new. Past
    /// [`MAX_ROLE_THREAD_ENTRIES`] the oldest entry is dropped.
    pub fn record_role_entry(&mut self, entry: &RoleThreadEntry) -> Result<bool> {
        self.write(|conn, keys| {
            let tag = keys.tag(
                ROLE_THREADS,
                &[entry.role_id.as_bytes(), &[0], &entry.message_id],
            );
            let role_tag = keys.tag(ROLE_HANDOFFS, &[entry.role_id.as_bytes()]);
            let sealed = keys.seal(ROLE_THREADS, &tag, &encode(entry)?)?;
            let inserted = conn
                .prepare_cached(
                    "INSERT OR IGNORE INTO role_threads (tag, role_tag, at_ms, value) \
                     VALUES (?1, ?2, ?3, ?4)",
                )?
                .execute(params![
                    tag.as_slice(),
                    role_tag.as_slice(),
                    sql_ms(entry.at_ms)?,
                    sealed
                ])?;
            conn.prepare_cached(
                "DELETE FROM role_threads WHERE seq <= \
                 (SELECT max(seq) FROM role_threads) - ?1",
            )?
            .execute([MAX_ROLE_THREAD_ENTRIES as i64])?;
            Ok(inserted == 1)
        })
    }

    /// The kept messages of `role_id`'s threads from `since_ms` on, oldest
    /// first.
    pub fn role_entries(&self, role_id: &str, since_ms: u64) -> Result<Vec<RoleThreadEntry>> {
        let keys = self.keys()?;
        let role_tag = keys.tag(ROLE_HANDOFFS, &[role_id.as_bytes()]);
        let mut stmt = self.conn.prepare_cached(
            "SELECT tag, value FROM role_threads WHERE role_tag = ?1 AND at_ms >= ?2 \
             ORDER BY at_ms, seq",
        )?;
        let mut rows = stmt.query(params![role_tag.as_slice(), sql_ms(since_ms)?])?;
        let mut out = Vec::new();
        while let Some(row) = rows.next()? {
            let tag = blob(row, 0, ROLE_THREADS)?;
            let entry = decode(&keys.open(ROLE_THREADS, &tag, &blob(row, 1, ROLE_THREADS)?)?)?;
            if entry.role_id != role_id {
                return Err(corrupt(ROLE_THREADS, "an entry under another role's tag"));
            }
            out.push(entry);
        }
        Ok(out)
    }

    /// The roles of which messages are kept from `since_ms` on.
    pub fn roles_with_entries(&self, since_ms: u64) -> Result<Vec<String>> {
        let keys = self.keys()?;
        let mut stmt = self.conn.prepare_cached(
            "SELECT tag, value FROM role_threads WHERE seq IN \
             (SELECT min(seq) FROM role_threads WHERE at_ms >= ?1 GROUP BY role_tag)",
        )?;
        let mut rows = stmt.query([sql_ms(since_ms)?])?;
        let mut out = Vec::new();
        while let Some(row) = rows.next()? {
            let tag = blob(row, 0, ROLE_THREADS)?;
            let entry = decode(&keys.open(ROLE_THREADS, &tag, &blob(row, 1, ROLE_THREADS)?)?)?;
            out.push(entry.role_id);
        }
        Ok(out)
    }

    /// Drops the thread messages kept from before `before_ms`.
    pub fn prune_role_entries(&mut self, before_ms: u64) -> Result<()> {
        self.write(|conn, _| {
            conn.prepare_cached("DELETE FROM role_threads WHERE at_ms < ?1")?
                .execute([sql_ms(before_ms)?])?;
            Ok(())
        })
    }

    /// The last hold of `role_id` this user's devices handed off: its end
    /// (seconds since the Unix epoch) and the time (ms) up to which thread
    /// messages kept here were handed or forwarded.
    pub fn handed_off_until(&self, role_id: &str) -> Result<Option<(u64, u64)>> {
        let keys = self.keys()?;
        let tag = keys.tag(ROLE_HANDOFFS, &[role_id.as_bytes()]);
        let sealed = self
            .conn
            .prepare_cached("SELECT value FROM role_handoffs WHERE tag = ?1")?
            .query_row([tag.as_slice()], |row| Ok(blob(row, 0, ROLE_HANDOFFS)))
            .optional()?;
        let Some(sealed) = sealed else {
            return Ok(None);
        };
        let value = keys.open(ROLE_HANDOFFS, &tag, &sealed?)?;
        let mut r = reader(ROLE_HANDOFFS, &value);
        let (ends_at, through_ms) = (r.u64()?, r.u64()?);
        if !r.rest().is_empty() {
            return Err(corrupt(ROLE_HANDOFFS, "trailing bytes"));
        }
        Ok(Some((ends_at, through_ms)))
    }

    /// Records that the hold of `role_id` ending at `ends_at` was handed
    /// off, with the messages kept up to `through_ms`. What is recorded
    /// only moves forward: an earlier end, or the same end with an earlier
    /// time, changes nothing.
    pub fn set_handed_off(&mut self, role_id: &str, ends_at: u64, through_ms: u64) -> Result<()> {
        if self
            .handed_off_until(role_id)?
            .is_some_and(|held| held >= (ends_at, through_ms))
        {
            return Ok(());
        }
        self.write(|conn, keys| {
            let tag = keys.tag(ROLE_HANDOFFS, &[role_id.as_bytes()]);
            let mut value = [0u8; 16];
            value[..8].copy_from_slice(&ends_at.to_be_bytes());
            value[8..].copy_from_slice(&through_ms.to_be_bytes());
            let sealed = keys.seal(ROLE_HANDOFFS, &tag, &value)?;
            conn.prepare_cached(
                "INSERT OR REPLACE INTO role_handoffs (tag, value) VALUES (?1, ?2)",
            )?
            .execute(params![tag.as_slice(), sealed])?;
            Ok(())
        })
    }
}
