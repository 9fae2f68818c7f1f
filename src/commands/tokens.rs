//! `tollgate service-token create|list|revoke`.

use std::path::Path;

use secrecy::ExposeSecret as _;

use super::{CommandError, connect, failed};
use crate::audit::{self, Kind, SecurityEvent};
use crate::service_tokens::{self, CreateError, Scope};

pub fn create(env_file: &Path, name: &str, scopes: &[Scope]) -> Result<(), CommandError> {
    let (config, db) = connect(env_file)?;
    let hasher = config.token_hasher();
    let token = db
        .run_blocking(|conn| service_tokens::create(conn, &hasher, name, scopes))
        .map_err(|err| match err {
            CreateError::Db(err) => failed(err),
            other => CommandError::Usage(format!("service-token create: {other}")),
        })?;
    let scopes: Vec<_> = scopes.iter().map(|s| s.as_str()).collect();
    let event = SecurityEvent::new(Kind::ServiceTokenCreated)
        .actor("cli")
        .details(serde_json::json!({ "name": name, "scopes": scopes }));
    db.run_blocking(|conn| audit::write(conn, &event))
        .map_err(failed)?;
    // The token goes to stdout alone, so it can be piped into a secret store.
    println!("{}", token.expose_secret());
    eprintln!(
        "Created service token `{name}` ({}). Store it now: it is not shown again.",
        scopes.join(", ")
    );
    Ok(())
}

pub fn list(env_file: &Path) -> Result<(), CommandError> {
    let (_, db) = connect(env_file)?;
    let tokens = db.run_blocking(service_tokens::list).map_err(failed)?;
    if tokens.is_empty() {
        println!("no service tokens");
        return Ok(());
    }
    let at = |t: Option<chrono::NaiveDateTime>| {
        t.map(|t| t.format("%Y-%m-%d %H:%M").to_string())
            .unwrap_or_else(|| "-".into())
    };
    println!(
        "{:<24} {:<30} {:<18} {:<17} {:<17} STATUS",
        "NAME", "SCOPES", "ID", "CREATED", "LAST USED"
    );
    for t in tokens {
        let status = if t.revoked_at.is_some() {
            "revoked"
        } else {
            "active"
        };
        println!(
            "{:<24} {:<30} {:<18} {:<17} {:<17} {status}",
            t.name,
            t.scopes,
            t.display_id,
            at(Some(t.created_at)),
            at(t.last_used_at)
        );
    }
    Ok(())
}

pub fn revoke(env_file: &Path, name: Option<&str>) -> Result<(), CommandError> {
    let (_, db) = connect(env_file)?;
    let revoked = db
        .run_blocking(|conn| service_tokens::revoke(conn, name))
        .map_err(failed)?;
    if revoked == 0 {
        return Err(match name {
            Some(name) => CommandError::Failed(format!(
                "service-token revoke: no active token named `{name}`"
            )),
            None => CommandError::Failed("service-token revoke: no active tokens".into()),
        });
    }
    let event = SecurityEvent::new(Kind::ServiceTokenRevoked)
        .actor("cli")
        .details(serde_json::json!({ "name": name.unwrap_or("*"), "count": revoked }));
    db.run_blocking(|conn| audit::write(conn, &event))
        .map_err(failed)?;
    println!("revoked {revoked} service token(s)");
    Ok(())
}
