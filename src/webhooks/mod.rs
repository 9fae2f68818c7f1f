//! Stripe webhooks: verification, durable exactly-once storage, and the handlers that apply
//! each event to Tollgate's state.
//!
//! An event is stored (unique by Stripe's id, payload sealed) and applied in the same
//! transaction, committed before the 200 is sent: a duplicate delivery, on this or another
//! instance, finds the stored event and changes nothing; a crash before the commit leaves
//! nothing, and Stripe retries. Concurrent deliveries share transactions ([`writer`]: group
//! commit). Handlers never call Stripe: everything they need is in the event.

pub mod handlers;
pub mod intake;
pub mod mask;
pub mod verify;
pub mod writer;

use chrono::{DateTime, NaiveDateTime};
use diesel::Connection as _;
use serde::Deserialize;

use crate::audit::{self, Actor, Kind, SecurityEvent};
use crate::billing::customers::KnownCustomers;
use crate::config::AlertSettings;
use crate::crypto::rotation::SealedColumn;
use crate::crypto::{Aad, Keyring, TokenHasher};
use crate::db::models::webhook_event::{self, NewWebhookEvent, WebhookEventStatus};
use crate::db::{DbConnection, DbError, now};
use crate::reconcile::refetch::Ties;

/// The fields of an event Tollgate reads; everything else stays in the sealed payload.
#[derive(Debug, Deserialize)]
pub struct StripeEvent {
    pub id: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub created: i64,
    pub livemode: bool,
    pub data: EventData,
}

#[derive(Debug, Deserialize)]
pub struct EventData {
    pub object: EventObject,
    /// What an `*.updated` or `*.detached` event's object held before (e.g. the customer a
    /// payment method was detached from).
    #[serde(default)]
    pub previous_attributes: Option<serde_json::Map<String, serde_json::Value>>,
}

/// The top-level fields of an event's object that a handler reads. Parsing builds only these:
/// a Stripe object has dozens of fields (an invoice about seventy), and building each into a
/// `serde_json::Value` was a third of an ingest worker's time. A handler that reads a field
/// not named here fails a debug assertion ([`Fields::field`]), so the suite catches a new read
/// on every branch it runs (a release build would read the field as absent).
pub const READ_FIELDS: [&str; 30] = [
    "amount",
    "amount_due",
    "amount_paid",
    "amount_remaining",
    "cancel_at_period_end",
    "card",
    "client_reference_id",
    "coupon",
    "created",
    "currency",
    "customer",
    "end",
    "hosted_invoice_url",
    "id",
    "invoice_pdf",
    "items",
    "lines",
    "next_payment_attempt",
    "number",
    "parent",
    "payment_intent",
    "period_end",
    "period_start",
    "promotion_code",
    "reason",
    "source",
    "start",
    "status",
    "subscription",
    "trial_end",
];

/// An event's `data.object`: a JSON object, of which only the [`READ_FIELDS`] are kept, each
/// as its JSON text, built into a `serde_json::Value` the first time a handler reads it (an
/// `invoice.paid` of a customer Tollgate does not know reads one field, not its `lines`). The
/// rest is skipped. Kept and skipped fields alike are checked as serde_json checks what it
/// skips: well-formed JSON text (in a body that is UTF-8), but not its nesting depth, the range
/// of its numbers or the pairing of its `\u` surrogates. A kept field that cannot be built
/// (deeper than 128, a number beyond `f64`, a lone surrogate) reads as absent, as a field of an
/// unexpected type does. Such a field, in a body signed with the endpoint's secret, is stored
/// as sent; the console then shows that payload as unreadable. The sealed payload keeps the
/// event as it came.
#[derive(Debug, Default)]
pub struct EventObject(Vec<KeptField>);

/// One of an [`EventObject`]'s [`READ_FIELDS`]: its text, and its value once read.
#[derive(Debug)]
struct KeptField {
    name: &'static str,
    text: Box<serde_json::value::RawValue>,
    value: std::sync::OnceLock<Option<serde_json::Value>>,
}

impl EventObject {
    /// The names of the fields kept, in the object's order.
    pub fn kept(&self) -> impl Iterator<Item = &'static str> + '_ {
        self.0.iter().map(|kept| kept.name)
    }
}

/// An object's top-level fields by name: an event's [`EventObject`], or an object read whole
/// (from Stripe's API, or nested in an event).
pub trait Fields {
    fn field(&self, key: &'static str) -> Option<&serde_json::Value>;
}

impl Fields for serde_json::Map<String, serde_json::Value> {
    fn field(&self, key: &'static str) -> Option<&serde_json::Value> {
        self.get(key)
    }
}

impl Fields for EventObject {
    fn field(&self, key: &'static str) -> Option<&serde_json::Value> {
        debug_assert!(
            READ_FIELDS.contains(&key),
            "`{key}` is not parsed from events: add it to webhooks::READ_FIELDS"
        );
        let kept = self.0.iter().find(|kept| kept.name == key)?;
        kept.value
            .get_or_init(|| serde_json::from_str(kept.text.get()).ok())
            .as_ref()
    }
}

impl<'de> Deserialize<'de> for EventObject {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        /// A key, as the entry of [`READ_FIELDS`] it names (compared where it lies in the
        /// input: no key is copied unless it is kept).
        struct Key(Option<&'static str>);
        impl<'de> Deserialize<'de> for Key {
            fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                struct KeyVisitor;
                impl serde::de::Visitor<'_> for KeyVisitor {
                    type Value = Key;
                    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                        f.write_str("a field name")
                    }
                    fn visit_str<E>(self, key: &str) -> Result<Key, E> {
                        Ok(Key(READ_FIELDS.iter().find(|read| **read == key).copied()))
                    }
                }
                deserializer.deserialize_str(KeyVisitor)
            }
        }
        struct ObjectVisitor;
        impl<'de> serde::de::Visitor<'de> for ObjectVisitor {
            type Value = EventObject;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut entries: A,
            ) -> Result<EventObject, A::Error> {
                let mut kept: Vec<KeptField> = Vec::new();
                while let Some(Key(key)) = entries.next_key()? {
                    match key {
                        Some(name) => {
                            let field = KeptField {
                                name,
                                text: entries.next_value()?,
                                value: std::sync::OnceLock::new(),
                            };
                            // The last of a repeated key wins, as when a whole object is built.
                            match kept.iter_mut().find(|kept| kept.name == name) {
                                Some(earlier) => *earlier = field,
                                None => kept.push(field),
                            }
                        }
                        None => {
                            entries.next_value::<serde::de::IgnoredAny>()?;
                        }
                    }
                }
                Ok(EventObject(kept))
            }
        }
        deserializer.deserialize_map(ObjectVisitor)
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PayloadError {
    #[error("not a Stripe event object")]
    Shape,
    #[error("the event id is not an evt_ id")]
    Id,
    #[error("livemode does not match the configured key's mode")]
    Mode,
}

impl StripeEvent {
    /// Parses and checks a verified body: a JSON object (UTF-8) with an `evt_` id, a type, a
    /// creation time, `livemode` matching the key's mode, and `data.object`, an object of
    /// which the [`READ_FIELDS`] are kept ([`EventObject`]).
    pub fn parse(body: &[u8], live: bool) -> Result<Self, PayloadError> {
        // UTF-8 throughout, the fields skipped unread too.
        let body = std::str::from_utf8(body).map_err(|_| PayloadError::Shape)?;
        let event: Self = serde_json::from_str(body).map_err(|_| PayloadError::Shape)?;
        let id_ok = event.id.strip_prefix("evt_").is_some_and(|rest| {
            !rest.is_empty()
                && rest.len() <= 255
                && rest.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        });
        if !id_ok {
            return Err(PayloadError::Id);
        }
        if event.kind.is_empty() || event.kind.len() > 100 || event.created <= 0 {
            return Err(PayloadError::Shape);
        }
        if event.livemode != live {
            return Err(PayloadError::Mode);
        }
        Ok(event)
    }

    pub fn created_at(&self) -> NaiveDateTime {
        DateTime::from_timestamp(self.created, 0)
            .map(|t| t.naive_utc())
            .unwrap_or_else(now)
    }
}

/// What applying an event needs besides the database.
#[derive(Clone, Copy)]
pub struct Context<'a> {
    pub keyring: &'a Keyring,
    pub hasher: &'a TokenHasher,
    pub alerts: &'a AlertSettings,
    /// Failures a test injects (nothing in production).
    pub faults: &'a crate::config::FaultInjection,
    /// The default past-due grace (`PAST_DUE_GRACE_DAYS`), for plans without their own.
    pub past_due_grace_days: u32,
    /// Marked when an event meets a same-second tie (an object to read again from Stripe).
    pub ties: &'a Ties,
    /// The users of the customers the events name, as their transaction saw them: set by
    /// [`store_and_apply`] for its batch, looked up at once. `None`: each customer is looked up
    /// on its own (reprocessing a stored event).
    pub customers: Option<&'a KnownCustomers>,
}

impl<'a> Context<'a> {
    /// The settings `config` gives, with the keys and peppers made from it (`keyring`,
    /// `hasher`) and the ties to mark; no customers known yet.
    pub fn new(
        config: &'a crate::config::Config,
        keyring: &'a Keyring,
        hasher: &'a TokenHasher,
        ties: &'a Ties,
    ) -> Self {
        Self {
            keyring,
            hasher,
            alerts: &config.alerts,
            faults: &config.faults,
            past_due_grace_days: config.stripe.past_due_grace_days,
            ties,
            customers: None,
        }
    }
}

pub fn payload_aad(event_id: &str) -> Aad {
    Aad::new("webhook_events", "payload_sealed", event_id)
}

/// `webhook_events.payload_sealed` as `rotate-key` re-seals it.
pub const SEALED_PAYLOADS: SealedColumn<webhook_event::WebhookEventRow> = SealedColumn {
    name: "webhook_events.payload_sealed",
    not_under_key: webhook_event::not_under_key,
    id: |row| row.id,
    sealed: |row| &row.payload_sealed,
    aad: |row| Ok(payload_aad(&row.stripe_event_id)),
    replace: webhook_event::replace_sealed,
    count_by_key_id: webhook_event::count_by_key_id,
};

/// What ingesting one delivery did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ingested {
    /// First delivery: stored and processed with this status.
    Stored(WebhookEventStatus),
    /// Already stored: nothing changed.
    Duplicate,
}

#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    #[error(transparent)]
    Db(#[from] DbError),
    #[error(transparent)]
    Crypto(#[from] crate::crypto::CryptoError),
    #[error("the stored payload is not a valid event: {0}")]
    Payload(#[from] PayloadError),
    /// An event of the batch was stored by a concurrent transaction after the batch looked:
    /// the batch must roll back (it applied that event too) and look again.
    #[error("another delivery of an event in the batch was stored meanwhile")]
    Raced,
}

impl From<diesel::result::Error> for IngestError {
    fn from(err: diesel::result::Error) -> Self {
        Self::Db(err.into())
    }
}

/// One verified delivery to store.
#[derive(Clone, Copy)]
pub struct Delivery<'a> {
    pub event: &'a StripeEvent,
    pub raw: &'a [u8],
    pub ip: &'a str,
    /// SHA-256 of its `Stripe-Signature` header ([`intake::signature_digest`]).
    pub signature_digest: &'a str,
    /// The delivering request's id (`X-Request-Id`).
    pub request_id: Option<&'a str>,
}

/// Stores and applies one verified event, in a transaction of its own.
pub fn ingest(
    conn: &mut DbConnection,
    cx: Context<'_>,
    delivery: Delivery<'_>,
) -> Result<Ingested, IngestError> {
    let once = |conn: &mut DbConnection| {
        crate::db::writer_transaction(conn, |conn| store_and_apply(conn, cx, &[delivery]))
    };
    // Another delivery of the event committed between this one's look and its insert: looked
    // at again, it is a duplicate.
    let mut outcomes = match once(conn) {
        Err(IngestError::Raced) => once(conn)?,
        outcomes => outcomes?,
    };
    Ok(outcomes.pop().unwrap_or(Ingested::Duplicate))
}

/// Stores and applies verified deliveries inside the caller's transaction (one that takes the
/// write lock at once: [`crate::db::writer_transaction`]): for each new event, its handler's
/// effects, its row (payload sealed, with its outcome) and its `webhook_validated` audit row
/// commit together, or not at all. Events already stored — earlier, by another instance, or
/// earlier in `deliveries` — change nothing. Returns one outcome per delivery, in order.
///
/// The events' rows are written once, after their handlers ran, with their outcome: one
/// write per event, not an insert and then an update. The batch first claims its ids
/// ([`webhook_event::claim`]: a delivery of one of them elsewhere waits for this transaction,
/// then finds it stored), then looks up which are stored. A writer that stores events without
/// claiming them (an older instance, during a rolling upgrade) is still caught: the unique
/// insert finds the event it stored meanwhile (after waiting for it to commit), and
/// [`IngestError::Raced`] rolls this batch back, whose effects applied it a second time.
/// Looked at again, that event is a duplicate.
pub fn store_and_apply(
    conn: &mut DbConnection,
    cx: Context<'_>,
    deliveries: &[Delivery<'_>],
) -> Result<Vec<Ingested>, IngestError> {
    let ids: Vec<&str> = deliveries.iter().map(|d| d.event.id.as_str()).collect();
    cx.faults.webhook_batch(&ids);
    webhook_event::claim(conn, &ids)?;
    let stored = webhook_event::stored_among(conn, &ids)?;
    // The new events' customers, in one statement: a round trip per event otherwise.
    let customers = KnownCustomers::look_up(
        conn,
        cx.hasher,
        deliveries
            .iter()
            .filter(|d| !stored.contains(&d.event.id))
            .filter_map(|d| handlers::customer_to_look_up(d.event)),
    )?;
    let cx = Context {
        customers: Some(&customers),
        ..cx
    };
    let received_at = now();
    let key_id = cx.keyring.primary_id().to_string();
    let mut seen = std::collections::HashSet::new();
    let mut outcomes = vec![Ingested::Duplicate; deliveries.len()];
    let mut new = Vec::with_capacity(deliveries.len());
    let mut audits = Vec::with_capacity(deliveries.len());
    for (index, delivery) in deliveries.iter().enumerate() {
        let Delivery {
            event,
            ip,
            request_id,
            ..
        } = *delivery;
        if stored.contains(&event.id) || !seen.insert(event.id.as_str()) {
            continue;
        }
        let sealed = cx.keyring.seal(delivery.raw, &payload_aad(&event.id))?;
        let (status, error) = match handlers::fixed_status(&event.kind) {
            // Nothing to do beyond storing it.
            Some(status) => (status, None),
            None => handlers::apply(conn, cx, event)?.recorded(),
        };
        let mut validated = SecurityEvent::new(Kind::WebhookValidated)
            .actor("stripe")
            .ip(ip)
            .details(
                serde_json::json!({ "event": event.id, "type": event.kind, "status": status }),
            );
        validated.request_id = request_id.map(str::to_owned);
        audits.push(validated);
        outcomes[index] = Ingested::Stored(status);
        new.push((index, sealed, status, error));
    }
    let processed_at = now();
    let rows: Vec<NewWebhookEvent<'_>> = new
        .iter()
        .map(|(index, sealed, status, error)| {
            let Delivery {
                event,
                signature_digest,
                ..
            } = deliveries[*index];
            NewWebhookEvent {
                stripe_event_id: &event.id,
                event_type: &event.kind,
                livemode: event.livemode,
                stripe_created: event.created_at(),
                payload_sealed: sealed,
                key_id: &key_id,
                status: *status,
                attempts: 1,
                last_error: error.as_deref(),
                received_at,
                processed_at: Some(processed_at),
                // Empty for an event replayed from Stripe's API (it came with no signature).
                signature_digest: Some(signature_digest).filter(|digest| !digest.is_empty()),
            }
        })
        .collect();
    if webhook_event::insert_new(conn, &rows)? != rows.len() {
        return Err(IngestError::Raced);
    }
    audit::write_many_in_transaction(conn, &audits)?;
    Ok(outcomes)
}

/// A delivery of the already stored event `event_id` with the signature digest `digest`: when
/// it differs from the first delivery's, someone re-sent the event under another signature,
/// which is recorded (`webhook_replay`, repeats counted on one row) and checked against the
/// replay alert. The delivery is still answered as a duplicate. Returns whether it was a
/// replay. (Stripe signs each attempt anew, but only retries deliveries that were not
/// acknowledged; a stored event was.)
pub fn check_redelivery(
    conn: &mut DbConnection,
    alerts: &AlertSettings,
    stripe: &Actor,
    event_id: &str,
    digest: &str,
    aggregate_window: std::time::Duration,
) -> Result<bool, DbError> {
    let Some(Some(first)) = webhook_event::signature_digest(conn, event_id)? else {
        return Ok(false);
    };
    if first == digest {
        return Ok(false);
    }
    audit::write(
        conn,
        &stripe
            .event(Kind::WebhookReplay)
            .details(serde_json::json!({
                "reason": "resent_with_other_signature",
                "event": event_id,
            }))
            .aggregate(aggregate_window, "resent_with_other_signature"),
    )?;
    audit::alerts::check(conn, alerts, audit::alerts::AlertRule::WebhookReplays)?;
    Ok(true)
}

/// Applies a stored event and records the outcome: `applied`, `ignored`, or `failed` (kept for
/// reprocessing, with the reason). Database errors propagate (and roll back).
pub fn apply_stored(
    conn: &mut DbConnection,
    cx: Context<'_>,
    event: &StripeEvent,
) -> Result<WebhookEventStatus, IngestError> {
    let (status, error) = handlers::apply(conn, cx, event)?.recorded();
    webhook_event::finish(conn, &event.id, status, error.as_deref())?;
    Ok(status)
}

/// What a reprocess request did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reprocessed {
    /// Re-applied, with this outcome.
    Done(WebhookEventStatus),
    /// The event is not (or no longer) failed: nothing was done.
    NotFailed(WebhookEventStatus),
    NotFound,
}

/// Opens a stored event's payload (it is bound to its event id: a copied one fails).
pub fn open_payload(
    keyring: &Keyring,
    row: &webhook_event::WebhookEventRow,
) -> Result<Vec<u8>, crate::crypto::CryptoError> {
    keyring
        .open(&row.payload_sealed, &payload_aad(&row.stripe_event_id))
        .map(|plain| plain.to_vec())
}

/// Re-applies a failed event for `actor`, once: concurrent requests (on any instance) cannot
/// both win the claim, and the claim, the effects and the audit commit together or not at all.
pub fn reprocess(
    conn: &mut DbConnection,
    cx: Context<'_>,
    actor: &Actor,
    id: i64,
) -> Result<Reprocessed, IngestError> {
    conn.transaction(|conn| {
        // Write first: on SQLite this takes the write lock at once (no read-to-write upgrade).
        let claimed = webhook_event::claim_failed(conn, id)?;
        let Some(row) = webhook_event::find_by_id(conn, id)? else {
            return Ok(Reprocessed::NotFound);
        };
        if !claimed {
            return Ok(Reprocessed::NotFailed(row.status));
        }
        let raw = open_payload(cx.keyring, &row)?;
        let event = StripeEvent::parse(&raw, row.livemode)?;
        let status = apply_stored(conn, cx, &event)?;
        audit::write(
            conn,
            &actor.event(Kind::WebhookReprocessed).details(
                serde_json::json!({ "event": event.id, "type": event.kind, "status": status }),
            ),
        )?;
        Ok(Reprocessed::Done(status))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const FIXTURES: [&str; 4] = [
        include_str!("../../tests/fixtures/webhooks/invoice.paid.json"),
        include_str!("../../tests/fixtures/webhooks/customer.subscription.updated.json"),
        include_str!("../../tests/fixtures/webhooks/checkout.session.completed.json"),
        include_str!("../../tests/fixtures/webhooks/charge.dispute.created.json"),
    ];

    #[test]
    fn an_event_object_keeps_the_read_fields_each_whole_and_skips_the_rest() {
        for fixture in FIXTURES {
            let whole: serde_json::Value = serde_json::from_str(fixture).unwrap();
            let whole = whole["data"]["object"].as_object().unwrap();
            let event = StripeEvent::parse(fixture.as_bytes(), false).unwrap();
            let object = &event.data.object;
            let mut expected: Vec<&str> = whole
                .keys()
                .filter_map(|key| READ_FIELDS.iter().find(|read| **read == key).copied())
                .collect();
            let mut kept: Vec<&str> = object.kept().collect();
            expected.sort();
            kept.sort();
            assert_eq!(kept, expected);
            assert!(kept.len() < whole.len(), "fields were skipped");
            for name in READ_FIELDS {
                assert_eq!(object.field(name), whole.get(name), "{name}");
            }
        }
    }

    #[test]
    fn a_kept_field_is_built_when_it_is_first_read_and_only_then() {
        let event = StripeEvent::parse(FIXTURES[0].as_bytes(), false).unwrap();
        let built = |object: &EventObject| -> Vec<&str> {
            object
                .0
                .iter()
                .filter(|kept| kept.value.get().is_some())
                .map(|kept| kept.name)
                .collect()
        };
        let object = &event.data.object;
        assert!(object.kept().any(|name| name == "lines"));
        assert_eq!(
            built(object),
            Vec::<&str>::new(),
            "nothing built by parsing"
        );
        assert!(
            object
                .field("customer")
                .is_some_and(serde_json::Value::is_string)
        );
        assert_eq!(built(object), ["customer"]);
        let lines = object.field("lines").unwrap() as *const serde_json::Value;
        assert_eq!(
            object.field("lines").unwrap() as *const _,
            lines,
            "built once"
        );
    }

    #[test]
    fn a_kept_field_that_cannot_be_built_reads_as_absent() {
        let deep = format!("{}{}", "[".repeat(200), "]".repeat(200));
        let body = format!(
            r#"{{"id":"evt_1","type":"invoice.paid","created":1,"livemode":false,"data":{{"object":{{"customer":{deep},"amount_due":1e400,"number":"\ud800","id":"in_1"}}}}}}"#
        );
        let event = StripeEvent::parse(body.as_bytes(), false).expect("well-formed JSON");
        let object = &event.data.object;
        assert_eq!(object.field("customer"), None);
        assert_eq!(object.field("amount_due"), None);
        assert_eq!(object.field("number"), None, "a lone surrogate");
        assert_eq!(object.field("id"), Some(&serde_json::json!("in_1")));
    }

    #[test]
    fn a_skipped_field_must_still_be_json_and_utf_8() {
        let event = |object: &[u8]| {
            let mut body = br#"{"id":"evt_1","type":"invoice.paid","created":1,"livemode":false,"data":{"object":"#.to_vec();
            body.extend_from_slice(object);
            body.extend_from_slice(b"}}");
            StripeEvent::parse(&body, false).map(|e| e.data.object)
        };
        assert!(event(br#"{"customer":"cus_1","footer":"thanks"}"#).is_ok());
        // A key is matched as it reads once unescaped, and the last of a repeated key wins, as
        // when the whole object was built.
        let kept = event(br#"{"cust\u006fmer":"cus_1","customer":"cus_2","footer":1}"#).unwrap();
        assert_eq!(kept.field("customer"), Some(&serde_json::json!("cus_2")));
        assert_eq!(kept.kept().collect::<Vec<_>>(), ["customer"]);
        for broken in [
            &br#"{"customer":"cus_1","footer":tru}"#[..],
            br#"{"customer":"cus_1","footer":[1,}"#,
            b"{\"customer\":\"cus_1\",\"footer\":\"\xff\xfe\"}",
            br#"["not", "an", "object"]"#,
            br#""cus_1""#,
        ] {
            assert!(
                matches!(event(broken), Err(PayloadError::Shape)),
                "{broken:?}"
            );
        }
    }

    #[test]
    #[cfg(debug_assertions)]
    #[should_panic(expected = "add it to webhooks::READ_FIELDS")]
    fn reading_a_field_that_is_not_parsed_fails_in_tests() {
        let event =
            StripeEvent::parse(FIXTURES[0].as_bytes(), false).expect("the fixture is an event");
        let _ = event.data.object.field("customer_email");
    }
}
