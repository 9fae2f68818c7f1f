//! Reconciliation with Stripe: Stripe is the truth, Tollgate's rows a copy kept by webhooks.
//! When deliveries were missed or state drifted, [`Reconciler::run`] replays the missed events
//! from `GET /v1/events` (through the same `store_and_apply` path as a delivery, exactly once),
//! then compares each linked customer's objects at Stripe with the local rows and repairs them
//! through the same domain functions webhooks use (notifications and audit rows follow). Every
//! Stripe call goes through the gateway; no connection is held across one.
//!
//! What is compared is a list of [`Comparer`]s: a new kind of local copy (invoices, say) is one
//! more variant and one more arm in [`Reconciler::compare`].

pub mod import;
pub mod refetch;

use std::collections::HashSet;
use std::fmt;
use std::sync::Arc;

use chrono::NaiveDateTime;
use serde_json::Value;

use crate::accounts::UserId;
use crate::audit::{self, Actor, Kind};
use crate::billing::gateway::{ListJson, ListPage};
use crate::billing::subscriptions::{AuditOnce, StripeSubscription, record_audited};
use crate::billing::{BillingError, Gateway, GatewayError, OperationClass, customers};
use crate::config::Config;
use crate::db::models::{
    billing_customer, plan_change, stripe_refetch, subscription, webhook_event,
};
use crate::db::{Db, DbError, now};
use crate::stripe_id::CustomerId;
use crate::webhooks::{self, Delivery, IngestError, Ingested, StripeEvent};

/// Stripe keeps events for 30 days: replaying never asks for older ones.
pub const EVENT_WINDOW_DAYS: i64 = 30;

/// Stripe retries a failed delivery for up to three days: replaying looks back that far
/// before the newest stored event.
pub const RETRY_DAYS: i64 = 3;

/// The throttle key of calls made for no one account (listing every customer, the events).
const SYSTEM: i64 = 0;

/// Objects per page asked of Stripe (its maximum).
const PAGE: &str = "100";

#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    #[error(transparent)]
    Gateway(#[from] GatewayError),
    #[error(transparent)]
    Db(#[from] DbError),
    #[error(transparent)]
    Billing(#[from] BillingError),
    #[error(transparent)]
    Ingest(#[from] IngestError),
    #[error("no account {0}")]
    UnknownAccount(String),
    #[error("account {0} has no Stripe customer")]
    NoCustomer(String),
    #[error("Stripe returned an object Tollgate cannot use: {0}")]
    Unexpected(String),
}

impl From<crate::crypto::CryptoError> for SyncError {
    fn from(err: crate::crypto::CryptoError) -> Self {
        Self::Billing(err.into())
    }
}

/// Which accounts a run covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// Every linked customer, and the events missed since the newest stored one.
    All,
    /// One account's customer (no event replay).
    Account(UserId),
}

/// One field on which Tollgate's copy differs from Stripe.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Difference {
    pub user_id: UserId,
    /// The customer's id, masked.
    pub customer: String,
    /// `customer`, or `subscription sub_…` (masked).
    pub object: String,
    pub field: &'static str,
    pub local: String,
    pub stripe: String,
    /// Whether this run wrote Stripe's value.
    pub repaired: bool,
}

impl fmt::Display for Difference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {} {}: {} → {}{}",
            self.customer,
            self.object,
            self.field,
            self.local,
            self.stripe,
            if self.repaired { " (repaired)" } else { "" }
        )
    }
}

/// What a run found and did.
#[derive(Debug, Default)]
pub struct Report {
    pub differences: Vec<Difference>,
    /// One line per missed event: replayed (or, in a dry run, to replay) or skipped.
    pub events: Vec<String>,
    /// How many missed events were stored and applied.
    pub replayed: usize,
    /// How many customers were compared.
    pub customers: usize,
}

/// The kinds of local copies compared with Stripe, per customer.
#[derive(Debug, Clone, Copy)]
pub enum Comparer {
    Subscriptions,
}

const COMPARERS: [Comparer; 1] = [Comparer::Subscriptions];

/// What a run reaches: the configuration (keys, peppers, alert rules), the database, Stripe.
#[derive(Clone)]
pub struct Reconciler {
    pub config: Arc<Config>,
    pub db: Db,
    pub gateway: Arc<Gateway>,
    /// Wait out the gateway's throttle (the CLI) rather than give up at once (a console page).
    pub patient: bool,
    /// The process's single refetch task (see [`refetch::run_pending`]).
    pub refetching: Arc<refetch::Gate>,
}

/// A subscription's fields as compared: (name, local, Stripe).
type Fields = Vec<(&'static str, String, String)>;

fn time(t: Option<NaiveDateTime>) -> String {
    t.map_or_else(
        || "none".to_owned(),
        |t| t.format("%Y-%m-%d %H:%M:%S").to_string(),
    )
}

/// The fields on which `row` (with its stored quantity) differs from `sub`.
fn subscription_fields(
    (row, quantity): &(subscription::SubscriptionRow, Option<i64>),
    sub: &StripeSubscription,
) -> Fields {
    let pairs: Fields = vec![
        ("status", row.status.to_string(), sub.status.to_string()),
        ("price", row.stripe_price_id.clone(), sub.price.clone()),
        (
            "cancel_at_period_end",
            row.cancel_at_period_end.to_string(),
            sub.cancel_at_period_end.to_string(),
        ),
        (
            "current_period_end",
            time(row.current_period_end),
            time(sub.current_period_end),
        ),
        ("trial_end", time(row.trial_end), time(sub.trial_end)),
        (
            "quantity",
            quantity.map_or_else(|| "none".to_owned(), |q| q.to_string()),
            sub.quantity.to_string(),
        ),
    ];
    pairs.into_iter().filter(|(_, l, s)| l != s).collect()
}

impl Reconciler {
    /// A page of `path` under `query`, after `cursor`; waits out the throttle when patient.
    async fn page(
        &self,
        user: UserId,
        class: OperationClass,
        path: &'static str,
        query: &[(&'static str, String)],
        cursor: Option<&str>,
    ) -> Result<ListPage, SyncError> {
        let mut query = query.to_vec();
        if let Some(cursor) = cursor {
            query.push(("starting_after", cursor.to_owned()));
        }
        let request = ListJson { path, query };
        let mut waits = 0;
        loop {
            match self
                .gateway
                .call(class, user, None, || request.clone())
                .await
            {
                Ok(value) => return Ok(ListPage::read(&value)?),
                Err(GatewayError::Throttled { retry_after, .. }) if self.patient && waits < 10 => {
                    waits += 1;
                    actix_web::rt::time::sleep(std::time::Duration::from_secs(retry_after.max(1)))
                        .await;
                }
                Err(err) => return Err(err.into()),
            }
        }
    }

    /// Every object `path` lists under `query`, page after page (newest first, as Stripe lists).
    async fn list_all(
        &self,
        user: UserId,
        class: OperationClass,
        path: &'static str,
        query: &[(&'static str, String)],
    ) -> Result<Vec<Value>, SyncError> {
        let mut all = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let page = self
                .page(user, class, path, query, cursor.as_deref())
                .await?;
            let last = page
                .data
                .last()
                .and_then(|o| o.get("id"))
                .and_then(Value::as_str)
                .map(str::to_owned);
            all.extend(page.data);
            match (page.has_more, last) {
                (true, Some(last)) => cursor = Some(last),
                _ => return Ok(all),
            }
        }
    }

    /// Every customer at Stripe (as JSON), page after page.
    pub async fn stripe_customers(&self) -> Result<Vec<Value>, SyncError> {
        let query = [("limit", PAGE.to_owned())];
        self.list_all(
            UserId::from(SYSTEM),
            OperationClass::Customer,
            "/customers",
            &query,
        )
        .await
    }

    /// The accounts a run covers, with their customer ids (opened).
    async fn linked(&self, scope: Scope) -> Result<Vec<(UserId, CustomerId)>, SyncError> {
        let keyring = self.config.keyring();
        let rows = match scope {
            Scope::Account(user_id) => {
                let row = self
                    .db
                    .run(move |conn| billing_customer::for_user(conn, user_id))
                    .await?;
                vec![row.ok_or_else(|| SyncError::NoCustomer(user_id.to_string()))?]
            }
            Scope::All => {
                let mut rows = Vec::new();
                let mut after = 0;
                loop {
                    let page = self
                        .db
                        .run(move |conn| billing_customer::page_after(conn, after, 500))
                        .await?;
                    let Some(last) = page.last() else { break };
                    after = last.user_id.get();
                    rows.extend(page);
                }
                rows
            }
        };
        rows.into_iter()
            .map(|row| {
                let opened = keyring.open(
                    &row.stripe_customer_sealed,
                    &customers::customer_aad(row.user_id),
                )?;
                let id = String::from_utf8(opened.to_vec())
                    .map_err(|_| SyncError::Unexpected("customer id is not text".into()))?;
                Ok((row.user_id, CustomerId::new(id)))
            })
            .collect()
    }

    /// Reconciles `scope` with Stripe; with `dry_run`, only reports. Audited as `actor`'s.
    pub async fn run(
        &self,
        scope: Scope,
        dry_run: bool,
        actor: &Actor,
    ) -> Result<Report, SyncError> {
        let mut report = Report::default();
        if scope == Scope::All {
            self.replay_events(dry_run, &mut report).await?;
            if !dry_run {
                // Same-second ties the webhook path could not settle yet (Stripe was down).
                refetch::run_pending(self).await?;
            }
        }
        let linked = self.linked(scope).await?;
        let at_stripe: Option<HashSet<String>> = match scope {
            Scope::All => Some(
                self.stripe_customers()
                    .await?
                    .iter()
                    .filter_map(|c| c.get("id").and_then(Value::as_str).map(str::to_owned))
                    .collect(),
            ),
            Scope::Account(_) => None,
        };
        let run_id = crate::billing::new_operation_id()
            .map_err(|err| SyncError::Unexpected(err.to_string()))?;
        for (user_id, customer) in linked {
            report.customers += 1;
            if at_stripe
                .as_ref()
                .is_some_and(|known| !known.contains(customer.expose()))
            {
                report.differences.push(Difference {
                    user_id,
                    customer: customer.to_string(),
                    object: "customer".into(),
                    field: "exists",
                    local: "linked".into(),
                    stripe: "missing".into(),
                    repaired: false,
                });
                continue;
            }
            for comparer in COMPARERS {
                let found = self
                    .compare(comparer, user_id, &customer, dry_run, actor, &run_id)
                    .await?;
                report.differences.extend(found);
            }
        }
        if !dry_run {
            let repaired = report.differences.iter().filter(|d| d.repaired).count();
            let event = actor.event(Kind::StripeSyncRun).details(serde_json::json!({
                "scope": match scope {
                    Scope::All => "all".to_owned(),
                    Scope::Account(user) => format!("user:{user}"),
                },
                "customers": report.customers,
                "differences": report.differences.len(),
                "repaired": repaired,
                "events_replayed": report.replayed,
            }));
            self.db.run(move |conn| audit::write(conn, &event)).await?;
        }
        Ok(report)
    }

    /// The differences of one kind of object for one customer, repaired unless `dry_run`.
    async fn compare(
        &self,
        comparer: Comparer,
        user_id: UserId,
        customer: &CustomerId,
        dry_run: bool,
        actor: &Actor,
        run_id: &str,
    ) -> Result<Vec<Difference>, SyncError> {
        match comparer {
            Comparer::Subscriptions => {
                self.subscriptions(user_id, customer, dry_run, actor, run_id)
                    .await
            }
        }
    }

    async fn subscriptions(
        &self,
        user_id: UserId,
        customer: &CustomerId,
        dry_run: bool,
        actor: &Actor,
        run_id: &str,
    ) -> Result<Vec<Difference>, SyncError> {
        let query = [
            ("customer", customer.expose().to_owned()),
            ("status", "all".to_owned()),
            ("limit", PAGE.to_owned()),
        ];
        // Stripe's state as of the moment before it is read: a webhook of a later second
        // that is stored while the pages are read is never overwritten by them.
        let observed_at = now();
        // Reconciliation's reads count against the system's own throttle key, never the
        // customer's (a console page must not spend a customer's budget for plan changes).
        let remote = self
            .list_all(
                UserId::from(SYSTEM),
                OperationClass::Subscription,
                "/subscriptions",
                &query,
            )
            .await?;
        let local = self
            .db
            .run(move |conn| {
                let rows = subscription::all_for_user(conn, user_id)?;
                rows.into_iter()
                    .map(|row| {
                        let quantity = plan_change::quantity(conn, &row.stripe_subscription_id)?;
                        Ok((row, quantity))
                    })
                    .collect::<Result<Vec<_>, DbError>>()
            })
            .await?;
        let mut differences = Vec::new();
        let mut seen = HashSet::new();
        for object in remote {
            let sub = object
                .as_object()
                .ok_or("not an object")
                .and_then(crate::webhooks::handlers::subscription_of)
                .map_err(|reason| SyncError::Unexpected(reason.into()))?;
            if &sub.customer != customer {
                continue;
            }
            seen.insert(sub.id.clone());
            if !dry_run {
                // Compared with Stripe's state: a same-second tie recorded before the read is
                // settled (parked ones too).
                let id = sub.id.expose().to_owned();
                self.db
                    .run(move |conn| stripe_refetch::settled_by_sync(conn, &id, observed_at))
                    .await?;
            }
            let row = local
                .iter()
                .find(|(r, _)| r.stripe_subscription_id == sub.id);
            let fields = match row {
                Some(row) => subscription_fields(row, &sub),
                None => vec![("exists", "missing".to_owned(), sub.status.to_string())],
            };
            if fields.is_empty() {
                continue;
            }
            let repaired = !dry_run && {
                let event = actor.event(Kind::StripeSyncRun).details(serde_json::json!({
                    "user_id": user_id,
                    "subscription": sub.id.to_string(),
                    "repaired": fields.iter().map(|(name, _, _)| *name).collect::<Vec<_>>(),
                }));
                let once = format!("sync-{run_id}-{}", sub.id.expose());
                record_audited(
                    &self.db,
                    user_id,
                    sub.clone(),
                    observed_at,
                    Some(AuditOnce {
                        event,
                        once,
                        reason: None,
                    }),
                )
                .await?
            };
            for (field, local, stripe) in fields {
                differences.push(Difference {
                    user_id,
                    customer: customer.to_string(),
                    object: format!("subscription {}", sub.id),
                    field,
                    local,
                    stripe,
                    repaired,
                });
            }
        }
        // Rows Stripe does not know (reported; never deleted: the copy keeps its history).
        for (row, _) in local
            .iter()
            .filter(|(r, _)| !seen.contains(&r.stripe_subscription_id))
        {
            differences.push(Difference {
                user_id,
                customer: customer.to_string(),
                object: format!("subscription {}", row.stripe_subscription_id),
                field: "exists",
                local: row.status.to_string(),
                stripe: "missing".into(),
                repaired: false,
            });
        }
        Ok(differences)
    }

    /// Replays the events stored at Stripe that Tollgate has not stored, oldest first, each
    /// through the same path as a delivery: events already stored are skipped, so a replay
    /// applies each event once, whoever delivers it later. The window starts [`RETRY_DAYS`]
    /// before the newest stored event (Stripe retries a failed delivery for that long, so an
    /// event missed behind a later delivered one is still listed), within Stripe's 30 days.
    /// With no event stored (a fresh install, a product just imported) nothing is replayed:
    /// what happened before Tollgate listened is not news to send again.
    async fn replay_events(&self, dry_run: bool, report: &mut Report) -> Result<(), SyncError> {
        let Some(newest) = self.db.run(webhook_event::newest_stripe_created).await? else {
            report.events.push(
                "no Stripe event is stored yet: nothing to replay (events from before Tollgate \
                 received its first webhook are not replayed)"
                    .to_owned(),
            );
            return Ok(());
        };
        let floor = now() - chrono::Duration::days(EVENT_WINDOW_DAYS);
        let since = (newest - chrono::Duration::days(RETRY_DAYS)).max(floor);
        let query = [
            ("created[gte]", since.and_utc().timestamp().to_string()),
            ("limit", PAGE.to_owned()),
        ];
        // Page by page, only the events not stored yet are kept (not the whole window).
        let mut events = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let page = self
                .page(
                    UserId::from(SYSTEM),
                    OperationClass::Default,
                    "/events",
                    &query,
                    cursor.as_deref(),
                )
                .await?;
            let last = page
                .data
                .last()
                .and_then(|o| o.get("id"))
                .and_then(Value::as_str)
                .map(str::to_owned);
            let ids: Vec<String> = page
                .data
                .iter()
                .map(|e| e.get("id").and_then(Value::as_str).unwrap_or("").to_owned())
                .collect();
            let stored = self
                .db
                .run(move |conn| {
                    ids.iter()
                        .map(|id| Ok(webhook_event::find(conn, id)?.is_some()))
                        .collect::<Result<Vec<bool>, DbError>>()
                })
                .await?;
            events.extend(
                page.data
                    .into_iter()
                    .zip(stored)
                    .filter(|(_, stored)| !stored)
                    .map(|(event, _)| event),
            );
            match (page.has_more, last) {
                (true, Some(last)) => cursor = Some(last),
                _ => break,
            }
        }
        let live = self.config.stripe.live();
        for value in events.into_iter().rev() {
            let raw =
                serde_json::to_vec(&value).map_err(|err| SyncError::Unexpected(err.to_string()))?;
            let event = match StripeEvent::parse(&raw, live) {
                Ok(event) => event,
                Err(err) => {
                    let id = value.get("id").and_then(Value::as_str).unwrap_or("?");
                    report.events.push(format!("skipped event {id}: {err}"));
                    continue;
                }
            };
            let id = event.id.clone();
            if dry_run {
                let lookup = id.clone();
                let stored = self
                    .db
                    .run(move |conn| webhook_event::find(conn, &lookup))
                    .await?;
                if stored.is_none() {
                    report
                        .events
                        .push(format!("would replay event {id} ({})", event.kind));
                }
                continue;
            }
            let config = Arc::clone(&self.config);
            let outcome = self
                .db
                .run(move |conn| {
                    let keyring = config.keyring();
                    let hasher = config.token_hasher();
                    // `run` reads every tie again after the replay; noted on the gate too, so
                    // that a replay that stops early leaves them to the next delivery's pass.
                    let ties = refetch::Ties::default();
                    let cx = webhooks::Context::new(&config, &keyring, &hasher, &ties);
                    let delivery = Delivery {
                        event: &event,
                        raw: &raw,
                        ip: "api.stripe.com",
                        signature_digest: "",
                        request_id: None,
                    };
                    let outcome = webhooks::ingest(conn, cx, delivery)?;
                    Ok::<_, SyncError>((outcome, event.kind, ties.any()))
                })
                .await?;
            if outcome.2 {
                self.refetching.note();
            }
            if let (Ingested::Stored(status), kind, _) = outcome {
                report.replayed += 1;
                report
                    .events
                    .push(format!("replayed event {id} ({kind}): {status}"));
            }
        }
        Ok(())
    }
}

/// One page of the console's drift view: the differences of up to `limit` linked customers
/// after the account `after` (by id), computed on request (a dry run: nothing is written), and
/// where the next page starts. Bounded so that a page never asks Stripe for more than `limit`
/// customers' subscriptions.
pub struct DriftPage {
    pub differences: Vec<Difference>,
    /// Customers compared on this page.
    pub checked: usize,
    /// Customers whose state could not be read from Stripe now (throttled, Stripe down): shown
    /// as not checked rather than failing the page.
    pub unchecked: Vec<UserId>,
    /// The account id the next page starts after, if more customers follow.
    pub next_after: Option<i64>,
}

impl Reconciler {
    pub async fn drift_page(
        &self,
        after: i64,
        limit: i64,
        actor: &Actor,
    ) -> Result<DriftPage, SyncError> {
        let rows = self
            .db
            .run(move |conn| billing_customer::page_after(conn, after, limit + 1))
            .await?;
        let more = rows.len() as i64 > limit;
        let mut page = DriftPage {
            differences: Vec::new(),
            checked: 0,
            unchecked: Vec::new(),
            next_after: None,
        };
        for row in rows.into_iter().take(usize::try_from(limit).unwrap_or(0)) {
            page.next_after = more.then_some(row.user_id.get());
            match self.run(Scope::Account(row.user_id), true, actor).await {
                Ok(report) => {
                    page.checked += 1;
                    page.differences.extend(report.differences);
                }
                Err(SyncError::Gateway(GatewayError::NotConfigured)) => {
                    return Err(GatewayError::NotConfigured.into());
                }
                Err(err) => {
                    tracing::warn!(error = %err, user_id = %row.user_id, "could not compare a customer with Stripe");
                    page.unchecked.push(row.user_id);
                }
            }
        }
        Ok(page)
    }
}
