//! Byte layouts of the opened values and of record keys (spec/11,
//! "Tables"), and typed reads of plain columns. Every read is bounded and
//! returns a typed error; nothing here panics on bad data.

use rusqlite::Row;
use rusqlite::types::ValueRef;
use zeroize::Zeroizing;

use super::error::{Result, corrupt};

/// The longest user id or relay address the store keeps, in bytes.
pub const MAX_NAME_LEN: usize = 1024;

/// Appends `u16be(len(text)) || text`, refusing text longer than
/// [`MAX_NAME_LEN`].
pub(super) fn put_name(out: &mut Vec<u8>, text: &str, what: &'static str) -> Result<()> {
    if text.len() > MAX_NAME_LEN {
        return Err(super::StoreError::TooLarge { what });
    }
    // MAX_NAME_LEN fits a u16.
    out.extend_from_slice(&(text.len() as u16).to_be_bytes());
    out.extend_from_slice(text.as_bytes());
    Ok(())
}

/// `u16be(len(text)) || text`, as a new buffer.
pub(super) fn name_bytes(text: &str, what: &'static str) -> Result<Vec<u8>> {
    let mut out = Vec::with_capacity(2 + text.len());
    put_name(&mut out, text, what)?;
    Ok(out)
}

/// A cursor over an opened value of `table`.
pub(super) struct Reader<'a> {
    bytes: &'a [u8],
    table: &'static str,
}

impl<'a> Reader<'a> {
    pub(super) fn new(table: &'static str, bytes: &'a [u8]) -> Self {
        Self { bytes, table }
    }

    pub(super) fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        if self.bytes.len() < n {
            return Err(corrupt(self.table, "value truncated"));
        }
        let (head, rest) = self.bytes.split_at(n);
        self.bytes = rest;
        Ok(head)
    }

    pub(super) fn array<const N: usize>(&mut self) -> Result<[u8; N]> {
        let table = self.table;
        self.take(N)?
            .try_into()
            .map_err(|_| corrupt(table, "value truncated"))
    }

    pub(super) fn u16(&mut self) -> Result<u16> {
        Ok(u16::from_be_bytes(self.array()?))
    }

    pub(super) fn u64(&mut self) -> Result<u64> {
        Ok(u64::from_be_bytes(self.array()?))
    }

    /// `u16be(len) || text`, UTF-8, at most [`MAX_NAME_LEN`] bytes.
    pub(super) fn name(&mut self) -> Result<String> {
        let len = usize::from(self.u16()?);
        if len > MAX_NAME_LEN {
            return Err(corrupt(self.table, "name too long"));
        }
        let bytes = self.take(len)?;
        String::from_utf8(bytes.to_vec()).map_err(|_| corrupt(self.table, "name is not UTF-8"))
    }

    /// Everything left.
    pub(super) fn rest(self) -> &'a [u8] {
        self.bytes
    }
}

/// An opened value together with its table, for [`Reader`].
pub(super) fn reader<'a>(table: &'static str, value: &'a Zeroizing<Vec<u8>>) -> Reader<'a> {
    Reader::new(table, value.as_slice())
}

/// A BLOB column.
pub(super) fn blob(row: &Row<'_>, index: usize, table: &'static str) -> Result<Vec<u8>> {
    match row.get_ref(index)? {
        ValueRef::Blob(b) => Ok(b.to_vec()),
        _ => Err(corrupt(table, "expected a blob")),
    }
}

/// A BLOB column of exactly `N` bytes.
pub(super) fn blob_n<const N: usize>(
    row: &Row<'_>,
    index: usize,
    table: &'static str,
) -> Result<[u8; N]> {
    match row.get_ref(index)? {
        ValueRef::Blob(b) => b
            .try_into()
            .map_err(|_| corrupt(table, "blob of the wrong length")),
        _ => Err(corrupt(table, "expected a blob")),
    }
}

/// An INTEGER column.
pub(super) fn integer(row: &Row<'_>, index: usize, table: &'static str) -> Result<i64> {
    match row.get_ref(index)? {
        ValueRef::Integer(i) => Ok(i),
        _ => Err(corrupt(table, "expected an integer")),
    }
}

/// An INTEGER column holding a `u32`.
pub(super) fn integer_u32(row: &Row<'_>, index: usize, table: &'static str) -> Result<u32> {
    u32::try_from(integer(row, index, table)?).map_err(|_| corrupt(table, "integer out of range"))
}

/// An INTEGER column holding a `u64` (stored as its `i64` bit pattern's
/// non-negative half: values above `i64::MAX` are refused on write).
pub(super) fn integer_u64(row: &Row<'_>, index: usize, table: &'static str) -> Result<u64> {
    u64::try_from(integer(row, index, table)?).map_err(|_| corrupt(table, "integer out of range"))
}

/// An INTEGER column holding 0 or 1.
pub(super) fn flag(row: &Row<'_>, index: usize, table: &'static str) -> Result<bool> {
    match integer(row, index, table)? {
        0 => Ok(false),
        1 => Ok(true),
        _ => Err(corrupt(table, "flag is neither 0 nor 1")),
    }
}

/// A TEXT column of at most [`MAX_NAME_LEN`] bytes.
pub(super) fn text(row: &Row<'_>, index: usize, table: &'static str) -> Result<String> {
    match row.get_ref(index)? {
        ValueRef::Text(t) if t.len() <= MAX_NAME_LEN => {
            String::from_utf8(t.to_vec()).map_err(|_| corrupt(table, "text is not UTF-8"))
        }
        ValueRef::Text(_) => Err(corrupt(table, "text too long")),
        _ => Err(corrupt(table, "expected text")),
    }
}
