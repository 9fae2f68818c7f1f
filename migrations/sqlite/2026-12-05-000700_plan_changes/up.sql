-- Plan changes asked for in the product that take effect at the end of the period (a
-- downgrade): Stripe holds them as a subscription schedule (its next phase); this row is what
-- the account page shows and what the webhook marks applied when Stripe applies it.
CREATE TABLE plan_changes (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    user_id BIGINT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    stripe_subscription_id TEXT NOT NULL,
    stripe_schedule_id TEXT NOT NULL,
    to_plan_id BIGINT NOT NULL REFERENCES plans(id),
    to_price_id TEXT NOT NULL,
    to_quantity BIGINT NOT NULL,
    effective_at TIMESTAMP NOT NULL,
    -- scheduled, applied or canceled
    status TEXT NOT NULL CHECK (status IN ('scheduled', 'applied', 'canceled')),
    created_at TIMESTAMP NOT NULL,
    updated_at TIMESTAMP NOT NULL
);
CREATE INDEX plan_changes_subscription ON plan_changes (stripe_subscription_id, status);
CREATE INDEX plan_changes_user ON plan_changes (user_id, status);

-- The quantity (seats) of each subscription's item, as of Stripe's time (newer state wins).
CREATE TABLE subscription_quantities (
    stripe_subscription_id TEXT PRIMARY KEY NOT NULL,
    quantity BIGINT NOT NULL,
    stripe_updated_at TIMESTAMP NOT NULL
);

-- Per-seat plans: the customer chooses a quantity within [min_quantity, max_quantity].
CREATE TABLE plan_seats (
    plan_id BIGINT PRIMARY KEY NOT NULL REFERENCES plans(id) ON DELETE CASCADE,
    min_quantity BIGINT NOT NULL,
    max_quantity BIGINT NOT NULL
);
