-- Plans, synced to Stripe Products and Prices.
CREATE TABLE plans (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    slug TEXT NOT NULL UNIQUE,
    name TEXT NOT NULL,
    description TEXT NOT NULL DEFAULT '',
    amount BIGINT NOT NULL,
    currency TEXT NOT NULL,
    billing_interval TEXT NOT NULL CHECK (billing_interval IN ('month', 'year')),
    trial_days BIGINT NOT NULL DEFAULT 0,
    features TEXT NOT NULL DEFAULT '',
    active BOOLEAN NOT NULL DEFAULT FALSE,
    stripe_product_id TEXT UNIQUE,
    stripe_price_id TEXT UNIQUE,
    created_at TIMESTAMP NOT NULL,
    updated_at TIMESTAMP NOT NULL
);

-- A user's Stripe customer: the id sealed (AAD-bound to the user) with an HMAC blind index.
CREATE TABLE billing_customers (
    user_id BIGINT PRIMARY KEY NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    stripe_customer_sealed BLOB NOT NULL,
    key_id TEXT NOT NULL,
    stripe_customer_index TEXT NOT NULL UNIQUE,
    stripe_customer_masked TEXT NOT NULL,
    created_at TIMESTAMP NOT NULL
);
CREATE INDEX billing_customers_key_id ON billing_customers (key_id);

CREATE TABLE subscriptions (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    user_id BIGINT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    stripe_subscription_id TEXT NOT NULL UNIQUE,
    plan_id BIGINT REFERENCES plans (id),
    stripe_price_id TEXT NOT NULL,
    status TEXT NOT NULL,
    current_period_end TIMESTAMP,
    cancel_at_period_end BOOLEAN NOT NULL DEFAULT FALSE,
    trial_end TIMESTAMP,
    stripe_updated_at TIMESTAMP NOT NULL,
    created_at TIMESTAMP NOT NULL,
    updated_at TIMESTAMP NOT NULL
);
CREATE INDEX subscriptions_user_id ON subscriptions (user_id);

-- Every Stripe write is one operation with a stored id: retries and double submissions reuse its
-- idempotency key, so Stripe creates nothing twice.
CREATE TABLE stripe_operations (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    operation_key TEXT NOT NULL UNIQUE,
    user_id BIGINT REFERENCES users (id) ON DELETE CASCADE,
    kind TEXT NOT NULL,
    created_at TIMESTAMP NOT NULL
);
