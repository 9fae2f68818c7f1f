DROP TABLE plan_seats;
DROP TABLE subscription_quantities;
DROP TABLE plan_changes;
