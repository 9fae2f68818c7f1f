DROP TABLE notifications;
DROP TABLE webhook_endpoints;
