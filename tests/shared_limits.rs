//! N instances as one: with `REDIS_URL`, the sign-in budget, the per-account failure limit,
//! the service-token limits and the Stripe throttles live in Redis, so three instances behind a
//! load balancer allow each budget once in total and report the shared remaining count. Without
//! it each instance counts on its own (the control). An unreachable Redis follows `REDIS_FAIL`:
//! `open` limits in each instance's memory, `closed` answers 503.

use std::sync::Arc;
use std::time::Duration;

use tollgate::config::{AlertLimit, AlertRule, Config, RateLimit, RedisFail, RedisSettings};

use tollgate::service_tokens::Scope;

use crate::common::{
    Backend, PASSWORD, TestApp, captured_logs, redis_available, redis_settings, redis_url,
    stripe_event,
};
use crate::on_both_backends;

on_both_backends!(
    three_instances_sharing_redis_allow_the_sign_in_budget_once_in_total,
    three_instances_sharing_redis_allow_each_address_its_default_budget_once,
    without_redis_each_instance_has_a_budget_of_its_own,
    three_instances_sharing_redis_lock_an_account_after_its_failures_in_total,
    service_token_limits_are_shared_by_every_instance,
    three_instances_sharing_redis_count_their_5xx_rate_together,
    without_redis_each_instance_counts_its_own_5xx_rate,
);

/// Six submissions at once, then one a minute: nothing refills during a test.
const SIX: RateLimit = RateLimit {
    per_minute: 1,
    burst: 6,
};

/// Three instances on one database, sharing `redis` (when set), each adjusted by `adjust`.
async fn three(
    backend: Backend,
    redis: Option<RedisSettings>,
    adjust: impl Fn(&mut Config) + Clone,
) -> Vec<TestApp> {
    let configure = move |config: &mut Config| {
        config.redis.clone_from(&redis);
        adjust(config);
    };
    let first = TestApp::spawn_with(backend, configure.clone()).await;
    let second = TestApp::spawn_on(first.database_handle(), backend, configure.clone()).await;
    let third = TestApp::spawn_on(first.database_handle(), backend, configure).await;
    vec![first, second, third]
}

/// Sign-in submissions from one address, round robin over `apps`, each for an email of its
/// own (no account's failure limit gets in the way): the statuses and the remaining counts
/// the instances reported.
async fn sign_in_round_robin(apps: &[TestApp], attempts: usize) -> Vec<(u16, Option<u32>)> {
    let mut seen = Vec::new();
    for attempt in 0..attempts {
        let app = &apps[attempt % apps.len()];
        let res = app
            .browser()
            .login(&format!("nobody-{attempt}@example.com"), "a guess")
            .await;
        let remaining = res
            .headers()
            .get("x-ratelimit-remaining")
            .and_then(|v| v.to_str().ok()?.parse().ok());
        seen.push((res.status().as_u16(), remaining));
    }
    seen
}

async fn three_instances_sharing_redis_allow_the_sign_in_budget_once_in_total(backend: Backend) {
    if !redis_available() {
        return;
    }
    let redis = redis_settings(&redis_url(), RedisFail::Open);
    let prefix = redis.prefix.clone();
    let apps = three(backend, Some(redis), |c| c.rate_limits.sign_in = SIX).await;
    let seen = sign_in_round_robin(&apps, 12).await;
    let allowed = seen.iter().filter(|(status, _)| *status == 401).count();
    assert_eq!(
        allowed, 6,
        "the budget of six, once across three instances: {seen:?}"
    );
    assert!(
        seen[6..].iter().all(|(status, _)| *status == 429),
        "then every instance refuses: {seen:?}"
    );
    let remaining: Vec<_> = seen.iter().map(|(_, r)| r.unwrap()).collect();
    assert_eq!(
        remaining,
        [5, 4, 3, 2, 1, 0, 0, 0, 0, 0, 0, 0],
        "each instance reports what is left of the shared budget"
    );
    // Redis holds the counts, not who is counted: no address, no email in a key.
    let mut redis = redis::Client::open(redis_url())
        .unwrap()
        .get_connection()
        .unwrap();
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{prefix}:*"))
        .query(&mut redis)
        .unwrap();
    assert!(keys.iter().any(|k| k.contains(":rl:sign_in:")), "{keys:?}");
    assert!(
        keys.iter().all(|k| !k.contains("127.0.0.1")
            && !k.contains("example.com")
            && !k.contains("nobody")),
        "{keys:?}"
    );
}

async fn three_instances_sharing_redis_allow_each_address_its_default_budget_once(
    backend: Backend,
) {
    if !redis_available() {
        return;
    }
    let redis = redis_settings(&redis_url(), RedisFail::Open);
    let apps = three(backend, Some(redis), |c| c.rate_limits.default = SIX).await;
    let mut seen = Vec::new();
    for app in apps.iter().cycle().take(9) {
        let res = app.browser().get("/pricing").await;
        let remaining = res.headers().get("x-ratelimit-remaining").cloned();
        seen.push((res.status().as_u16(), remaining));
    }
    let statuses: Vec<u16> = seen.iter().map(|(s, _)| *s).collect();
    assert_eq!(
        statuses,
        [200, 200, 200, 200, 200, 200, 429, 429, 429],
        "{seen:?}"
    );
    assert_eq!(
        seen[5].1.as_ref().unwrap(),
        "0",
        "the last of the shared six"
    );
    // Refusals are audited once a minute per address and limiter across the instances too
    // (alone, each instance would audit its first one).
    let audited: i64 = apps[0]
        .events("rate_limited")
        .iter()
        .map(|row| row.count)
        .sum();
    assert_eq!(audited, 1, "three refusals on three instances, one audited");
}

/// The control: the same three instances without Redis allow the budget three times.
async fn without_redis_each_instance_has_a_budget_of_its_own(backend: Backend) {
    let apps = three(backend, None, |c| c.rate_limits.sign_in = SIX).await;
    let seen = sign_in_round_robin(&apps, 21).await;
    let allowed = seen.iter().filter(|(status, _)| *status == 401).count();
    assert_eq!(allowed, 18, "six per instance: {seen:?}");
}

async fn three_instances_sharing_redis_lock_an_account_after_its_failures_in_total(
    backend: Backend,
) {
    if !redis_available() {
        return;
    }
    let redis = redis_settings(&redis_url(), RedisFail::Open);
    let apps = three(backend, Some(redis), |c| {
        c.rate_limits.login_failures.per_account = 4;
    })
    .await;
    apps[0].signed_in_customer("target@example.com").await;
    for attempt in 0..4 {
        let res = apps[attempt % 3]
            .browser()
            .login("target@example.com", "a wrong guess")
            .await;
        assert_eq!(res.status(), 401, "failure {attempt} is counted");
    }
    for app in &apps {
        let res = app.browser().login("target@example.com", PASSWORD).await;
        assert_eq!(
            res.status(),
            429,
            "four failures in total lock the account on every instance, even for the right password"
        );
    }
}

async fn service_token_limits_are_shared_by_every_instance(backend: Backend) {
    if !redis_available() {
        return;
    }
    let redis = redis_settings(&redis_url(), RedisFail::Open);
    let apps = three(backend, Some(redis), |c| {
        c.rate_limits.lease = RateLimit {
            per_minute: 1,
            burst: 3,
        };
    })
    .await;
    let token = apps[0].service_token("runner", &[Scope::ByokLease]);
    let mut statuses = Vec::new();
    let body = serde_json::json!({ "user_id": 1, "provider": "openai" });
    for app in apps.iter().cycle().take(6) {
        let res = app.internal_post(LEASE, Some(&token), &body).await;
        statuses.push(res.status().as_u16());
    }
    let limited = statuses.iter().filter(|s| **s == 429).count();
    assert_eq!(
        limited, 3,
        "a burst of three across the instances, then 429: {statuses:?}"
    );
    assert!(statuses[..3].iter().all(|s| *s != 429), "{statuses:?}");
}

/// The BYOK lease route, relative to `/internal/v1`.
const LEASE: &str = "byok/lease";

mod unreachable {
    use super::*;

    /// Nothing listens on port 1.
    const NOWHERE: &str = "redis://127.0.0.1:1";

    #[actix_web::test]
    async fn fail_open_limits_each_instance_in_memory() {
        let redis = redis_settings(NOWHERE, RedisFail::Open);
        let prefix = redis.prefix.clone();
        let apps = three(Backend::Sqlite, Some(redis), |c| {
            c.rate_limits.sign_in = SIX
        })
        .await;
        let seen = sign_in_round_robin(&apps, 21).await;
        let allowed = seen.iter().filter(|(status, _)| *status == 401).count();
        assert_eq!(
            allowed, 18,
            "each instance's own budget stands in: {seen:?}"
        );
        let warnings = captured_logs()
            .lines()
            .filter(|line| line.contains("Redis is unreachable") && line.contains(&prefix))
            .count();
        assert_eq!(warnings, 3, "one warning per instance, not one per request");
        apps[0].wait_for_alerts("redis_unavailable", 1).await;
        actix_web::rt::time::sleep(std::time::Duration::from_millis(300)).await;
        assert_eq!(
            apps[0].alerts("redis_unavailable").len(),
            1,
            "one alert for the outage, however many instances saw it"
        );
        let ready = apps[0].browser().get("/readyz").await;
        assert_eq!(ready.status(), 200, "it serves, limiting in memory");
        let ready: serde_json::Value = ready.json().await.unwrap();
        assert_eq!(ready["redis"], "unreachable");
    }

    #[actix_web::test]
    async fn fail_closed_refuses_limited_requests_with_503() {
        let redis = redis_settings(NOWHERE, RedisFail::Closed);
        let app = TestApp::spawn_with(Backend::Sqlite, |c| c.redis = Some(redis)).await;
        let browser = app.browser();
        assert_eq!(
            browser.get("/login").await.status(),
            503,
            "a request cannot be counted against its address: refused"
        );
        let token = app.service_token("runner", &[Scope::UsageWrite]);
        let res = app
            .internal_post(LEASE, Some(&token), &serde_json::json!({}))
            .await;
        assert_eq!(res.status(), 503, "the service API is limited too");
        assert_eq!(
            browser.get("/healthz").await.status(),
            200,
            "the instance is alive: its liveness does not depend on Redis"
        );
        let ready = browser.get("/readyz").await;
        assert_eq!(ready.status(), 503, "but it is not ready to serve");
        let ready: serde_json::Value = ready.json().await.unwrap();
        assert_eq!(ready["redis"], "unreachable");
    }
}

/// A Redis of the test's own on a free side port, stopped and restarted at will.
struct SideRedis {
    port: u16,
    server: Option<std::process::Child>,
}

impl SideRedis {
    /// `None` when `redis-server` is not installed (a failure under REQUIRE_REDIS=1).
    fn start() -> Option<Self> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut redis = Self { port, server: None };
        redis.restart().then_some(redis)
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    fn restart(&mut self) -> bool {
        let server = std::process::Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .stdout(std::process::Stdio::null())
            .spawn();
        let server = match server {
            Ok(server) => server,
            Err(err) => {
                assert!(
                    std::env::var("REQUIRE_REDIS").as_deref() != Ok("1"),
                    "REQUIRE_REDIS=1 but redis-server cannot be started: {err}"
                );
                eprintln!("redis-server cannot be started ({err}): skipped");
                return false;
            }
        };
        self.server = Some(server);
        let address = format!("127.0.0.1:{}", self.port);
        for _ in 0..100 {
            if crate::common::redis_answers(&address) {
                return true;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        panic!("redis-server did not answer on {address}");
    }

    fn stop(&mut self) {
        if let Some(mut server) = self.server.take() {
            let _ = server.kill();
            let _ = server.wait();
        }
    }
}

impl Drop for SideRedis {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Redis goes away and comes back: while it is away, `REDIS_FAIL=closed` refuses limited
/// requests with 503 (one warning), and once it answers again the instance counts in it again
/// by itself (its next connection attempt, `RETRY_INTERVAL` later).
#[actix_web::test]
async fn limits_return_to_redis_by_themselves_when_it_is_back() {
    let Some(mut redis) = SideRedis::start() else {
        return;
    };
    let settings = redis_settings(&redis.url(), RedisFail::Closed);
    let prefix = settings.prefix.clone();
    let app = TestApp::spawn_with(Backend::Sqlite, |c| {
        c.redis = Some(settings);
        c.rate_limits.sign_in = SIX;
    })
    .await;
    let apps = std::slice::from_ref(&app);
    let seen = sign_in_round_robin(apps, 2).await;
    assert_eq!(seen, [(401, Some(5)), (401, Some(4))], "counted in Redis");

    redis.stop();
    for _ in 0..3 {
        let res = app.browser().get("/login").await;
        assert_eq!(res.status(), 503, "Redis is gone and REDIS_FAIL=closed");
    }
    let lines = |what: &str| {
        captured_logs()
            .lines()
            .filter(|line| line.contains(what) && line.contains(&prefix))
            .count()
    };
    assert_eq!(
        lines("Redis is unreachable"),
        1,
        "one warning for the outage"
    );
    let alerts = app.wait_for_alerts("redis_unavailable", 1).await;
    assert_eq!(alerts.len(), 1, "and one alert");
    assert_eq!(alerts[0].severity, "CRITICAL");

    // A new, empty Redis on the same port: the budget starts afresh there.
    assert!(redis.restart());
    actix_web::rt::time::sleep(tollgate::limits::shared::RETRY_INTERVAL).await;
    // The connection may take another try or two to be made again.
    for _ in 0..150 {
        if app.browser().get("/readyz").await.status() == 200 {
            break;
        }
        actix_web::rt::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let seen = sign_in_round_robin(apps, 1).await;
    assert_eq!(seen, [(401, Some(5))], "counted in the new Redis");
    assert_eq!(lines("Redis is reachable again"), 1, "and it says so once");
}

/// Instances whose webhook writer fails for some events (their deliveries are answered 500),
/// with a 5xx rule of 50 % over at least 4 requests.
async fn three_failing_sometimes(backend: Backend, redis: Option<RedisSettings>) -> Vec<TestApp> {
    three(backend, redis, |config| {
        config.alerts.set_limit(
            AlertRule::ServerErrors,
            AlertLimit {
                threshold: 50,
                window_secs: 300,
            },
        );
        config.alerts.server_errors_min_requests = 4;
        config.faults.webhook_batch = Some(Arc::new(|ids: &[&str]| {
            assert!(
                !ids.iter().any(|id| id.contains("Boom")),
                "injected failure"
            );
        }));
    })
    .await
}

/// One delivery that succeeds and one that fails (500) on `app`.
async fn one_fine_one_failing(app: &TestApp, n: usize) {
    for (id, status) in [
        (format!("evt_1Fine{n}"), 200),
        (format!("evt_1Boom{n}"), 500),
    ] {
        let res = app.post_webhook(&stripe_event("payout.created", &id)).await;
        assert_eq!(res.status(), status, "{id}");
    }
}

/// Two requests, one of them a 5xx, on each of two instances: under the minimum of four on
/// either, but 2 of 4 (50 %) on both together, which raise one alert; a third instance's 5xx
/// then raise no second one.
async fn three_instances_sharing_redis_count_their_5xx_rate_together(backend: Backend) {
    if !redis_available() {
        return;
    }
    let redis = redis_settings(&redis_url(), RedisFail::Open);
    let prefix = redis.prefix.clone();
    let apps = three_failing_sometimes(backend, Some(redis)).await;
    one_fine_one_failing(&apps[0], 0).await;
    actix_web::rt::time::sleep(Duration::from_millis(1500)).await;
    assert!(
        apps[0].alerts("server_errors").is_empty(),
        "1 failure in 2 requests: under the minimum of 4"
    );
    one_fine_one_failing(&apps[1], 1).await;
    let raised = apps[0].wait_for_alerts("server_errors", 1).await;
    assert_eq!(raised.len(), 1, "2 of 4 on two instances is 50 %");
    let details: serde_json::Value = serde_json::from_str(&raised[0].details).unwrap();
    assert_eq!(
        (&details["count"], &details["requests"]),
        (&serde_json::json!(2), &serde_json::json!(4))
    );
    one_fine_one_failing(&apps[2], 2).await;
    // Once the third instance's counts are in Redis, and it has had its chance to raise.
    for _ in 0..300 {
        if shared_responses(&prefix) == (6, 3) {
            break;
        }
        actix_web::rt::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(shared_responses(&prefix), (6, 3));
    actix_web::rt::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(apps[0].alerts("server_errors").len(), 1, "once per window");
}

/// The (requests, 5xx) every instance under `prefix` has added to Redis's buckets.
fn shared_responses(prefix: &str) -> (i64, i64) {
    let mut redis = redis::Client::open(redis_url())
        .unwrap()
        .get_connection()
        .unwrap();
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{prefix}:5xx:*"))
        .query(&mut redis)
        .unwrap();
    keys.iter().fold((0, 0), |(requests, errors), key| {
        let (r, e): (Option<i64>, Option<i64>) = redis::cmd("HMGET")
            .arg(key)
            .arg("r")
            .arg("e")
            .query(&mut redis)
            .unwrap();
        (requests + r.unwrap_or(0), errors + e.unwrap_or(0))
    })
}

/// The control: without Redis the same requests raise nothing, each instance seeing 2.
async fn without_redis_each_instance_counts_its_own_5xx_rate(backend: Backend) {
    let apps = three_failing_sometimes(backend, None).await;
    one_fine_one_failing(&apps[0], 0).await;
    one_fine_one_failing(&apps[1], 1).await;
    actix_web::rt::time::sleep(Duration::from_millis(1500)).await;
    assert!(apps[0].alerts("server_errors").is_empty());
}
