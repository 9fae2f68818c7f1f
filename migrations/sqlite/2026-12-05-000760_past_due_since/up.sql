-- When each subscription last became past due (issue 15, point 7; attacker review, finding
-- 11): the grace falls back to this time when no failed invoice is recorded (an
-- `invoice.payment_failed` missed or not yet arrived), so a past-due subscription never keeps
-- its access forever. One row per subscription while it is past due; removed when it leaves.
CREATE TABLE subscription_past_due (
    stripe_subscription_id TEXT PRIMARY KEY NOT NULL,
    since TIMESTAMP NOT NULL
);
