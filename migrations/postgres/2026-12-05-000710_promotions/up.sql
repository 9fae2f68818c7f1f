-- Coupons created by admins in the console, synced to Stripe. Exactly one of percent_off
-- (whole percent, 1-100) and amount_off (minor units, in currency) is set. `operation_id` is
-- the console form's: a form submitted twice creates one coupon.
CREATE TABLE coupons (
    id BIGSERIAL PRIMARY KEY,
    operation_id TEXT NOT NULL UNIQUE,
    stripe_coupon_id TEXT NOT NULL UNIQUE,
    name TEXT NOT NULL,
    percent_off BIGINT,
    amount_off BIGINT,
    currency TEXT,
    duration TEXT NOT NULL CHECK (duration IN ('once', 'repeating', 'forever')),
    duration_in_months BIGINT,
    redeem_by TIMESTAMP,
    max_redemptions BIGINT,
    created_at TIMESTAMP NOT NULL
);

-- The customer-facing codes of a coupon (stored upper-case; Stripe matches codes without
-- regard to case).
CREATE TABLE promotion_codes (
    id BIGSERIAL PRIMARY KEY,
    operation_id TEXT NOT NULL UNIQUE,
    coupon_id BIGINT NOT NULL REFERENCES coupons (id) ON DELETE CASCADE,
    code TEXT NOT NULL UNIQUE,
    stripe_promotion_code_id TEXT NOT NULL UNIQUE,
    expires_at TIMESTAMP,
    max_redemptions BIGINT,
    active BOOLEAN NOT NULL,
    created_at TIMESTAMP NOT NULL,
    updated_at TIMESTAMP NOT NULL
);

-- The discount on each subscription, from customer.discount.* events: `removed` once Stripe
-- deleted it (terminal for that discount id). `stripe_updated_at` is the newest event applied:
-- an older event never overwrites it.
CREATE TABLE subscription_discounts (
    id BIGSERIAL PRIMARY KEY,
    user_id BIGINT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    stripe_subscription_id TEXT NOT NULL UNIQUE,
    stripe_discount_id TEXT NOT NULL,
    stripe_coupon_id TEXT,
    stripe_promotion_code_id TEXT,
    starts_at TIMESTAMP,
    ends_at TIMESTAMP,
    removed BOOLEAN NOT NULL,
    stripe_updated_at TIMESTAMP NOT NULL,
    updated_at TIMESTAMP NOT NULL
);
