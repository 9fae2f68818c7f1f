-- Usage-based billing (issue 16). Amounts are minor units of the plan's currency; quantities are
-- whole units of the feature's unit (tokens, runs, seat-hours).

-- A metered feature: one Stripe Billing Meter (its `event_name`), shared by every plan that
-- prices the feature.
CREATE TABLE usage_meters (
    feature TEXT PRIMARY KEY NOT NULL,
    unit_name TEXT NOT NULL,
    event_name TEXT NOT NULL UNIQUE,
    stripe_meter_id TEXT,
    created_at TIMESTAMP NOT NULL,
    updated_at TIMESTAMP NOT NULL
);

-- A plan's metered component: `included` units per period, then `package_amount` per
-- `package_size` units above it (a metered Stripe Price on the feature's meter). `quota` is
-- the hard limit per period that reservations respect (NULL: no limit); `fail_open` says what a
-- reservation answers when Tollgate cannot decide.
CREATE TABLE plan_meters (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    plan_id BIGINT NOT NULL REFERENCES plans (id) ON DELETE CASCADE,
    feature TEXT NOT NULL REFERENCES usage_meters (feature),
    included BIGINT NOT NULL,
    package_size BIGINT NOT NULL,
    package_amount BIGINT NOT NULL,
    quota BIGINT,
    fail_open BOOLEAN NOT NULL,
    stripe_price_id TEXT,
    created_at TIMESTAMP NOT NULL,
    updated_at TIMESTAMP NOT NULL,
    UNIQUE (plan_id, feature)
);

-- Usage as services reported it, stored before anything else happens to it. A retried report
-- carries the same idempotency key and is counted once. BYOK usage (made with the customer's
-- own key) is kept for the customer to see, never billed and never counted against quotas.
CREATE TABLE usage_records (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    user_id BIGINT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    feature TEXT NOT NULL,
    quantity BIGINT NOT NULL,
    idempotency_key TEXT NOT NULL UNIQUE,
    occurred_at TIMESTAMP NOT NULL,
    byok BOOLEAN NOT NULL,
    reservation_id TEXT,
    service TEXT NOT NULL,
    forwarded_at TIMESTAMP,
    created_at TIMESTAMP NOT NULL
);
CREATE INDEX usage_records_user_time ON usage_records (user_id, occurred_at);

-- Billable records still to forward to Stripe's meter events API (deleted once Stripe took
-- them; the event's identifier is the record's, so a resend after a crash counts once).
CREATE TABLE usage_outbox (
    usage_record_id BIGINT PRIMARY KEY NOT NULL REFERENCES usage_records (id) ON DELETE CASCADE,
    attempts BIGINT NOT NULL DEFAULT 0,
    next_attempt_at TIMESTAMP NOT NULL,
    last_error TEXT
);
CREATE INDEX usage_outbox_due ON usage_outbox (next_attempt_at);

-- Platform usage per user, feature and billing period (keyed by the period's end): what was
-- used and what live reservations hold. One row, updated in place, so a reservation is one
-- conditional UPDATE.
CREATE TABLE usage_counters (
    user_id BIGINT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    feature TEXT NOT NULL,
    period_end TIMESTAMP NOT NULL,
    used BIGINT NOT NULL DEFAULT 0,
    reserved BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (user_id, feature, period_end)
);

-- Quota held for a call in flight: `held` until committed, released or expired.
CREATE TABLE usage_reservations (
    id TEXT PRIMARY KEY NOT NULL,
    user_id BIGINT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    feature TEXT NOT NULL,
    quantity BIGINT NOT NULL,
    period_end TIMESTAMP NOT NULL,
    state TEXT NOT NULL,
    expires_at TIMESTAMP NOT NULL,
    committed_quantity BIGINT,
    service TEXT NOT NULL,
    created_at TIMESTAMP NOT NULL,
    updated_at TIMESTAMP NOT NULL
);
CREATE INDEX usage_reservations_held ON usage_reservations (state, expires_at);
CREATE INDEX usage_reservations_user ON usage_reservations (user_id, feature, state);

-- A customer's own spend alert and hard cap on usage charges per billing period.
CREATE TABLE usage_spend_limits (
    user_id BIGINT PRIMARY KEY NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    alert_amount BIGINT,
    cap_amount BIGINT,
    updated_at TIMESTAMP NOT NULL
);

-- An admin's hard cap on usage charges per period, for every customer of a plan.
CREATE TABLE plan_spend_caps (
    plan_id BIGINT PRIMARY KEY NOT NULL REFERENCES plans (id) ON DELETE CASCADE,
    cap_amount BIGINT NOT NULL,
    updated_at TIMESTAMP NOT NULL
);

-- Spend-alert thresholds (80, 100 %) already announced, once per user and period.
CREATE TABLE usage_thresholds_sent (
    user_id BIGINT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    period_end TIMESTAMP NOT NULL,
    percent BIGINT NOT NULL,
    sent_at TIMESTAMP NOT NULL,
    PRIMARY KEY (user_id, period_end, percent)
);
