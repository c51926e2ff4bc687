//! `ward-relay admin role import`: a rota exported as iCalendar (RFC 5545,
//! the format Amion and other scheduling systems export) turned into a
//! schedule file for `role sign`, for the administrator to read first.
//!
//! Every event becomes one assignment or the import fails naming it:
//! nothing is dropped. The holder is the event's `ATTENDEE` (a `mailto:`
//! address, taken as the user id) or, failing that, its `SUMMARY` looked up
//! in the `--map NAME=USER` pairs. Times with a `TZID` are converted with
//! the IANA time-zone database; floating times and all-day events need
//! `--timezone`. Recurring events are refused: the rota system expands them.

use std::fmt::Write as _;
use std::path::Path;
use std::str::FromStr as _;

use chrono::{NaiveDate, NaiveDateTime, TimeZone as _};
use icalendar::{Calendar, CalendarDateTime, Component as _, DatePerhapsTime};

use super::{RoleError, read_file, write_new};

/// What `role import` needs besides the file.
#[derive(Debug, Clone)]
pub struct ImportOptions {
    /// The role's id.
    pub role_id: String,
    /// Its display name.
    pub display_name: String,
    /// Its department.
    pub department: String,
    /// The version the schedule will get.
    pub version: u64,
    /// The IANA time zone of floating times and all-day events.
    pub timezone: Option<String>,
    /// `SUMMARY` text to user id, for events without an `ATTENDEE`.
    pub map: Vec<(String, String)>,
}

/// What `role import` reports.
#[derive(Debug)]
pub struct Imported {
    /// Assignments written.
    pub assignments: usize,
}

impl std::fmt::Display for Imported {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} assignments written; read the file, then `role sign` it",
            self.assignments
        )
    }
}

fn refuse(event: &str, why: impl std::fmt::Display) -> RoleError {
    RoleError::Import(format!("event {event}: {why}"))
}

/// Parses `NAME=USER` of `--map`.
pub fn parse_map(pair: &str) -> Result<(String, String), String> {
    match pair.split_once('=') {
        Some((name, user)) if !name.is_empty() && !user.is_empty() => {
            Ok((name.trim().to_owned(), user.trim().to_owned()))
        }
        _ => Err(format!("{pair:?} is not NAME=USER")),
    }
}

fn to_secs(
    event: &str,
    which: &str,
    value: DatePerhapsTime,
    zone: Option<chrono_tz::Tz>,
) -> Result<u64, RoleError> {
    let local = |naive: NaiveDateTime| -> Result<i64, RoleError> {
        let zone = zone
            .ok_or_else(|| refuse(event, format!("{which} has no time zone: give --timezone")))?;
        zone.from_local_datetime(&naive)
            .single()
            .map(|t| t.timestamp())
            .ok_or_else(|| {
                refuse(
                    event,
                    format!("{which} does not exist or is ambiguous in {zone} (a DST change)"),
                )
            })
    };
    let secs = match value {
        DatePerhapsTime::DateTime(CalendarDateTime::Floating(naive)) => local(naive)?,
        DatePerhapsTime::DateTime(other @ CalendarDateTime::Utc(_))
        | DatePerhapsTime::DateTime(other @ CalendarDateTime::WithTimezone { .. }) => other
            .try_into_utc()
            .ok_or_else(|| refuse(event, format!("{which}: unknown time zone")))?
            .timestamp(),
        DatePerhapsTime::Date(date) => local(midnight(date))?,
    };
    u64::try_from(secs).map_err(|_| refuse(event, format!("{which} is before 1970")))
}

fn midnight(date: NaiveDate) -> NaiveDateTime {
    date.and_time(chrono::NaiveTime::MIN)
}

/// Reads an iCalendar file and writes the schedule file `out`.
pub fn import(ics: &Path, options: &ImportOptions, out: &Path) -> Result<Imported, RoleError> {
    let text = read_file(ics)?;
    let text = std::str::from_utf8(&text)
        .map_err(|_| RoleError::Import(format!("{}: not UTF-8", ics.display())))?;
    let calendar = Calendar::from_str(text)
        .map_err(|e| RoleError::Import(format!("{}: {e}", ics.display())))?;
    let zone =
        match &options.timezone {
            Some(name) => Some(name.parse::<chrono_tz::Tz>().map_err(|_| {
                RoleError::Import(format!("--timezone {name}: not an IANA time zone"))
            })?),
            None => None,
        };
    let mut assignments = Vec::new();
    for event in calendar.events() {
        let name = event
            .get_uid()
            .or_else(|| event.get_summary())
            .unwrap_or("without UID or SUMMARY")
            .to_owned();
        if event.property_value("RRULE").is_some() || event.property_value("RDATE").is_some() {
            return Err(refuse(
                &name,
                "recurring events are not imported: expand them in the rota system",
            ));
        }
        let attendees: Vec<&str> = event
            .multi_properties()
            .get("ATTENDEE")
            .map(|list| list.iter().map(|p| p.value()).collect())
            .unwrap_or_default();
        let user = match attendees.as_slice() {
            [attendee] => attendee
                .strip_prefix("mailto:")
                .or_else(|| attendee.strip_prefix("MAILTO:"))
                .unwrap_or(attendee)
                .to_owned(),
            [] => {
                let summary = event.get_summary().unwrap_or_default().trim();
                options
                    .map
                    .iter()
                    .find(|(text, _)| text == summary)
                    .map(|(_, user)| user.clone())
                    .ok_or_else(|| {
                        refuse(
                            &name,
                            format!("no ATTENDEE, and SUMMARY {summary:?} is not in --map"),
                        )
                    })?
            }
            _ => return Err(refuse(&name, "several ATTENDEEs: one holder per event")),
        };
        let start = event
            .get_start()
            .ok_or_else(|| refuse(&name, "no DTSTART"))?;
        let end = event.get_end().ok_or_else(|| refuse(&name, "no DTEND"))?;
        let from = to_secs(&name, "DTSTART", start, zone)?;
        let to = to_secs(&name, "DTEND", end, zone)?;
        if to <= from {
            return Err(refuse(&name, "ends before it starts"));
        }
        assignments.push((from, user, to));
    }
    assignments.sort();
    let mut toml = String::new();
    let quoted = |s: &str| toml::Value::String(s.to_owned()).to_string();
    let _ = writeln!(
        toml,
        "# Imported from {}; check it before `role sign`.",
        ics.display()
    );
    let _ = writeln!(toml, "role_id = {}", quoted(&options.role_id));
    let _ = writeln!(toml, "display_name = {}", quoted(&options.display_name));
    let _ = writeln!(toml, "department = {}", quoted(&options.department));
    let _ = writeln!(toml, "version = {}", options.version);
    for (from, user, to) in &assignments {
        let _ = writeln!(
            toml,
            "\n[[assignment]]\nuser = {}\nfrom = {from}\nto = {to}",
            quoted(user)
        );
    }
    write_new(out, toml.as_bytes())?;
    Ok(Imported {
        assignments: assignments.len(),
    })
}
