DROP TABLE security_event_hours;
DROP INDEX security_events_ip_id;
DROP INDEX security_events_actor_id;
DROP INDEX security_events_kind_id;
