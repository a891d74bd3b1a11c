-- name: service_for_order(id, user_id)^
-- What an order needs to know about its service (the catalog's table, read-only here), the user's
-- discount, and the id the order will have: drawn now, so that the one statement that writes the
-- order (insert_held_order) can key its hold and its event with it.
SELECT s.id, s.name, s.type, s.min_quantity, s.max_quantity, s.dripfeed, s.upstream_dripfeed, s.rate_micros,
       s.provider_id, s.upstream_service_id, s.provider_rate_micros, s.provider_currency, s.exchange_rate,
       s.one_active_order_per_link,
       (s.enabled AND NOT s.quarantined AND c.enabled
        AND NOT EXISTS (SELECT 1 FROM providers p WHERE p.id = s.provider_id AND p.status <> 'enabled')) AS on_sale,
       coalesce((SELECT u.discount_bps FROM users u WHERE u.id = :user_id), 0) AS discount_bps,
       nextval(pg_get_serial_sequence('orders', 'id')) AS order_id
FROM services s JOIN categories c ON c.id = s.category_id
WHERE s.id = :id;

-- name: active_order_for_link(user_id, service_id, link)$
SELECT EXISTS (
    SELECT 1 FROM orders
    WHERE user_id = :user_id AND service_id = :service_id AND link = :link
      AND status NOT IN ('completed', 'partial', 'canceled', 'failed', 'expired'));

-- name: order_by_key(user_id, idempotency_key)^
SELECT id, request_hash FROM orders WHERE user_id = :user_id AND idempotency_key = :idempotency_key;

-- name: claim_mass_request(actor, request_id, request_hash)!
-- A mass order's Idempotency-Key as a whole (AIP-155's table, purged after 30 days): the first
-- request under it stores its hash, whatever its lines did.
INSERT INTO idempotent_requests (rpc, actor, request_id, request_hash)
VALUES ('CreateMassOrder', :actor, :request_id, :request_hash)
ON CONFLICT ON CONSTRAINT idempotent_requests_pkey DO NOTHING;

-- name: mass_request_hash(actor, request_id)$
SELECT request_hash FROM idempotent_requests
WHERE rpc = 'CreateMassOrder' AND actor = :actor AND request_id = :request_id;

-- name: hashes_by_keys(user_id, keys)
-- The request hashes a mass order's lines were placed under before (a retry must be the same request).
SELECT request_hash FROM orders WHERE user_id = :user_id AND idempotency_key = ANY(:keys);

-- name: add_event(order_id, status, note)!
INSERT INTO order_events (order_id, status, note) VALUES (:order_id, :status, :note);

-- name: get_order(id)^
SELECT * FROM order_details o
WHERE o.id = :id;

-- name: lock_order(id)^
SELECT o.id, o.user_id, o.service_id, s.name AS service_name, coalesce(o.service_type, s.type) AS service_type,
       o.status, o.link,
       o.quantity, o.runs, o.interval_minutes, o.upstream_params, o.billable, o.price_micros,
       o.charged_micros, o.released_micros, o.provider_id, o.upstream_service_id, o.upstream_order_id,
       o.attempt, o.start_count, o.remains, o.source, o.status_note, o.create_time, o.update_time,
       o.cancel_state, o.cancel_message, o.finish_time, s.refill AS service_refill, s.refill_days,
       s.cancel AS service_cancel, o.pinned_provider, o.panel_dripfeed
FROM orders o JOIN services s ON s.id = o.service_id
WHERE o.id = :id
FOR UPDATE OF o;

-- name: list_orders(user_id, status, query, query_id, link_pattern, service_id, before_id, limit)
-- link_pattern: the query as an ILIKE pattern, its wildcards escaped (server/common/search.py).
SELECT * FROM order_details o
WHERE o.user_id = :user_id
  AND (:status = '' OR o.status = :status)
  AND (:service_id = 0 OR o.service_id = :service_id)
  AND (:query = '' OR o.id = :query_id OR o.link ILIKE :link_pattern)
  AND o.id < :before_id
ORDER BY o.id DESC
LIMIT :limit;

-- name: list_events(order_id)
SELECT status, note, create_time FROM order_events WHERE order_id = :order_id ORDER BY id;

-- name: list_candidates(service_id)
-- Where an order for the service may go, in order: the primary provider, then the fallbacks.
SELECT provider_id, upstream_service_id, position FROM service_candidates WHERE service_id = :service_id ORDER BY position;

-- name: known_terms(provider_id, upstream_service_id)^
SELECT provider_rate_micros, exchange_rate FROM known_terms
WHERE provider_id = :provider_id AND upstream_service_id = :upstream_service_id;

-- name: claim_submission(id)^
-- The usual claim as one autocommit statement: a pending order (neither pinned by staff nor a
-- drip-feed smm sends itself) whose next candidate exists becomes submitting, with a 'starting'
-- submission row, before the provider is called. No row: the dispatcher's locking path decides.
WITH target AS (
    SELECT id, user_id, service_id, attempt, upstream_params, billable, price_micros FROM orders
    WHERE id = :id AND status = 'pending' AND NOT panel_dripfeed AND NOT pinned_provider
    FOR UPDATE
), candidate AS (
    SELECT n.provider_id, n.upstream_service_id FROM (
        SELECT c.provider_id, c.upstream_service_id, c.position
        FROM target t JOIN service_candidates c ON c.service_id = t.service_id
        ORDER BY c.position OFFSET (SELECT attempt FROM target) LIMIT 1
    ) n
    -- A fallback known to cost more than the order's price is left to the locking path, which
    -- skips it (``dispatch.dearer_fallback``: the same rule, cost rounded up to the micro-unit).
    WHERE n.position = 0 OR NOT EXISTS (
        SELECT 1 FROM known_terms k CROSS JOIN target t
        WHERE k.provider_id = n.provider_id AND k.upstream_service_id = n.upstream_service_id
          AND ceil(k.provider_rate_micros * k.exchange_rate) * t.billable > t.price_micros * 1000::numeric)
), moved AS (
    UPDATE orders o SET status = 'submitting', status_note = '', update_time = now()
    FROM target t CROSS JOIN candidate c
    WHERE o.id = t.id
    RETURNING o.id
), submission AS (
    INSERT INTO order_submissions (order_id, provider_id, upstream_service_id)
    SELECT m.id, c.provider_id, c.upstream_service_id FROM moved m CROSS JOIN candidate c
    RETURNING id
)
SELECT t.id, t.user_id, t.upstream_params, c.provider_id, c.upstream_service_id, s.id AS submission_id
FROM target t CROSS JOIN candidate c CROSS JOIN submission s;

-- name: start_submission(order_id, provider_id, upstream_service_id)$
-- The order (locked by the caller) is submitting, and a 'starting' submission row says where to.
WITH moved AS (
    UPDATE orders SET status = 'submitting', status_note = '', update_time = now() WHERE id = :order_id
    RETURNING id
)
INSERT INTO order_submissions (order_id, provider_id, upstream_service_id)
SELECT id, :provider_id, :upstream_service_id FROM moved
RETURNING id;

-- name: accept_submission(id, submission_id, provider_id, upstream_service_id, upstream_order_id, note, subject, payload, headers)^
-- An accepted ``add`` recorded by one autocommit statement: the order (only while it is still
-- submitting: no row otherwise, and the caller takes the general path), the submission, the
-- timeline line and the order.changed outbox row.
WITH moved AS (
    UPDATE orders o
    SET status = 'in_progress',
    -- The terms of the provider that took the order (sql/0023: ``taker_terms``).
    (provider_rate_micros, provider_currency, exchange_rate) = (
        SELECT * FROM taker_terms(o.provider_id, o.upstream_service_id, o.provider_rate_micros,
                                  o.provider_currency, o.exchange_rate, :provider_id, :upstream_service_id)),
        provider_id = :provider_id, upstream_service_id = :upstream_service_id,
        upstream_order_id = :upstream_order_id, status_note = '', submit_time = now(), update_time = now(),
        next_poll_time = now() + interval '15 seconds'
    WHERE id = :id AND status = 'submitting'
      -- only for the order's newest submission: an older one answering late (the order was sent
      -- again meanwhile) must not take over the one that is out now
      AND NOT EXISTS (SELECT 1 FROM order_submissions s
                      WHERE s.order_id = :id AND s.run_no IS NULL AND s.id > :submission_id)
    RETURNING *
), submission AS (
    UPDATE order_submissions
    SET state = 'accepted', upstream_order_id = :upstream_order_id, message = '', finish_time = now()
    WHERE id = :submission_id AND EXISTS (SELECT 1 FROM moved)
), timeline AS (
    INSERT INTO order_events (order_id, status, note) SELECT id, status, :note FROM moved
), outbox AS (
    INSERT INTO outbox_events (subject, payload, headers) SELECT :subject, :payload, :headers FROM moved
)
SELECT o.id, o.user_id, o.service_id, s.name AS service_name, coalesce(o.service_type, s.type) AS service_type,
       o.status, o.link,
       o.quantity, o.runs, o.interval_minutes, o.upstream_params, o.billable, o.price_micros,
       o.charged_micros, o.released_micros, o.provider_id, o.upstream_service_id, o.upstream_order_id,
       o.attempt, o.start_count, o.remains, o.source, o.status_note, o.create_time, o.update_time,
       o.cancel_state, o.cancel_message, o.finish_time, s.refill AS service_refill, s.refill_days,
       s.cancel AS service_cancel, o.pinned_provider, o.panel_dripfeed
FROM moved o JOIN services s ON s.id = o.service_id;

-- name: newest_submission(order_id)$
SELECT max(id) FROM order_submissions WHERE order_id = :order_id AND run_no IS NULL;

-- name: finish_submission(id, state, upstream_order_id, message)!
UPDATE order_submissions SET state = :state, upstream_order_id = :upstream_order_id, message = :message,
                             finish_time = now()
WHERE id = :id;

-- name: set_status(id, status, note)!
UPDATE orders SET status = :status, status_note = :note, update_time = now() WHERE id = :id;

-- name: note_tracked(id, note)!
-- A note on a tracked order the provider's answer could not move (unknown to it, a Partial without
-- remains): update_time stays the last answer applied, which a running subscription's stuck
-- alert reads.
UPDATE orders SET status_note = :note WHERE id = :id;

-- name: mark_submitted(id, provider_id, upstream_service_id, upstream_order_id)!
UPDATE orders o
SET status = 'in_progress',
    -- The terms of the provider that took the order (sql/0023: ``taker_terms``).
    (provider_rate_micros, provider_currency, exchange_rate) = (
        SELECT * FROM taker_terms(o.provider_id, o.upstream_service_id, o.provider_rate_micros,
                                  o.provider_currency, o.exchange_rate, :provider_id, :upstream_service_id)),
    provider_id = :provider_id, upstream_service_id = :upstream_service_id,
    upstream_order_id = :upstream_order_id, status_note = '', submit_time = now(), update_time = now(),
    next_poll_time = now() + interval '15 seconds'
WHERE id = :id;

-- name: note_upstream(id, provider_id, upstream_service_id, upstream_order_id)!
-- Where a provider placed an order that smm had already finished (no status or money change).
UPDATE orders
SET provider_id = :provider_id, upstream_service_id = :upstream_service_id, upstream_order_id = :upstream_order_id,
    update_time = now()
WHERE id = :id;

-- name: next_attempt(id)!
UPDATE orders SET attempt = attempt + 1, status = 'pending', update_time = now() WHERE id = :id;

-- name: finish_money(id, status, charged_micros, released_micros, remains, start_count, note)!
UPDATE orders
SET status = :status, charged_micros = :charged_micros, released_micros = :released_micros, status_note = :note,
    remains = coalesce(:remains, remains), start_count = coalesce(:start_count, start_count),
    finish_time = now(), update_time = now(), next_poll_time = NULL
WHERE id = :id;

-- name: due_for_poll(limit)
SELECT id, provider_id, upstream_order_id FROM orders
WHERE status IN ('in_progress', 'processing', 'active', 'paused') AND next_poll_time <= now()
  AND provider_id IS NOT NULL AND upstream_order_id <> '' AND NOT panel_dripfeed
ORDER BY next_poll_time
LIMIT :limit;

-- name: track_order(id, status, start_count, remains, upstream_charge_micros, next_poll_s)!
-- A tracked order's latest state upstream; polled again later, less often as it ages.
UPDATE orders
SET status = :status, start_count = :start_count, remains = :remains,
    upstream_charge_micros = :upstream_charge_micros, update_time = now(),
    next_poll_time = now() + make_interval(secs => :next_poll_s)
WHERE id = :id;

-- name: postpone_poll(ids, next_poll_s)!
UPDATE orders SET next_poll_time = now() + make_interval(secs => :next_poll_s) WHERE id = ANY(:ids);

-- name: stats_by_status(user_id)
SELECT status, count(*) AS count FROM orders WHERE user_id = :user_id GROUP BY status ORDER BY status;

-- name: stats_spend(user_id, period, periods, time_zone)
-- Per period in the caller's time zone: orders placed, and what they cost (held for open orders,
-- charged for finished ones).
SELECT date_trunc(:period, create_time AT TIME ZONE :time_zone)::date AS start, count(*) AS orders,
       sum(CASE WHEN status IN ('completed', 'partial', 'canceled', 'failed', 'expired') THEN charged_micros
                ELSE price_micros - released_micros END)::bigint AS spent_micros
FROM orders
WHERE user_id = :user_id
  -- The window's start as an instant (a bare timestamp would be read in the session's time zone).
  AND create_time >= (date_trunc(:period, now() AT TIME ZONE :time_zone)
                      - (:periods::int - 1) * ('1 ' || :period)::interval) AT TIME ZONE :time_zone
GROUP BY 1 ORDER BY 1 DESC;

-- name: time_zone_names()
-- The zones AT TIME ZONE may be given: IANA names only, not abbreviations or POSIX offsets.
SELECT name FROM pg_timezone_names;

-- name: stuck_orders(older_than_h)
SELECT id FROM orders
WHERE status NOT IN ('completed', 'partial', 'canceled', 'failed', 'expired') AND stuck_alert_time IS NULL
  -- a drip-feed (smm's or the provider's: both keep runs and interval) is stuck only once its
  -- last run is late; without drip-feed runs = 1. One that never reached its provider (pending,
  -- being sent, in review) has no schedule running: stuck like any order.
  AND create_time + make_interval(mins => CASE WHEN status IN ('pending', 'submitting', 'needs_review')
                                               THEN 0 ELSE (runs - 1) * interval_minutes END)
      < now() - make_interval(hours => :older_than_h)
  -- a subscription the provider says runs (active, paused) runs for days by design: stuck only
  -- once the end of its expiry day (UTC) is that late, or once the provider has not said it runs
  -- for that long (update_time: a poll's answer applied; a note, such as "the provider does not
  -- know the order", leaves it). Without an expiry it ends with its posts.
  AND (status NOT IN ('active', 'paused')
       OR update_time < now() - make_interval(hours => :older_than_h)
       OR (upstream_params->>'expiry' ~ '^[0-9]{2}/[0-9]{2}/[0-9]{4}$'
           AND to_date(upstream_params->>'expiry', 'DD/MM/YYYY') + 1 < now() AT TIME ZONE 'UTC'
               - make_interval(hours => :older_than_h)))
ORDER BY id LIMIT 1000;

-- name: mark_stuck_alerted(ids)!
UPDATE orders SET stuck_alert_time = now() WHERE id = ANY(:ids);

-- name: batch_get_orders(user_id, ids)
SELECT * FROM order_details o
WHERE o.user_id = :user_id AND o.id = ANY(:ids);

-- name: list_all_orders(status, user_id, service_id, provider_id, created_from, created_to, before_id, limit)
SELECT * FROM order_details o
WHERE (:status = '' OR o.status = :status)
  AND (:user_id = 0 OR o.user_id = :user_id)
  AND (:service_id = 0 OR o.service_id = :service_id)
  AND (:provider_id = 0 OR o.provider_id = :provider_id)
  AND o.create_time >= :created_from AND o.create_time < :created_to
  AND o.id < :before_id
ORDER BY o.id DESC
LIMIT :limit;

-- name: list_refills(order_ids)
SELECT id, order_id, user_id, provider_id, status, upstream_refill_id, message, create_time, update_time
FROM order_refills WHERE order_id = ANY(:order_ids) ORDER BY id;

-- name: batch_get_refills(user_id, ids)
SELECT id, order_id, user_id, provider_id, status, upstream_refill_id, message, create_time, update_time
FROM order_refills WHERE user_id = :user_id AND id = ANY(:ids) ORDER BY id;

-- name: reserve_refill(order_id, user_id, provider_id)^
-- The order's one open refill, taken before the provider is asked (order_refills_open_key makes a
-- second request at the same moment fail here, not after a second call upstream). Until the answer
-- is stored it has no upstream id; if this process dies meanwhile, expire_lost_refills ends it.
INSERT INTO order_refills (order_id, user_id, provider_id, status, upstream_refill_id, message, next_poll_time)
VALUES (:order_id, :user_id, :provider_id, 'pending', '', 'asking the provider', now() + interval '10 minutes')
RETURNING id, order_id, user_id, provider_id, status, upstream_refill_id, message, create_time, update_time;

-- name: record_refill_answer(id, status, upstream_refill_id, message, next_poll_s)^
-- next_poll_s: the first look at a refill with an id; for one taken without an id, when it ends.
UPDATE order_refills
SET status = :status, upstream_refill_id = :upstream_refill_id, message = :message, update_time = now(),
    next_poll_time = CASE WHEN :status IN ('pending', 'in_progress')
                          THEN now() + make_interval(secs => :next_poll_s) END
WHERE id = :id
RETURNING id, order_id, user_id, provider_id, status, upstream_refill_id, message, create_time, update_time;

-- name: expire_lost_refills()!
-- Reservations whose provider answer was never stored (the process died mid-call).
UPDATE order_refills
SET status = 'rejected', message = 'the provider''s answer was lost; ask again', update_time = now(),
    next_poll_time = NULL
WHERE status = 'pending' AND upstream_refill_id = '' AND next_poll_time <= now();

-- name: end_untracked_refills()
-- Refills a provider took without an id to follow, whose time is up: nothing will ever say more.
UPDATE order_refills
SET status = 'completed', update_time = now(), next_poll_time = NULL
WHERE status = 'in_progress' AND upstream_refill_id = '' AND next_poll_time <= now()
RETURNING id, order_id, user_id, provider_id, status, upstream_refill_id, message, create_time, update_time;

-- name: due_refills(limit)
SELECT id, order_id, user_id, provider_id, status, upstream_refill_id, message, create_time, update_time
FROM order_refills
WHERE status IN ('pending', 'in_progress') AND next_poll_time <= now() AND upstream_refill_id <> ''
ORDER BY next_poll_time LIMIT :limit;

-- name: update_refill(id, status, message, next_poll_s)!
-- The provider's answer, read before it was asked: only a refill still open takes it (staff may
-- have ended it meanwhile, EndRefill); 0 rows then.
UPDATE order_refills
SET status = :status, message = :message, update_time = now(),
    next_poll_time = CASE WHEN :status IN ('pending', 'in_progress') THEN now() + make_interval(secs => :next_poll_s) END
WHERE id = :id AND status IN ('pending', 'in_progress');

-- name: lock_refill(id, order_id)^
-- One refill of one order, locked for staff's end (the poller's writes wait, then find it ended).
SELECT id, order_id, user_id, provider_id, status, upstream_refill_id, message, create_time, update_time
FROM order_refills WHERE id = :id AND order_id = :order_id FOR UPDATE;

-- name: end_refill(id, status, message)!
-- Staff end an open refill (completed or rejected): polling of it stops.
UPDATE order_refills SET status = :status, message = :message, update_time = now(), next_poll_time = NULL
WHERE id = :id AND status IN ('pending', 'in_progress');

-- name: stuck_refills(older_than_h)
-- Refills open longer than the stuck age and not yet reported (each once). One without the
-- provider's id ends by itself (a reservation expires, an untracked refill completes after a day).
SELECT id, order_id FROM order_refills
WHERE status IN ('pending', 'in_progress') AND stuck_alert_time IS NULL AND upstream_refill_id <> ''
  AND create_time < now() - make_interval(hours => :older_than_h)
ORDER BY id LIMIT 1000;

-- name: mark_refills_stuck_alerted(ids)!
UPDATE order_refills SET stuck_alert_time = now() WHERE id = ANY(:ids);

-- name: postpone_refill_polls(ids, next_poll_s)!
-- Refills whose provider is disabled or did not answer usefully: asked about again later.
UPDATE order_refills SET next_poll_time = now() + make_interval(secs => :next_poll_s)
WHERE id = ANY(:ids) AND status IN ('pending', 'in_progress');

-- name: note_unread_refill(id, message, next_poll_s)!
-- A refill with no readable answer: asked again later, with a note for staff. update_time stays the
-- last answer applied (how long it has gone unread is measured from it); its customer sees no change.
UPDATE order_refills SET message = :message, next_poll_time = now() + make_interval(secs => :next_poll_s)
WHERE id = :id AND status IN ('pending', 'in_progress');

-- name: note_order(order_id, note)!
-- A note on an order's timeline under its status as it is (a refill's news on a completed order).
INSERT INTO order_events (order_id, status, note) SELECT id, status, :note FROM orders WHERE id = :order_id;

-- name: set_cancel_state(id, cancel_state, cancel_message)!
UPDATE orders SET cancel_state = :cancel_state, cancel_message = :cancel_message, update_time = now(),
                  next_poll_time = CASE WHEN :cancel_state = 'requested' THEN now() + interval '5 seconds'
                                        ELSE next_poll_time END
WHERE id = :id;

-- name: found_upstream(id, upstream_order_id)!
-- Found where its answer was lost: that submission's provider, which may be a fallback (the order
-- row keeps the primary until an answer arrives), is the one that has it and is polled, and its
-- terms are the order's, as for an answered acceptance (sql/0023: ``taker_terms``).
UPDATE orders o
SET status = 'in_progress', upstream_order_id = :upstream_order_id, status_note = '',
    (provider_rate_micros, provider_currency, exchange_rate) = (
        SELECT * FROM taker_terms(o.provider_id, o.upstream_service_id, o.provider_rate_micros,
                                  o.provider_currency, o.exchange_rate,
                                  coalesce(lost.provider_id, o.provider_id),
                                  coalesce(lost.upstream_service_id, o.upstream_service_id))),
    provider_id = coalesce(lost.provider_id, o.provider_id),
    upstream_service_id = coalesce(lost.upstream_service_id, o.upstream_service_id),
    submit_time = coalesce(o.submit_time, now()), update_time = now(), next_poll_time = now()
FROM (SELECT :id::bigint AS id) wanted
LEFT JOIN LATERAL (
    SELECT s.provider_id, s.upstream_service_id FROM order_submissions s
    WHERE s.order_id = wanted.id AND s.run_no IS NULL AND s.state IN ('unknown', 'starting')
    ORDER BY s.id DESC LIMIT 1
) lost ON true
WHERE o.id = wanted.id;

-- name: upstream_order_owner(id, upstream_order_id)$
-- The order that already holds this upstream id at the provider staff's "found" links order :id to
-- (its run in review's provider for a drip-feed smm sends itself, else its lost submission's, as
-- found_upstream picks it, else its own): another order, one of its runs, or an accepted
-- submission of another order (this order's own earlier submissions may be the one found). NULL
-- when no order has it.
WITH target AS (
    SELECT coalesce(
        (SELECT r.provider_id FROM order_runs r
         WHERE o.panel_dripfeed AND r.order_id = o.id AND r.state = 'needs_review' ORDER BY r.run_no LIMIT 1),
        (SELECT s.provider_id FROM order_submissions s
         WHERE s.order_id = o.id AND s.run_no IS NULL AND s.state IN ('unknown', 'starting')
         ORDER BY s.id DESC LIMIT 1),
        o.provider_id) AS provider_id
    FROM orders o WHERE o.id = :id
)
SELECT min(owner) FROM (
    SELECT o.id FROM orders o JOIN target t ON o.provider_id = t.provider_id
    WHERE o.upstream_order_id = :upstream_order_id AND o.id <> :id
    UNION ALL
    SELECT r.order_id FROM order_runs r JOIN target t ON r.provider_id = t.provider_id
    WHERE r.upstream_order_id = :upstream_order_id
    UNION ALL
    SELECT s.order_id FROM order_submissions s JOIN target t ON s.provider_id = t.provider_id
    WHERE s.state = 'accepted' AND s.upstream_order_id = :upstream_order_id
      AND (s.order_id <> :id OR s.run_no IS NOT NULL)
) known(owner);

-- name: submission_out(order_id)$
-- The provider of the order's newest submission when its call may still be out: still 'starting'
-- and younger than any provider call may take (providers.timeout_ms is at most 120 s; as
-- lock_next_run's 5 minutes). NULL otherwise, and for a submission a crash interrupted long ago.
SELECT s.provider_id FROM order_submissions s
WHERE s.id = (SELECT max(id) FROM order_submissions WHERE order_id = :order_id AND run_no IS NULL)
  AND s.state = 'starting' AND s.create_time > now() - interval '5 minutes';

-- name: provider_status(id)$
-- "enabled", "disabled" or "deleted"; NULL for no such provider.
SELECT status FROM providers WHERE id = :id;

-- name: retarget_order(id, provider_id, upstream_service_id)!
-- Staff send an order to another provider: it becomes pending again with that provider first. The
-- runs of a drip-feed smm sends itself not out yet start again at that provider too (a run's
-- attempt counts the order's candidates, and a pinned order has one).
-- Its terms become that provider's as smm knows them, or none (sql/0023: ``taker_terms``): the
-- acceptance reads the order's provider as the one it was priced for and keeps them.
WITH runs AS (
    UPDATE order_runs SET attempt = 0, update_time = now() WHERE order_id = :id AND state = 'scheduled'
)
UPDATE orders o
SET status = 'pending',
    (provider_rate_micros, provider_currency, exchange_rate) = (
        SELECT * FROM taker_terms(o.provider_id, o.upstream_service_id, o.provider_rate_micros,
                                  o.provider_currency, o.exchange_rate, :provider_id, :upstream_service_id)),
    provider_id = :provider_id, upstream_service_id = :upstream_service_id,
    attempt = 0, upstream_order_id = '', status_note = '', pinned_provider = true, update_time = now()
WHERE id = :id;

-- name: list_provider_log(order_id)
SELECT provider_id, action, params, http_status, body, outcome, reason, latency_ms, create_time
FROM provider_exchanges WHERE :order_id = ANY(order_ids) ORDER BY id;

-- name: order_by_upstream(provider_id, upstream_order_id)$
SELECT id FROM orders
WHERE provider_id = :provider_id AND upstream_order_id = :upstream_order_id AND upstream_order_id <> ''
  AND NOT panel_dripfeed
ORDER BY id DESC LIMIT 1;

-- name: insert_held_order(order_id, user_id, service_id, service_type, link, quantity, runs, interval_minutes, panel_dripfeed, panel_runs, upstream_params, billable, rate_micros, discount_bps, price_micros, provider_id, upstream_service_id, provider_rate_micros, provider_currency, exchange_rate, source, api_key_id, idempotency_key, request_hash, event_subject, event_payload, event_headers)
-- The tail of ledger.hold_with's statement (server/wallet/queries.sql, insert_hold_along): the
-- order row (its id drawn by service_for_order), its first timeline entry, the runs of a drip-feed
-- smm sends itself (panel_runs of them, run n due (n - 1) x interval after placement; dripfeed.py
-- sends them) and its outbox event, written only when the hold was made; the order as
-- order_details shows it (a statement does not see its own inserts through the view, so the join
-- is spelled out here). A second order with the
-- same idempotency key breaks orders_user_idempotency_key and fails the whole statement.
placed AS (
    INSERT INTO orders (id, user_id, service_id, service_type, link, quantity, runs, interval_minutes, panel_dripfeed,
                        upstream_params, billable, rate_micros, discount_bps, price_micros, provider_id, upstream_service_id,
                        provider_rate_micros, provider_currency, exchange_rate, source, api_key_id,
                        idempotency_key, request_hash)
    OVERRIDING SYSTEM VALUE
    SELECT :order_id, :user_id, :service_id, :service_type, :link, :quantity, :runs, :interval_minutes, :panel_dripfeed,
           :upstream_params, :billable, :rate_micros, :discount_bps, :price_micros, :provider_id, :upstream_service_id,
           :provider_rate_micros, :provider_currency, :exchange_rate, :source, :api_key_id,
           :idempotency_key, :request_hash
    FROM hold
    RETURNING *
), placed_event AS (
    INSERT INTO order_events (order_id, status, note) SELECT id, status, 'placed' FROM placed
), placed_runs AS (
    INSERT INTO order_runs (order_id, run_no, quantity, due_time)
    SELECT p.id, n, p.quantity, now() + make_interval(mins => (n - 1) * p.interval_minutes)
    FROM placed p CROSS JOIN generate_series(1, :panel_runs::integer) AS n
), placed_outbox AS (
    INSERT INTO outbox_events (subject, payload, headers)
    SELECT :event_subject, :event_payload, :event_headers FROM placed
)
SELECT o.id, o.user_id, o.service_id, s.name AS service_name, coalesce(o.service_type, s.type) AS service_type,
       o.status, o.link,
       o.quantity, o.runs, o.interval_minutes, o.upstream_params, o.billable, o.price_micros,
       o.charged_micros, o.released_micros, o.provider_id, o.upstream_service_id, o.upstream_order_id,
       o.attempt, o.start_count, o.remains, o.source, o.status_note, o.create_time, o.update_time,
       o.cancel_state, o.cancel_message, o.finish_time, s.refill AS service_refill, s.refill_days,
       s.cancel AS service_cancel, o.pinned_provider, o.panel_dripfeed
FROM placed o JOIN services s ON s.id = o.service_id;

-- ---------------------------------------------------------------- drip-feed runs smm sends itself

-- name: lock_next_run(order_id)^
-- The earliest due run not yet out, or whose submission was interrupted: still submitting after
-- longer than any provider call may take (providers.timeout_ms is at most 120 s), locked.
SELECT * FROM order_runs
WHERE order_id = :order_id AND due_time <= now()
  AND (state = 'scheduled' OR (state = 'submitting' AND update_time < now() - interval '5 minutes'))
ORDER BY run_no LIMIT 1
FOR UPDATE;

-- name: lock_run(order_id, run_no)^
SELECT * FROM order_runs WHERE order_id = :order_id AND run_no = :run_no FOR UPDATE;

-- name: list_runs(order_id)
SELECT * FROM order_runs WHERE order_id = :order_id ORDER BY run_no;

-- name: list_due_run_orders(limit)
-- Orders with a run due to be sent (the tick sends them; placement sends the first at once), with
-- the order's provider (the tick asks providers side by side).
SELECT DISTINCT r.order_id, coalesce(o.provider_id, 0) AS provider_id
FROM order_runs r JOIN orders o ON o.id = r.order_id
WHERE r.due_time <= now() AND o.status IN ('pending', 'in_progress', 'processing')
  AND (r.state = 'scheduled' OR (r.state = 'submitting' AND r.update_time < now() - interval '5 minutes'))
ORDER BY r.order_id LIMIT :limit;

-- name: insert_run_submission(order_id, run_no, provider_id, upstream_service_id)$
INSERT INTO order_submissions (order_id, run_no, provider_id, upstream_service_id)
VALUES (:order_id, :run_no, :provider_id, :upstream_service_id)
RETURNING id;

-- name: set_run_state(order_id, run_no, state, note)!
UPDATE order_runs SET state = :state, note = :note, update_time = now()
WHERE order_id = :order_id AND run_no = :run_no;

-- name: start_run_submission(order_id, run_no, provider_id, upstream_service_id)!
UPDATE order_runs SET state = 'submitting', provider_id = :provider_id,
                      upstream_service_id = :upstream_service_id, update_time = now()
WHERE order_id = :order_id AND run_no = :run_no;

-- name: mark_run_submitted(order_id, run_no, upstream_order_id)!
UPDATE order_runs SET state = 'in_progress', upstream_order_id = :upstream_order_id, note = '',
                      submit_time = now(), update_time = now(), next_poll_time = now() + interval '15 seconds'
WHERE order_id = :order_id AND run_no = :run_no;

-- name: next_run_attempt(order_id, run_no, note)!
UPDATE order_runs SET attempt = attempt + 1, state = 'scheduled', note = :note, update_time = now()
WHERE order_id = :order_id AND run_no = :run_no;

-- name: postpone_due_runs(order_id, delay_s)!
-- An order whose due run could not be handled (an error, logged): its due runs wait, so it does not
-- come first again on every tick. Their state is left as it is (an interrupted submission still goes
-- to review, never out again).
UPDATE order_runs SET due_time = now() + make_interval(secs => :delay_s)
WHERE order_id = :order_id AND due_time <= now() AND state IN ('scheduled', 'submitting');

-- name: delay_run(order_id, run_no, delay_s, note)!
-- Certainly not sent (provider unreachable): the run waits and goes out on a later tick.
UPDATE order_runs SET state = 'scheduled', note = :note, update_time = now(),
                      due_time = now() + make_interval(secs => :delay_s)
WHERE order_id = :order_id AND run_no = :run_no;

-- name: finish_run(order_id, run_no, state, remains, start_count, note)!
UPDATE order_runs SET state = :state, remains = :remains, start_count = coalesce(:start_count, start_count),
                      note = :note, finish_time = now(), update_time = now(), next_poll_time = NULL
WHERE order_id = :order_id AND run_no = :run_no;

-- name: cancel_scheduled_runs(order_id, note)!
UPDATE order_runs SET state = 'canceled', remains = quantity, note = :note, finish_time = now(), update_time = now()
WHERE order_id = :order_id AND state = 'scheduled';

-- name: track_run(order_id, run_no, state, start_count, next_poll_s)!
UPDATE order_runs SET state = :state, start_count = coalesce(:start_count, start_count), update_time = now(),
                      next_poll_time = now() + make_interval(secs => :next_poll_s)
WHERE order_id = :order_id AND run_no = :run_no;

-- name: postpone_run_polls(order_ids, run_nos, next_poll_s)!
UPDATE order_runs r SET next_poll_time = now() + make_interval(secs => :next_poll_s)
FROM unnest(:order_ids::bigint[], :run_nos::int[]) AS d(order_id, run_no)
WHERE r.order_id = d.order_id AND r.run_no = d.run_no;

-- name: list_runs_due_for_poll(limit)
SELECT order_id, run_no, provider_id, upstream_order_id FROM order_runs
WHERE state IN ('in_progress', 'processing') AND next_poll_time <= now() AND upstream_order_id <> ''
ORDER BY next_poll_time
LIMIT :limit;

-- name: start_panel_dripfeed(id, provider_id, upstream_service_id)!
-- The first run of a drip-feed smm sends itself went out: the order is in progress (it is not
-- polled itself; its runs are), and its provider is the one that took that run, with that
-- provider's terms as for an order (sql/0023: ``taker_terms``).
UPDATE orders o
SET status = 'in_progress',
    (provider_rate_micros, provider_currency, exchange_rate) = (
        SELECT * FROM taker_terms(o.provider_id, o.upstream_service_id, o.provider_rate_micros,
                                  o.provider_currency, o.exchange_rate, :provider_id, :upstream_service_id)),
    provider_id = :provider_id, upstream_service_id = :upstream_service_id,
    status_note = '', submit_time = coalesce(submit_time, now()), update_time = now()
WHERE id = :id;

-- name: found_run_upstream(order_id, run_no, upstream_order_id)!
UPDATE order_runs SET state = 'in_progress', upstream_order_id = :upstream_order_id, note = '',
                      submit_time = coalesce(submit_time, now()), update_time = now(), next_poll_time = now()
WHERE order_id = :order_id AND run_no = :run_no;

-- ---------------------------------------------------------------- finding lost orders upstream

-- name: get_lost_submission(order_id)^
-- The order's last submission whose answer was lost (or that a crash interrupted).
SELECT s.provider_id, s.upstream_service_id, s.create_time, s.finish_time,
       (o.provider_id = s.provider_id AND o.upstream_service_id = s.upstream_service_id) AS primary_provider,
       o.provider_rate_micros, o.billable
FROM order_submissions s JOIN orders o ON o.id = s.order_id
WHERE s.order_id = :order_id AND s.run_no IS NULL AND s.state IN ('unknown', 'starting')
ORDER BY s.id DESC LIMIT 1;

-- name: get_upstream_id_window(provider_id, started, finished)^
-- Ids the provider gave before the lost submission was sent, and after its answer was lost:
-- an order answered before `started` got a smaller id; one sent after `finished` a larger one.
SELECT (SELECT max(upstream_order_id::bigint) FROM order_submissions
        WHERE provider_id = :provider_id AND state = 'accepted' AND upstream_order_id ~ '^[0-9]{1,18}$'
          AND finish_time < :started) AS before_id,
       (SELECT min(upstream_order_id::bigint) FROM order_submissions
        WHERE provider_id = :provider_id AND state = 'accepted' AND upstream_order_id ~ '^[0-9]{1,18}$'
          AND create_time > :finished) AS after_id;

-- name: list_known_upstream_ids(provider_id, ids)
SELECT upstream_order_id FROM order_submissions
WHERE provider_id = :provider_id AND upstream_order_id = ANY(:ids)
UNION
SELECT upstream_order_id FROM orders WHERE provider_id = :provider_id AND upstream_order_id = ANY(:ids)
UNION
SELECT upstream_order_id FROM order_runs WHERE provider_id = :provider_id AND upstream_order_id = ANY(:ids);

-- name: claim_orders_to_reconcile(older_than_s, every_s, limit)
-- Needs-review orders due for an automatic look upstream; each is not looked at again for a while.
UPDATE orders SET reconcile_time = now() + make_interval(secs => :every_s)
WHERE id IN (
    SELECT id FROM orders
    WHERE status = 'needs_review' AND NOT panel_dripfeed
      AND update_time < now() - make_interval(secs => :older_than_s)
      AND (reconcile_time IS NULL OR reconcile_time <= now())
    ORDER BY id LIMIT :limit
    FOR UPDATE SKIP LOCKED)
RETURNING id;

-- name: stalled_pending(after_s, limit)
-- Pending orders (not a drip-feed smm sends itself) that nothing moved for ``after_s`` seconds and
-- whose last submission, if any, ended that long ago: the dispatch worker's retries of their event
-- are over (the provider could not be reached: 'not_sent'), or the event is gone without a dead
-- letter (lost with NATS's store: never tried, or sent again by staff), so nothing else would send
-- them. The oldest first, each with the provider to try: the one its last submission could not
-- reach, else the order's own (orders_open_idx finds the pending).
SELECT o.id AS order_id,
       coalesce(CASE WHEN s.state = 'not_sent' THEN s.provider_id END, o.provider_id, s.provider_id, 0) AS provider_id
FROM orders o
LEFT JOIN LATERAL (
    SELECT state, provider_id, finish_time FROM order_submissions
    WHERE order_id = o.id AND run_no IS NULL ORDER BY id DESC LIMIT 1
) s ON true
WHERE o.status = 'pending' AND NOT o.panel_dripfeed
  AND o.update_time < now() - make_interval(secs => :after_s)
  AND (s.state IS NULL OR s.finish_time < now() - make_interval(secs => :after_s))
ORDER BY o.update_time, o.id
LIMIT :limit;

-- name: put_off_pending(id)!
-- A stalled order the resend pass could not handle goes to the back of its line (its next pass).
UPDATE orders SET update_time = now() WHERE id = :id AND status = 'pending';

-- name: interrupted_submissions(after_s, limit)
-- Orders still submitting (not a drip-feed smm sends itself) whose newest submission has been
-- 'starting' for ``after_s`` seconds: no ``add`` lasts that long (a slot and the call, each within
-- providers.timeout_ms, at most 120 s), so the process that made it died before it recorded the
-- answer, and the redelivery that would have sent the order to review never came (its event
-- dead-lettered). The oldest first.
SELECT o.id AS order_id, s.id AS submission_id, s.provider_id
FROM orders o
CROSS JOIN LATERAL (
    SELECT id, state, provider_id, create_time FROM order_submissions
    WHERE order_id = o.id AND run_no IS NULL ORDER BY id DESC LIMIT 1
) s
WHERE o.status = 'submitting' AND NOT o.panel_dripfeed
  AND o.update_time < now() - make_interval(secs => :after_s)
  AND s.state = 'starting' AND s.create_time < now() - make_interval(secs => :after_s)
ORDER BY o.update_time, o.id
LIMIT :limit;
