-- One order as the API shows it (with its service's name, type, refill and cancel terms): the
-- read queries select from it; the locking read stays on the tables (FOR UPDATE OF orders).
CREATE VIEW order_details AS
SELECT o.id, o.user_id, o.service_id, s.name AS service_name, s.type AS service_type, o.status, o.link,
       o.quantity, o.runs, o.interval_minutes, o.upstream_params, o.billable, o.price_micros,
       o.charged_micros, o.released_micros, o.provider_id, o.upstream_service_id, o.upstream_order_id,
       o.attempt, o.start_count, o.remains, o.source, o.status_note, o.create_time, o.update_time,
       o.cancel_state, o.cancel_message, o.finish_time, s.refill AS service_refill, s.refill_days,
       s.cancel AS service_cancel, o.pinned_provider
FROM orders o JOIN services s ON s.id = o.service_id;
