//! Accounts: sign-up, sign-in and roles. Web-free: handlers call these with parsed types.
//!
//! Sign-in is guarded twice in memory: at most N failures per account within a window
//! ([`SignInGuards::failures`], keyed by a hash of the normalised email, whether or not the
//! account exists), and a cap on concurrent argon2 work ([`password::PasswordWork`]).

pub mod email;
pub mod password;
pub mod two_factor;

use chrono::NaiveDateTime;
use diesel::Connection as _;
use secrecy::SecretString;
use sha2::{Digest as _, Sha256};

use crate::audit::{self, Actor, Kind, Principal, SecurityEvent};
use crate::db::models::session;
use crate::db::models::user::{self, NewUser, UserRow};
pub use crate::db::models::user::{Role, UserId};
use crate::db::{Db, DbConnection, DbError, now};
use crate::limits::{FailureLimiter, Locked};
pub use email::{Email, InvalidEmail};
pub use password::{NewPassword, PasswordPolicyError, PasswordWork, WorkError};

/// A signed-up person, as the rest of the application sees them (no password hash).
#[derive(Debug, Clone)]
pub struct User {
    pub id: UserId,
    pub email: String,
    pub role: Role,
    pub created_at: NaiveDateTime,
    pub last_login_at: Option<NaiveDateTime>,
    /// Names the credential the account has now (see [`credential_stamp`]).
    pub credential: String,
    /// The hosted page of the invoice to pay when a renewal's payment failed (the banner on
    /// every signed-in page); filled in by the request's sign-in lookup.
    pub past_due_invoice_url: Option<String>,
}

/// A short digest of an account's password hash. A session records the stamp it was signed in
/// with and is worthless once the account's stamp changes: a password reset, or a promotion
/// (which always sets a new password), signs out every session — including one whose sign-in
/// was still in flight (it had verified the old password) when the change committed.
fn credential_stamp(password_hash: &str) -> String {
    use sha2::{Digest as _, Sha256};
    let digest = Sha256::new()
        .chain_update(b"tollgate session credential v1\0")
        .chain_update(password_hash.as_bytes())
        .finalize();
    crate::secret::encode_token(&digest[..16])
}

impl User {
    pub fn is_admin(&self) -> bool {
        self.role == Role::Admin
    }

    pub fn masked_email(&self) -> String {
        crate::secret::mask_email(&self.email)
    }

    /// The account in its role, as the audit log names it.
    pub fn principal(&self) -> Principal {
        principal(self.role, self.id)
    }
}

/// Account `id` in `role`, as the audit log names it.
fn principal(role: Role, id: UserId) -> Principal {
    match role {
        Role::Customer => Principal::User(id),
        Role::Support => Principal::Support(id),
        Role::Admin => Principal::Admin(id),
    }
}

impl From<UserRow> for User {
    fn from(row: UserRow) -> Self {
        Self {
            id: row.id,
            credential: credential_stamp(&row.password_hash),
            role: row.role,
            email: row.email,
            created_at: row.created_at,
            last_login_at: row.last_login_at,
            past_due_invoice_url: None,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SignUpError {
    #[error("an account with this email already exists")]
    EmailTaken,
    #[error(transparent)]
    Hash(#[from] password::HashError),
    #[error(transparent)]
    Work(#[from] WorkError),
    #[error(transparent)]
    Db(#[from] DbError),
}

/// Creates a customer account for `actor` (nobody yet, from its address), audited in the same
/// transaction: no account without its `signup` row.
pub async fn sign_up(
    db: &Db,
    work: &PasswordWork,
    actor: &Actor,
    email: Email,
    password: NewPassword,
) -> Result<User, SignUpError> {
    let hash = work.run(move || password.hash()).await??;
    let actor = actor.clone();
    db.run(move |conn| {
        conn.transaction(|conn| {
            let user = insert_user(conn, &email, &hash, Role::Customer)?;
            let event = actor
                .acting_as(user.principal())
                .event(Kind::Signup)
                .details(serde_json::json!({ "email": user.masked_email() }));
            audit::write(conn, &event)?;
            Ok(user)
        })
    })
    .await
    .map_err(|err: DbError| {
        if err.is_unique_violation() {
            SignUpError::EmailTaken
        } else {
            err.into()
        }
    })
}

fn insert_user(
    conn: &mut DbConnection,
    email: &Email,
    hash: &str,
    role: Role,
) -> Result<User, DbError> {
    let at = now();
    let row = user::insert(
        conn,
        &NewUser {
            email: email.as_str(),
            password_hash: hash,
            role,
            created_at: at,
            updated_at: at,
        },
    )?;
    Ok(row.into())
}

/// What a sign-in attempt is counted under: a hash of the normalised email (the address is
/// not kept in memory), the same for an account that does not exist.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SignInKey([u8; 32]);

impl crate::limits::SharedKey for SignInKey {
    fn key_bytes(&self) -> Vec<u8> {
        self.0.to_vec()
    }
}

impl SignInKey {
    pub fn of(raw_email: &str) -> Self {
        let normalised = Email::parse(raw_email)
            .map(|email| email.as_str().to_owned())
            .unwrap_or_else(|_| raw_email.trim().to_lowercase());
        let mut hash = Sha256::new();
        hash.update(b"tollgate sign-in\0");
        hash.update(normalised.as_bytes());
        Self(hash.finalize().into())
    }
}

/// The in-memory guards a sign-in goes through.
pub struct SignInGuards<'a> {
    pub failures: &'a FailureLimiter<SignInKey>,
    pub work: &'a PasswordWork,
}

/// How a sign-in attempt ended. `account` (the email's account, in its role) is for the audit
/// log only: the person signing in is told the same thing whether or not the email has an
/// account.
#[derive(Debug)]
pub enum SignIn {
    Succeeded(User),
    Failed {
        account: Option<Principal>,
    },
    /// Too many failures for this email lately: not even checked.
    Locked {
        account: Option<Principal>,
        locked: Locked,
    },
}

#[derive(Debug, thiserror::Error)]
pub enum SignInError {
    #[error(transparent)]
    Work(#[from] WorkError),
    #[error(transparent)]
    Db(#[from] DbError),
}

/// Checks an email and password for `actor` (nobody yet, from its address). Unknown emails,
/// malformed emails and wrong passwords all take the same path (one full argon2 verification)
/// and the same answer, and count alike towards the email's failure limit; a locked email is
/// refused before any argon2 work. A success is recorded on the account and audited in one
/// transaction; refusals are left to the caller to audit.
pub async fn authenticate(
    db: &Db,
    guards: SignInGuards<'_>,
    actor: &Actor,
    raw_email: &str,
    password: SecretString,
) -> Result<SignIn, SignInError> {
    let key = SignInKey::of(raw_email);
    let email = Email::parse(raw_email).ok();
    let row = match email {
        Some(email) => {
            db.run(move |conn| user::find_by_email(conn, email.as_str()))
                .await?
        }
        None => None,
    };
    let account = row.as_ref().map(|r| principal(r.role, r.id));
    if let Err(locked) = guards.failures.charge(key).await {
        return Ok(SignIn::Locked { account, locked });
    }
    let verified = guards
        .work
        .run(move || {
            let ok = password::verify(&password, row.as_ref().map(|r| r.password_hash.as_str()));
            ok.then_some(row).flatten()
        })
        .await;
    let verified = match verified {
        Ok(verified) => verified,
        Err(err) => {
            guards.failures.refund(&key).await;
            return Err(err.into());
        }
    };
    let Some(row) = verified else {
        return Ok(SignIn::Failed { account });
    };
    guards.failures.forgive(&key).await;
    let user = User::from(row);
    let event = actor
        .acting_as(user.principal())
        .event(Kind::LoginSucceeded);
    let id = user.id;
    db.run(move |conn| {
        conn.transaction(|conn| {
            user::record_login(conn, id)?;
            audit::write(conn, &event)
        })
    })
    .await?;
    Ok(SignIn::Succeeded(user))
}

/// Whether `password` is account `id`'s current password (one argon2 verification, inside the
/// password work cap): asked again before a step that must not rest on a session cookie alone.
pub async fn password_matches(
    db: &Db,
    work: &PasswordWork,
    id: UserId,
    password: SecretString,
) -> Result<bool, SignInError> {
    let row = db.run(move |conn| user::find(conn, id)).await?;
    Ok(work
        .run(move || password::verify(&password, row.as_ref().map(|r| r.password_hash.as_str())))
        .await?)
}

pub async fn find_user(db: &Db, id: UserId) -> Result<Option<User>, DbError> {
    db.run(move |conn| Ok(user::find(conn, id)?.map(User::from)))
        .await
}

/// What `create-admin` did.
#[derive(Debug, PartialEq, Eq)]
pub enum AdminOutcome {
    Created,
    /// An existing account was promoted; its sessions (this many) were ended.
    Promoted {
        sessions_ended: usize,
    },
}

#[derive(Debug, thiserror::Error)]
pub enum CreateAdminError {
    /// The email already has an account and promotion was not asked for.
    #[error(
        "an account with this email already exists; pass --promote-existing to make it an admin \
         (its password is replaced and every session it has is ended)"
    )]
    AccountExists,
    #[error(transparent)]
    Hash(#[from] password::HashError),
    #[error(transparent)]
    Db(#[from] DbError),
}

impl From<diesel::result::Error> for CreateAdminError {
    fn from(err: diesel::result::Error) -> Self {
        Self::Db(DbError::Query(err))
    }
}

/// Whether `create_admin` may take over an account that already exists.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExistingAccount {
    Refuse,
    Promote,
}

/// Creates an admin account or, when allowed, promotes an existing account and sets its
/// password. Promotion ends every session the account had, in the same transaction as the
/// role and password change and the audit row: whoever registered the address first cannot
/// keep a session that wakes up with admin rights. Blocking: for the CLI.
pub fn create_admin(
    conn: &mut DbConnection,
    email: &Email,
    password: &NewPassword,
    existing: ExistingAccount,
    actor: &str,
) -> Result<(User, AdminOutcome), CreateAdminError> {
    let hash = password.hash()?;
    // The write lock first: run from the CLI beside a serving instance on SQLite, a read
    // first would make its snapshot, and another process's commit before the insert would fail
    // it at once ("database is locked"; SQLite waits for a lock only before the first read).
    crate::db::write_transaction(conn, |conn| {
        let (user, outcome) = match user::find_by_email(conn, email.as_str())? {
            Some(_) if existing == ExistingAccount::Refuse => {
                return Err(CreateAdminError::AccountExists);
            }
            Some(found) => {
                user::set_role(conn, found.id, Role::Admin)?;
                user::set_password_hash(conn, found.id, &hash)?;
                let sessions_ended = session::delete_for_user(conn, found.id)?;
                let row = user::find(conn, found.id)?
                    .ok_or(DbError::Query(diesel::result::Error::NotFound))?;
                (User::from(row), AdminOutcome::Promoted { sessions_ended })
            }
            None => (
                insert_user(conn, email, &hash, Role::Admin)?,
                AdminOutcome::Created,
            ),
        };
        let sessions_ended = match outcome {
            AdminOutcome::Promoted { sessions_ended } => sessions_ended,
            AdminOutcome::Created => 0,
        };
        let event =
            SecurityEvent::new(Kind::AdminCreated)
                .actor(actor)
                .details(serde_json::json!({
                    "user_id": user.id,
                    "email": user.masked_email(),
                    "promoted": outcome != AdminOutcome::Created,
                    "sessions_ended": sessions_ended,
                }));
        audit::write(conn, &event)?;
        Ok((user, outcome))
    })
}

/// What `set-role` did.
#[derive(Debug, PartialEq, Eq)]
pub struct RoleChange {
    pub old: Role,
    pub new: Role,
    /// Sessions of the account that were ended (none when the role did not change).
    pub sessions_ended: usize,
}

#[derive(Debug, thiserror::Error)]
pub enum SetRoleError {
    #[error("no account has this email")]
    NoSuchAccount,
    #[error(transparent)]
    Db(#[from] DbError),
}

impl From<diesel::result::Error> for SetRoleError {
    fn from(err: diesel::result::Error) -> Self {
        Self::Db(DbError::Query(err))
    }
}

/// Gives the account `email` the role `role`. A change ends every session the account has
/// (a session must not wake up with rights it was not signed in with, nor keep ones taken
/// away) and is audited (`role_changed`), all in one transaction; setting the role an account
/// already has changes nothing. Blocking: for the CLI.
pub fn set_role(
    conn: &mut DbConnection,
    email: &Email,
    role: Role,
    actor: &str,
) -> Result<RoleChange, SetRoleError> {
    conn.transaction::<_, SetRoleError, _>(|conn| {
        // A write first (SQLite cannot upgrade a read transaction while another writer holds
        // the lock): the update names the account by email.
        let updated = user::set_role_by_email(conn, email.as_str(), role)?;
        let Some((id, old)) = updated else {
            return Err(SetRoleError::NoSuchAccount);
        };
        if old == role {
            return Ok(RoleChange {
                old,
                new: role,
                sessions_ended: 0,
            });
        }
        let sessions_ended = session::delete_for_user(conn, id)?;
        let event = SecurityEvent::new(Kind::RoleChanged)
            .actor(actor)
            .details(serde_json::json!({
                "user_id": id,
                "email": crate::secret::mask_email(email.as_str()),
                "old_role": old.as_str(),
                "new_role": role.as_str(),
                "sessions_ended": sessions_ended,
            }));
        audit::write(conn, &event)?;
        Ok(RoleChange {
            old,
            new: role,
            sessions_ended,
        })
    })
}
