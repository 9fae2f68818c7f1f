DROP TABLE alert_state;
DROP TABLE webhook_events;
