DROP TABLE subscription_past_due;
