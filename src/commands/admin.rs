//! `tollgate create-admin --email E`: the password comes from stdin or a prompt, never argv.

use std::io::{BufRead as _, IsTerminal as _};
use std::path::Path;

use secrecy::{ExposeSecret as _, SecretString};

use super::{CommandError, IfMissing, connect_database, failed};
use crate::accounts::{self, AdminOutcome, CreateAdminError, Email, ExistingAccount, NewPassword};

fn read_password() -> Result<SecretString, CommandError> {
    let stdin = std::io::stdin();
    if stdin.is_terminal() {
        let first =
            rpassword::prompt_password("Password for the admin account: ").map_err(failed)?;
        let again = rpassword::prompt_password("Repeat the password: ").map_err(failed)?;
        if first != again {
            return Err(CommandError::Usage(
                "create-admin: the passwords do not match".into(),
            ));
        }
        return Ok(SecretString::from(first));
    }
    let mut line = String::new();
    stdin.lock().read_line(&mut line).map_err(failed)?;
    let password = line.trim_end_matches(['\r', '\n']).to_owned();
    Ok(SecretString::from(password))
}

pub fn create_admin(
    env_file: &Path,
    email: &str,
    promote_existing: bool,
    missing: IfMissing,
) -> Result<(), CommandError> {
    let email = Email::parse(email)
        .map_err(|e| CommandError::Usage(format!("create-admin: --email: {e}")))?;
    // Before the password prompt: a mistyped DATABASE_URL is refused before anyone types one.
    let db = connect_database(env_file, missing)?;
    let password = read_password()?;
    if password.expose_secret().is_empty() {
        return Err(CommandError::Usage(
            "create-admin: no password given on stdin".into(),
        ));
    }
    let password = NewPassword::parse(password)
        .map_err(|e| CommandError::Usage(format!("create-admin: password: {e}")))?;
    let existing = if promote_existing {
        ExistingAccount::Promote
    } else {
        ExistingAccount::Refuse
    };
    let (user, outcome) = db
        .run_blocking(|conn| accounts::create_admin(conn, &email, &password, existing, "cli"))
        .map_err(|err| match err {
            CreateAdminError::AccountExists => {
                CommandError::Failed(format!("create-admin: {}: {err}", email.as_str()))
            }
            other => failed(other),
        })?;
    match outcome {
        AdminOutcome::Created => println!("created admin account {}", user.email),
        AdminOutcome::Promoted { sessions_ended } => println!(
            "promoted existing account {} to admin, set its password and ended its {sessions_ended} session(s)",
            user.email
        ),
    }
    Ok(())
}
