DROP TABLE stripe_refetches;
