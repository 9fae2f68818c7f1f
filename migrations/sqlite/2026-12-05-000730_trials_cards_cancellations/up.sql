-- A plan's trial taken without a card (Checkout collects a payment method only if required).
CREATE TABLE plan_trial_options (
    plan_id BIGINT PRIMARY KEY NOT NULL REFERENCES plans (id) ON DELETE CASCADE,
    without_card BOOLEAN NOT NULL DEFAULT FALSE,
    updated_at TIMESTAMP NOT NULL
);

-- The card on file, as Stripe shows it (brand, last 4, expiry), sealed with AAD bound to the
-- user; `stripe_updated_at` is the Stripe time of the event it is as of (older events lose).
-- A detached card is kept as `removed` with the detach's time, so that an older event arriving
-- late cannot bring it back.
CREATE TABLE payment_cards (
    user_id BIGINT PRIMARY KEY NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    card_sealed BLOB NOT NULL,
    key_id TEXT NOT NULL,
    stripe_updated_at TIMESTAMP NOT NULL,
    updated_at TIMESTAMP NOT NULL,
    removed BOOLEAN NOT NULL DEFAULT FALSE
);
CREATE INDEX payment_cards_key_id ON payment_cards (key_id);

-- Why customers cancelled (Stripe's cancellation_details feedback, and their comment).
CREATE TABLE cancellation_feedback (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    user_id BIGINT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    stripe_subscription_id TEXT NOT NULL,
    feedback TEXT,
    comment TEXT,
    operation_key TEXT NOT NULL UNIQUE,
    created_at TIMESTAMP NOT NULL
);
CREATE INDEX cancellation_feedback_created_at ON cancellation_feedback (created_at);
