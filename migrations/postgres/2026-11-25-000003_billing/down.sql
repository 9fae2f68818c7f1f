DROP TABLE stripe_operations;
DROP TABLE subscriptions;
DROP TABLE billing_customers;
DROP TABLE plans;
