//! `tollgate bench seed --users N --events N --audit N`: fills an empty database with a
//! realistic volume of made-up data, so the admin pages, `/account`, the internal API, webhook
//! ingest and `rotate-key` can be measured against it (`benches/scale.rs`).
//!
//! What it writes, in transactions of [`BATCH`] rows:
//! - one active plan, `seed-pro`;
//! - N customer accounts (`seed-0000001@example.com`…, created over the last two years), none
//!   of which can sign in (they share the argon2 hash of a random password nobody knows), each
//!   with a Stripe customer sealed and indexed exactly as Checkout stores it and one
//!   subscription (mostly active; some trialing, past due or canceled);
//! - N webhook events (sealed payloads bound to their event id, as ingest stores them, spread
//!   over the last 90 days);
//! - N audit rows (sign-ins, failures, leases, …) appended to the tamper-evident chain
//!   (`tollgate audit verify` passes afterwards), spread over the last 90 days.
//!
//! It is for a scratch database, never a live one: it refuses a database that has accounts,
//! plans or subscriptions (checked in the transaction that writes its plan, so nothing slips in
//! between), and `tollgate bench seed` refuses a live Stripe key outright.

use std::time::{Duration, Instant};

use chrono::NaiveDateTime;
use diesel::prelude::*;
use secrecy::SecretString;

use super::CommandError;
use crate::accounts::password::NewPassword;
use crate::audit::{self, Kind, SecurityEvent};
use crate::billing::customers;
use crate::crypto::{CryptoError, Keyring, TokenHasher};
use crate::db::models::billing_customer::{self, BillingCustomerRow};
use crate::db::models::subscription::{
    self, NewSubscription, SubscriptionState, SubscriptionStatus,
};
use crate::db::models::user::{self, NewUser, Role, UserId};
use crate::db::models::webhook_event::{self, NewWebhookEvent, WebhookEventStatus};
use crate::db::{self, Db, DbConnection, DbError};
use crate::stripe_id::CustomerId;

/// Rows per transaction.
pub const BATCH: u64 = 1_000;

/// How much to seed.
#[derive(Debug, Clone, Copy, Default)]
pub struct SeedCounts {
    pub users: u64,
    pub events: u64,
    pub audit: u64,
}

/// What one kind of row took.
#[derive(Debug, Clone, Copy)]
pub struct Stage {
    pub rows: u64,
    pub elapsed: Duration,
}

impl Stage {
    pub fn per_second(&self) -> f64 {
        self.rows as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

/// What `seed` wrote, and how long each part took.
#[derive(Debug, Clone, Copy)]
pub struct SeedReport {
    pub users: Stage,
    pub events: Stage,
    pub audit: Stage,
}

impl SeedReport {
    /// One line per kind of row: `accounts: 1000 in 0.1 s (10000/s)`.
    pub fn lines(&self) -> impl Iterator<Item = String> {
        [
            ("accounts", self.users),
            ("webhook events", self.events),
            ("audit rows", self.audit),
        ]
        .into_iter()
        .map(|(what, stage)| {
            format!(
                "{what}: {} in {:.1} s ({:.0}/s)",
                stage.rows,
                stage.elapsed.as_secs_f64(),
                stage.per_second()
            )
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SeedError {
    #[error(
        "the database already has {0}: `bench seed` fills a scratch database without accounts, \
         plans or subscriptions"
    )]
    NotEmpty(String),
    #[error(transparent)]
    Db(#[from] DbError),
    #[error("could not seal a value: {0}")]
    Crypto(#[from] CryptoError),
    #[error("could not hash the seed password")]
    Hash,
}

impl From<diesel::result::Error> for SeedError {
    fn from(err: diesel::result::Error) -> Self {
        Self::Db(DbError::Query(err))
    }
}

/// The plan every seeded subscription is on.
const PLAN_SLUG: &str = "seed-pro";
const PLAN_PRICE: &str = "price_SeedPro";
/// How far back seeded accounts, events and audit rows go.
const ACCOUNT_SPAN_DAYS: i64 = 730;
const ACTIVITY_SPAN_DAYS: i64 = 90;

/// The email of seeded account `n` (1-based): `seed-0000042@example.com`.
pub fn seed_email(n: u64) -> String {
    format!("seed-{n:07}@example.com")
}

/// Fills the database behind `db` with `counts`, reporting progress (`stage`, rows done, rows
/// in all) after every batch.
pub fn seed(
    db: &Db,
    keyring: &Keyring,
    hasher: &TokenHasher,
    counts: SeedCounts,
    mut progress: impl FnMut(&str, u64, u64),
) -> Result<SeedReport, SeedError> {
    let now = db::now();
    // One random password nobody knows: seeded accounts cannot sign in.
    let unknown = crate::secret::random_bytes::<24>().map_err(|_| SeedError::Hash)?;
    let password_hash = NewPassword::parse(SecretString::from(hex::encode(unknown)))
        .map_err(|_| SeedError::Hash)?
        .hash()
        .map_err(|_| SeedError::Hash)?;
    let plan_id = db.run_blocking(|conn| conn.transaction(seed_plan))?;

    let users = in_batches(counts.users, "accounts", &mut progress, |done, batch| {
        db.run_blocking(|conn| {
            conn.transaction(|conn| {
                seed_accounts(
                    conn,
                    keyring,
                    hasher,
                    &password_hash,
                    plan_id,
                    (done, batch, counts.users),
                    now,
                )
            })
        })
    })?;
    let events = in_batches(
        counts.events,
        "webhook events",
        &mut progress,
        |done, batch| {
            db.run_blocking(|conn| {
                seed_events(
                    conn,
                    keyring,
                    (done, batch, counts.events),
                    counts.users,
                    now,
                )
            })
        },
    )?;
    let audit = in_batches(counts.audit, "audit rows", &mut progress, |done, batch| {
        db.run_blocking(|conn| seed_audit(conn, (done, batch, counts.audit), counts.users, now))
    })?;
    Ok(SeedReport {
        users,
        events,
        audit,
    })
}

/// Runs `write(done, batch)` over `total` rows in batches of [`BATCH`], reporting progress
/// after each, and times the whole.
fn in_batches(
    total: u64,
    stage: &str,
    progress: &mut impl FnMut(&str, u64, u64),
    mut write: impl FnMut(u64, u64) -> Result<(), SeedError>,
) -> Result<Stage, SeedError> {
    let started = Instant::now();
    let mut done = 0;
    while done < total {
        let batch = BATCH.min(total - done);
        write(done, batch)?;
        done += batch;
        progress(stage, done, total);
    }
    Ok(Stage {
        rows: total,
        elapsed: started.elapsed(),
    })
}

/// The moment `index` of `total` falls on, spread evenly over the `days` before `now`
/// (oldest first).
fn spread(now: NaiveDateTime, days: i64, index: u64, total: u64) -> NaiveDateTime {
    let span = chrono::Duration::days(days).num_seconds();
    let remaining = total.saturating_sub(index) as i64;
    now - chrono::Duration::seconds(span * remaining / total.max(1) as i64)
}

/// The seed plan, in a database found without accounts, plans or subscriptions (in the
/// caller's transaction).
fn seed_plan(conn: &mut DbConnection) -> Result<i64, SeedError> {
    use crate::db::models::plan::{self, PlanFields, StripeIds};
    // The accounts from the table itself: a kept count that drifted (a data-only restore
    // without its triggers, say) must not let the seed into a live database.
    let (accounts, plans, subscriptions) = (
        user::any(conn)?,
        plan::count(conn)?,
        subscription::count(conn)?,
    );
    if accounts || plans + subscriptions > 0 {
        return Err(SeedError::NotEmpty(format!(
            "{} accounts, {plans} plan(s) and {subscriptions} subscription(s)",
            if accounts { "some" } else { "no" }
        )));
    }
    let row = plan::insert(
        conn,
        &PlanFields {
            slug: PLAN_SLUG,
            name: "Pro (seeded)",
            description: "The plan every seeded account is on.",
            amount: 2_900,
            currency: "usd",
            billing_interval: "month",
            trial_days: 0,
            features: "api",
            feature_lines: "Seeded for benchmarks",
            highlighted: false,
            yearly_amount: None,
        },
    )?;
    plan::set_stripe(
        conn,
        row.id,
        StripeIds {
            product: Some("prod_SeedPro"),
            price: Some(PLAN_PRICE),
            yearly_price: None,
        },
        true,
    )?;
    Ok(row.id)
}

/// Accounts `done + 1 ..= done + batch` of `total`, each with its customer and subscription.
fn seed_accounts(
    conn: &mut DbConnection,
    keyring: &Keyring,
    hasher: &TokenHasher,
    password_hash: &str,
    plan_id: i64,
    (done, batch, total): (u64, u64, u64),
    now: NaiveDateTime,
) -> Result<(), SeedError> {
    let emails: Vec<String> = (done + 1..=done + batch).map(seed_email).collect();
    let new: Vec<NewUser<'_>> = (done + 1..=done + batch)
        .zip(&emails)
        .map(|(n, email)| {
            let at = spread(now, ACCOUNT_SPAN_DAYS, n, total);
            NewUser {
                email,
                password_hash,
                role: Role::Customer,
                created_at: at,
                updated_at: at,
            }
        })
        .collect();
    let ids = user::insert_many(conn, &new)?;
    let mut customers_rows: Vec<BillingCustomerRow> = Vec::with_capacity(ids.len());
    let mut subscription_rows = Vec::with_capacity(ids.len());
    for (id, email) in ids {
        let n: u64 = email
            .strip_prefix("seed-")
            .and_then(|rest| rest.split('@').next())
            .and_then(|n| n.parse().ok())
            .unwrap_or_default();
        let user_id = UserId::from(id);
        let created = spread(now, ACCOUNT_SPAN_DAYS, n, total);
        let mut customer = customers::new_row(
            keyring,
            hasher,
            user_id,
            &CustomerId::new(format!("cus_Seed{n:010}")),
        )?;
        customer.created_at = created;
        customers_rows.push(customer);
        // Mostly active; one in 20 each trialing, past due and canceled.
        let status = match n % 20 {
            0 => &SubscriptionStatus::Canceled,
            1 => &SubscriptionStatus::PastDue,
            2 => &SubscriptionStatus::Trialing,
            _ => &SubscriptionStatus::Active,
        };
        subscription_rows.push(NewSubscription {
            user_id,
            stripe_subscription_id: format!("sub_Seed{n:010}"),
            state: SubscriptionState {
                plan_id: Some(plan_id),
                stripe_price_id: PLAN_PRICE,
                status,
                current_period_end: Some(now + chrono::Duration::days((n % 28) as i64 + 1)),
                cancel_at_period_end: n % 50 == 3,
                trial_end: (*status == SubscriptionStatus::Trialing)
                    .then(|| now + chrono::Duration::days(7)),
                stripe_updated_at: created,
            },
            created_at: created,
            updated_at: created,
        });
    }
    billing_customer::insert_many(conn, &customers_rows)?;
    subscription::insert_many(conn, &subscription_rows)?;
    Ok(())
}

/// The types seeded events take, in turn.
const EVENT_TYPES: [&str; 4] = [
    "invoice.paid",
    "customer.subscription.updated",
    "invoice.payment_succeeded",
    "checkout.session.completed",
];

/// Webhook events `done + 1 ..= done + batch` of `total`, about the seeded customers.
fn seed_events(
    conn: &mut DbConnection,
    keyring: &Keyring,
    (done, batch, total): (u64, u64, u64),
    customers: u64,
    now: NaiveDateTime,
) -> Result<(), SeedError> {
    struct Sealed {
        id: String,
        kind: &'static str,
        at: NaiveDateTime,
        payload: Vec<u8>,
        digest: String,
    }
    let key_id = keyring.primary_id().to_string();
    let sealed = (done + 1..=done + batch)
        .map(|n| {
            let id = format!("evt_Seed{n:012}");
            let kind = EVENT_TYPES[(n % EVENT_TYPES.len() as u64) as usize];
            let at = spread(now, ACTIVITY_SPAN_DAYS, n, total);
            let customer = n % customers.max(1) + 1;
            let payload = serde_json::json!({
                "id": id,
                "object": "event",
                "type": kind,
                "created": at.and_utc().timestamp(),
                "livemode": false,
                "data": {"object": {
                    "id": format!("in_Seed{n:012}"),
                    "object": "invoice",
                    "customer": format!("cus_Seed{customer:010}"),
                    "subscription": format!("sub_Seed{customer:010}"),
                    "amount_paid": 2_900,
                    "currency": "usd",
                    "status": "paid",
                }},
            })
            .to_string();
            Ok(Sealed {
                payload: keyring.seal(payload.as_bytes(), &crate::webhooks::payload_aad(&id))?,
                digest: crate::webhooks::intake::signature_digest(Some(&format!(
                    "t={},v1={id}",
                    at.and_utc().timestamp()
                ))),
                id,
                kind,
                at,
            })
        })
        .collect::<Result<Vec<_>, CryptoError>>()?;
    let rows: Vec<NewWebhookEvent<'_>> = sealed
        .iter()
        .map(|event| NewWebhookEvent {
            stripe_event_id: &event.id,
            event_type: event.kind,
            livemode: false,
            stripe_created: event.at,
            payload_sealed: &event.payload,
            key_id: &key_id,
            status: WebhookEventStatus::Applied,
            attempts: 1,
            last_error: None,
            received_at: event.at,
            processed_at: Some(event.at),
            signature_digest: Some(&event.digest),
        })
        .collect();
    conn.transaction(|conn| webhook_event::insert_all(conn, &rows))?;
    Ok(())
}

/// Audit rows `done + 1 ..= done + batch` of `total`, appended to the chain as one group at
/// one moment (a batch covers a few minutes of the 90 days).
fn seed_audit(
    conn: &mut DbConnection,
    (done, batch, total): (u64, u64, u64),
    customers: u64,
    now: NaiveDateTime,
) -> Result<(), SeedError> {
    let events: Vec<SecurityEvent> = (done + 1..=done + batch)
        .map(|n| {
            let customer = n % customers.max(1) + 1;
            let ip = format!("198.51.100.{}", n % 250 + 1);
            match n % 10 {
                0 => SecurityEvent::new(Kind::LoginFailed)
                    .ip(ip)
                    .details(serde_json::json!({"reason": "bad_password"})),
                1 => SecurityEvent::new(Kind::ByokLeased)
                    .actor("seed-service")
                    .details(serde_json::json!({"user_id": customer, "provider": "anthropic"})),
                2 => SecurityEvent::new(Kind::WebhookValidated)
                    .actor("stripe")
                    .details(serde_json::json!({"event": format!("evt_Seed{n:012}")})),
                3 => SecurityEvent::new(Kind::Logout).actor(format!("user:{customer}")),
                _ => SecurityEvent::new(Kind::LoginSucceeded)
                    .actor(format!("user:{customer}"))
                    .ip(ip),
            }
        })
        .collect();
    audit::import_at(
        conn,
        &events,
        spread(now, ACTIVITY_SPAN_DAYS, done + batch, total),
    )?;
    Ok(())
}

/// `tollgate bench seed`: seeds the database `DATABASE_URL` names (which must exist and be
/// empty), printing progress to stderr and a summary with the database's size per customer.
pub fn seed_command(env_file: &std::path::Path, counts: SeedCounts) -> Result<(), CommandError> {
    let (config, db) = super::connect(env_file)?;
    if config.stripe.live() {
        return Err(CommandError::Usage(
            "bench seed: STRIPE_SECRET_KEY is a live key: seeding is for scratch databases only"
                .into(),
        ));
    }
    let started = Instant::now();
    let mut last_report = Instant::now();
    let report = seed(
        &db,
        &config.keyring(),
        &config.token_hasher(),
        counts,
        |stage, done, total| {
            if done == total || last_report.elapsed() >= Duration::from_secs(5) {
                last_report = Instant::now();
                eprintln!("{stage}: {done} of {total}");
            }
        },
    )
    .map_err(|err| match err {
        SeedError::NotEmpty(_) => CommandError::Usage(format!("bench seed: {err}")),
        other => CommandError::Failed(format!("bench seed: {other}")),
    })?;
    let size = db.run_blocking(db::size_bytes).map_err(super::failed)?;
    for line in report.lines() {
        println!("{line}");
    }
    println!(
        "seeded in {:.1} s; database size {:.1} MiB{}",
        started.elapsed().as_secs_f64(),
        size as f64 / (1024.0 * 1024.0),
        match counts.users {
            0 => String::new(),
            users => format!(
                ", {:.1} KiB per customer",
                size as f64 / 1024.0 / users as f64
            ),
        }
    );
    Ok(())
}
