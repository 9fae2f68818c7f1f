-- Stripe's invoices, kept by invoice.* webhooks (an older event never overwrites newer state).
CREATE TABLE invoices (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    user_id BIGINT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    stripe_invoice_id TEXT NOT NULL UNIQUE,
    stripe_subscription_id TEXT,
    number TEXT,
    status TEXT NOT NULL,
    amount_due BIGINT NOT NULL,
    amount_paid BIGINT NOT NULL,
    amount_remaining BIGINT NOT NULL,
    currency TEXT NOT NULL,
    stripe_created TIMESTAMP NOT NULL,
    period_start TIMESTAMP,
    period_end TIMESTAMP,
    hosted_invoice_url TEXT,
    invoice_pdf TEXT,
    -- When its first payment attempt failed, and when the past-due grace that started then ends
    -- (the plan's grace days, decided when the payment failed).
    payment_failed_at TIMESTAMP,
    grace_ends_at TIMESTAMP,
    stripe_updated_at TIMESTAMP NOT NULL,
    created_at TIMESTAMP NOT NULL,
    updated_at TIMESTAMP NOT NULL
);
-- The account page lists by user, newest first; every signed-in page asks for an open failed one.
CREATE INDEX invoices_user_created ON invoices (user_id, stripe_created);
CREATE INDEX invoices_user_status ON invoices (user_id, status);
CREATE INDEX invoices_subscription ON invoices (stripe_subscription_id);

-- A plan's own past-due grace (days); without a row the PAST_DUE_GRACE_DAYS default applies.
CREATE TABLE plan_past_due_grace (
    plan_id BIGINT PRIMARY KEY NOT NULL REFERENCES plans (id) ON DELETE CASCADE,
    days BIGINT NOT NULL
);
