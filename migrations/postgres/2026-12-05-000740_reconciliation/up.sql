-- Objects to fetch again from Stripe (issue 15, point 11): a webhook handler that cannot tell
-- which of two same-second events is newer (Stripe's `created` has whole seconds) records the
-- object here, inside the ingest transaction; after the commit it is read from Stripe through
-- the gateway and the row deleted. Plain ids, as the `subscriptions` table keeps them.
CREATE TABLE stripe_refetches (
    stripe_object_id TEXT PRIMARY KEY NOT NULL,
    object_type TEXT NOT NULL,
    user_id BIGINT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    requested_at TIMESTAMP NOT NULL,
    attempts BIGINT NOT NULL DEFAULT 0
);
