-- What customers read on the pricing page, kept apart from the entitlement keys (`features`)
-- that internal services read: feature lines (one per line) and a "most popular" badge.
ALTER TABLE plans ADD COLUMN feature_lines TEXT NOT NULL DEFAULT '';
ALTER TABLE plans ADD COLUMN highlighted BOOLEAN NOT NULL DEFAULT FALSE;
-- An optional yearly price beside a monthly plan's price, as its own Stripe Price (same
-- Product). NULL when the plan is billed on one interval only.
ALTER TABLE plans ADD COLUMN yearly_amount BIGINT;
ALTER TABLE plans ADD COLUMN stripe_yearly_price_id TEXT;
CREATE UNIQUE INDEX plans_stripe_yearly_price_id ON plans (stripe_yearly_price_id);
