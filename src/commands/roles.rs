//! `tollgate set-role --email E --role support|admin|customer`: changes an account's role, ends
//! its sessions and audits the change (`role_changed`).

use std::path::Path;

use super::{CommandError, IfMissing, connect_database, failed};
use crate::accounts::{self, Email, Role, SetRoleError};

pub fn set_role(env_file: &Path, email: &str, role: &str) -> Result<(), CommandError> {
    let email =
        Email::parse(email).map_err(|e| CommandError::Usage(format!("set-role: --email: {e}")))?;
    let role = Role::parse_exact(role.trim()).ok_or_else(|| {
        CommandError::Usage(format!(
            "set-role: --role must be one of customer, support, admin (got `{}`)",
            role.chars().take(32).collect::<String>()
        ))
    })?;
    let db = connect_database(env_file, IfMissing::Refuse)?;
    let change = db
        .run_blocking(|conn| accounts::set_role(conn, &email, role, "cli"))
        .map_err(|err| match err {
            SetRoleError::NoSuchAccount => {
                CommandError::Failed(format!("set-role: {}: {err}", email.as_str()))
            }
            other => failed(other),
        })?;
    if change.old == change.new {
        println!(
            "{} is already {}; nothing changed",
            email.as_str(),
            change.new
        );
    } else {
        println!(
            "{} is now {} (was {}); ended {} session(s)",
            email.as_str(),
            change.new,
            change.old,
            change.sessions_ended
        );
    }
    Ok(())
}
