//! Server-side session storage in the database, for actix-session.
//!
//! The cookie carries only a random session key (encrypted by actix-session); the table keeps
//! a SHA-256 of that key, so a leaked table cannot be replayed. Sessions end when idle past the
//! TTL, when older than the absolute lifetime, on sign-out, and all at once on `revoke-sessions`.

use std::collections::HashMap;

use actix_session::SessionMiddleware;
use actix_session::config::{BrowserSession, CookieContentSecurity, TtlExtensionPolicy};
use actix_session::storage::{
    LoadError, SaveError, SessionKey, SessionStore, UpdateError, generate_session_key,
};
use actix_web::cookie::{Key, SameSite, time::Duration as CookieDuration};
use chrono::NaiveDateTime;
use secrecy::ExposeSecret as _;
use sha2::{Digest as _, Sha256};

use crate::accounts::UserId;
use crate::config::Config;
use crate::db::models::session::{self, NewSession};
use crate::db::{Db, DbError, now};
use crate::secret::encode_token;

type State = HashMap<String, String>;

/// The session key under which the signed-in user's id is kept.
pub const USER_ID_KEY: &str = "user_id";
/// The session key under which the session's CSRF token is kept.
pub const CSRF_KEY: &str = "csrf";
/// The session key under which the signed-in account's credential stamp is kept.
pub const CREDENTIAL_KEY: &str = "credential";
/// The session key of a sign-in waiting for its second factor (grants nothing by itself).
pub const PENDING_SECOND_FACTOR_KEY: &str = "pending_2fa";
/// The session key of the random value a two-factor enrolment in progress is bound to.
pub const ENROLMENT_BINDING_KEY: &str = "enrolment_binding";

/// What is left of a session's state once the session itself has ended: nothing that signs
/// anyone in or vouches for a form (a flash message may stay).
fn without_authority(mut state: State) -> State {
    state.remove(USER_ID_KEY);
    state.remove(CREDENTIAL_KEY);
    state.remove(CSRF_KEY);
    state.remove(PENDING_SECOND_FACTOR_KEY);
    state.remove(ENROLMENT_BINDING_KEY);
    state
}

pub struct DbSessionStore {
    db: Db,
    absolute_lifetime: chrono::Duration,
}

/// Idle expiry is pushed forward at most once per tenth of the TTL (and at least once a
/// minute), not on every request.
fn touch_granularity(ttl: &CookieDuration) -> chrono::Duration {
    chrono::Duration::seconds((ttl.whole_seconds() / 10).min(60))
}

fn key_hash(key: &SessionKey) -> String {
    encode_token(&Sha256::digest(key.as_ref().as_bytes()))
}

fn expiry(ttl: &CookieDuration) -> NaiveDateTime {
    now() + chrono::Duration::seconds(ttl.whole_seconds())
}

fn user_id(state: &State) -> Option<UserId> {
    state.get(USER_ID_KEY).and_then(|raw| raw.parse().ok())
}

impl DbSessionStore {
    pub fn new(db: Db, absolute_lifetime: std::time::Duration) -> Self {
        let absolute_lifetime = chrono::Duration::from_std(absolute_lifetime)
            .unwrap_or_else(|_| chrono::Duration::hours(12));
        Self {
            db,
            absolute_lifetime,
        }
    }

    async fn insert(
        &self,
        state: State,
        ttl: &CookieDuration,
    ) -> Result<SessionKey, anyhow::Error> {
        let body = serde_json::to_string(&state)?;
        let key = generate_session_key();
        let hash = key_hash(&key);
        let expires_at = expiry(ttl);
        self.db
            .run(move |conn| {
                session::insert(
                    conn,
                    &NewSession {
                        key_hash: &hash,
                        user_id: user_id(&state),
                        state: &body,
                        created_at: now(),
                        expires_at,
                    },
                )
            })
            .await?;
        Ok(key)
    }
}

impl SessionStore for DbSessionStore {
    async fn load(&self, key: &SessionKey) -> Result<Option<State>, LoadError> {
        let hash = key_hash(key);
        let absolute = self.absolute_lifetime;
        let row = self
            .db
            .run(move |conn| {
                let Some(row) = session::find(conn, &hash)? else {
                    return Ok(None);
                };
                let at = now();
                if row.expires_at <= at || row.created_at + absolute <= at {
                    session::delete(conn, &hash)?;
                    return Ok(None);
                }
                Ok(Some(row.state))
            })
            .await;
        // Fail closed: if sessions cannot be read, the request is anonymous. (An `Err` here
        // would skip every outer middleware, security headers included.)
        let row = row.unwrap_or_else(|err: DbError| {
            tracing::error!(error = %err, "session store unavailable; treating the request as signed out");
            None
        });
        row.map(|body: String| serde_json::from_str(&body))
            .transpose()
            .map_err(|err| LoadError::Deserialization(err.into()))
    }

    async fn save(&self, state: State, ttl: &CookieDuration) -> Result<SessionKey, SaveError> {
        self.insert(state, ttl).await.map_err(SaveError::Other)
    }

    async fn update(
        &self,
        key: SessionKey,
        state: State,
        ttl: &CookieDuration,
    ) -> Result<SessionKey, UpdateError> {
        let body =
            serde_json::to_string(&state).map_err(|err| UpdateError::Serialization(err.into()))?;
        let hash = key_hash(&key);
        let expires_at = expiry(ttl);
        let uid = user_id(&state);
        let updated = self
            .db
            .run(move |conn| session::update_state(conn, &hash, uid, &body, expires_at))
            .await
            .map_err(|err| UpdateError::Other(err.into()))?;
        if updated {
            Ok(key)
        } else {
            // Signed out, revoked or expired while this request was running: the request's
            // copy of the state must not bring the session back. A fresh, anonymous one.
            tracing::info!("a session ended during a request; continuing signed out");
            self.insert(without_authority(state), ttl)
                .await
                .map_err(UpdateError::Other)
        }
    }

    async fn update_ttl(
        &self,
        key: &SessionKey,
        ttl: &CookieDuration,
    ) -> Result<(), anyhow::Error> {
        let hash = key_hash(key);
        let expires_at = expiry(ttl);
        let unless_after = expires_at - touch_granularity(ttl);
        self.db
            .run(move |conn| session::touch(conn, &hash, expires_at, unless_after))
            .await?;
        Ok(())
    }

    async fn delete(&self, key: &SessionKey) -> Result<(), anyhow::Error> {
        let hash = key_hash(key);
        self.db
            .run(move |conn| session::delete(conn, &hash))
            .await?;
        Ok(())
    }
}

/// The cookie's name: `__Host-` prefixed (no Domain, Path=/, Secure) whenever it is Secure.
pub fn cookie_name(secure: bool) -> &'static str {
    if secure {
        "__Host-tollgate"
    } else {
        "tollgate_session"
    }
}

/// Builds the session middleware from the configuration.
/// What every area with sessions wraps: the database and the session settings, from which each
/// area (in each worker) builds its [`SessionMiddleware`].
#[derive(Clone)]
pub struct Sessions {
    db: Db,
    config: std::sync::Arc<Config>,
}

impl Sessions {
    pub fn new(db: Db, config: std::sync::Arc<Config>) -> Self {
        Self { db, config }
    }

    pub fn middleware(&self) -> SessionMiddleware<DbSessionStore> {
        middleware(self.db.clone(), &self.config)
    }
}

pub fn middleware(db: Db, config: &Config) -> SessionMiddleware<DbSessionStore> {
    // `KeyBytes<64>` guarantees the 64 bytes `Key::from` needs.
    let key = Key::from(config.secrets.secret_key.expose_secret().as_slice());
    let idle = CookieDuration::seconds(
        i64::try_from(config.session.idle_timeout.as_secs()).unwrap_or(1800),
    );
    let store = DbSessionStore::new(db, config.session.absolute_lifetime);
    SessionMiddleware::builder(store, key)
        .cookie_name(cookie_name(config.session.cookie_secure).to_owned())
        .cookie_secure(config.session.cookie_secure)
        .cookie_http_only(true)
        .cookie_same_site(SameSite::Lax)
        .cookie_content_security(CookieContentSecurity::Private)
        .session_lifecycle(
            BrowserSession::default()
                .state_ttl(idle)
                .state_ttl_extension_policy(TtlExtensionPolicy::OnEveryRequest),
        )
        .build()
}
