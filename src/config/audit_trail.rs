//! The audit trail's settings: which chain this instance appends to (`INSTANCE_ID`), how long
//! audit rows and finished webhook events are kept (`AUDIT_RETENTION_DAYS`,
//! `WEBHOOK_EVENT_RETENTION_DAYS`, `NOTIFICATION_RETENTION_DAYS`) and the optional JSON-lines copy (`AUDIT_LOG_FILE`).

use std::path::PathBuf;

use super::ConfigError;
use super::vars::{Vars, positive};

#[derive(Debug, Clone)]
pub struct AuditTrailSettings {
    /// The audit chain this instance appends to: unique per instance sharing a database.
    pub instance_id: String,
    /// Audit rows last seen longer ago than this many days are pruned.
    pub retention_days: u32,
    /// Applied or ignored webhook events received longer ago than this many days are pruned.
    pub webhook_event_retention_days: u32,
    /// Finished notifications (sent, dead, not sent) last changed longer ago than this many
    /// days are pruned (`NOTIFICATION_RETENTION_DAYS`).
    pub notification_retention_days: u32,
    /// Every audit event is also appended here as a JSON line; `None`: no file.
    pub log_file: Option<PathBuf>,
}

/// At most this many days of retention (a century), so cut-off dates stay representable.
const MAX_RETENTION_DAYS: u32 = 36_500;

/// The chain id without `INSTANCE_ID`: the host name (Linux), else `tollgate`.
pub fn default_instance_id() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|name| name.trim().to_owned())
        .filter(|name| valid_instance_id(name))
        .unwrap_or_else(|| "tollgate".to_owned())
}

/// 1 to 64 letters, digits, `.`, `-` and `_`.
fn valid_instance_id(id: &str) -> bool {
    (1..=64).contains(&id.len())
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'))
}

fn days(vars: &impl Vars, var: &'static str, default: u32) -> Result<u32, ConfigError> {
    let days = positive(vars, var, default)?;
    if days > MAX_RETENTION_DAYS {
        return Err(ConfigError::Invalid {
            var,
            reason: format!("must be at most {MAX_RETENTION_DAYS} days"),
        });
    }
    Ok(days)
}

/// Reads the audit trail's variables (no secret needed: the `audit` commands use this alone).
pub fn audit_trail(vars: &impl Vars) -> Result<AuditTrailSettings, ConfigError> {
    let instance_id = match vars.get("INSTANCE_ID") {
        None => default_instance_id(),
        Some(raw) => {
            let id = raw.trim().to_owned();
            if !valid_instance_id(&id) {
                return Err(ConfigError::Invalid {
                    var: "INSTANCE_ID",
                    reason: "must be 1 to 64 letters, digits, `.`, `-` or `_`".to_owned(),
                });
            }
            id
        }
    };
    Ok(AuditTrailSettings {
        instance_id,
        retention_days: days(vars, "AUDIT_RETENTION_DAYS", 30)?,
        webhook_event_retention_days: days(vars, "WEBHOOK_EVENT_RETENTION_DAYS", 90)?,
        notification_retention_days: days(vars, "NOTIFICATION_RETENTION_DAYS", 90)?,
        log_file: vars
            .get("AUDIT_LOG_FILE")
            .map(|path| PathBuf::from(path.trim())),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(pairs: &[(&str, &str)]) -> Result<AuditTrailSettings, ConfigError> {
        let vars = |name: &str| {
            pairs
                .iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| (*v).to_owned())
        };
        audit_trail(&vars)
    }

    #[test]
    fn defaults_and_validation_name_the_variable() {
        let settings = parse(&[]).unwrap();
        assert_eq!(settings.retention_days, 30);
        assert_eq!(settings.webhook_event_retention_days, 90);
        assert_eq!(settings.notification_retention_days, 90);
        assert!(settings.log_file.is_none());
        assert!(valid_instance_id(&settings.instance_id));
        assert_eq!(
            parse(&[("INSTANCE_ID", "web-2")]).unwrap().instance_id,
            "web-2"
        );
        for (var, value) in [
            ("INSTANCE_ID", "web 2"),
            ("INSTANCE_ID", "web/2"),
            ("AUDIT_RETENTION_DAYS", "0"),
            ("AUDIT_RETENTION_DAYS", "x"),
            ("WEBHOOK_EVENT_RETENTION_DAYS", "-1"),
            ("WEBHOOK_EVENT_RETENTION_DAYS", "99999999"),
        ] {
            let err = parse(&[(var, value)]).unwrap_err().to_string();
            assert!(err.contains(var), "{err}");
        }
    }
}
