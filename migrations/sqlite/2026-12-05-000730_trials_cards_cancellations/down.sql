DROP TABLE cancellation_feedback;
DROP TABLE payment_cards;
DROP TABLE plan_trial_options;
