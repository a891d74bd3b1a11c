-- An order keeps the type its service had when it was placed: how its provider's words are read
-- (a subscription's Active, Paused, Expired) and the units its money is split by (max x posts for a
-- subscription, one for a package) are the order's, not whatever staff or a sync made the service
-- since. Filled here for the orders still open (a few, in a panel of years: finished ones are not
-- rewritten, which would rewrite the whole table in this transaction); NULL reads as the service's
-- type, which is all a finished order's type is still used for (the units shown as its remains).
ALTER TABLE orders ADD COLUMN service_type text;
UPDATE orders o SET service_type = s.type FROM services s
WHERE s.id = o.service_id AND o.status NOT IN ('completed', 'partial', 'canceled', 'failed', 'expired');

CREATE OR REPLACE VIEW order_details AS
SELECT o.id, o.user_id, o.service_id, s.name AS service_name, coalesce(o.service_type, s.type) AS service_type,
       o.status, o.link,
       o.quantity, o.runs, o.interval_minutes, o.upstream_params, o.billable, o.price_micros,
       o.charged_micros, o.released_micros, o.provider_id, o.upstream_service_id, o.upstream_order_id,
       o.attempt, o.start_count, o.remains, o.source, o.status_note, o.create_time, o.update_time,
       o.cancel_state, o.cancel_message, o.finish_time, s.refill AS service_refill, s.refill_days,
       s.cancel AS service_cancel, o.pinned_provider, o.panel_dripfeed
FROM orders o JOIN services s ON s.id = o.service_id;
