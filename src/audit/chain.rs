//! Tamper evidence for the audit log: every `security_events` row belongs to a chain (an
//! instance's, named by `INSTANCE_ID`, or one of its lanes `INSTANCE_ID#…`), has a sequence
//! number in it and a SHA-256 hash over its immutable content and the previous row's hash. A
//! chain's head (`audit_chains`) is locked and advanced in the transaction that appends, so a
//! rolled-back append leaves no gap; on PostgreSQL a writer takes a head no one holds (or opens
//! a lane), so writers never wait for each other. [`verify`] walks every chain from its
//! checkpoint (where retention pruned it) to its head.
//!
//! What the hash covers: chain, sequence, occurred_at, kind, severity, actor, ip, details,
//! aggregate_key, request_id and the previous hash. A repeated refusal's later `count` and
//! `last_seen_at` are not covered (they change after the row is chained).

use std::sync::OnceLock;

use chrono::NaiveDateTime;
use sha2::{Digest as _, Sha256};

pub use crate::db::models::audit_chain::GENESIS_HASH as GENESIS;
use crate::db::models::audit_chain::{self, ChainHead};
use crate::db::models::security_event::{self, ChainedRow};
use crate::db::{DbConnection, DbError};

/// The chain this process appends to, set once at start-up from `INSTANCE_ID`.
static INSTANCE: OnceLock<String> = OnceLock::new();

/// Makes `instance_id` the chain this process appends to (the first call wins).
pub fn use_instance_id(instance_id: &str) {
    let _ = INSTANCE.set(instance_id.to_owned());
}

/// The chain this process appends to: the configured one, else `INSTANCE_ID` from the
/// environment, else the host name.
pub fn instance_id() -> &'static str {
    INSTANCE.get_or_init(|| {
        crate::config::audit_trail(&crate::config::ProcessEnv)
            .map(|settings| settings.instance_id)
            .unwrap_or_else(|_| crate::config::default_instance_id())
    })
}

/// An audit row's chained content, as the hash reads it.
#[derive(Debug, Clone, Copy)]
pub struct Chained<'a> {
    pub chain: &'a str,
    pub sequence: i64,
    pub occurred_at: NaiveDateTime,
    pub kind: &'a str,
    pub severity: &'a str,
    pub actor: Option<&'a str>,
    pub ip: Option<&'a str>,
    pub details: &'a str,
    pub aggregate_key: Option<&'a str>,
    pub request_id: Option<&'a str>,
}

/// How `occurred_at` is written into the hash (both backends keep microseconds).
const TIME_FORMAT: &str = "%Y-%m-%dT%H:%M:%S%.6f";

/// `at` as the hash reads it.
fn time_text(at: NaiveDateTime) -> String {
    at.format(TIME_FORMAT).to_string()
}

impl Chained<'_> {
    /// SHA-256 (hex) over a JSON array of the fields and `prev`: every string is quoted and
    /// escaped and `null` differs from `""`, so no two contents encode alike.
    pub fn hash(&self, prev: &str) -> String {
        self.hash_with_time(&time_text(self.occurred_at), prev)
    }

    /// [`Chained::hash`], `occurred_at` already written as the hash reads it (`time`). The
    /// array is written straight into the digest (no JSON value is built).
    fn hash_with_time(&self, time: &str, prev: &str) -> String {
        let fields = (
            "tollgate-audit-v1",
            self.chain,
            self.sequence,
            time,
            self.kind,
            self.severity,
            self.actor,
            self.ip,
            self.details,
            self.aggregate_key,
            self.request_id,
            prev,
        );
        let mut digest = Sha256::new();
        if serde_json::to_writer(&mut digest, &fields).is_err() {
            // Neither writing into a digest nor serializing strings and numbers fails; were it
            // to, the same bytes come from a JSON value, the slow way.
            let encoded = serde_json::json!([
                fields.0, fields.1, fields.2, fields.3, fields.4, fields.5, fields.6, fields.7,
                fields.8, fields.9, fields.10, fields.11,
            ])
            .to_string();
            digest = Sha256::new_with_prefix(encoded.as_bytes());
        }
        hex::encode(digest.finalize())
    }
}

/// This process's chain while a transaction appends to it: its head row is locked from
/// [`Append::begin`] to the end of the transaction.
#[derive(Debug)]
pub struct Append {
    chain: String,
    sequence: i64,
    hash: String,
    moved: bool,
    /// The last `occurred_at` hashed, as the hash reads it: a batch's rows share one.
    time: Option<(NaiveDateTime, String)>,
}

impl Append {
    /// Locks a head of this instance's chains that no other transaction holds (a write, so
    /// call it first in a SQLite transaction).
    pub fn begin(conn: &mut DbConnection) -> Result<Self, DbError> {
        let head = audit_chain::lock_free_lane(conn, instance_id())?;
        Ok(Self {
            chain: head.chain_id,
            sequence: head.last_sequence,
            hash: head.last_hash,
            moved: false,
            time: None,
        })
    }

    pub fn chain(&self) -> &str {
        &self.chain
    }

    /// The sequence number the next row gets.
    pub fn next_sequence(&self) -> i64 {
        self.sequence + 1
    }

    /// The hash of `row` (built with [`Append::chain`] and [`Append::next_sequence`]) as the
    /// next link.
    pub fn hash_next(&mut self, row: &Chained<'_>) -> String {
        if self
            .time
            .as_ref()
            .is_none_or(|(at, _)| *at != row.occurred_at)
        {
            self.time = Some((row.occurred_at, time_text(row.occurred_at)));
        }
        let time = self.time.as_ref().map_or("", |(_, text)| text.as_str());
        row.hash_with_time(time, &self.hash)
    }

    /// Records that the next row was appended with `hash`.
    pub fn appended(&mut self, hash: String) {
        self.sequence += 1;
        self.hash = hash;
        self.moved = true;
    }

    /// Where the head is to move, once something was appended.
    pub fn moved_to(&self) -> Option<security_event::Head<'_>> {
        self.moved.then_some(security_event::Head {
            chain: &self.chain,
            sequence: self.sequence,
            hash: &self.hash,
        })
    }

    /// Moves the head to the last appended row (in the same transaction).
    pub fn finish(self, conn: &mut DbConnection) -> Result<(), DbError> {
        if self.moved {
            audit_chain::advance(conn, &self.chain, self.sequence, &self.hash)?;
        }
        Ok(())
    }
}

/// How far `tollgate audit verify` got: every chain intact, or the first break.
#[derive(Debug)]
pub enum Verdict {
    Intact(Summary),
    Broken(Break),
}

/// Every chain verified, and how many rows predate the chain (not covered).
#[derive(Debug, Default)]
pub struct Summary {
    pub chains: Vec<ChainSummary>,
    pub unchained: i64,
}

#[derive(Debug)]
pub struct ChainSummary {
    pub chain: String,
    /// Rows verified (those after the checkpoint).
    pub rows: i64,
    pub checkpoint_sequence: i64,
    pub head_sequence: i64,
    pub head_hash: String,
}

/// The first row whose content, order or absence breaks a link.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Break {
    /// The row that breaks the link; `None` when the rows at the end of the chain are gone.
    pub row_id: Option<i64>,
    pub chain: String,
    pub sequence: i64,
    pub reason: String,
}

impl std::fmt::Display for Break {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.row_id {
            Some(id) => write!(
                f,
                "row id={id} (chain {}, sequence {})",
                self.chain, self.sequence
            )?,
            None => write!(f, "chain {}, sequence {}", self.chain, self.sequence)?,
        }
        write!(f, ": {}", self.reason)
    }
}

/// How many rows verification reads at a time.
const PAGE: i64 = 1_000;

/// Walks every chain from its checkpoint to its head, recomputing each hash.
pub fn verify(conn: &mut DbConnection) -> Result<Verdict, DbError> {
    let heads = audit_chain::all(conn)?;
    let mut summary = Summary::default();
    for head in &heads {
        match verify_chain(conn, head)? {
            Ok(rows) => summary.chains.push(ChainSummary {
                chain: head.chain_id.clone(),
                rows,
                checkpoint_sequence: head.checkpoint_sequence,
                head_sequence: head.last_sequence,
                head_hash: head.last_hash.clone(),
            }),
            Err(broken) => return Ok(Verdict::Broken(broken)),
        }
    }
    let chains: Vec<String> = heads.iter().map(|h| h.chain_id.clone()).collect();
    if let Some(row) = security_event::first_row_outside(conn, &chains)? {
        return Ok(Verdict::Broken(Break {
            row_id: Some(row.id),
            chain: row.chain_id.unwrap_or_default(),
            sequence: row.chain_seq.unwrap_or_default(),
            reason: "it claims a chain or place no chain head knows (written outside Tollgate)"
                .to_owned(),
        }));
    }
    summary.unchained = security_event::unchained_count(conn)?;
    Ok(Verdict::Intact(summary))
}

/// One chain: the number of rows verified, or the first break.
fn verify_chain(conn: &mut DbConnection, head: &ChainHead) -> Result<Result<i64, Break>, DbError> {
    let chain = head.chain_id.as_str();
    let broken = |row_id: Option<i64>, sequence: i64, reason: String| Break {
        row_id,
        chain: chain.to_owned(),
        sequence,
        reason,
    };
    if let Some(row) = security_event::first_row_through(conn, chain, head.checkpoint_sequence)? {
        let sequence = row.chain_seq.unwrap_or_default();
        return Ok(Err(broken(
            Some(row.id),
            sequence,
            format!(
                "it lies before the chain's checkpoint (sequence {}): pruned rows do not come back",
                head.checkpoint_sequence
            ),
        )));
    }
    let mut expected = head.checkpoint_sequence + 1;
    let mut prev = head.checkpoint_hash.clone();
    let mut last_id: Option<i64> = None;
    loop {
        let rows = security_event::chain_rows(conn, chain, expected - 1, PAGE)?;
        let done = rows.len() < usize::try_from(PAGE).unwrap_or(usize::MAX);
        for row in rows {
            if let Err(reason) = check_link(&row, chain, expected, head, &prev, last_id) {
                let sequence = row.chain_seq.unwrap_or_default();
                return Ok(Err(broken(Some(row.id), sequence, reason)));
            }
            prev = row.hash.unwrap_or_default();
            last_id = Some(row.id);
            expected += 1;
        }
        if done {
            break;
        }
    }
    let last = expected - 1;
    if last < head.last_sequence {
        let after =
            last_id.map_or_else(|| "the checkpoint".to_owned(), |id| format!("row id={id}"));
        let missing = if expected == head.last_sequence {
            format!("row {expected} (the chain's head) is")
        } else {
            format!(
                "rows {expected} to {} (the chain's head) are",
                head.last_sequence
            )
        };
        return Ok(Err(broken(
            None,
            expected,
            format!("{missing} missing after {after}: the newest rows were deleted"),
        )));
    }
    if prev != head.last_hash {
        return Ok(Err(broken(
            last_id,
            last,
            "its hash is not the chain head's (the newest row was replaced)".to_owned(),
        )));
    }
    Ok(Ok(last - head.checkpoint_sequence))
}

/// Whether `row` is the link expected at `expected` after a row hashed `prev` (id `last_id`).
fn check_link(
    row: &ChainedRow,
    chain: &str,
    expected: i64,
    head: &ChainHead,
    prev: &str,
    last_id: Option<i64>,
) -> Result<(), String> {
    let sequence = row.chain_seq.unwrap_or_default();
    if sequence > head.last_sequence {
        return Err(format!(
            "it lies beyond the chain's head (sequence {}): written outside Tollgate",
            head.last_sequence
        ));
    }
    if sequence != expected {
        return Err(if expected + 1 == sequence {
            format!("the row before it (sequence {expected}) is missing: deleted")
        } else {
            format!(
                "the rows before it (sequences {expected} to {}) are missing: deleted",
                sequence - 1
            )
        });
    }
    let content = Chained {
        chain,
        sequence,
        occurred_at: row.occurred_at,
        kind: &row.kind,
        severity: &row.severity,
        actor: row.actor.as_deref(),
        ip: row.ip.as_deref(),
        details: &row.details,
        aggregate_key: row.aggregate_key.as_deref(),
        request_id: row.request_id.as_deref(),
    };
    let stored = row.hash.as_deref().unwrap_or_default();
    // Digests of public content (not secrets): a plain comparison leaks nothing.
    if content.hash(prev) != stored {
        return Err(
            "its content does not match its hash (edited, moved, or the row before it changed)"
                .to_owned(),
        );
    }
    if last_id.is_some_and(|last| row.id <= last) {
        return Err("it is out of order (its id precedes the previous row's)".to_owned());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Chained<'static> {
        Chained {
            chain: "web-1",
            sequence: 7,
            occurred_at: chrono::DateTime::from_timestamp(1_700_000_000, 123_456_000)
                .unwrap()
                .naive_utc(),
            kind: "login_failed",
            severity: "MEDIUM",
            actor: Some("user:4"),
            ip: Some("192.0.2.1"),
            details: r#"{"reason":"password"}"#,
            aggregate_key: None,
            request_id: Some("req-1"),
        }
    }

    #[test]
    fn the_hash_is_stable_and_covers_every_field_and_the_previous_hash() {
        let base = sample();
        let hash = base.hash(GENESIS);
        assert_eq!(hash, sample().hash(GENESIS), "deterministic");
        assert_eq!(hash.len(), 64);
        let variants = [
            Chained {
                chain: "web-2",
                ..base
            },
            Chained {
                sequence: 8,
                ..base
            },
            Chained {
                occurred_at: base.occurred_at + chrono::Duration::microseconds(1),
                ..base
            },
            Chained {
                kind: "login_succeeded",
                ..base
            },
            Chained {
                severity: "HIGH",
                ..base
            },
            Chained {
                actor: None,
                ..base
            },
            Chained {
                ip: Some("192.0.2.2"),
                ..base
            },
            Chained {
                details: "{}",
                ..base
            },
            Chained {
                aggregate_key: Some(""),
                ..base
            },
            Chained {
                request_id: None,
                ..base
            },
        ];
        for variant in variants {
            assert_ne!(variant.hash(GENESIS), hash, "{variant:?}");
        }
        assert_ne!(
            base.hash(&"1".repeat(64)),
            hash,
            "the previous hash is covered"
        );
    }

    #[test]
    fn the_hash_reads_rows_chained_before_as_they_were_hashed() {
        // SHA-256 of `["tollgate-audit-v1","web-1",7,"2023-11-14T22:13:20.123456",…,null,
        // "req-1","000…"]`, computed apart (Python's json.dumps, compact): rows already in a
        // chain must keep verifying.
        assert_eq!(
            sample().hash(GENESIS),
            "8a944f9d7f1d5bc3d2f24133210f6b3db6e5bd4aedb709ebde93092cdfd6c333"
        );
        // Any content encodes as the JSON array it always did, escapes included.
        let odd = Chained {
            actor: Some("\"quoted\" \\ back\u{0}slash\n"),
            details: r#"{"name":"Zoë 🚀","note":"\u2028"}"#,
            aggregate_key: Some("login_failed|198.51.100.0/24|"),
            ip: None,
            ..sample()
        };
        let prev = "f".repeat(64);
        let as_value = serde_json::json!([
            "tollgate-audit-v1",
            odd.chain,
            odd.sequence,
            "2023-11-14T22:13:20.123456",
            odd.kind,
            odd.severity,
            odd.actor,
            odd.ip,
            odd.details,
            odd.aggregate_key,
            odd.request_id,
            prev,
        ])
        .to_string();
        assert_eq!(
            odd.hash(&prev),
            hex::encode(Sha256::digest(as_value.as_bytes()))
        );
    }

    #[test]
    fn an_append_hashes_each_row_at_its_own_time() {
        let mut append = Append {
            chain: "web-1".to_owned(),
            sequence: 6,
            hash: GENESIS.to_owned(),
            moved: false,
            time: None,
        };
        let first = sample();
        let later = Chained {
            occurred_at: first.occurred_at + chrono::Duration::seconds(1),
            ..first
        };
        for row in [first, first, later, first] {
            assert_eq!(append.hash_next(&row), row.hash(GENESIS), "{row:?}");
        }
    }

    #[test]
    fn a_field_boundary_shift_changes_the_hash() {
        // Concatenation would read these two alike ("user:4" + "192.0.2.1").
        let base = sample();
        let shifted = Chained {
            actor: Some("user:41"),
            ip: Some("92.0.2.1"),
            ..base
        };
        assert_ne!(base.hash(GENESIS), shifted.hash(GENESIS));
        let none_vs_empty = Chained {
            actor: Some(""),
            ..base
        };
        let none = Chained {
            actor: None,
            ..base
        };
        assert_ne!(none_vs_empty.hash(GENESIS), none.hash(GENESIS));
        let moved = Chained {
            kind: "login_failed\",\"",
            severity: "MEDIUM",
            ..base
        };
        assert_ne!(moved.hash(GENESIS), base.hash(GENESIS));
    }
}
