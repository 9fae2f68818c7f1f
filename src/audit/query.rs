//! Audit queries: the typed [`Filter`] the console's list (`/admin/security`), its export and
//! `tollgate audit list` share, parsed from what a person typed ([`RawFilter`]) with a clear
//! message per bad field; keyset pages (stable while events keep arriving); and the export as
//! CSV or JSON, capped at [`EXPORT_ROW_CAP`] rows, with spreadsheet formulas defused.

use std::net::IpAddr;

use chrono::{Datelike as _, NaiveDate, NaiveDateTime, NaiveTime, Timelike as _};
use serde::{Deserialize, Serialize};

use super::{Actor, Kind, RecordedEvent, SecurityEvent, Severity, with_account_emails, write};
use crate::db::models::security_event::SecurityEventRow;
use crate::db::models::security_event_search::{self as search, EventSearch, Position};
use crate::db::models::user;
use crate::db::{DbConnection, DbError};

/// The longest value any filter field accepts.
pub const FIELD_MAX: usize = 100;
/// Rows per console page unless asked otherwise, and the most a page (or `audit list`) shows.
pub const PAGE_SIZE: i64 = 50;
pub const PAGE_SIZE_MAX: i64 = 1_000;
/// The most rows one export holds (the newest matching ones); the file says when it was cut.
pub const EXPORT_ROW_CAP: i64 = 10_000;

/// The filter fields as sent (a query string, the CLI's flags): all text, all optional.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq, Eq)]
pub struct RawFilter {
    #[serde(default)]
    pub severity: Option<String>,
    #[serde(default)]
    pub kind: Option<String>,
    #[serde(default)]
    pub actor: Option<String>,
    #[serde(default)]
    pub ip: Option<String>,
    #[serde(default)]
    pub from: Option<String>,
    #[serde(default)]
    pub to: Option<String>,
}

/// What to list: every set field must match.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filter {
    /// This severity and higher ones.
    pub min_severity: Option<Severity>,
    pub kind: Option<Kind>,
    /// An actor label as recorded (`admin:3`, `stripe`, a service token's name) or an
    /// account's email (which matches both its `user:` and `admin:` labels).
    pub actor: Option<String>,
    /// The client's address.
    pub ip: Option<IpAddr>,
    /// Events seen at or after this (UTC).
    pub from: Option<NaiveDateTime>,
    /// Events that began at or before this second (UTC).
    pub to: Option<NaiveDateTime>,
}

/// Why a filter was refused; the message says how to fix it and never echoes the value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FilterError {
    #[error("{0} is too long (at most {FIELD_MAX} characters)")]
    TooLong(&'static str),
    #[error("severity must be one of LOW, MEDIUM, HIGH or CRITICAL")]
    Severity,
    #[error("kind must be one of the listed event kinds (e.g. login_failed, webhook_invalid_ip)")]
    Kind,
    #[error("address must be an IPv4 or IPv6 address such as 203.0.113.7")]
    Ip,
    #[error("{0} must be a UTC date or time: YYYY-MM-DD, YYYY-MM-DDTHH:MM or RFC 3339")]
    Date(&'static str),
    #[error("the time range is empty: `from` is after `to`")]
    Range,
}

/// A field's trimmed value; `None` when absent or blank.
fn field<'a>(
    value: &'a Option<String>,
    name: &'static str,
) -> Result<Option<&'a str>, FilterError> {
    match value.as_deref().map(str::trim) {
        None | Some("") => Ok(None),
        Some(text) if text.len() > FIELD_MAX => Err(FilterError::TooLong(name)),
        Some(text) => Ok(Some(text)),
    }
}

/// `2026-12-05` (the day's start, or with `end_of_day` its last second),
/// `2026-12-05T13:45[:30]`, `2026-12-05 13:45[:30]` or RFC 3339 (converted to UTC).
pub fn parse_time(text: &str, end_of_day: bool) -> Option<NaiveDateTime> {
    // chrono reads signed years of any width (`+262143-12-31`): only plain calendar years are
    // dates an audit log can hold, and arithmetic on them cannot overflow.
    parse_any_time(text, end_of_day).filter(|at| (1970..=9999).contains(&at.year()))
}

fn parse_any_time(text: &str, end_of_day: bool) -> Option<NaiveDateTime> {
    if let Ok(date) = NaiveDate::parse_from_str(text, "%Y-%m-%d") {
        let time = if end_of_day {
            NaiveTime::from_hms_opt(23, 59, 59)?
        } else {
            NaiveTime::MIN
        };
        return Some(date.and_time(time));
    }
    if let Ok(at) = chrono::DateTime::parse_from_rfc3339(text) {
        return Some(at.naive_utc());
    }
    [
        "%Y-%m-%dT%H:%M",
        "%Y-%m-%dT%H:%M:%S",
        "%Y-%m-%d %H:%M",
        "%Y-%m-%d %H:%M:%S",
    ]
    .iter()
    .find_map(|format| NaiveDateTime::parse_from_str(text, format).ok())
}

impl Filter {
    pub fn parse(raw: &RawFilter) -> Result<Self, FilterError> {
        let min_severity = field(&raw.severity, "severity")?
            .map(|text| Severity::parse(text).ok_or(FilterError::Severity))
            .transpose()?;
        let kind = field(&raw.kind, "kind")?
            .map(|text| Kind::parse(text).ok_or(FilterError::Kind))
            .transpose()?;
        let actor = field(&raw.actor, "actor")?.map(str::to_owned);
        let ip = field(&raw.ip, "address")?
            .map(|text| text.parse().map_err(|_| FilterError::Ip))
            .transpose()?;
        let from = field(&raw.from, "from")?
            .map(|text| parse_time(text, false).ok_or(FilterError::Date("from")))
            .transpose()?;
        let to = field(&raw.to, "to")?
            .map(|text| parse_time(text, true).ok_or(FilterError::Date("to")))
            .transpose()?;
        if let (Some(from), Some(to)) = (from, to)
            && from > to
        {
            return Err(FilterError::Range);
        }
        Ok(Self {
            min_severity,
            kind,
            actor,
            ip,
            from,
            to,
        })
    }

    /// The filter back as text fields (for links that keep it, and the export's audit row).
    pub fn to_raw(&self) -> RawFilter {
        let time = |at: &NaiveDateTime| at.format("%Y-%m-%dT%H:%M:%S").to_string();
        RawFilter {
            severity: self.min_severity.map(|s| s.as_str().to_owned()),
            kind: self.kind.map(|k| k.as_str().to_owned()),
            actor: self.actor.clone(),
            ip: self.ip.map(|ip| ip.to_string()),
            from: self.from.as_ref().map(time),
            to: self.to.as_ref().map(time),
        }
    }

    /// The database search: the actor's email resolved to its account's labels.
    fn search(&self, conn: &mut DbConnection) -> Result<EventSearch, DbError> {
        let actors = match self.actor.as_deref() {
            None => None,
            Some(actor) if actor.contains('@') => Some(
                user::find_by_email(conn, &actor.to_lowercase())?
                    .map(|user| {
                        ["user", "support", "admin"]
                            .map(|role| format!("{role}:{}", user.id))
                            .to_vec()
                    })
                    .unwrap_or_default(),
            ),
            Some(actor) => Some(vec![actor.to_owned()]),
        };
        Ok(EventSearch {
            severities: self
                .min_severity
                .map(|min| min.and_above().map(Severity::as_str).collect()),
            kind: self.kind.map(Kind::as_str),
            actors,
            ip: self.ip.map(|ip| ip.to_string()),
            from: self.from,
            // The whole second `to` names.
            to: self.to.map(|to| {
                let second = to.with_nanosecond(0).unwrap_or(to);
                second
                    .checked_add_signed(chrono::Duration::seconds(1))
                    .unwrap_or(second)
            }),
        })
    }
}

/// One page of events, newest first, and where the neighbouring pages start.
#[derive(Debug)]
pub struct EventPage {
    pub events: Vec<RecordedEvent>,
    /// `after=` this id shows newer events (none: this is the newest page).
    pub newer: Option<i64>,
    /// `before=` this id shows older events (none: nothing older matches).
    pub older: Option<i64>,
}

/// Up to `size` events matching `filter` from `position`, with links to the pages around it.
pub fn page(
    conn: &mut DbConnection,
    filter: &Filter,
    position: Position,
    size: i64,
) -> Result<EventPage, DbError> {
    let search = filter.search(conn)?;
    let rows = search::search(conn, &search, position, size.clamp(1, PAGE_SIZE_MAX))?;
    let (newer, older) = match (rows.first(), rows.last()) {
        (Some(newest), Some(oldest)) => (
            search::any_beyond(conn, &search, Position::After(newest.id))?.then_some(newest.id),
            search::any_beyond(conn, &search, Position::Before(oldest.id))?.then_some(oldest.id),
        ),
        // Past either end: the way back is the newest page.
        _ => (None, None),
    };
    Ok(EventPage {
        events: with_account_emails(conn, rows)?,
        newer,
        older,
    })
}

/// An export's file format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExportFormat {
    Csv,
    Json,
}

impl ExportFormat {
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "csv" => Some(Self::Csv),
            "json" => Some(Self::Json),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Csv => "csv",
            Self::Json => "json",
        }
    }

    pub fn content_type(self) -> &'static str {
        match self {
            Self::Csv => "text/csv; charset=utf-8",
            Self::Json => "application/json",
        }
    }
}

/// An export, ready to send.
#[derive(Debug)]
pub struct Export {
    pub body: Vec<u8>,
    pub rows: usize,
    /// More rows matched than [`EXPORT_ROW_CAP`]: only the newest are in the file.
    pub truncated: bool,
}

/// One exported event (the CSV's columns, the JSON's fields), as `audit list --json` prints it.
#[derive(Debug, Serialize)]
pub struct ExportedEvent {
    pub id: i64,
    pub occurred_at: String,
    pub last_seen_at: String,
    pub count: i64,
    pub kind: String,
    pub severity: String,
    pub actor: Option<String>,
    pub ip: Option<String>,
    pub request_id: Option<String>,
    pub details: serde_json::Value,
}

fn timestamp(at: &NaiveDateTime) -> String {
    at.and_utc()
        .to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
}

impl From<SecurityEventRow> for ExportedEvent {
    fn from(row: SecurityEventRow) -> Self {
        Self {
            id: row.id,
            occurred_at: timestamp(&row.occurred_at),
            last_seen_at: timestamp(&row.last_seen_at),
            count: row.count,
            details: serde_json::from_str(&row.details)
                .unwrap_or(serde_json::Value::String(row.details)),
            kind: row.kind,
            severity: row.severity,
            actor: row.actor,
            ip: row.ip,
            request_id: row.request_id,
        }
    }
}

/// A cell a spreadsheet would run as a formula (`=`, `+`, `-`, `@`, tab, CR first) gets a
/// leading `'`, which makes it text (OWASP's CSV injection advice).
pub fn defuse_formula(cell: &str) -> std::borrow::Cow<'_, str> {
    if cell.starts_with(['=', '+', '-', '@', '\t', '\r']) {
        std::borrow::Cow::Owned(format!("'{cell}"))
    } else {
        std::borrow::Cow::Borrowed(cell)
    }
}

const CSV_HEADER: [&str; 10] = [
    "id",
    "occurred_at",
    "last_seen_at",
    "count",
    "kind",
    "severity",
    "actor",
    "ip",
    "request_id",
    "details",
];

fn csv(events: &[ExportedEvent]) -> Result<Vec<u8>, csv::Error> {
    let mut writer = csv::Writer::from_writer(Vec::new());
    writer.write_record(CSV_HEADER)?;
    for event in events {
        let cells = [
            event.id.to_string(),
            event.occurred_at.clone(),
            event.last_seen_at.clone(),
            event.count.to_string(),
            event.kind.clone(),
            event.severity.clone(),
            event.actor.clone().unwrap_or_default(),
            event.ip.clone().unwrap_or_default(),
            event.request_id.clone().unwrap_or_default(),
            event.details.to_string(),
        ];
        writer.write_record(cells.iter().map(|cell| defuse_formula(cell).into_owned()))?;
    }
    writer
        .into_inner()
        .map_err(|err| csv::Error::from(err.into_error()))
}

#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error(transparent)]
    Db(#[from] DbError),
    #[error("could not write the export: {0}")]
    Encode(String),
}

/// The newest [`EXPORT_ROW_CAP`] events matching `filter` as a file, and the `audit_exported`
/// row saying who took it (read first, then one write: no transaction to upgrade).
pub fn export(
    conn: &mut DbConnection,
    actor: &Actor,
    filter: &Filter,
    format: ExportFormat,
) -> Result<Export, ExportError> {
    let search = filter.search(conn)?;
    let mut rows = search::search(conn, &search, Position::Newest, EXPORT_ROW_CAP + 1)?;
    let truncated = rows.len() as i64 > EXPORT_ROW_CAP;
    rows.truncate(EXPORT_ROW_CAP as usize);
    let events: Vec<ExportedEvent> = rows.into_iter().map(ExportedEvent::from).collect();
    let body = match format {
        ExportFormat::Csv => csv(&events).map_err(|err| ExportError::Encode(err.to_string()))?,
        ExportFormat::Json => {
            serde_json::to_vec(&events).map_err(|err| ExportError::Encode(err.to_string()))?
        }
    };
    let event: SecurityEvent = actor.event(Kind::AuditExported).details(serde_json::json!({
        "format": format.as_str(),
        "rows": events.len(),
        "truncated": truncated,
        "filter": filter.to_raw(),
    }));
    write(conn, &event)?;
    Ok(Export {
        body,
        rows: events.len(),
        truncated,
    })
}

/// Up to `limit` events matching `filter`, newest first (for `tollgate audit list`).
pub fn list(
    conn: &mut DbConnection,
    filter: &Filter,
    limit: i64,
) -> Result<Vec<ExportedEvent>, DbError> {
    let search = filter.search(conn)?;
    Ok(search::search(
        conn,
        &search,
        Position::Newest,
        limit.clamp(1, PAGE_SIZE_MAX),
    )?
    .into_iter()
    .map(ExportedEvent::from)
    .collect())
}

/// `30m`, `24h`, `7d`, `90s`: how far back `--since` looks.
pub fn parse_since(text: &str) -> Option<chrono::Duration> {
    let text = text.trim();
    let unit = text.chars().last()?;
    let number: i64 = text[..text.len() - unit.len_utf8()].parse().ok()?;
    if number <= 0 || number > 100_000 {
        return None;
    }
    match unit {
        's' => Some(chrono::Duration::seconds(number)),
        'm' => Some(chrono::Duration::minutes(number)),
        'h' => Some(chrono::Duration::hours(number)),
        'd' => Some(chrono::Duration::days(number)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(pairs: &[(&str, &str)]) -> RawFilter {
        serde_urlencoded::from_str(&serde_urlencoded::to_string(pairs).unwrap()).unwrap()
    }

    #[test]
    fn fields_parse_into_types_and_blank_means_unset() {
        let filter = Filter::parse(&raw(&[
            ("severity", "high"),
            ("kind", "login_failed"),
            ("actor", " admin:3 "),
            ("ip", "2001:db8::1"),
            ("from", "2026-12-01"),
            ("to", "2026-12-02"),
        ]))
        .unwrap();
        assert_eq!(filter.min_severity, Some(Severity::High));
        assert_eq!(filter.kind, Some(Kind::LoginFailed));
        assert_eq!(filter.actor.as_deref(), Some("admin:3"));
        assert_eq!(filter.ip, "2001:db8::1".parse().ok());
        assert_eq!(filter.from.unwrap().to_string(), "2026-12-01 00:00:00");
        assert_eq!(filter.to.unwrap().to_string(), "2026-12-02 23:59:59");
        assert_eq!(
            Filter::parse(&raw(&[("severity", ""), ("kind", " ")])),
            Ok(Filter::default())
        );
        assert_eq!(Filter::parse(&filter.to_raw()).unwrap().kind, filter.kind);
    }

    #[test]
    fn bad_fields_are_named() {
        let err = |pairs: &[(&str, &str)]| Filter::parse(&raw(pairs)).unwrap_err();
        assert_eq!(err(&[("severity", "SEVERE")]), FilterError::Severity);
        assert_eq!(err(&[("kind", "login_faild")]), FilterError::Kind);
        assert_eq!(err(&[("ip", "10.0.0.300")]), FilterError::Ip);
        assert_eq!(err(&[("from", "yesterday")]), FilterError::Date("from"));
        assert_eq!(err(&[("to", "2026-13-01")]), FilterError::Date("to"));
        // Years chrono would read but no audit row has (and `to`'s next second would overflow).
        assert_eq!(err(&[("to", "+262143-12-31")]), FilterError::Date("to"));
        assert_eq!(err(&[("from", "0001-01-01")]), FilterError::Date("from"));
        assert_eq!(
            err(&[("from", "2026-12-02"), ("to", "2026-12-01")]),
            FilterError::Range
        );
        assert_eq!(
            err(&[("actor", &"a".repeat(101))]),
            FilterError::TooLong("actor")
        );
    }

    #[test]
    fn severities_include_the_higher_ones() {
        let high: Vec<_> = Severity::High.and_above().collect();
        assert_eq!(high, [Severity::High, Severity::Critical]);
        assert_eq!(Severity::Low.and_above().count(), 4);
    }

    #[test]
    fn every_kind_parses_from_its_string() {
        for kind in Kind::all() {
            assert_eq!(Kind::parse(kind.as_str()), Some(kind));
        }
        assert!(Kind::all().any(|kind| kind == Kind::AuditExported));
    }

    #[test]
    fn formulas_are_defused() {
        for cell in ["=1+1", "+1", "-2", "@SUM(A1)", "\tx", "\rx"] {
            assert_eq!(defuse_formula(cell), format!("'{cell}"));
        }
        assert_eq!(defuse_formula("203.0.113.7"), "203.0.113.7");
        assert_eq!(defuse_formula(""), "");
    }

    #[test]
    fn since_reads_minutes_hours_and_days() {
        assert_eq!(parse_since("30m"), Some(chrono::Duration::minutes(30)));
        assert_eq!(parse_since("24h"), Some(chrono::Duration::hours(24)));
        assert_eq!(parse_since("7d"), Some(chrono::Duration::days(7)));
        for bad in ["", "h", "24", "-1h", "0d", "1w", "1.5h", "9999999d", "1é"] {
            assert_eq!(parse_since(bad), None, "{bad}");
        }
    }
}
