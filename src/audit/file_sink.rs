//! `AUDIT_LOG_FILE`: a copy of the audit log as JSON lines, for log shippers and for an
//! off-database record of the chain's hashes.
//!
//! A dedicated thread tails this instance's chains in the database and appends each new row as
//! one line. Reading committed rows is what guarantees that an event of a rolled-back
//! transaction never reaches the file, and a chain's head lock makes its rows commit in
//! sequence order, so following each chain's sequence misses none. Request threads never touch the
//! file. The file is created mode 0600 (its directory 0700) and reopened on request
//! ([`FileSink::reopen`], which `serve` calls on SIGHUP, after logrotate renamed it). A repeated
//! refusal appears once, when its row is first written (its later count is not copied).

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::Write as _;
use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::time::Duration;

use crate::db::models::audit_chain;
use crate::db::models::security_event::{self, ChainedRow};
use crate::db::{Db, DbError};

/// How often the thread looks for new rows.
const POLL: Duration = Duration::from_millis(250);
/// Rows read at a time.
const PAGE: i64 = 500;

#[derive(Debug, thiserror::Error)]
pub enum FileSinkError {
    #[error("could not open AUDIT_LOG_FILE {path}: {source}")]
    Open {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("could not start the audit file writer: {0}")]
    Thread(std::io::Error),
    #[error(transparent)]
    Db(#[from] DbError),
}

/// The running writer; dropping it stops the thread (after a last copy).
#[derive(Debug)]
pub struct FileSink {
    reopen: mpsc::Sender<()>,
}

impl FileSink {
    /// Opens (creating) `path` and starts copying the rows this instance's chain gets from now on.
    pub fn start(db: Db, path: PathBuf) -> Result<Self, FileSinkError> {
        let instance = super::chain::instance_id();
        let after = db
            .run_blocking(|conn| audit_chain::lanes(conn, instance))?
            .into_iter()
            .map(|head| (head.chain_id, head.last_sequence))
            .collect();
        let file = open(&path)?;
        let (reopen, requests) = mpsc::channel();
        let writer = Writer {
            db,
            path,
            instance,
            after,
            file: Some(file),
        };
        std::thread::Builder::new()
            .name("audit-file".to_owned())
            .spawn(move || writer.run(&requests))
            .map_err(FileSinkError::Thread)?;
        Ok(Self { reopen })
    }

    /// Asks the writer to close and reopen the file (after a rotation renamed it).
    pub fn reopen(&self) {
        let _ = self.reopen.send(());
    }
}

/// Opens `path` for appending, creating it mode 0600 (and missing directories mode 0700); an
/// existing file is narrowed to 0600.
fn open(path: &Path) -> Result<File, FileSinkError> {
    let failed = |source| FileSinkError::Open {
        path: path.to_owned(),
        source,
    };
    if let Some(dir) = path.parent().filter(|dir| !dir.as_os_str().is_empty()) {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(failed)?;
    }
    let file = OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(path)
        .map_err(failed)?;
    file.set_permissions(std::fs::Permissions::from_mode(0o600))
        .map_err(failed)?;
    Ok(file)
}

struct Writer {
    db: Db,
    path: PathBuf,
    instance: &'static str,
    /// The last sequence copied, per chain of this instance (a chain created since the start is
    /// copied from its first row).
    after: HashMap<String, i64>,
    file: Option<File>,
}

impl Writer {
    fn run(mut self, requests: &mpsc::Receiver<()>) {
        loop {
            let stop = match requests.recv_timeout(POLL) {
                Ok(()) => {
                    self.reopen();
                    false
                }
                Err(RecvTimeoutError::Timeout) => false,
                Err(RecvTimeoutError::Disconnected) => true,
            };
            if let Err(err) = self.copy_new_rows() {
                tracing::warn!(error = %err, "could not copy audit events to AUDIT_LOG_FILE");
            }
            if stop {
                return;
            }
        }
    }

    fn reopen(&mut self) {
        // Rows committed before the rotation belong to the old file.
        if let Err(err) = self.copy_new_rows() {
            tracing::warn!(error = %err, "could not copy audit events to AUDIT_LOG_FILE");
        }
        self.file = None;
        match open(&self.path) {
            Ok(file) => self.file = Some(file),
            Err(err) => tracing::warn!(error = %err, "could not reopen AUDIT_LOG_FILE"),
        }
    }

    fn copy_new_rows(&mut self) -> Result<(), Box<dyn std::error::Error>> {
        let instance = self.instance;
        let lanes = self
            .db
            .run_blocking(|conn| audit_chain::lanes(conn, instance))?;
        for head in lanes {
            let after = self.after.get(&head.chain_id).copied().unwrap_or(0);
            if head.last_sequence > after {
                self.copy_chain(&head.chain_id, after)?;
            }
        }
        Ok(())
    }

    /// Copies the rows of `chain` after sequence `after`.
    fn copy_chain(
        &mut self,
        chain: &str,
        mut after: i64,
    ) -> Result<(), Box<dyn std::error::Error>> {
        loop {
            let rows = self
                .db
                .run_blocking(|conn| security_event::chain_rows(conn, chain, after, PAGE))?;
            let Some(last) = rows.last().and_then(|row| row.chain_seq) else {
                return Ok(());
            };
            if self.file.is_none() {
                self.file = Some(open(&self.path)?);
            }
            let mut text = String::new();
            for row in &rows {
                text.push_str(&line(row).to_string());
                text.push('\n');
            }
            if let Some(file) = self.file.as_mut() {
                file.write_all(text.as_bytes())?;
                file.flush()?;
            }
            after = last;
            self.after.insert(chain.to_owned(), last);
            if rows.len() < usize::try_from(PAGE).unwrap_or(usize::MAX) {
                return Ok(());
            }
        }
    }
}

/// One event as a JSON object: time, kind, severity, actor, ip, request id, details and the
/// event's place and hash in its chain.
fn line(row: &ChainedRow) -> serde_json::Value {
    let details = serde_json::from_str::<serde_json::Value>(&row.details)
        .unwrap_or_else(|_| serde_json::Value::String(row.details.clone()));
    serde_json::json!({
        "time": row.occurred_at.and_utc().to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
        "kind": row.kind,
        "severity": row.severity,
        "actor": row.actor,
        "ip": row.ip,
        "request_id": row.request_id,
        "details": details,
        "chain": row.chain_id,
        "sequence": row.chain_seq,
        "hash": row.hash,
    })
}
