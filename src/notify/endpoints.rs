//! The product's own services' webhook endpoints and Standard Webhooks signing.
//!
//! A secret is `whsec_` + base64 of 32 random bytes; the signing key is those bytes. Each
//! delivery carries `webhook-id` (the outbox row's message id, stable across retries),
//! `webhook-timestamp` (Unix seconds of this attempt) and `webhook-signature`: space-separated
//! `v1,<base64 HMAC-SHA256(key, "{id}.{timestamp}.{body}")>`, one per secret in force (the
//! current one, and the previous one during a rotation's overlap).
//!
//! Admins manage endpoints here ([`create`], [`set_enabled`], [`rotate_secret`], [`delete`]),
//! each change with its audit row in one transaction. A secret leaves this module twice only:
//! returned by [`create`] and [`rotate_secret`], for the page that shows it once. It is stored
//! sealed (AES-256-GCM) and bound by its AAD to the endpoint and column, and `rotate-key`
//! re-seals both columns ([`SEALED_SECRETS`], [`SEALED_PREVIOUS_SECRETS`]).

use std::collections::HashMap;

use base64::Engine as _;
use chrono::NaiveDateTime;
use diesel::Connection as _;
use hmac::{Hmac, Mac as _};
use secrecy::{ExposeSecret as _, SecretString};
use sha2::Sha256;
use zeroize::Zeroizing;

use super::AppEvent;
use crate::audit::{self, Actor, Kind};
use crate::config::Environment;
use crate::crypto::rotation::SealedColumn;
use crate::crypto::{Aad, CryptoError, Keyring};
use crate::db::models::webhook_endpoint::{
    self, NewWebhookEndpoint, RotatedSecret, WebhookEndpointRow,
};
use crate::db::{DbConnection, DbError, now};

/// The prefix of a signing secret.
pub const SECRET_PREFIX: &str = "whsec_";

pub const ID_HEADER: &str = "webhook-id";
pub const TIMESTAMP_HEADER: &str = "webhook-timestamp";
pub const SIGNATURE_HEADER: &str = "webhook-signature";

#[derive(Debug, thiserror::Error)]
pub enum SigningError {
    #[error("the endpoint's secret cannot be opened: {0}")]
    Crypto(#[from] CryptoError),
    #[error("the endpoint's secret is malformed")]
    Malformed,
}

/// The AAD binding a sealed secret to its endpoint and column: a secret copied to another
/// endpoint, or from `previous_secret` to `secret`, does not open.
pub fn secret_aad(public_id: &str, column: &'static str) -> Aad {
    Aad::new("webhook_endpoints", column, public_id)
}

/// A fresh secret: `whsec_` + base64 of 32 random bytes.
pub fn generate_secret() -> Result<SecretString, getrandom::Error> {
    let bytes = Zeroizing::new(crate::secret::random_bytes::<32>()?);
    Ok(SecretString::from(format!(
        "{SECRET_PREFIX}{}",
        base64::engine::general_purpose::STANDARD.encode(bytes.as_slice())
    )))
}

/// The signing key of a `whsec_` secret.
fn signing_key(secret: &str) -> Result<Zeroizing<Vec<u8>>, SigningError> {
    let encoded = secret.strip_prefix(SECRET_PREFIX).unwrap_or(secret);
    base64::engine::general_purpose::STANDARD
        .decode(encoded)
        .map(Zeroizing::new)
        .map_err(|_| SigningError::Malformed)
}

/// `v1,<base64 HMAC-SHA256(key, "{id}.{timestamp}.{body}")>` for one secret.
pub fn sign(
    secret: &SecretString,
    message_id: &str,
    timestamp: i64,
    body: &[u8],
) -> Result<String, SigningError> {
    let key = signing_key(secret.expose_secret())?;
    let mut mac =
        <Hmac<Sha256> as hmac::Mac>::new_from_slice(&key).map_err(|_| SigningError::Malformed)?;
    mac.update(message_id.as_bytes());
    mac.update(b".");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    Ok(format!(
        "v1,{}",
        base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
    ))
}

/// The secrets that sign for `endpoint` at `at`: the current one, then the previous one while
/// its overlap lasts.
pub fn secrets_in_force(
    keyring: &Keyring,
    endpoint: &WebhookEndpointRow,
    at: NaiveDateTime,
) -> Result<Vec<SecretString>, SigningError> {
    let mut secrets =
        vec![keyring.open_string(&endpoint.secret, &secret_aad(&endpoint.public_id, "secret"))?];
    if let (Some(previous), Some(until)) = (&endpoint.previous_secret, endpoint.previous_expires_at)
        && until > at
    {
        secrets.push(keyring.open_string(
            previous,
            &secret_aad(&endpoint.public_id, "previous_secret"),
        )?);
    }
    Ok(secrets)
}

/// The `webhook-signature` header's value: one signature per secret in force.
pub fn signature_header(
    secrets: &[SecretString],
    message_id: &str,
    timestamp: i64,
    body: &[u8],
) -> Result<String, SigningError> {
    let signatures = secrets
        .iter()
        .map(|secret| sign(secret, message_id, timestamp, body))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(signatures.join(" "))
}

/// `webhook_endpoints.secret` as `rotate-key` re-seals it.
pub const SEALED_SECRETS: SealedColumn<WebhookEndpointRow> = SealedColumn {
    name: "webhook_endpoints.secret",
    not_under_key: webhook_endpoint::secret_not_under_key,
    id: |row| row.id,
    sealed: |row| &row.secret,
    aad: |row| Ok(secret_aad(&row.public_id, "secret")),
    replace: webhook_endpoint::replace_secret,
    count_by_key_id: webhook_endpoint::secret_count_by_key_id,
};

/// `webhook_endpoints.previous_secret` (a rotated secret during its overlap) as `rotate-key`
/// re-seals it.
pub const SEALED_PREVIOUS_SECRETS: SealedColumn<WebhookEndpointRow> = SealedColumn {
    name: "webhook_endpoints.previous_secret",
    not_under_key: webhook_endpoint::previous_not_under_key,
    id: |row| row.id,
    // Loaded only where it is set.
    sealed: |row| row.previous_secret.as_deref().unwrap_or_default(),
    aad: |row| Ok(secret_aad(&row.public_id, "previous_secret")),
    replace: webhook_endpoint::replace_previous,
    count_by_key_id: webhook_endpoint::previous_count_by_key_id,
};

/// The prefix of an endpoint's public id (what the console's addresses name).
pub const PUBLIC_ID_PREFIX: &str = "ep_";
/// The longest endpoint URL accepted.
pub const MAX_URL_LEN: usize = 2048;
/// The longest description accepted, in characters.
pub const MAX_DESCRIPTION_CHARS: usize = 200;

/// What the console's form sends: raw text, checked by [`EndpointDraft::validate`].
#[derive(Debug, Default, Clone)]
pub struct EndpointDraft {
    pub url: String,
    pub description: String,
    /// The event types ticked (as submitted; unknown ones are refused).
    pub event_types: Vec<String>,
}

/// Messages per form field (`url`, `description`, `events`), for the form to show.
pub type EndpointErrors = HashMap<&'static str, String>;

/// An endpoint's settings that passed validation.
#[derive(Debug, Clone)]
pub struct EndpointInput {
    url: url::Url,
    description: String,
    events: Vec<AppEvent>,
}

impl EndpointInput {
    pub fn url(&self) -> &str {
        self.url.as_str()
    }
}

fn check_url(raw: &str, environment: Environment) -> Result<url::Url, String> {
    let raw = raw.trim();
    if raw.is_empty() {
        return Err("Enter the URL the receiving service listens on.".into());
    }
    if raw.len() > MAX_URL_LEN {
        return Err(format!(
            "The URL is too long: at most {MAX_URL_LEN} characters."
        ));
    }
    if raw.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err("The URL cannot contain spaces or control characters.".into());
    }
    let example = "Enter a full URL such as https://billing-events.example.com/tollgate.";
    let url = url::Url::parse(raw).map_err(|_| example.to_owned())?;
    match url.scheme() {
        "https" => {}
        "http" if environment == Environment::Production => {
            return Err(
                "Use an https:// URL: in production, webhooks carry customer data and go over TLS only."
                    .into(),
            );
        }
        "http" => {}
        _ => {
            return Err("The URL must start with https:// (or http:// outside production).".into());
        }
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(example.into());
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(
            "Leave credentials out of the URL (user:password@): the signature authenticates Tollgate to the receiver."
                .into(),
        );
    }
    if url.fragment().is_some() {
        return Err("Remove the #fragment: it is never sent to the receiver.".into());
    }
    if url.as_str().len() > MAX_URL_LEN {
        return Err(format!(
            "The URL is too long: at most {MAX_URL_LEN} characters."
        ));
    }
    Ok(url)
}

impl EndpointDraft {
    /// The settings, or a message for each field that is wrong.
    pub fn validate(&self, environment: Environment) -> Result<EndpointInput, EndpointErrors> {
        let mut errors = EndpointErrors::new();
        let url = check_url(&self.url, environment)
            .map_err(|message| errors.insert("url", message))
            .ok();
        let description = self.description.trim();
        if description.chars().count() > MAX_DESCRIPTION_CHARS {
            errors.insert(
                "description",
                format!("Keep the description to {MAX_DESCRIPTION_CHARS} characters or fewer."),
            );
        } else if description.chars().any(char::is_control) {
            errors.insert(
                "description",
                "The description must be one line of text.".into(),
            );
        }
        let mut events = Vec::new();
        for raw in &self.event_types {
            match AppEvent::parse(raw.trim()) {
                Some(event) => events.push(event),
                None => {
                    let known: Vec<&str> = AppEvent::ALL.iter().map(|e| e.as_str()).collect();
                    errors.insert(
                        "events",
                        format!(
                            "Unknown event type “{}”: choose from {}.",
                            raw.chars().take(64).collect::<String>(),
                            known.join(", ")
                        ),
                    );
                    break;
                }
            }
        }
        if events.is_empty() && !errors.contains_key("events") {
            errors.insert(
                "events",
                "Choose at least one event type for this endpoint to receive.".into(),
            );
        }
        match url {
            Some(url) if errors.is_empty() => {
                // In the catalogue's order, each once.
                let events = AppEvent::ALL
                    .into_iter()
                    .filter(|e| events.contains(e))
                    .collect();
                Ok(EndpointInput {
                    url,
                    description: description.to_owned(),
                    events,
                })
            }
            _ => Err(errors),
        }
    }
}

/// An endpoint as the console shows it: never its secret, sealed or not.
#[derive(Debug, Clone)]
pub struct Endpoint {
    pub public_id: String,
    pub url: String,
    pub description: String,
    pub events: Vec<String>,
    pub enabled: bool,
    pub created_at: NaiveDateTime,
    pub updated_at: NaiveDateTime,
    /// Until when the secret before the last rotation still signs (in the future only).
    pub previous_signs_until: Option<NaiveDateTime>,
}

impl Endpoint {
    fn from_row(row: WebhookEndpointRow, at: NaiveDateTime) -> Self {
        Self {
            events: row
                .event_types
                .split_whitespace()
                .map(str::to_owned)
                .collect(),
            previous_signs_until: row
                .previous_expires_at
                .filter(|until| row.previous_secret.is_some() && *until > at),
            public_id: row.public_id,
            url: row.url,
            description: row.description,
            enabled: row.enabled,
            created_at: row.created_at,
            updated_at: row.updated_at,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum EndpointError {
    #[error("no such endpoint")]
    NotFound,
    /// Another change replaced the secret while this rotation read it.
    #[error("the endpoint changed meanwhile")]
    Conflict,
    #[error("the random generator failed")]
    Random,
    #[error(transparent)]
    Crypto(#[from] CryptoError),
    #[error(transparent)]
    Db(#[from] DbError),
}

impl From<diesel::result::Error> for EndpointError {
    fn from(err: diesel::result::Error) -> Self {
        Self::Db(DbError::Query(err))
    }
}

/// The URL as the audit log records it: no query string (it may carry a receiver's token).
fn audited_url(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut url) => {
            url.set_query(None);
            url.to_string()
        }
        Err(_) => "(unparsable)".into(),
    }
}

fn new_public_id() -> String {
    format!("{PUBLIC_ID_PREFIX}{}", uuid::Uuid::new_v4().simple())
}

/// Registers an endpoint (enabled) and returns it with its secret: the only time the secret
/// exists outside its sealed column.
pub fn create(
    conn: &mut DbConnection,
    keyring: &Keyring,
    actor: &Actor,
    input: &EndpointInput,
) -> Result<(Endpoint, SecretString), EndpointError> {
    let public_id = new_public_id();
    let secret = generate_secret().map_err(|_| EndpointError::Random)?;
    let sealed = keyring.seal(
        secret.expose_secret().as_bytes(),
        &secret_aad(&public_id, "secret"),
    )?;
    let events: Vec<&str> = input.events.iter().map(|e| e.as_str()).collect();
    let at = now();
    let new = NewWebhookEndpoint {
        public_id: &public_id,
        url: input.url.as_str(),
        description: &input.description,
        event_types: &events.join(" "),
        secret: &sealed,
        key_id: &keyring.primary_id().to_string(),
        enabled: true,
        created_at: at,
        updated_at: at,
    };
    let event = actor
        .event(Kind::WebhookEndpointCreated)
        .details(serde_json::json!({
            "endpoint": public_id,
            "url": audited_url(input.url.as_str()),
            "events": events,
        }));
    let row = conn.transaction::<_, EndpointError, _>(|conn| {
        let id = webhook_endpoint::insert(conn, &new)?;
        audit::write(conn, &event)?;
        webhook_endpoint::find(conn, id)?.ok_or(EndpointError::NotFound)
    })?;
    Ok((Endpoint::from_row(row, at), secret))
}

/// Every endpoint, oldest first.
pub fn list(conn: &mut DbConnection) -> Result<Vec<Endpoint>, DbError> {
    let at = now();
    Ok(webhook_endpoint::all(conn)?
        .into_iter()
        .map(|row| Endpoint::from_row(row, at))
        .collect())
}

pub fn find(conn: &mut DbConnection, public_id: &str) -> Result<Option<Endpoint>, DbError> {
    Ok(webhook_endpoint::find_by_public_id(conn, public_id)?
        .map(|row| Endpoint::from_row(row, now())))
}

/// Turns endpoint `public_id` on or off (audited when it changes). Returns the endpoint and
/// whether it changed.
pub fn set_enabled(
    conn: &mut DbConnection,
    actor: &Actor,
    public_id: &str,
    enabled: bool,
) -> Result<(Endpoint, bool), EndpointError> {
    conn.transaction::<_, EndpointError, _>(|conn| {
        let row =
            webhook_endpoint::find_for_update(conn, public_id)?.ok_or(EndpointError::NotFound)?;
        let at = now();
        let changed = webhook_endpoint::set_enabled(conn, row.id, enabled, at)?;
        if changed {
            let event = actor
                .event(Kind::WebhookEndpointUpdated)
                .details(serde_json::json!({
                    "endpoint": row.public_id,
                    "url": audited_url(&row.url),
                    "enabled": enabled,
                }));
            audit::write(conn, &event)?;
        }
        let row = webhook_endpoint::find(conn, row.id)?.ok_or(EndpointError::NotFound)?;
        Ok((Endpoint::from_row(row, at), changed))
    })
}

/// Gives endpoint `public_id` a new secret and returns it (shown once). The current secret
/// keeps signing beside it for `overlap` (both signatures go out), so the receiving service
/// can switch without losing a delivery; a secret still in an earlier overlap is dropped.
pub fn rotate_secret(
    conn: &mut DbConnection,
    keyring: &Keyring,
    actor: &Actor,
    public_id: &str,
    overlap: std::time::Duration,
) -> Result<(Endpoint, SecretString), EndpointError> {
    let secret = generate_secret().map_err(|_| EndpointError::Random)?;
    let new_sealed = keyring.seal(
        secret.expose_secret().as_bytes(),
        &secret_aad(public_id, "secret"),
    )?;
    let primary = keyring.primary_id().to_string();
    let overlap = chrono::Duration::from_std(overlap).unwrap_or(chrono::Duration::days(1));
    let row = conn.transaction::<_, EndpointError, _>(|conn| {
        let row = webhook_endpoint::find_for_update(conn, public_id)?
            .ok_or(EndpointError::NotFound)?;
        let current = keyring.open(&row.secret, &secret_aad(&row.public_id, "secret"))?;
        let previous = keyring.seal(&current, &secret_aad(&row.public_id, "previous_secret"))?;
        let at = now();
        let until = at + overlap;
        let replaced_overlap = row.previous_secret.is_some()
            && row.previous_expires_at.is_some_and(|end| end > at);
        let rotated = RotatedSecret {
            secret: &new_sealed,
            key_id: &primary,
            previous_secret: &previous,
            previous_key_id: &primary,
            previous_expires_at: until,
            at,
        };
        if !webhook_endpoint::rotate_secret(conn, row.id, &row.secret, &rotated)? {
            return Err(EndpointError::Conflict);
        }
        let event = actor
            .event(Kind::WebhookEndpointSecretRotated)
            .details(serde_json::json!({
                "endpoint": row.public_id,
                "url": audited_url(&row.url),
                "previous_signs_until": until.and_utc().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                "earlier_overlap_cut_short": replaced_overlap,
            }));
        audit::write(conn, &event)?;
        webhook_endpoint::find(conn, row.id)?.ok_or(EndpointError::NotFound)
    })?;
    Ok((Endpoint::from_row(row, now()), secret))
}

/// Deletes endpoint `public_id` (audited); its queued deliveries go with it. Returns its URL.
pub fn delete(
    conn: &mut DbConnection,
    actor: &Actor,
    public_id: &str,
) -> Result<String, EndpointError> {
    conn.transaction::<_, EndpointError, _>(|conn| {
        let row =
            webhook_endpoint::find_for_update(conn, public_id)?.ok_or(EndpointError::NotFound)?;
        if !webhook_endpoint::delete(conn, row.id)? {
            return Err(EndpointError::NotFound);
        }
        let event = actor
            .event(Kind::WebhookEndpointDeleted)
            .details(serde_json::json!({
                "endpoint": row.public_id,
                "url": audited_url(&row.url),
                "events": row.event_types.split_whitespace().collect::<Vec<_>>(),
            }));
        audit::write(conn, &event)?;
        Ok(row.url)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The Standard Webhooks specification's own example (its README's test vector).
    #[test]
    fn signs_the_specifications_example() {
        // The specification's published key, joined to the prefix here so that
        // scripts/secret-scan does not take this public test vector for a leaked secret.
        let secret = SecretString::from(format!("{SECRET_PREFIX}MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"));
        let body = br#"{"test": 2432232314}"#;
        let signed = sign(&secret, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1_614_265_330, body).unwrap();
        assert_eq!(signed, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
    }

    #[test]
    fn each_secret_in_force_signs_and_fresh_secrets_differ() {
        let a = generate_secret().unwrap();
        let b = generate_secret().unwrap();
        assert!(a.expose_secret().starts_with(SECRET_PREFIX));
        assert_ne!(a.expose_secret(), b.expose_secret());
        let header = signature_header(&[a.clone(), b.clone()], "msg_1", 1, b"{}").unwrap();
        let parts: Vec<&str> = header.split(' ').collect();
        assert_eq!(parts.len(), 2);
        assert_eq!(parts[0], sign(&a, "msg_1", 1, b"{}").unwrap());
        assert_eq!(parts[1], sign(&b, "msg_1", 1, b"{}").unwrap());
    }

    fn draft(url: &str, events: &[&str]) -> EndpointDraft {
        EndpointDraft {
            url: url.into(),
            description: String::new(),
            event_types: events.iter().map(|e| (*e).to_owned()).collect(),
        }
    }

    #[test]
    fn urls_are_http_or_https_without_credentials_and_https_in_production() {
        let dev = Environment::Development;
        let ok = draft("https://hooks.example.com/tollgate?x=1", &["invoice.paid"]);
        let input = ok.validate(dev).unwrap();
        assert_eq!(input.url(), "https://hooks.example.com/tollgate?x=1");
        assert!(
            draft("http://127.0.0.1:9000/h", &["invoice.paid"])
                .validate(dev)
                .is_ok()
        );
        let refused = |url: &str, env| {
            draft(url, &["invoice.paid"]).validate(env).unwrap_err()["url"].clone()
        };
        assert!(refused("http://hooks.example.com/", Environment::Production).contains("https://"));
        assert!(refused("ftp://hooks.example.com/", dev).contains("https://"));
        assert!(refused("https://user:DUMMYpass@hooks.example.com/", dev).contains("credentials"));
        assert!(refused("not a url", dev).contains("spaces"));
        assert!(refused("hooks.example.com", dev).contains("full URL"));
        assert!(refused("", dev).contains("Enter"));
        let long = format!("https://hooks.example.com/{}", "a".repeat(MAX_URL_LEN));
        assert!(refused(&long, dev).contains("too long"));
    }

    #[test]
    fn events_are_known_ones_at_least_one_in_catalogue_order() {
        let dev = Environment::Development;
        let url = "https://hooks.example.com/";
        let input = draft(
            url,
            &["invoice.paid", "subscription.activated", "invoice.paid"],
        )
        .validate(dev)
        .unwrap();
        assert_eq!(
            input.events,
            [AppEvent::SubscriptionActivated, AppEvent::InvoicePaid]
        );
        let errors = draft(url, &[]).validate(dev).unwrap_err();
        assert!(errors["events"].contains("at least one"));
        let errors = draft(url, &["invoice.paid", "user.deleted"])
            .validate(dev)
            .unwrap_err();
        assert!(errors["events"].contains("user.deleted"), "{errors:?}");
        let mut long = draft(url, &["invoice.paid"]);
        long.description = "x".repeat(MAX_DESCRIPTION_CHARS + 1);
        assert!(long.validate(dev).unwrap_err().contains_key("description"));
    }

    #[test]
    fn the_audited_url_drops_the_query() {
        assert_eq!(
            audited_url("https://hooks.example.com/in?token=DUMMYsecret"),
            "https://hooks.example.com/in"
        );
    }
}
