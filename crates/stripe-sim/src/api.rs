//! `/v1/…`: Stripe's REST API for the resources Tollgate uses. Form-encoded requests with
//! Stripe's bracket syntax, `Authorization: Bearer sk_test_…`, idempotency keys, Stripe's error
//! objects and statuses, JSON objects in the shapes `async-stripe` reads.

use std::collections::HashMap;
use std::sync::Arc;

use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, web};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};

use crate::Sim;
use crate::objects;
use crate::state::{
    CANCELLATION_FEEDBACK, CheckoutSession, Customer, Event, IdempotentResponse, Interval,
    MISSING_PAYMENT_METHOD, PortalSession, Price, Product, SessionStatus, SimState,
    SubscriptionStatus, new_id, unix_now,
};

/// A Stripe error object with its HTTP status.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub kind: &'static str,
    pub code: Option<&'static str>,
    pub message: String,
    pub param: Option<String>,
}

/// The price `id`, if it exists and is active (refused as Stripe would, naming `param`).
pub(crate) fn active_price<'a>(
    state: &'a SimState,
    id: &str,
    param: &str,
) -> Result<&'a crate::state::Price, ApiError> {
    let price = state
        .prices
        .get(id)
        .ok_or_else(|| ApiError::missing("price", id))?;
    if !price.active {
        return Err(ApiError::invalid(
            param,
            format!("The price `{}` is not active.", price.id),
        ));
    }
    Ok(price)
}

impl ApiError {
    pub fn missing(what: &str, id: &str) -> Self {
        Self {
            status: StatusCode::NOT_FOUND,
            kind: "invalid_request_error",
            code: Some("resource_missing"),
            message: format!("No such {what}: '{id}'"),
            param: Some("id".into()),
        }
    }

    pub fn invalid(param: &str, message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::BAD_REQUEST,
            kind: "invalid_request_error",
            code: Some("parameter_invalid"),
            message: message.into(),
            param: Some(param.to_owned()),
        }
    }

    fn unauthorized(message: &str) -> Self {
        Self {
            status: StatusCode::UNAUTHORIZED,
            kind: "invalid_request_error",
            code: None,
            message: message.to_owned(),
            param: None,
        }
    }

    fn body(&self) -> Value {
        json!({ "error": {
            "type": self.kind,
            "code": self.code,
            "message": self.message,
            "param": self.param,
        }})
    }
}

pub(crate) fn respond(status: StatusCode, body: &Value) -> HttpResponse {
    HttpResponse::build(status)
        .insert_header(("request-id", new_id("req")))
        .insert_header(("stripe-version", objects::API_VERSION))
        .json(body)
}

pub(crate) fn error_response(err: &ApiError) -> HttpResponse {
    respond(err.status, &err.body())
}

/// Any `sk_test_…` key is accepted; anything else is refused as Stripe would.
pub(crate) fn authenticate(req: &HttpRequest) -> Result<(), ApiError> {
    let header = req
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok());
    let Some(header) = header else {
        return Err(ApiError::unauthorized(
            "You did not provide an API key. Provide it in the Authorization header (Bearer sk_test_…).",
        ));
    };
    let key = header.strip_prefix("Bearer ").unwrap_or_default().trim();
    if key.starts_with("sk_test_") && key.len() > "sk_test_".len() {
        Ok(())
    } else {
        let shown = mask_key(key);
        Err(ApiError::unauthorized(&format!(
            "Invalid API Key provided: {shown}"
        )))
    }
}

/// Stripe's key kinds, the part of a key that names it rather than its secret.
const KEY_PREFIXES: [&str; 7] = [
    "sk_live_", "sk_test_", "rk_live_", "rk_test_", "pk_live_", "pk_test_", "whsec_",
];

/// `sk_live_…xyz`: a refused key, shown by its kind and last three characters; only the kind
/// when it is barely longer than that (the rest would give too much away).
fn mask_key(key: &str) -> String {
    let chars: Vec<char> = key.chars().collect();
    let last3: String = chars[chars.len().saturating_sub(3)..].iter().collect();
    let prefix = KEY_PREFIXES
        .iter()
        .find(|prefix| key.starts_with(*prefix))
        .copied()
        .unwrap_or("");
    if chars.len() < prefix.len() + 12 {
        return format!("{prefix}…");
    }
    format!("{prefix}…{last3}")
}

pub(crate) fn parse<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    serde_qs::Config::new()
        .max_depth(6)
        .use_form_encoding(true)
        .deserialize_bytes(bytes)
        .map_err(|err| ApiError::invalid("body", format!("Invalid request parameters: {err}")))
}

type Outcome = Result<(Value, Vec<Event>), ApiError>;

/// A state-changing request: authenticated, idempotent, applied under the lock; its events are
/// delivered after the lock is released.
pub(crate) fn post<T: DeserializeOwned>(
    sim: &web::Data<Sim>,
    req: &HttpRequest,
    body: &[u8],
    apply: impl FnOnce(&mut SimState, T, Option<&str>) -> Outcome,
) -> HttpResponse {
    if let Err(err) = authenticate(req) {
        return error_response(&err);
    }
    let key = req
        .headers()
        .get("idempotency-key")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let fingerprint = format!("{} {} {:x}", req.method(), req.path(), Sha256::digest(body));
    let mut state = sim.state();
    if let Some(key) = &key
        && let Some(cached) = state.idempotency.get(key)
    {
        if cached.fingerprint != fingerprint {
            let err = ApiError {
                status: StatusCode::BAD_REQUEST,
                kind: "idempotency_error",
                code: None,
                message: format!(
                    "Keys for idempotent requests can only be used with the same parameters they were first used with. \
                     Try using a key other than '{key}' if you meant to execute a different request."
                ),
                param: None,
            };
            return error_response(&err);
        }
        let mut res = respond(
            StatusCode::from_u16(cached.status).unwrap_or(StatusCode::OK),
            &cached.body,
        );
        res.headers_mut().insert(
            actix_web::http::header::HeaderName::from_static("idempotent-replayed"),
            actix_web::http::header::HeaderValue::from_static("true"),
        );
        return res;
    }
    let outcome = parse::<T>(body).and_then(|params| apply(&mut state, params, key.as_deref()));
    let (status, body, events) = match outcome {
        Ok((value, events)) => (StatusCode::OK, value, events),
        Err(err) => (err.status, err.body(), Vec::new()),
    };
    if let Some(key) = key {
        state.idempotency.insert(
            key,
            IdempotentResponse {
                fingerprint,
                status: status.as_u16(),
                body: body.clone(),
            },
        );
    }
    drop(state);
    Arc::clone(sim).deliver(events);
    respond(status, &body)
}

#[derive(Deserialize, Default)]
struct Expand {
    #[serde(default)]
    expand: Vec<String>,
}

/// A read: authenticated, rendered, with `expand[]` applied.
pub(crate) fn get(
    sim: &web::Data<Sim>,
    req: &HttpRequest,
    render: impl FnOnce(&SimState) -> Result<Value, ApiError>,
) -> HttpResponse {
    if let Err(err) = authenticate(req) {
        return error_response(&err);
    }
    let expand: Expand = parse(req.query_string().as_bytes()).unwrap_or_default();
    let state = sim.state();
    match render(&state) {
        Ok(mut value) => {
            objects::expand(&state, &mut value, &expand.expand);
            respond(StatusCode::OK, &value)
        }
        Err(err) => error_response(&err),
    }
}

/// A read of one object by its id: `find` looks it up and renders it; an unknown id is
/// Stripe's `resource_missing` error naming `kind`.
pub(crate) fn retrieve(
    sim: &web::Data<Sim>,
    req: &HttpRequest,
    kind: &str,
    id: &str,
    find: impl FnOnce(&SimState, &str) -> Option<Value>,
) -> HttpResponse {
    get(sim, req, |state| {
        find(state, id).ok_or_else(|| ApiError::missing(kind, id))
    })
}

pub async fn not_found(req: HttpRequest) -> HttpResponse {
    let err = ApiError {
        status: StatusCode::NOT_FOUND,
        kind: "invalid_request_error",
        code: None,
        message: format!(
            "Unrecognized request URL ({} {}).",
            req.method(),
            req.path()
        ),
        param: None,
    };
    error_response(&err)
}

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(
        crate::promotions::configure(web::scope("/v1"))
            .route("/products", web::post().to(create_product))
            .route("/products/{id}", web::get().to(retrieve_product))
            .route("/products/{id}", web::post().to(update_product))
            .route("/prices", web::post().to(create_price))
            .route("/prices/{id}", web::get().to(retrieve_price))
            .route("/prices/{id}", web::post().to(update_price))
            .route("/customers", web::post().to(create_customer))
            .route("/customers/{id}", web::get().to(retrieve_customer))
            .route(
                "/checkout/sessions",
                web::post().to(create_checkout_session),
            )
            .route(
                "/checkout/sessions/{id}",
                web::get().to(retrieve_checkout_session),
            )
            .route(
                "/billing_portal/sessions",
                web::post().to(create_portal_session),
            )
            .route("/subscriptions", web::post().to(create_subscription))
            .route("/subscriptions/{id}", web::get().to(retrieve_subscription))
            .route("/subscriptions/{id}", web::post().to(update_subscription))
            .route("/subscriptions/{id}", web::delete().to(cancel_subscription))
            .route("/invoices/{id}", web::get().to(retrieve_invoice))
            .route(
                "/payment_intents/{id}",
                web::get().to(retrieve_payment_intent),
            )
            .route("/events", web::get().to(crate::lists::events))
            .route("/events/{id}", web::get().to(retrieve_event))
            .route("/balance", web::get().to(balance))
            .route("/customers", web::get().to(crate::lists::customers))
            .route("/subscriptions", web::get().to(crate::lists::subscriptions))
            .route("/invoices", web::get().to(crate::lists::invoices))
            .configure(crate::changes::configure)
            .configure(crate::metering::configure)
            .configure(crate::meter_events::configure)
            .default_service(web::to(not_found)),
    );
}

// --- products and prices ---------------------------------------------------------------------

#[derive(Deserialize)]
struct CreateProduct {
    name: String,
    description: Option<String>,
    active: Option<bool>,
    #[serde(default)]
    metadata: HashMap<String, String>,
}

async fn create_product(sim: web::Data<Sim>, req: HttpRequest, body: web::Bytes) -> HttpResponse {
    post(&sim, &req, &body, |state, p: CreateProduct, key| {
        if p.name.trim().is_empty() {
            return Err(ApiError::invalid("name", "A product needs a name."));
        }
        let now = unix_now();
        let product = Product {
            id: new_id("prod"),
            name: p.name,
            description: p.description.filter(|d| !d.is_empty()),
            active: p.active.unwrap_or(true),
            metadata: p.metadata,
            created: now,
            updated: now,
        };
        let value = objects::product(&product);
        let event = Sim::event(state, "product.created", value.clone(), None, key);
        state.products.insert(product.id.clone(), product);
        Ok((value, vec![event]))
    })
}

async fn retrieve_product(
    sim: web::Data<Sim>,
    req: HttpRequest,
    id: web::Path<String>,
) -> HttpResponse {
    retrieve(&sim, &req, "product", &id, |state, id| {
        state.products.get(id).map(objects::product)
    })
}

#[derive(Deserialize)]
struct UpdateProduct {
    name: Option<String>,
    description: Option<String>,
    active: Option<bool>,
    metadata: Option<HashMap<String, String>>,
}

async fn update_product(
    sim: web::Data<Sim>,
    req: HttpRequest,
    id: web::Path<String>,
    body: web::Bytes,
) -> HttpResponse {
    post(&sim, &req, &body, |state, p: UpdateProduct, key| {
        let product = state
            .products
            .get_mut(id.as_str())
            .ok_or_else(|| ApiError::missing("product", &id))?;
        let before = objects::product(product);
        if let Some(name) = p.name {
            product.name = name;
        }
        if let Some(description) = p.description {
            product.description = Some(description).filter(|d| !d.is_empty());
        }
        if let Some(active) = p.active {
            product.active = active;
        }
        if let Some(metadata) = p.metadata {
            product.metadata.extend(metadata);
        }
        product.updated = unix_now();
        let value = objects::product(product);
        let previous = objects::previous_attributes(&before, &value);
        let event = Sim::event(state, "product.updated", value.clone(), Some(previous), key);
        Ok((value, vec![event]))
    })
}

#[derive(Deserialize)]
struct RecurringParam {
    interval: String,
    usage_type: Option<String>,
    meter: Option<String>,
}

#[derive(Deserialize)]
struct CreatePrice {
    product: String,
    unit_amount: Option<i64>,
    unit_amount_decimal: Option<String>,
    billing_scheme: Option<String>,
    tiers_mode: Option<String>,
    #[serde(default)]
    tiers: Vec<crate::metering::TierParam>,
    currency: String,
    recurring: Option<RecurringParam>,
    active: Option<bool>,
    nickname: Option<String>,
    #[serde(default)]
    metadata: HashMap<String, String>,
}

async fn create_price(sim: web::Data<Sim>, req: HttpRequest, body: web::Bytes) -> HttpResponse {
    post(&sim, &req, &body, |state, p: CreatePrice, key| {
        if !state.products.contains_key(&p.product) {
            return Err(ApiError::missing("product", &p.product));
        }
        if p.unit_amount.is_some_and(|a| a < 0) {
            return Err(ApiError::invalid(
                "unit_amount",
                "This value must be greater than or equal to 0.",
            ));
        }
        let currency = p.currency.to_ascii_lowercase();
        if currency.len() != 3 || !currency.chars().all(|c| c.is_ascii_lowercase()) {
            return Err(ApiError::invalid(
                "currency",
                format!("Invalid currency: {}", p.currency),
            ));
        }
        let Some(recurring) = p.recurring else {
            return Err(ApiError::invalid(
                "recurring",
                "The simulator supports recurring prices only.",
            ));
        };
        let interval = Interval::parse(&recurring.interval).ok_or_else(|| {
            ApiError::invalid(
                "recurring[interval]",
                "Invalid interval: must be one of month or year",
            )
        })?;
        let metered = crate::metering::metered_price(
            state,
            &crate::metering::PriceParams {
                usage_type: recurring.usage_type.as_deref(),
                meter: recurring.meter.as_deref(),
                billing_scheme: p.billing_scheme.as_deref(),
                tiers_mode: p.tiers_mode.as_deref(),
                tiers: &p.tiers,
                unit_amount: p.unit_amount,
                unit_amount_decimal: p.unit_amount_decimal.as_deref(),
            },
        )?;
        let price = Price {
            id: new_id("price"),
            product: p.product,
            unit_amount: if metered.is_some() {
                0
            } else {
                p.unit_amount.unwrap_or(0)
            },
            metered,
            currency,
            interval,
            active: p.active.unwrap_or(true),
            nickname: p.nickname,
            metadata: p.metadata,
            created: unix_now(),
        };
        let value = objects::price(&price);
        let event = Sim::event(state, "price.created", value.clone(), None, key);
        state.prices.insert(price.id.clone(), price);
        Ok((value, vec![event]))
    })
}

async fn retrieve_price(
    sim: web::Data<Sim>,
    req: HttpRequest,
    id: web::Path<String>,
) -> HttpResponse {
    retrieve(&sim, &req, "price", &id, |state, id| {
        state.prices.get(id).map(objects::price)
    })
}

#[derive(Deserialize)]
struct UpdatePrice {
    active: Option<bool>,
    nickname: Option<String>,
    metadata: Option<HashMap<String, String>>,
}

async fn update_price(
    sim: web::Data<Sim>,
    req: HttpRequest,
    id: web::Path<String>,
    body: web::Bytes,
) -> HttpResponse {
    post(&sim, &req, &body, |state, p: UpdatePrice, key| {
        let price = state
            .prices
            .get_mut(id.as_str())
            .ok_or_else(|| ApiError::missing("price", &id))?;
        let before = objects::price(price);
        if let Some(active) = p.active {
            price.active = active;
        }
        if let Some(nickname) = p.nickname {
            price.nickname = Some(nickname);
        }
        if let Some(metadata) = p.metadata {
            price.metadata.extend(metadata);
        }
        let value = objects::price(price);
        let previous = objects::previous_attributes(&before, &value);
        let event = Sim::event(state, "price.updated", value.clone(), Some(previous), key);
        Ok((value, vec![event]))
    })
}

// --- customers -------------------------------------------------------------------------------

#[derive(Deserialize)]
struct CreateCustomer {
    email: Option<String>,
    name: Option<String>,
    #[serde(default)]
    metadata: HashMap<String, String>,
}

async fn create_customer(sim: web::Data<Sim>, req: HttpRequest, body: web::Bytes) -> HttpResponse {
    post(&sim, &req, &body, |state, p: CreateCustomer, key| {
        let customer = Customer {
            id: new_id("cus"),
            email: p.email,
            name: p.name,
            metadata: p.metadata,
            created: unix_now(),
        };
        let value = objects::customer(&customer);
        let event = Sim::event(state, "customer.created", value.clone(), None, key);
        state.customers.insert(customer.id.clone(), customer);
        Ok((value, vec![event]))
    })
}

async fn retrieve_customer(
    sim: web::Data<Sim>,
    req: HttpRequest,
    id: web::Path<String>,
) -> HttpResponse {
    retrieve(&sim, &req, "customer", &id, |state, id| {
        state.customers.get(id).map(objects::customer)
    })
}

// --- Checkout and the Billing Portal ---------------------------------------------------------

#[derive(Deserialize)]
struct LineItemParam {
    price: String,
    quantity: Option<u64>,
}

/// A subscription's items as given: exactly one licensed price (with its quantity) and any
/// number of metered prices (which carry no quantity, as Stripe requires).
fn split_items<'a>(
    state: &SimState,
    items: &'a [LineItemParam],
    param: &str,
) -> Result<(&'a LineItemParam, Vec<String>), ApiError> {
    let mut licensed = None;
    let mut metered = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let price = active_price(state, &item.price, &format!("{param}[{i}][price]"))?;
        if price.metered.is_some() {
            if item.quantity.is_some() {
                return Err(ApiError::invalid(
                    &format!("{param}[{i}][quantity]"),
                    "Quantity should not be specified where usage_type is `metered`. Remove quantity from `line_items[0]`.",
                ));
            }
            if metered.contains(&item.price) {
                return Err(ApiError::invalid(
                    &format!("{param}[{i}][price]"),
                    "The same price cannot be added twice.",
                ));
            }
            metered.push(item.price.clone());
        } else if licensed.replace(item).is_some() {
            return Err(ApiError::invalid(
                param,
                "The simulator's subscriptions have exactly one licensed item.",
            ));
        }
    }
    let licensed = licensed.ok_or_else(|| {
        ApiError::invalid(
            param,
            "Give exactly one licensed line item (a recurring price).",
        )
    })?;
    Ok((licensed, metered))
}

#[derive(Deserialize, Default)]
struct SubscriptionDataParam {
    trial_period_days: Option<u32>,
    #[serde(default)]
    metadata: HashMap<String, String>,
    trial_settings: Option<TrialSettingsParam>,
}

#[derive(Deserialize)]
struct TrialSettingsParam {
    end_behavior: TrialEndBehaviorParam,
}

#[derive(Deserialize)]
struct TrialEndBehaviorParam {
    missing_payment_method: String,
}

/// A listed value of `param`, as the `'static` the records keep; Stripe's error otherwise.
fn one_of(allowed: &[&'static str], given: &str, param: &str) -> Result<&'static str, ApiError> {
    allowed
        .iter()
        .find(|value| **value == given)
        .copied()
        .ok_or_else(|| {
            ApiError::invalid(
                param,
                format!("Invalid {param}: must be one of {}", allowed.join(", ")),
            )
        })
}

#[derive(Deserialize)]
struct CreateCheckoutSession {
    mode: String,
    customer: Option<String>,
    customer_email: Option<String>,
    client_reference_id: Option<String>,
    #[serde(default)]
    line_items: Vec<LineItemParam>,
    success_url: Option<String>,
    cancel_url: Option<String>,
    subscription_data: Option<SubscriptionDataParam>,
    payment_method_collection: Option<String>,
    #[serde(default)]
    metadata: HashMap<String, String>,
    allow_promotion_codes: Option<bool>,
}

async fn create_checkout_session(
    sim: web::Data<Sim>,
    req: HttpRequest,
    body: web::Bytes,
) -> HttpResponse {
    let base_url = sim.base_url.clone();
    post(
        &sim,
        &req,
        &body,
        move |state, p: CreateCheckoutSession, _key| {
            if p.mode != "subscription" {
                return Err(ApiError::invalid(
                    "mode",
                    "The simulator supports mode=subscription only.",
                ));
            }
            let (item, metered_prices) = split_items(state, &p.line_items, "line_items")?;
            let success_url = p.success_url.ok_or_else(|| {
                ApiError::invalid("success_url", "Missing required param: success_url.")
            })?;
            if let Some(customer) = &p.customer
                && !state.customers.contains_key(customer)
            {
                return Err(ApiError::missing("customer", customer));
            }
            let now = unix_now();
            let trial = p.subscription_data.unwrap_or_default();
            let payment_method_collection = match &p.payment_method_collection {
                Some(given) => one_of(
                    &["always", "if_required"],
                    given,
                    "payment_method_collection",
                )?,
                None => "always",
            };
            let missing_payment_method = match &trial.trial_settings {
                Some(settings) => one_of(
                    &MISSING_PAYMENT_METHOD,
                    &settings.end_behavior.missing_payment_method,
                    "subscription_data[trial_settings][end_behavior][missing_payment_method]",
                )?,
                None => "create_invoice",
            };
            let session = CheckoutSession {
                id: new_id("cs_test"),
                customer: p.customer,
                customer_email: p.customer_email,
                client_reference_id: p.client_reference_id,
                price: item.price.clone(),
                quantity: item.quantity.unwrap_or(1).max(1),
                metered_prices,
                success_url,
                cancel_url: p.cancel_url,
                status: SessionStatus::Open,
                subscription: None,
                invoice: None,
                trial_period_days: trial.trial_period_days,
                payment_method_collection,
                missing_payment_method,
                metadata: p.metadata,
                subscription_metadata: trial.metadata,
                created: now,
                expires_at: now + 24 * 3600,
                allow_promotion_codes: p.allow_promotion_codes.unwrap_or(false),
                promotion_code: None,
            };
            let value = objects::checkout_session(state, &session, &base_url);
            state.checkout_sessions.insert(session.id.clone(), session);
            Ok((value, Vec::new()))
        },
    )
}

async fn retrieve_checkout_session(
    sim: web::Data<Sim>,
    req: HttpRequest,
    id: web::Path<String>,
) -> HttpResponse {
    let base_url = sim.base_url.clone();
    retrieve(&sim, &req, "checkout.session", &id, |state, id| {
        state
            .checkout_sessions
            .get(id)
            .map(|s| objects::checkout_session(state, s, &base_url))
    })
}

#[derive(Deserialize)]
struct CreatePortalSession {
    customer: String,
    return_url: Option<String>,
}

async fn create_portal_session(
    sim: web::Data<Sim>,
    req: HttpRequest,
    body: web::Bytes,
) -> HttpResponse {
    let base_url = sim.base_url.clone();
    post(
        &sim,
        &req,
        &body,
        move |state, p: CreatePortalSession, key| {
            if !state.customers.contains_key(&p.customer) {
                return Err(ApiError::missing("customer", &p.customer));
            }
            let session = PortalSession {
                id: new_id("bps"),
                customer: p.customer,
                return_url: p.return_url,
                created: unix_now(),
            };
            let value = objects::portal_session(&session, &base_url);
            let event = Sim::event(
                state,
                "billing_portal.session.created",
                value.clone(),
                None,
                key,
            );
            state.portal_sessions.insert(session.id.clone(), session);
            Ok((value, vec![event]))
        },
    )
}

// --- subscriptions, invoices, payment intents, events ----------------------------------------

#[derive(Deserialize)]
struct CreateSubscription {
    customer: String,
    #[serde(default)]
    items: Vec<LineItemParam>,
    trial_period_days: Option<u32>,
    payment_behavior: Option<String>,
    #[serde(default)]
    metadata: HashMap<String, String>,
}

/// A subscription made through the API rather than Checkout. The simulator's customers have no
/// payment methods, so only what needs no payment now starts: a zero price, or a trial.
async fn create_subscription(
    sim: web::Data<Sim>,
    req: HttpRequest,
    body: web::Bytes,
) -> HttpResponse {
    post(&sim, &req, &body, |state, p: CreateSubscription, key| {
        if !state.customers.contains_key(&p.customer) {
            return Err(ApiError::missing("customer", &p.customer));
        }
        let behaviors = [
            "allow_incomplete",
            "default_incomplete",
            "error_if_incomplete",
            "pending_if_incomplete",
        ];
        if let Some(behavior) = &p.payment_behavior
            && !behaviors.contains(&behavior.as_str())
        {
            return Err(ApiError::invalid(
                "payment_behavior",
                format!("Invalid payment_behavior: {behavior}"),
            ));
        }
        let (item, metered_prices) = split_items(state, &p.items, "items")?;
        let price = active_price(state, &item.price, "items[0][price]")?;
        if price.unit_amount > 0 && p.trial_period_days.is_none() {
            return Err(ApiError {
                status: StatusCode::BAD_REQUEST,
                kind: "invalid_request_error",
                code: Some("resource_missing"),
                message: "This customer has no attached payment source or default payment method."
                    .into(),
                param: None,
            });
        }
        let start = crate::controls::NewSubscription {
            customer: p.customer,
            price: item.price.clone(),
            quantity: item.quantity.unwrap_or(1).max(1),
            metered_prices,
            trial_period_days: p.trial_period_days,
            metadata: p.metadata,
            missing_payment_method: "create_invoice",
        };
        Ok(crate::controls::start_subscription(state, start, key))
    })
}

async fn retrieve_subscription(
    sim: web::Data<Sim>,
    req: HttpRequest,
    id: web::Path<String>,
) -> HttpResponse {
    retrieve(&sim, &req, "subscription", &id, |state, id| {
        state
            .subscriptions
            .get(id)
            .map(|s| objects::subscription(state, s))
    })
}

#[derive(Deserialize)]
struct ItemParam {
    id: Option<String>,
    price: Option<String>,
    quantity: Option<u64>,
}

#[derive(Deserialize)]
struct CancellationDetailsParam {
    feedback: Option<String>,
    comment: Option<String>,
}

#[derive(Deserialize)]
struct UpdateSubscription {
    cancellation_details: Option<CancellationDetailsParam>,
    cancel_at_period_end: Option<bool>,
    items: Option<Vec<ItemParam>>,
    metadata: Option<HashMap<String, String>>,
    /// `create_prorations` (Stripe's default), `always_invoice` or `none`.
    proration_behavior: Option<String>,
    proration_date: Option<i64>,
    payment_behavior: Option<String>,
}

async fn update_subscription(
    sim: web::Data<Sim>,
    req: HttpRequest,
    id: web::Path<String>,
    body: web::Bytes,
) -> HttpResponse {
    post(&sim, &req, &body, |state, p: UpdateSubscription, key| {
        let sub = state
            .subscriptions
            .get(id.as_str())
            .cloned()
            .ok_or_else(|| ApiError::missing("subscription", &id))?;
        if sub.status == SubscriptionStatus::Canceled {
            return Err(ApiError::invalid(
                "id",
                "A canceled subscription can only update its cancellation_details and metadata.",
            ));
        }
        let mut updated = sub.clone();
        if let Some(details) = p.cancellation_details {
            let feedback = match details.feedback.as_deref() {
                None | Some("") => None,
                Some(given) => Some(one_of(
                    &CANCELLATION_FEEDBACK,
                    given,
                    "cancellation_details[feedback]",
                )?),
            };
            if details
                .comment
                .as_ref()
                .is_some_and(|c| c.chars().count() > 5000)
            {
                return Err(ApiError::invalid(
                    "cancellation_details[comment]",
                    "The comment must be at most 5000 characters.",
                ));
            }
            updated.cancellation.feedback = feedback;
            updated.cancellation.comment = details.comment.filter(|c| !c.is_empty());
        }
        if let (Some(_), Some(schedule)) = (p.cancel_at_period_end, &sub.schedule) {
            // Stripe's answer: a schedule decides how the subscription ends.
            return Err(ApiError::invalid(
                "cancel_at_period_end",
                format!(
                    "The subscription is managed by the subscription schedule `{schedule}`, and updating any cancelation behavior directly is not allowed. Please update the schedule instead."
                ),
            ));
        }
        if let Some(cancel) = p.cancel_at_period_end {
            updated.cancel_at_period_end = cancel;
            updated.canceled_at = cancel.then(unix_now);
        }
        if let Some(items) = p.items {
            let [item] = items.as_slice() else {
                return Err(ApiError::invalid(
                    "items",
                    "The simulator's subscriptions have exactly one item.",
                ));
            };
            if item
                .id
                .as_deref()
                .is_some_and(|item_id| item_id != sub.item_id)
            {
                return Err(ApiError::missing(
                    "subscription_item",
                    item.id.as_deref().unwrap_or_default(),
                ));
            }
            if let Some(price) = &item.price {
                let price = state
                    .prices
                    .get(price)
                    .ok_or_else(|| ApiError::missing("price", price))?;
                if !price.active {
                    return Err(ApiError::invalid(
                        "items[0][price]",
                        "The price is not active.",
                    ));
                }
                updated.price = price.id.clone();
            }
            match item.quantity {
                Some(0) => {
                    return Err(ApiError::invalid(
                        "items[0][quantity]",
                        "Quantity must be at least 1.",
                    ));
                }
                Some(quantity) => updated.quantity = quantity,
                None => {}
            }
        }
        if let Some(metadata) = p.metadata {
            updated.metadata.extend(metadata);
        }
        let behavior = p
            .proration_behavior
            .as_deref()
            .unwrap_or("create_prorations");
        if !["always_invoice", "create_prorations", "none"].contains(&behavior) {
            return Err(ApiError::invalid(
                "proration_behavior",
                format!("Invalid proration_behavior: {behavior}"),
            ));
        }
        if p.payment_behavior.as_deref().is_some_and(|b| {
            ![
                "allow_incomplete",
                "default_incomplete",
                "error_if_incomplete",
                "pending_if_incomplete",
            ]
            .contains(&b)
        }) {
            return Err(ApiError::invalid(
                "payment_behavior",
                "Invalid payment_behavior.",
            ));
        }
        // A new price or quantity is prorated from `proration_date` (now by default); a new
        // interval restarts the billing cycle and bills at once, as Stripe does.
        let mut events = Vec::new();
        if updated.price != sub.price || updated.quantity != sub.quantity {
            let at = p.proration_date.unwrap_or_else(unix_now);
            let change = crate::changes::change(
                state,
                &sub,
                (&updated.price, updated.quantity),
                at,
                behavior != "none",
            );
            if change.resets_cycle {
                updated.current_period_start = at;
                updated.current_period_end = change
                    .lines
                    .last()
                    .map_or(sub.current_period_end, |l| l.end);
            }
            if change.resets_cycle || behavior == "always_invoice" {
                let amount = change.due_now();
                let invoice = crate::controls::bill_amount(
                    state,
                    &updated,
                    "subscription_update",
                    true,
                    amount,
                    &mut events,
                );
                updated.latest_invoice = Some(invoice);
            }
        }
        let (value, event) = crate::controls::replace_subscription(state, &sub, updated, key);
        events.insert(0, event);
        Ok((value, events))
    })
}

/// `invoice_now` and `prorate` are accepted; the simulator makes no final invoice nor credit.
#[derive(Deserialize)]
#[allow(dead_code)]
struct CancelSubscription {
    invoice_now: Option<bool>,
    prorate: Option<bool>,
}

async fn cancel_subscription(
    sim: web::Data<Sim>,
    req: HttpRequest,
    id: web::Path<String>,
    body: web::Bytes,
) -> HttpResponse {
    post(&sim, &req, &body, |state, _: CancelSubscription, key| {
        let sub = state
            .subscriptions
            .get(id.as_str())
            .cloned()
            .ok_or_else(|| ApiError::missing("subscription", &id))?;
        if sub.status == SubscriptionStatus::Canceled {
            return Err(ApiError::invalid(
                "id",
                "This subscription is already canceled.",
            ));
        }
        let mut ended = sub;
        let now = unix_now();
        ended.status = SubscriptionStatus::Canceled;
        ended.canceled_at = Some(now);
        ended.ended_at = Some(now);
        ended.cancel_at_period_end = false;
        let value = objects::subscription(state, &ended);
        state.subscriptions.insert(ended.id.clone(), ended);
        let event = Sim::event(
            state,
            "customer.subscription.deleted",
            value.clone(),
            None,
            key,
        );
        // Stripe stops collecting a canceled subscription's invoices: no further attempts.
        let mut events = vec![event];
        events.extend(crate::controls::stop_collecting(state, &id));
        Ok((value, events))
    })
}

async fn retrieve_invoice(
    sim: web::Data<Sim>,
    req: HttpRequest,
    id: web::Path<String>,
) -> HttpResponse {
    retrieve(&sim, &req, "invoice", &id, |state, id| {
        state.invoices.get(id).map(|i| objects::invoice(state, i))
    })
}

async fn retrieve_payment_intent(
    sim: web::Data<Sim>,
    req: HttpRequest,
    id: web::Path<String>,
) -> HttpResponse {
    retrieve(&sim, &req, "payment_intent", &id, |state, id| {
        state.payment_intents.get(id).map(objects::payment_intent)
    })
}

async fn retrieve_event(
    sim: web::Data<Sim>,
    req: HttpRequest,
    id: web::Path<String>,
) -> HttpResponse {
    retrieve(&sim, &req, "event", &id, |state, id| {
        state.events.iter().find(|e| e.id == id).map(objects::event)
    })
}

async fn balance(req: HttpRequest) -> HttpResponse {
    if let Err(err) = authenticate(&req) {
        return error_response(&err);
    }
    respond(
        StatusCode::OK,
        &json!({ "object": "balance", "available": [{ "amount": 0, "currency": "usd", "source_types": { "card": 0 } }],
                 "pending": [{ "amount": 0, "currency": "usd", "source_types": { "card": 0 } }], "livemode": false }),
    )
}

#[cfg(test)]
mod tests {
    use super::mask_key;

    #[test]
    fn refused_keys_show_their_kind_and_last_three_characters() {
        assert_eq!(mask_key("sk_live_DUMMYDUMMYDUMMYxyz"), "sk_live_…xyz");
        assert_eq!(mask_key("rk_test_DUMMYDUMMYDUMMYabc"), "rk_test_…abc");
        assert_eq!(mask_key("sk_live_DUMMY"), "sk_live_…");
        assert_eq!(mask_key("abcdefghijklmnopqrstu"), "…stu");
        assert_eq!(mask_key("short"), "…");
        assert_eq!(mask_key(""), "…");
    }
}
