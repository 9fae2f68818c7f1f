DROP INDEX plans_stripe_yearly_price_id;
ALTER TABLE plans DROP COLUMN stripe_yearly_price_id;
ALTER TABLE plans DROP COLUMN yearly_amount;
ALTER TABLE plans DROP COLUMN highlighted;
ALTER TABLE plans DROP COLUMN feature_lines;
