//! The one way Tollgate talks to Stripe: `async-stripe` with timeouts, an idempotency key on
//! every write (derived from a stored operation), bounded retries on network failures, and a
//! per-user, per-operation throttle.

use std::sync::Arc;
use std::time::Duration;

use stripe::{Client, ClientBuilder, IdempotencyKey, RequestStrategy, StripeError, StripeRequest};

use crate::accounts::UserId;
use crate::config::{StripeSettings, StripeThrottle};
use crate::limits::{KeyedLimiter, Limited, SharedLimits, Sweep};
use crate::metrics::Metrics;

/// Why a call to Stripe did not produce a result.
#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    #[error("billing is not configured (STRIPE_SECRET_KEY is not set)")]
    NotConfigured,
    #[error("too many {class} calls to Stripe for this user; retry in {retry_after}s")]
    Throttled {
        class: &'static str,
        retry_after: u64,
    },
    #[error("Stripe refused the request (HTTP {status}): {message}")]
    Refused { status: u16, message: String },
    #[error("Stripe could not be reached: {0}")]
    Unavailable(String),
}

impl From<StripeError> for GatewayError {
    fn from(err: StripeError) -> Self {
        match err {
            StripeError::Stripe(error, status) => Self::Refused {
                status,
                message: error.message.unwrap_or_else(|| "no message".into()),
            },
            other => Self::Unavailable(other.to_string()),
        }
    }
}

/// Which limit a call counts against (seed 004's classes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum OperationClass {
    Customer,
    Subscription,
    PaymentIntent,
    Default,
    /// Tollgate's own background work on no customer's behalf (the usage sender forwarding
    /// stored usage): not throttled per user — a customer's heavy usage must never hold back
    /// its own billing — and bounded by the sender's batch size and interval instead.
    System,
}

impl OperationClass {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Customer => "customer",
            Self::Subscription => "subscription",
            Self::PaymentIntent => "payment_intent",
            Self::Default => "default",
            Self::System => "system",
        }
    }
}

struct Throttle {
    customer: KeyedLimiter<UserId>,
    subscription: KeyedLimiter<UserId>,
    payment_intent: KeyedLimiter<UserId>,
    default: KeyedLimiter<UserId>,
}

impl Throttle {
    fn new(limits: StripeThrottle) -> Self {
        let per_minute = |n: u32| {
            KeyedLimiter::new(crate::config::RateLimit {
                per_minute: n,
                burst: n,
            })
        };
        Self {
            customer: per_minute(limits.customer_per_minute),
            subscription: per_minute(limits.subscription_per_minute),
            payment_intent: per_minute(limits.payment_intent_per_minute),
            default: per_minute(limits.default_per_minute),
        }
    }

    async fn check(&self, class: OperationClass, user: UserId) -> Result<(), GatewayError> {
        let limiter = match class {
            OperationClass::Customer => &self.customer,
            OperationClass::Subscription => &self.subscription,
            OperationClass::PaymentIntent => &self.payment_intent,
            OperationClass::Default => &self.default,
            OperationClass::System => return Ok(()),
        };
        limiter.check(&user).await.map_err(|limited| match limited {
            Limited::Wait(retry_after) => GatewayError::Throttled {
                class: class.as_str(),
                retry_after,
            },
            // Shared in Redis, which cannot be reached, with REDIS_FAIL=closed.
            Limited::Unavailable => {
                GatewayError::Unavailable("the shared Stripe throttle cannot be reached".to_owned())
            }
        })
    }
}

impl Throttle {
    /// The same limits kept in Redis, shared by every instance.
    fn shared(self, shared: &Arc<SharedLimits>) -> Self {
        let shared = Some(shared);
        Self {
            customer: self.customer.shared(shared, "stripe_customer"),
            subscription: self.subscription.shared(shared, "stripe_subscription"),
            payment_intent: self.payment_intent.shared(shared, "stripe_payment_intent"),
            default: self.default.shared(shared, "stripe_default"),
        }
    }

    fn limiters(&self) -> [&KeyedLimiter<UserId>; 4] {
        [
            &self.customer,
            &self.subscription,
            &self.payment_intent,
            &self.default,
        ]
    }
}

const TIMEOUT: Duration = Duration::from_secs(20);
const ATTEMPTS: u32 = 3;

pub struct Gateway {
    client: Option<Client>,
    throttle: Throttle,
    metrics: Metrics,
}

/// The per-user throttles: users who stopped calling Stripe are forgotten.
impl Sweep for Gateway {
    fn sweep(&self) {
        self.throttle.limiters().iter().for_each(|l| l.sweep());
    }

    fn tracked_keys(&self) -> usize {
        self.throttle
            .limiters()
            .iter()
            .map(|l| l.tracked_keys())
            .sum()
    }
}

impl Gateway {
    pub fn new(settings: &StripeSettings) -> Self {
        let client = settings.secret_key.as_ref().and_then(|key| {
            ClientBuilder::new(key.expose())
                // async-stripe appends `v1/…` to the base, which must end with a slash.
                .url(format!("{}/", settings.api_base))
                .timeout(TIMEOUT)
                .request_strategy(RequestStrategy::Once)
                .build()
                .map_err(|err| tracing::error!(error = %err, "could not build the Stripe client"))
                .ok()
        });
        Self {
            client,
            throttle: Throttle::new(settings.throttle),
            metrics: Metrics::default(),
        }
    }

    /// The same gateway, its per-user throttles shared by every instance through Redis when
    /// `shared` is set.
    pub fn with_shared_throttle(mut self, shared: Option<&Arc<SharedLimits>>) -> Self {
        if let Some(shared) = shared {
            self.throttle = self.throttle.shared(shared);
        }
        self
    }

    /// The same gateway, counting its calls and throttle refusals into `metrics`.
    pub fn with_metrics(mut self, metrics: Metrics) -> Self {
        self.metrics = metrics;
        self
    }

    pub fn configured(&self) -> bool {
        self.client.is_some()
    }

    /// Sends a request built by `make` (rebuilt for each attempt), counted against `user`'s
    /// limit for `class`. Writes carry `key`; they are retried on network failures with the same
    /// key, so Stripe applies them once. Reads pass `None` and are retried the same way.
    pub async fn call<R>(
        &self,
        class: OperationClass,
        user: UserId,
        key: Option<&str>,
        make: impl Fn() -> R,
    ) -> Result<R::Output, GatewayError>
    where
        R: StripeRequest,
        R::Output: miniserde::Deserialize,
    {
        let client = self.client.as_ref().ok_or(GatewayError::NotConfigured)?;
        if let Err(refused) = self.throttle.check(class, user).await {
            if matches!(refused, GatewayError::Throttled { .. }) {
                self.metrics.stripe_throttled(class.as_str());
            }
            return Err(refused);
        }
        let operation = crate::metrics::stripe_operation(std::any::type_name::<R>());
        let key = key
            .map(|k| {
                IdempotencyKey::new(k).map_err(|err| GatewayError::Unavailable(err.to_string()))
            })
            .transpose()?;
        let mut attempt = 0;
        loop {
            attempt += 1;
            let strategy = key
                .clone()
                .map_or(RequestStrategy::Once, RequestStrategy::Idempotent);
            let started = std::time::Instant::now();
            let sent = make()
                .customize()
                .request_strategy(strategy)
                .send(client)
                .await;
            let status = match &sent {
                Ok(_) => "200".to_owned(),
                Err(StripeError::Stripe(_, status)) => status.to_string(),
                Err(_) => "unavailable".to_owned(),
            };
            self.metrics
                .stripe_request(&operation, &status, started.elapsed());
            match sent {
                Ok(output) => return Ok(output),
                Err(StripeError::ClientError(_) | StripeError::Timeout) if attempt < ATTEMPTS => {
                    actix_web::rt::time::sleep(Duration::from_millis(200 * u64::from(attempt)))
                        .await;
                }
                Err(err) => return Err(err.into()),
            }
        }
    }
}

/// A `GET` of one of Stripe's list endpoints (`path` after `/v1`, e.g. `/customers`), read as plain JSON: for what must be kept as
/// Stripe sent it (an event's payload is stored and applied as a delivered one is) and for
/// the pages reconciliation walks. `query` holds Stripe's parameter names (`created[gte]`,
/// `starting_after`, …) with URL-safe values (ids, numbers, statuses).
#[derive(Debug, Clone)]
pub struct ListJson {
    pub path: &'static str,
    pub query: Vec<(&'static str, String)>,
}

impl StripeRequest for ListJson {
    type Output = miniserde::json::Value;

    fn build(&self) -> stripe_client_core::RequestBuilder {
        let query: Vec<String> = self
            .query
            .iter()
            .map(|(name, value)| {
                let value: String = value
                    .bytes()
                    .map(|b| match b {
                        b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'_' | b'-' | b'.' => {
                            char::from(b).to_string()
                        }
                        other => format!("%{other:02X}"),
                    })
                    .collect();
                format!("{}={value}", name.replace('[', "%5B").replace(']', "%5D"))
            })
            .collect();
        let mut builder = stripe_client_core::RequestBuilder::new(
            stripe_client_core::StripeMethod::Get,
            self.path,
        );
        builder.query = (!query.is_empty()).then(|| query.join("&"));
        builder
    }
}

/// A page of a list endpoint: its objects (as JSON) and whether more follow.
pub struct ListPage {
    pub data: Vec<serde_json::Value>,
    pub has_more: bool,
}

impl ListPage {
    /// Reads Stripe's list object.
    pub fn read(value: &miniserde::json::Value) -> Result<Self, GatewayError> {
        let text = miniserde::json::to_string(value);
        let json: serde_json::Value = serde_json::from_str(&text)
            .map_err(|err| GatewayError::Unavailable(format!("not JSON: {err}")))?;
        let data = json
            .get("data")
            .and_then(serde_json::Value::as_array)
            .cloned()
            .ok_or_else(|| GatewayError::Unavailable("not a list object".into()))?;
        Ok(Self {
            data,
            has_more: json.get("has_more").and_then(serde_json::Value::as_bool) == Some(true),
        })
    }
}
