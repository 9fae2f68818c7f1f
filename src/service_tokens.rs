//! Service tokens: how internal services (the execution engine, feature gates) authenticate.
//!
//! A token is `tg_svc_` followed by 32 random bytes (URL-safe base64). It is printed once, at
//! creation; only its HMAC (keyed by `TOKEN_PEPPER`) is stored. Each token has scopes, and every
//! internal endpoint demands one.
//!
//! During a pepper rotation a token hashed under an old pepper (`TOKEN_PEPPERS_OLD`) still
//! authenticates, and its first successful use re-hashes it under the primary pepper: the old
//! pepper can go once `rotate-key --check` counts no live token under it.

use std::fmt;

use chrono::NaiveDateTime;
use diesel::Connection as _;
use secrecy::{ExposeSecret as _, SecretString};

use crate::audit::{self, Actor, Kind};
use crate::crypto::TokenHasher;
use crate::crypto::hashing::{Candidate, Domain};
use crate::db::models::service_token::{self, NewServiceToken, ServiceTokenRow};
use crate::db::{DbConnection, DbError, now};
use crate::secret::{encode_token, random_bytes};

pub const TOKEN_PREFIX: &str = "tg_svc_";

/// What a token may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    ByokLease,
    EntitlementsRead,
    /// Scrape `/metrics` (Prometheus).
    MetricsRead,
    /// Report usage and reserve, commit and release quota (`/internal/v1/usage`, `…/reserve`).
    UsageWrite,
}

impl Scope {
    pub const ALL: [Scope; 4] = [
        Scope::ByokLease,
        Scope::EntitlementsRead,
        Scope::MetricsRead,
        Scope::UsageWrite,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::ByokLease => "byok:lease",
            Self::EntitlementsRead => "entitlements:read",
            Self::MetricsRead => "metrics:read",
            Self::UsageWrite => "usage:write",
        }
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Scope {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Self::ALL
            .into_iter()
            .find(|scope| scope.as_str() == s)
            .ok_or_else(|| {
                let known: Vec<_> = Self::ALL.iter().map(|s| s.as_str()).collect();
                format!("unknown scope `{s}` (known: {})", known.join(", "))
            })
    }
}

/// A live token, as the application sees it after authentication.
#[derive(Debug, Clone)]
pub struct ServiceToken {
    pub id: i64,
    pub name: String,
    pub scopes: Vec<Scope>,
}

impl ServiceToken {
    pub fn allows(&self, scope: Scope) -> bool {
        self.scopes.contains(&scope)
    }
}

fn parse_scopes(raw: &str) -> Vec<Scope> {
    raw.split_whitespace()
        .filter_map(|s| s.parse().ok())
        .collect()
}

/// A token as `service-token list` and the admin console show it: never the token itself
/// nor its hash.
#[derive(Debug)]
pub struct TokenSummary {
    pub id: i64,
    pub name: String,
    pub scopes: String,
    pub display_id: String,
    pub created_at: NaiveDateTime,
    pub last_used_at: Option<NaiveDateTime>,
    pub revoked_at: Option<NaiveDateTime>,
}

impl From<ServiceTokenRow> for TokenSummary {
    fn from(row: ServiceTokenRow) -> Self {
        Self {
            id: row.id,
            name: row.name,
            scopes: row.scopes,
            display_id: row.display_id,
            created_at: row.created_at,
            last_used_at: row.last_used_at,
            revoked_at: row.revoked_at,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CreateError {
    #[error("a token named `{0}` already exists")]
    NameTaken(String),
    #[error("token names are 1 to 64 letters, digits, `-`, `_` or `.`")]
    BadName,
    #[error("give at least one --scope")]
    NoScope,
    #[error("the random generator failed")]
    Random,
    #[error(transparent)]
    Db(#[from] DbError),
}

fn valid_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

/// Creates a token and returns it: the only time it exists outside the caller's hands.
pub fn create(
    conn: &mut DbConnection,
    hasher: &TokenHasher,
    name: &str,
    scopes: &[Scope],
) -> Result<SecretString, CreateError> {
    if !valid_name(name) {
        return Err(CreateError::BadName);
    }
    if scopes.is_empty() {
        return Err(CreateError::NoScope);
    }
    let random = encode_token(&random_bytes::<32>().map_err(|_| CreateError::Random)?);
    let token = SecretString::from(format!("{TOKEN_PREFIX}{random}"));
    let display_id = format!("{TOKEN_PREFIX}{}…", &random[..6]);
    let scopes: Vec<_> = scopes.iter().map(|s| s.as_str()).collect();
    let inserted = service_token::insert(
        conn,
        &NewServiceToken {
            name,
            scopes: &scopes.join(" "),
            token_hash: &hasher.digest(Domain::ServiceToken, token.expose_secret().as_bytes()),
            display_id: &display_id,
            created_at: now(),
            hash_key_id: &hasher.primary_id().to_string(),
        },
    );
    match inserted {
        Err(err) if err.is_unique_violation() => Err(CreateError::NameTaken(name.to_owned())),
        other => other.map(|()| token).map_err(CreateError::from),
    }
}

pub fn list(conn: &mut DbConnection) -> Result<Vec<TokenSummary>, DbError> {
    Ok(service_token::all(conn)?
        .into_iter()
        .map(TokenSummary::from)
        .collect())
}

/// Revokes one token by name, or all of them; returns how many were live.
pub fn revoke(conn: &mut DbConnection, name: Option<&str>) -> Result<usize, DbError> {
    service_token::revoke(conn, name)
}

pub fn find(conn: &mut DbConnection, id: i64) -> Result<Option<TokenSummary>, DbError> {
    Ok(service_token::find(conn, id)?.map(TokenSummary::from))
}

/// What revoking one token did.
#[derive(Debug, PartialEq, Eq)]
pub enum Revoked {
    /// It was live; its name.
    Now(String),
    Already(String),
    NoSuchToken,
}

/// Revokes the token with this id for `actor`, writing the `service_token_revoked` audit row in
/// the same transaction: a token is never revoked without its row. (The transaction starts with
/// the write, so SQLite takes its lock at once.)
pub fn revoke_by_id(conn: &mut DbConnection, actor: &Actor, id: i64) -> Result<Revoked, DbError> {
    conn.transaction::<_, DbError, _>(|conn| {
        let revoked = service_token::revoke_by_id(conn, id)?;
        let Some(token) = service_token::find(conn, id)? else {
            return Ok(Revoked::NoSuchToken);
        };
        if !revoked {
            return Ok(Revoked::Already(token.name));
        }
        let event = actor
            .event(Kind::ServiceTokenRevoked)
            .details(serde_json::json!({ "name": token.name, "id": id, "count": 1 }));
        audit::write(conn, &event)?;
        Ok(Revoked::Now(token.name))
    })
}

/// Why a presented token was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rejection {
    Missing,
    Malformed,
    Unknown,
    Revoked,
}

impl Rejection {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Missing => "missing",
            Self::Malformed => "malformed",
            Self::Unknown => "unknown",
            Self::Revoked => "revoked",
        }
    }
}

/// Records a use of an authenticated token; a hash under an old pepper is replaced by the
/// primary pepper's (`candidates[0]`).
/// How stale a token's `last_used_at` may get before a use records it again.
const TOUCH_EVERY_SECS: i64 = 60;

fn record_use(
    conn: &mut DbConnection,
    hasher: &TokenHasher,
    candidates: &[Candidate],
    row: &ServiceTokenRow,
) -> Result<(), DbError> {
    let primary = hasher.primary_id().to_string();
    let matched = candidates.iter().find(|c| c.matches(&row.token_hash));
    match (candidates.first(), matched) {
        (Some(current), Some(old)) if old.pepper != current.pepper => {
            if service_token::rehash(conn, row.id, &row.token_hash, &current.digest, &primary)? {
                tracing::info!(token = %row.name, pepper = %primary, "service token re-hashed under the primary pepper");
                return Ok(());
            }
            // A concurrent use re-hashed it first.
            service_token::touch(conn, row.id, &primary)
        }
        // Recorded once a minute at most: a token on the hot path (usage reports, quota
        // reserves) would otherwise write on every request, and a reserve must not wait for
        // the write lock just to say when the token was last used.
        (_, Some(matched))
            if row.hash_key_id.as_deref() == Some(matched.pepper.to_string().as_str())
                && row
                    .last_used_at
                    .is_some_and(|at| now() - at < chrono::Duration::seconds(TOUCH_EVERY_SECS)) =>
        {
            Ok(())
        }
        (_, Some(matched)) => service_token::touch(conn, row.id, &matched.pepper.to_string()),
        // Found by one of these digests, so one of them matches; nothing to record otherwise.
        (_, None) => Ok(()),
    }
}

/// Tokens that authenticated a moment ago, by their digest under the primary pepper: a service
/// on the hot path (a reserve before every AI call) presents the same token on every request,
/// and a lookup per token per TTL is enough. Only live tokens are remembered, never a refused
/// value; a revocation on this instance forgets them all at once, and one made elsewhere
/// (another instance, `tollgate tokens revoke`) takes effect within the TTL
/// (`SERVICE_TOKEN_CACHE_MS`, default 1000; 0 turns the cache off).
pub struct TokenCache(crate::cache::TtlCache<String, ServiceToken>);

/// The longest `SERVICE_TOKEN_CACHE_MS` may be: how late a revocation made elsewhere may take
/// effect.
pub const MAX_TOKEN_CACHE: std::time::Duration = std::time::Duration::from_secs(10);

/// Tokens remembered at most; the cache starts over beyond this (one lookup each).
const TOKEN_CACHE_CAPACITY: usize = 1_000;

impl TokenCache {
    pub fn new(ttl: std::time::Duration) -> Self {
        Self(crate::cache::TtlCache::new(ttl, TOKEN_CACHE_CAPACITY))
    }

    /// The key `presented` is remembered by: its digest under the primary pepper (none for a
    /// value that is not shaped like a token, or with the cache off).
    pub fn key(&self, hasher: &TokenHasher, presented: &str) -> Option<String> {
        if !self.0.enabled() || !well_formed(presented) {
            return None;
        }
        hasher
            .candidates(Domain::ServiceToken, presented.as_bytes())
            .into_iter()
            .next()
            .map(|candidate| candidate.digest)
    }

    /// The token remembered under `key`, if it authenticated within the TTL; else the miss to
    /// hand [`TokenCache::remember`] after looking it up.
    pub fn get(&self, key: &str) -> Result<ServiceToken, crate::cache::Miss> {
        self.0.get(key)
    }

    /// Remembers `token`, looked up since [`TokenCache::get`] missed, unless the cache was
    /// cleared meanwhile.
    pub fn remember(&self, key: String, token: &ServiceToken, miss: crate::cache::Miss) {
        self.0.remember(key, token.clone(), miss);
    }

    /// Forgets the token remembered under `key` (found revoked elsewhere): its next use is
    /// looked up again, and a lookup of it under way is not remembered.
    pub fn forget(&self, key: &str) {
        self.0.forget(&key.to_owned());
    }

    /// Forgets every token (after a revocation): the next use of each is looked up again,
    /// and lookups under way are not remembered.
    pub fn forget_all(&self) {
        self.0.forget_all();
    }
}

/// Whether `presented` is shaped like a token (checked before any work on it).
fn well_formed(presented: &str) -> bool {
    presented.starts_with(TOKEN_PREFIX) && presented.len() <= 128
}

/// Finds the live token a bearer value belongs to, and records its use.
pub fn authenticate(
    conn: &mut DbConnection,
    hasher: &TokenHasher,
    presented: Option<&str>,
) -> Result<Result<ServiceToken, Rejection>, DbError> {
    let Some(presented) = presented else {
        return Ok(Err(Rejection::Missing));
    };
    if !well_formed(presented) {
        return Ok(Err(Rejection::Malformed));
    }
    let candidates = hasher.candidates(Domain::ServiceToken, presented.as_bytes());
    let hashes: Vec<String> = candidates.iter().map(|c| c.digest.clone()).collect();
    let Some(row) = service_token::find_by_any_hash(conn, &hashes)? else {
        return Ok(Err(Rejection::Unknown));
    };
    if row.revoked_at.is_some() {
        return Ok(Err(Rejection::Revoked));
    }
    record_use(conn, hasher, &candidates, &row)?;
    Ok(Ok(ServiceToken {
        id: row.id,
        scopes: parse_scopes(&row.scopes),
        name: row.name,
    }))
}
