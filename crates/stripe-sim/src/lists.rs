//! Stripe's list endpoints (`GET /v1/customers`, `/v1/subscriptions`, `/v1/invoices`,
//! `/v1/events`): newest first, `limit` (1 to 100, default 10), `starting_after` /
//! `ending_before` cursors, `created[gt|gte|lt|lte]`, each resource's own filters, and Stripe's
//! list object (`data`, `has_more`, `url`).

use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, web};
use serde::Deserialize;
use serde_json::Value;

use crate::Sim;
use crate::api::{ApiError, authenticate, error_response, parse, respond};
use crate::objects;
use crate::state::{InvoiceStatus, SubscriptionStatus};

/// `created[…]`: a range of Unix times (read as text: a flattened query keeps its values as
/// strings).
#[derive(Debug, Default, Deserialize)]
struct Created {
    gt: Option<String>,
    gte: Option<String>,
    lt: Option<String>,
    lte: Option<String>,
}

/// The bounds of a `created` range, checked.
struct Range([Option<i64>; 4]);

impl Created {
    fn range(&self) -> Result<Range, ApiError> {
        let bound = |name: &str, raw: &Option<String>| {
            raw.as_deref()
                .map(|raw| {
                    raw.parse::<i64>().map_err(|_| {
                        ApiError::invalid(
                            &format!("created[{name}]"),
                            format!("Invalid integer: {raw}"),
                        )
                    })
                })
                .transpose()
        };
        Ok(Range([
            bound("gt", &self.gt)?,
            bound("gte", &self.gte)?,
            bound("lt", &self.lt)?,
            bound("lte", &self.lte)?,
        ]))
    }
}

impl Range {
    fn contains(&self, t: i64) -> bool {
        let [gt, gte, lt, lte] = self.0;
        gt.is_none_or(|b| t > b)
            && gte.is_none_or(|b| t >= b)
            && lt.is_none_or(|b| t < b)
            && lte.is_none_or(|b| t <= b)
    }
}

/// What every list accepts.
#[derive(Debug, Deserialize)]
struct Paging {
    limit: Option<String>,
    starting_after: Option<String>,
    ending_before: Option<String>,
    #[serde(default)]
    created: Created,
}

#[derive(Debug, Deserialize)]
struct CustomerFilters {
    #[serde(flatten)]
    paging: Paging,
    email: Option<String>,
}

#[derive(Debug, Deserialize)]
struct SubscriptionFilters {
    #[serde(flatten)]
    paging: Paging,
    customer: Option<String>,
    price: Option<String>,
    status: Option<String>,
}

#[derive(Debug, Deserialize)]
struct InvoiceFilters {
    #[serde(flatten)]
    paging: Paging,
    customer: Option<String>,
    subscription: Option<String>,
    status: Option<String>,
}

#[derive(Debug, Deserialize)]
struct EventFilters {
    #[serde(flatten)]
    paging: Paging,
    #[serde(rename = "type")]
    kind: Option<String>,
}

/// One listed object: its id, its creation time and its JSON.
struct Item {
    id: String,
    created: i64,
    value: Value,
}

/// `limit` as Stripe checks it: an integer from 1 to 100.
fn limit(raw: Option<&str>) -> Result<usize, ApiError> {
    match raw {
        None => Ok(10),
        Some(raw) => raw
            .parse::<usize>()
            .ok()
            .filter(|n| (1..=100).contains(n))
            .ok_or_else(|| {
                ApiError::invalid(
                    "limit",
                    format!("Invalid integer: {raw}; limit must be between 1 and 100"),
                )
            }),
    }
}

/// One page of `items` (already newest first and filtered) under `paging`.
fn page(url: &str, what: &str, items: Vec<Item>, paging: &Paging) -> Result<Value, ApiError> {
    let limit = limit(paging.limit.as_deref())?;
    let range = paging.created.range()?;
    let items: Vec<Item> = items
        .into_iter()
        .filter(|i| range.contains(i.created))
        .collect();
    let position = |cursor: &str| {
        items
            .iter()
            .position(|i| i.id == cursor)
            .ok_or_else(|| ApiError::missing(what, cursor))
    };
    let (data, has_more) = match (&paging.starting_after, &paging.ending_before) {
        (Some(cursor), _) => {
            let rest = &items[position(cursor)? + 1..];
            (rest.iter().take(limit), rest.len() > limit)
        }
        (None, Some(cursor)) => {
            let before = &items[..position(cursor)?];
            let start = before.len().saturating_sub(limit);
            (before[start..].iter().take(limit), start > 0)
        }
        (None, None) => (items.iter().take(limit), items.len() > limit),
    };
    let data = data.map(|i| i.value.clone()).collect();
    Ok(objects::list(url, data, has_more))
}

/// Newest first; objects of one second by id, so that pages never skip or repeat one.
fn newest_first(mut items: Vec<Item>) -> Vec<Item> {
    items.sort_by(|a, b| b.created.cmp(&a.created).then_with(|| b.id.cmp(&a.id)));
    items
}

fn answer(req: &HttpRequest, list: impl FnOnce(&[u8]) -> Result<Value, ApiError>) -> HttpResponse {
    if let Err(err) = authenticate(req) {
        return error_response(&err);
    }
    match list(req.query_string().as_bytes()) {
        Ok(body) => respond(StatusCode::OK, &body),
        Err(err) => error_response(&err),
    }
}

pub async fn customers(sim: web::Data<Sim>, req: HttpRequest) -> HttpResponse {
    answer(&req, |query| {
        let p: CustomerFilters = parse(query)?;
        let state = sim.state();
        let items = state
            .customers
            .values()
            // Stripe's email filter is exact and case-sensitive.
            .filter(|c| p.email.is_none() || c.email == p.email)
            .map(|c| Item {
                id: c.id.clone(),
                created: c.created,
                value: objects::customer(c),
            })
            .collect();
        page("/v1/customers", "customer", newest_first(items), &p.paging)
    })
}

const SUBSCRIPTION_STATUSES: [&str; 9] = [
    "active",
    "all",
    "canceled",
    "ended",
    "incomplete",
    "incomplete_expired",
    "past_due",
    "paused",
    "trialing",
];

pub async fn subscriptions(sim: web::Data<Sim>, req: HttpRequest) -> HttpResponse {
    answer(&req, |query| {
        let p: SubscriptionFilters = parse(query)?;
        if let Some(status) = &p.status
            && !SUBSCRIPTION_STATUSES.contains(&status.as_str())
            && status != "unpaid"
        {
            return Err(ApiError::invalid(
                "status",
                format!(
                    "Invalid status: must be one of {}",
                    SUBSCRIPTION_STATUSES.join(", ")
                ),
            ));
        }
        let state = sim.state();
        let wanted = |status: SubscriptionStatus| match p.status.as_deref() {
            // Stripe lists subscriptions that are not canceled unless asked otherwise.
            None => status != SubscriptionStatus::Canceled,
            Some("all") => true,
            Some("ended") => status == SubscriptionStatus::Canceled,
            Some(other) => status.as_str() == other,
        };
        let items = state
            .subscriptions
            .values()
            .filter(|s| p.customer.as_ref().is_none_or(|c| &s.customer == c))
            .filter(|s| p.price.as_ref().is_none_or(|price| &s.price == price))
            .filter(|s| wanted(s.status))
            .map(|s| Item {
                id: s.id.clone(),
                created: s.created,
                value: objects::subscription(&state, s),
            })
            .collect();
        page(
            "/v1/subscriptions",
            "subscription",
            newest_first(items),
            &p.paging,
        )
    })
}

pub async fn invoices(sim: web::Data<Sim>, req: HttpRequest) -> HttpResponse {
    answer(&req, |query| {
        let p: InvoiceFilters = parse(query)?;
        let status = match p.status.as_deref() {
            None => None,
            Some("open") => Some(InvoiceStatus::Open),
            Some("paid") => Some(InvoiceStatus::Paid),
            // Statuses the simulator's invoices never reach: nothing matches.
            Some("draft" | "uncollectible" | "void") => {
                return Ok(objects::list("/v1/invoices", Vec::new(), false));
            }
            Some(other) => {
                return Err(ApiError::invalid(
                    "status",
                    format!("Invalid status: {other}"),
                ));
            }
        };
        let state = sim.state();
        let items = state
            .invoices
            .values()
            .filter(|i| p.customer.as_ref().is_none_or(|c| &i.customer == c))
            .filter(|i| p.subscription.as_ref().is_none_or(|s| &i.subscription == s))
            .filter(|i| status.is_none_or(|s| i.status == s))
            .map(|i| Item {
                id: i.id.clone(),
                created: i.created,
                value: objects::invoice(&state, i),
            })
            .collect();
        page("/v1/invoices", "invoice", newest_first(items), &p.paging)
    })
}

pub async fn events(sim: web::Data<Sim>, req: HttpRequest) -> HttpResponse {
    answer(&req, |query| {
        let p: EventFilters = parse(query)?;
        let state = sim.state();
        // The log is oldest first: its reverse is Stripe's order (newest first, in the order
        // of creation within one second).
        let items = state
            .events
            .iter()
            .rev()
            .filter(|e| p.kind.as_ref().is_none_or(|k| &e.kind == k))
            .map(|e| Item {
                id: e.id.clone(),
                created: e.created,
                value: objects::event(e),
            })
            .collect();
        page("/v1/events", "event", items, &p.paging)
    })
}
