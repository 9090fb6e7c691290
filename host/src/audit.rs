//! `sluice audit`: the consent audit summarised over a time window — proof of consent.
//!
//! With `[consent] audit` set, the host writes one JSON line per consent decision: per event
//! and per tag whose trigger matched it, what the tag needed, every purpose's status, whether
//! the tag ran, and which event keys were removed before it saw the event
//! ([`sluice_policy::consent::AuditRecord`], written in `pipeline/fanout.rs`). A site owner
//! asked by a data-protection officer "which vendors got what, under which consent" needs the
//! totals, not a log of a million lines; this module computes them from the records alone,
//! exactly, so the numbers can be checked against the file by anyone.
//!
//! # What each number means
//!
//! A *decision* is one audit record: one event meeting one tag. An event that matched three
//! tags is three decisions, one in each tag's row. Per tag ([`TagSummary`]):
//! * **allowed**: the tag ran on the event with its full data (`decision` `run`, personal data
//!   not removed: every purpose the tag needs was granted, and so was `ad_user_data`);
//! * **stripped**: the tag ran on the event with personal data removed (`decision` `run`,
//!   `personal_data_removed`: its purposes were granted but `ad_user_data` was not). It counts
//!   even when the event itself carried none: the request's address and forwarding headers were
//!   hidden from the tag all the same;
//! * **blocked**: the tag did not run on the event (`decision` `blocked`: a purpose it needs
//!   was not granted).
//!
//! Per tag and per purpose it needs ([`PurposeSummary`]), over the decisions where it needed it:
//! * **granted**: the purpose's status was `granted`;
//! * **unset_allowed**: the purpose was unset (no signal) and did not stop the tag, because the
//!   container had `unset = "grant"`;
//! * **blocked**: the purpose was not granted (`missing`), so the tag was blocked. A tag
//!   blocked for lack of two purposes counts under both; its `blocked` total counts it once.
//!
//! The three add up to the decisions where the tag needed that purpose.
//!
//! Per tag, **removed_keys**: each event key path the host removed before the tag saw the event
//! (`user_data`, `ip_override`, `page_location?gclid`; never values), with the number of
//! decisions it was removed from (a path removed twice from one event counts once).
//!
//! # Which lines count
//!
//! The input may be the audit file or a server's captured standard output with other lines
//! mixed in. Each non-blank line is exactly one of:
//! * a **decision** counted above, its `ts_ms` inside the [`Window`];
//! * **outside the window**: an audit record whose `ts_ms` is not;
//! * **not an audit record**: a line that does not start with `{` (a text log line), or valid
//!   JSON without the record's `ts_ms`, `tag` and `decision` keys (a JSON log line);
//! * **malformed**: a line that starts with `{` but is not valid JSON (a record cut short by a
//!   crash), longer than [`MAX_LINE_BYTES`], or with the record's keys but not its shape, or
//!   contradicting itself (`run` with purposes missing, `blocked` with none missing, a missing
//!   purpose it did not need...).
//!
//! Blank lines are ignored. No line stops the reading: skipped lines are counted and reported,
//! so a damaged file still gives its totals and says how much of it was unreadable.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::io::{self, BufRead};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::config::ContainerConfig;

/// A line longer than this is not read into memory (the rest of it is skipped) and counts as
/// malformed if it starts with `{`. A record is well under 4 KiB.
pub const MAX_LINE_BYTES: usize = 1 << 20;

/// What can stop `sluice audit`; a bad line never does (it is counted).
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    /// The audit file cannot be opened.
    #[error("cannot open the consent audit file {}: {error}; fix the path or pass --file PATH (the server opens a relative [consent] audit path from the directory it was started in: run sluice audit there)", .path.display())]
    Open {
        /// The file.
        path: PathBuf,
        /// Why.
        error: io::Error,
    },
    /// Reading failed part way (not a bad line: the input itself).
    #[error("cannot read the consent audit from {input} at line {line}: {error}")]
    Read {
        /// What was being read (a path, or standard input).
        input: String,
        /// The line being read.
        line: u64,
        /// Why.
        error: io::Error,
    },
    /// The container's audit does not go to a file `sluice audit` can read.
    #[error("{}: [consent] audit is {audit:?}, not a file: {hint}", .config.display())]
    NoAuditFile {
        /// The container config.
        config: PathBuf,
        /// Its `[consent] audit` value.
        audit: String,
        /// What to do instead.
        hint: &'static str,
    },
    /// `--since` or `--until` is not a time.
    #[error("--{flag} {value:?} is neither an RFC 3339 UTC time (2026-12-01T10:00:00Z) nor a duration ago (30m, 24h, 7d)")]
    BadTime {
        /// `since` or `until`.
        flag: &'static str,
        /// What was given.
        value: String,
    },
    /// The window is empty.
    #[error("the window is empty: --since ({}) must be before --until ({})", time(*.since_ms), time(*.until_ms))]
    EmptyWindow {
        /// Start, unix ms.
        since_ms: u64,
        /// End, unix ms.
        until_ms: u64,
    },
}

/// The time range summarised: `since_ms <= ts_ms < until_ms` (the start inclusive, the end
/// exclusive, so consecutive windows count each record once). Either end may be open.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Window {
    /// Records at or after this unix time in milliseconds; `None`: from the first.
    pub since_ms: Option<u64>,
    /// Records before this unix time in milliseconds; `None`: to the last.
    pub until_ms: Option<u64>,
}

impl Window {
    /// The window of `--since` and `--until`, each an RFC 3339 UTC time or a duration before
    /// `now` (see [`parse_time`]).
    pub fn from_args(since: Option<&str>, until: Option<&str>, now: SystemTime) -> Result<Window, AuditError> {
        let parse = |flag, text: Option<&str>| {
            text.map(|t| parse_time(t, now).ok_or_else(|| AuditError::BadTime { flag, value: t.to_string() })).transpose()
        };
        let window = Window { since_ms: parse("since", since)?, until_ms: parse("until", until)? };
        if let (Some(since_ms), Some(until_ms)) = (window.since_ms, window.until_ms)
            && since_ms >= until_ms
        {
            return Err(AuditError::EmptyWindow { since_ms, until_ms });
        }
        Ok(window)
    }

    /// Whether a record written at `ts_ms` is in the window.
    pub fn contains(&self, ts_ms: u64) -> bool {
        self.since_ms.is_none_or(|since| ts_ms >= since) && self.until_ms.is_none_or(|until| ts_ms < until)
    }
}

/// `2026-12-01T10:00:00Z` (RFC 3339, UTC, fractions allowed) or a duration before `now`
/// (`30m`, `24h`, `7d`, `1h 30m`), as unix milliseconds; `None` if it is neither.
pub fn parse_time(text: &str, now: SystemTime) -> Option<u64> {
    let text = text.trim();
    let at = match humantime::parse_rfc3339(text) {
        Ok(at) => at,
        Err(_) => now.checked_sub(humantime::parse_duration(text).ok()?)?,
    };
    unix_ms(at)
}

fn unix_ms(at: SystemTime) -> Option<u64> {
    u64::try_from(at.duration_since(UNIX_EPOCH).ok()?.as_millis()).ok()
}

/// A unix time in milliseconds as RFC 3339 UTC; past the year 9999 (which RFC 3339 cannot
/// write, and only a damaged record holds), as the number.
fn time(ms: u64) -> String {
    use fmt::Write as _;
    let mut text = String::new();
    match write!(text, "{}", humantime::format_rfc3339_millis(UNIX_EPOCH + Duration::from_millis(ms))) {
        Ok(()) => text,
        Err(_) => format!("{ms} ms after 1970"),
    }
}

/// The audit file a container writes: its `[consent] audit` path, as the server opens it
/// (relative to the server's working directory). `stdout` and `off` are not files: the error
/// says to pass `--file` or to set a path.
pub fn configured_file(config: &ContainerConfig) -> Result<PathBuf, AuditError> {
    let audit = config.consent.audit.as_str();
    let hint = match audit {
        "stdout" => "the records went to the server's standard output; pass --file with the captured output (--file - reads standard input), or set audit to a file path",
        "off" | "" => "no records are written; set audit to a file path (and restart the server) to keep them, or pass --file with records captured elsewhere",
        path => return Ok(PathBuf::from(path)),
    };
    Err(AuditError::NoAuditFile { config: config.path.clone(), audit: audit.to_string(), hint })
}

/// The consent audit over a window: what `sluice audit` prints ([`fmt::Display`], a plain-text
/// report) or serialises (`--json`). The module docs say what each number means.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Summary {
    /// What was read: a path, or `standard input`.
    pub input: String,
    /// The window asked for.
    pub window: Window,
    /// The first and last `ts_ms` among the decisions counted; `None` when there are none.
    pub covered: Option<Covered>,
    /// Audit records counted: one per event and matching tag.
    pub decisions: u64,
    /// Audit records outside the window.
    pub outside_window: u64,
    /// Lines that are not audit records (other output mixed in).
    pub not_audit_records: u64,
    /// Lines that look like audit records but cannot be read as one.
    pub malformed: u64,
    /// The first malformed line's number (from 1), to look at it.
    pub first_malformed_line: Option<u64>,
    /// Per tag, by name.
    pub tags: BTreeMap<String, TagSummary>,
}

/// The times of the first and last decision counted, unix milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Covered {
    /// Earliest `ts_ms`.
    pub first_ms: u64,
    /// Latest `ts_ms`.
    pub last_ms: u64,
}

/// One tag's decisions.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct TagSummary {
    /// Ran with the event's full data.
    pub allowed: u64,
    /// Ran with personal data removed (`ad_user_data` not granted).
    pub stripped: u64,
    /// Did not run: a purpose it needs was not granted.
    pub blocked: u64,
    /// Per purpose the tag needs, by name.
    pub purposes: BTreeMap<String, PurposeSummary>,
    /// Per removed event key path: the decisions it was removed from.
    pub removed_keys: BTreeMap<String, u64>,
}

/// One purpose, over the decisions where a tag needed it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct PurposeSummary {
    /// Its status was `granted`.
    pub granted: u64,
    /// It was unset and `unset = "grant"` let the tag through.
    pub unset_allowed: u64,
    /// It was not granted, so the tag was blocked.
    pub blocked: u64,
}

/// The fields of [`sluice_policy::consent::AuditRecord`] the summary reads (`request_id` and
/// `event_name` identify a hit, they are not counted; other fields are ignored).
#[derive(Deserialize)]
struct Record {
    ts_ms: u64,
    tag: String,
    purposes_needed: Vec<String>,
    state: BTreeMap<String, PurposeState>,
    decision: Decision,
    missing: Vec<String>,
    personal_data_removed: bool,
    removed: Vec<String>,
}

#[derive(Deserialize)]
struct PurposeState {
    status: String,
}

#[derive(Deserialize, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
enum Decision {
    Run,
    Blocked,
}

impl Record {
    /// Whether the record is one the host could have written; `Err` says what contradicts.
    fn check(&self) -> Result<(), &'static str> {
        let status = |p: &str| self.state.get(p).map(|s| s.status.as_str());
        if self.missing.iter().any(|p| !self.purposes_needed.contains(p)) {
            return Err("a missing purpose the tag does not need");
        }
        if self.missing.iter().any(|p| status(p) == Some("granted")) {
            return Err("a missing purpose whose status is granted");
        }
        let passed = self.purposes_needed.iter().filter(|p| !self.missing.contains(p));
        if passed.clone().any(|p| !matches!(status(p), Some("granted" | "unset"))) {
            return Err("a needed purpose neither missing nor granted or unset");
        }
        match (self.decision, self.missing.is_empty()) {
            (Decision::Run, false) => return Err("run with purposes missing"),
            (Decision::Blocked, true) => return Err("blocked with no purpose missing"),
            _ => {}
        }
        if self.decision == Decision::Blocked && (self.personal_data_removed || !self.removed.is_empty()) {
            return Err("blocked, yet personal data removed for it");
        }
        Ok(())
    }
}

/// What reading one line gave.
enum Line {
    /// The input ended before any byte.
    End,
    /// A whole line (without its `\n`).
    Whole,
    /// A line longer than [`MAX_LINE_BYTES`]: its first bytes, the rest skipped.
    TooLong,
}

/// Reads one line into `line` (cleared first), keeping at most [`MAX_LINE_BYTES`] of it.
fn read_line(reader: &mut impl BufRead, line: &mut Vec<u8>) -> io::Result<Line> {
    line.clear();
    let (mut any, mut too_long) = (false, false);
    loop {
        let chunk = match reader.fill_buf() {
            Ok(chunk) => chunk,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if chunk.is_empty() {
            return Ok(match (any, too_long) {
                (false, _) => Line::End,
                (true, false) => Line::Whole,
                (true, true) => Line::TooLong,
            });
        }
        any = true;
        let newline = chunk.iter().position(|b| *b == b'\n');
        let part = &chunk[..newline.unwrap_or(chunk.len())];
        let room = MAX_LINE_BYTES.saturating_sub(line.len());
        too_long |= part.len() > room;
        line.extend_from_slice(&part[..part.len().min(room)]);
        let used = newline.map_or(chunk.len(), |i| i + 1);
        reader.consume(used);
        if newline.is_some() {
            return Ok(if too_long { Line::TooLong } else { Line::Whole });
        }
    }
}

impl Summary {
    /// Summarises the audit file at `path`.
    pub fn read_file(path: &Path, window: Window) -> Result<Summary, AuditError> {
        let file = std::fs::File::open(path).map_err(|error| AuditError::Open { path: path.to_path_buf(), error })?;
        Summary::read(path.display().to_string(), io::BufReader::new(file), window)
    }

    /// Summarises audit lines from `reader`; `input` names it in the report and in errors.
    /// Only an I/O error stops it: bad lines are counted.
    pub fn read(input: impl Into<String>, mut reader: impl BufRead, window: Window) -> Result<Summary, AuditError> {
        let mut summary = Summary { input: input.into(), window, ..Summary::default() };
        let mut line = Vec::new();
        for number in 1.. {
            let kind = read_line(&mut reader, &mut line)
                .map_err(|error| AuditError::Read { input: summary.input.clone(), line: number, error })?;
            match kind {
                Line::End => break,
                Line::Whole => summary.add_line(&line, number, false),
                Line::TooLong => summary.add_line(&line, number, true),
            }
        }
        Ok(summary)
    }

    fn add_line(&mut self, line: &[u8], number: u64, too_long: bool) {
        let text = line.trim_ascii();
        if text.is_empty() {
            return;
        }
        if !text.starts_with(b"{") {
            self.not_audit_records += 1;
            return;
        }
        let Some(value) = (!too_long).then(|| serde_json::from_slice::<Value>(text).ok()).flatten() else {
            return self.add_malformed(number);
        };
        let is_record = ["ts_ms", "tag", "decision"].iter().all(|key| value.get(key).is_some());
        if !is_record {
            self.not_audit_records += 1;
            return;
        }
        let Some(record) = serde_json::from_value::<Record>(value).ok().filter(|r| r.check().is_ok()) else {
            return self.add_malformed(number);
        };
        if self.window.contains(record.ts_ms) {
            self.add_decision(record);
        } else {
            self.outside_window += 1;
        }
    }

    fn add_malformed(&mut self, number: u64) {
        self.malformed += 1;
        self.first_malformed_line.get_or_insert(number);
    }

    fn add_decision(&mut self, record: Record) {
        self.decisions += 1;
        self.covered = Some(match self.covered {
            None => Covered { first_ms: record.ts_ms, last_ms: record.ts_ms },
            Some(c) => Covered { first_ms: c.first_ms.min(record.ts_ms), last_ms: c.last_ms.max(record.ts_ms) },
        });
        let tag = self.tags.entry(record.tag).or_default();
        match (record.decision, record.personal_data_removed) {
            (Decision::Blocked, _) => tag.blocked += 1,
            (Decision::Run, true) => tag.stripped += 1,
            (Decision::Run, false) => tag.allowed += 1,
        }
        for purpose in record.purposes_needed.iter().collect::<BTreeSet<_>>() {
            let counts = tag.purposes.entry(purpose.clone()).or_default();
            if record.missing.contains(purpose) {
                counts.blocked += 1;
            } else if record.state.get(purpose).is_some_and(|s| s.status == "granted") {
                counts.granted += 1;
            } else {
                counts.unset_allowed += 1;
            }
        }
        for key in record.removed.iter().collect::<BTreeSet<_>>() {
            *tag.removed_keys.entry(key.clone()).or_default() += 1;
        }
    }
}

/// Rows as aligned columns, indented two spaces: the first `text_columns` left-aligned, the
/// others (counts) right-aligned.
fn table(f: &mut fmt::Formatter<'_>, header: &[&str], rows: &[Vec<String>], text_columns: usize) -> fmt::Result {
    let widths: Vec<usize> = (0..header.len())
        .map(|i| rows.iter().filter_map(|r| r.get(i)).map(|c| c.chars().count()).chain([header[i].len()]).max().unwrap_or(0))
        .collect();
    let header: Vec<String> = header.iter().map(|h| h.to_string()).collect();
    for row in std::iter::once(&header).chain(rows) {
        let cells: Vec<String> = row
            .iter()
            .zip(&widths)
            .enumerate()
            .map(|(i, (cell, &w))| if i < text_columns { format!("{cell:<w$}") } else { format!("{cell:>w$}") })
            .collect();
        writeln!(f, "  {}", cells.join("  ").trim_end())?;
    }
    Ok(())
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "consent audit: {}", self.input)?;
        let window = match (self.window.since_ms, self.window.until_ms) {
            (None, None) => "all records".to_string(),
            (Some(s), None) => format!("from {} (inclusive)", time(s)),
            (None, Some(u)) => format!("until {} (exclusive)", time(u)),
            (Some(s), Some(u)) => format!("from {} (inclusive) until {} (exclusive)", time(s), time(u)),
        };
        writeln!(f, "window:  {window}")?;
        match self.covered {
            Some(c) => writeln!(f, "covered: {} to {}, {} decisions (one per event and matching tag)", time(c.first_ms), time(c.last_ms), self.decisions)?,
            None => writeln!(f, "covered: no consent decision in the window")?,
        }
        writeln!(f, "  allowed   the tag ran on the event with its full data (its purposes and ad_user_data granted)")?;
        writeln!(f, "  stripped  the tag ran on the event with personal data removed (its purposes granted, ad_user_data not)")?;
        writeln!(f, "  blocked   the tag did not run on the event (a purpose it needs was not granted)")?;
        if !self.tags.is_empty() {
            writeln!(f)?;
            let rows: Vec<Vec<String>> = self
                .tags
                .iter()
                .map(|(name, t)| vec![name.clone(), t.allowed.to_string(), t.stripped.to_string(), t.blocked.to_string()])
                .collect();
            table(f, &["tag", "allowed", "stripped", "blocked"], &rows, 1)?;
        }
        let purposes: Vec<Vec<String>> = self
            .tags
            .iter()
            .flat_map(|(name, t)| {
                t.purposes.iter().map(move |(p, c)| {
                    vec![name.clone(), p.clone(), c.granted.to_string(), c.unset_allowed.to_string(), c.blocked.to_string()]
                })
            })
            .collect();
        if !purposes.is_empty() {
            writeln!(f, "\nper purpose a tag needs: granted; unset, let through by unset = \"grant\"; blocked for lack of it")?;
            table(f, &["tag", "purpose", "granted", "unset", "blocked"], &purposes, 2)?;
        }
        let removed: Vec<Vec<String>> = self
            .tags
            .iter()
            .flat_map(|(name, t)| t.removed_keys.iter().map(move |(k, n)| vec![name.clone(), k.clone(), n.to_string()]))
            .collect();
        if !removed.is_empty() {
            writeln!(f, "\npersonal data removed: per tag, each event key path and the events it was removed from")?;
            table(f, &["tag", "key", "events"], &removed, 2)?;
        }
        let first = self.first_malformed_line.map_or(String::new(), |n| format!(" (the first is line {n})"));
        write!(
            f,
            "\nskipped lines: outside the window {}, not audit records {}, malformed {}{first}",
            self.outside_window, self.not_audit_records, self.malformed
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// An audit line as the host writes it (`AuditRecord`'s serialisation).
    fn record(ts_ms: u64, tag: &str, needed: &[&str], granted: &[&str], removed: &[&str]) -> String {
        let state: serde_json::Map<String, Value> = ["ad_storage", "analytics_storage", "ad_user_data", "ad_personalization"]
            .iter()
            .map(|p| {
                let status = if granted.contains(p) { "granted" } else { "denied" };
                (p.to_string(), json!({"status": status, "source": "gcd"}))
            })
            .collect();
        let missing: Vec<&str> = needed.iter().copied().filter(|p| !granted.contains(p)).collect();
        let run = missing.is_empty();
        let removed: &[&str] = if run { removed } else { &[] };
        json!({
            "ts_ms": ts_ms, "request_id": "r1", "event_name": "purchase", "tag": tag,
            "purposes_needed": needed, "state": state,
            "decision": if run { "run" } else { "blocked" }, "missing": missing,
            "personal_data_removed": run && !granted.contains(&"ad_user_data"),
            "removed": removed,
        })
        .to_string()
    }

    fn summarise(lines: &[String], window: Window) -> Summary {
        Summary::read("test", lines.join("\n").as_bytes(), window).unwrap()
    }

    const BOTH: &[&str] = &["ad_storage", "ad_user_data"];

    #[test]
    fn a_tag_needing_two_purposes_counts_each_and_blocks_once() {
        let lines = [
            record(1, "meta", BOTH, &["ad_storage", "ad_user_data"], &[]), // allowed
            record(2, "meta", BOTH, &["ad_storage"], &[]),                 // blocked: ad_user_data
            record(3, "meta", BOTH, &[], &[]),                             // blocked: both
        ];
        let s = summarise(&lines, Window::default());
        let meta = &s.tags["meta"];
        assert_eq!((meta.allowed, meta.stripped, meta.blocked), (1, 0, 2));
        assert_eq!(meta.purposes["ad_storage"], PurposeSummary { granted: 2, unset_allowed: 0, blocked: 1 });
        assert_eq!(meta.purposes["ad_user_data"], PurposeSummary { granted: 1, unset_allowed: 0, blocked: 2 });
        assert_eq!(s.covered, Some(Covered { first_ms: 1, last_ms: 3 }));
        assert_eq!(s.decisions, 3);
    }

    #[test]
    fn stripped_runs_count_removed_keys_once_per_event() {
        let lines = [
            record(1, "ga4", &["analytics_storage"], &["analytics_storage"], &["ip_override", "user_data", "ip_override"]),
            record(2, "ga4", &["analytics_storage"], &["analytics_storage"], &["ip_override"]),
            record(3, "ga4", &["analytics_storage"], &["analytics_storage", "ad_user_data"], &[]),
        ];
        let s = summarise(&lines, Window::default());
        let ga4 = &s.tags["ga4"];
        assert_eq!((ga4.allowed, ga4.stripped, ga4.blocked), (1, 2, 0));
        assert_eq!(ga4.removed_keys, BTreeMap::from([("ip_override".into(), 2), ("user_data".into(), 1)]));
    }

    #[test]
    fn an_unset_purpose_the_unset_rule_let_through_is_not_granted() {
        let mut line: Value = serde_json::from_str(&record(1, "ga4", &["analytics_storage"], &["ad_user_data"], &[])).unwrap();
        line["state"]["analytics_storage"] = json!({"status": "unset", "source": "default"});
        (line["decision"], line["missing"]) = (json!("run"), json!([]));
        let s = summarise(&[line.to_string()], Window::default());
        assert_eq!(s.malformed, 0, "{s:?}");
        assert_eq!(s.tags["ga4"].allowed, 1);
        assert_eq!(s.tags["ga4"].purposes["analytics_storage"], PurposeSummary { granted: 0, unset_allowed: 1, blocked: 0 });
    }

    #[test]
    fn the_window_includes_its_start_and_excludes_its_end() {
        let lines: Vec<String> = [999, 1000, 1500, 1999, 2000].iter().map(|&ts| record(ts, "t", &[], &["ad_user_data"], &[])).collect();
        let s = summarise(&lines, Window { since_ms: Some(1000), until_ms: Some(2000) });
        assert_eq!((s.decisions, s.outside_window), (3, 2));
        assert_eq!(s.covered, Some(Covered { first_ms: 1000, last_ms: 1999 }));
        let open_start = summarise(&lines, Window { since_ms: None, until_ms: Some(1000) });
        assert_eq!((open_start.decisions, open_start.covered.map(|c| c.last_ms)), (1, Some(999)));
        let open_end = summarise(&lines, Window { since_ms: Some(2000), until_ms: None });
        assert_eq!((open_end.decisions, open_end.covered.map(|c| c.first_ms)), (1, Some(2000)));
    }

    #[test]
    fn other_lines_are_counted_apart_and_never_stop_the_reading() {
        let good = record(5, "t", &[], &["ad_user_data"], &[]);
        let lines = [
            "2026-12-01T10:00:00Z INFO sluice listening on http://0.0.0.0:8080".to_string(), // text log: not a record
            r#"{"timestamp":"x","level":"INFO","fields":{"message":"hi"}}"#.to_string(),     // JSON log: not a record
            "[1, 2]".to_string(),                                                            // not an object
            good.clone(),
            good[..good.len() / 2].to_string(),                                              // cut short: malformed
            good.replace(r#""decision":"run""#, r#""decision":"maybe""#),                    // a record's keys, not its shape
            good.replace(r#""decision":"run""#, r#""decision":"blocked""#),                  // blocked with nothing missing
            "   ".to_string(),                                                               // blank: ignored
            "\u{fffd}{ not json".to_string(),                                                // not a record
            good.clone(),
        ];
        let s = summarise(&lines, Window::default());
        assert_eq!((s.decisions, s.not_audit_records, s.malformed, s.outside_window), (2, 4, 3, 0), "{s:?}");
        assert_eq!(s.first_malformed_line, Some(5));
        assert_eq!(s.tags["t"].allowed, 2, "the records around the bad lines count");
    }

    #[test]
    fn invalid_utf8_and_overlong_lines_are_malformed_and_the_next_line_still_counts() {
        let good = record(5, "t", &[], &["ad_user_data"], &[]);
        let mut input = b"{\"ts_ms\": \xff}\n".to_vec();
        input.extend_from_slice(b"{\"pad\":\"");
        input.resize(input.len() + MAX_LINE_BYTES, b'a');
        input.extend_from_slice(b"\"}\n");
        input.extend_from_slice(good.as_bytes());
        let s = Summary::read("test", io::BufReader::with_capacity(4096, input.as_slice()), Window::default()).unwrap();
        assert_eq!((s.malformed, s.decisions, s.first_malformed_line), (2, 1, Some(1)), "{s:?}");
    }

    #[test]
    fn a_time_past_the_year_9999_is_reported_as_a_number() {
        let s = summarise(&[record(u64::MAX, "t", &[], &["ad_user_data"], &[])], Window::default());
        assert!(s.to_string().contains(&format!("covered: {0} ms after 1970 to {0} ms after 1970", u64::MAX)), "{s}");
    }

    #[test]
    fn times_are_rfc3339_or_a_duration_ago() {
        let now = UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        assert_eq!(parse_time("2026-12-01T10:00:00Z", now), Some(1_796_119_200_000));
        assert_eq!(parse_time("2026-12-01T10:00:00.250Z", now), Some(1_796_119_200_250));
        assert_eq!(parse_time("30m", now), Some(1_800_000_000_000 - 30 * 60_000));
        assert_eq!(parse_time("7d", now), Some(1_800_000_000_000 - 7 * 86_400_000));
        assert_eq!(parse_time("yesterday", now), None);
        assert_eq!(parse_time("2026-12-01T10:00:00+01:00", now), None, "UTC only: an offset is refused, not misread");
        let window = Window::from_args(Some("24h"), Some("1h"), now).unwrap();
        assert_eq!(window, Window { since_ms: Some(1_800_000_000_000 - 86_400_000), until_ms: Some(1_800_000_000_000 - 3_600_000) });
        let err = Window::from_args(Some("1h"), Some("24h"), now).unwrap_err().to_string();
        assert!(err.contains("window is empty") && err.contains("--since"), "{err}");
        let err = Window::from_args(Some("soon"), None, now).unwrap_err().to_string();
        assert!(err.contains("--since \"soon\"") && err.contains("2026-12-01T10:00:00Z") && err.contains("24h"), "{err}");
    }

    #[test]
    fn stdout_and_off_are_not_files_and_the_error_says_what_to_do() {
        let config = |audit: &str| {
            let text = format!("[consent]\naudit = \"{audit}\"\n[[client]]\nname = \"c\"\nwasm = \"c.wasm\"\n");
            ContainerConfig::parse(&text, Path::new("site/container.toml"), &|_| None).unwrap()
        };
        assert_eq!(configured_file(&config("logs/audit.jsonl")).unwrap(), PathBuf::from("logs/audit.jsonl"));
        let err = configured_file(&config("stdout")).unwrap_err().to_string();
        assert!(err.contains("site/container.toml") && err.contains("--file") && err.contains("file path"), "{err}");
        let err = configured_file(&config("off")).unwrap_err().to_string();
        assert!(err.contains("\"off\"") && err.contains("set audit to a file path"), "{err}");
        let err = Summary::read_file(Path::new("/nonexistent/audit.jsonl"), Window::default()).unwrap_err().to_string();
        assert!(err.contains("/nonexistent/audit.jsonl") && err.contains("--file"), "{err}");
    }

    #[test]
    fn the_report_aligns_its_tables_and_the_json_carries_the_same_numbers() {
        let lines = [
            record(1_796_119_200_000, "meta", BOTH, &["ad_storage", "ad_user_data"], &[]),
            record(1_796_119_260_000, "ga4-web", &["analytics_storage"], &["analytics_storage"], &["ip_override"]),
        ];
        let s = summarise(&lines, Window { since_ms: Some(1_796_119_200_000), until_ms: None });
        let report = s.to_string();
        assert!(report.contains("window:  from 2026-12-01T10:00:00.000Z (inclusive)"), "{report}");
        assert!(report.contains("covered: 2026-12-01T10:00:00.000Z to 2026-12-01T10:01:00.000Z, 2 decisions"), "{report}");
        assert!(report.contains("  tag      allowed  stripped  blocked\n  ga4-web        0         1        0\n  meta           1         0        0\n"), "{report}");
        assert!(report.contains("  meta     ad_user_data             1      0        0\n"), "{report}");
        assert!(report.contains("  ga4-web  ip_override       1\n"), "{report}");
        assert!(report.ends_with("skipped lines: outside the window 0, not audit records 0, malformed 0"), "{report}");
        let json = serde_json::to_value(&s).unwrap();
        assert_eq!(json["tags"]["meta"]["purposes"]["ad_storage"], json!({"granted": 1, "unset_allowed": 0, "blocked": 0}));
        assert_eq!(json["tags"]["ga4-web"]["removed_keys"], json!({"ip_override": 1}));
        assert_eq!(json["window"], json!({"since_ms": 1_796_119_200_000_u64, "until_ms": null}));
    }
}
