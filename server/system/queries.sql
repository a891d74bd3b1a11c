-- name: claim_job_run(job, period_start)^
-- Returns a row only for the first claim of a period.
INSERT INTO job_runs (job, period_start) VALUES (:job, to_timestamp(:period_start))
ON CONFLICT ON CONSTRAINT job_runs_pkey DO NOTHING
RETURNING job;

-- name: finish_job_run(job, period_start, result)!
UPDATE job_runs SET result = :result, finish_time = now()
WHERE job = :job AND period_start = to_timestamp(:period_start);

-- name: get_job_run(job, period_start)^
SELECT job, extract(epoch FROM period_start)::bigint AS period_start, result, finish_time
FROM job_runs WHERE job = :job AND period_start = to_timestamp(:period_start);

-- Retention (server/system/retention.py): each query deletes one bounded batch, oldest first, in
-- its own transaction. The append-only tables walk their primary key from after_id: a batch of
-- the next ids, those old enough deleted; "more" is false once a batch reaches rows inside the
-- retention (ids grow with time) or the end of the table.

-- name: purge_outbox_batch(after_id, keep_days, batch)^
-- Published rows only: a pending row is the relay's, however old.
WITH batch AS (
    SELECT id, created_at < now() - make_interval(days => :keep_days) AS old,
           published_at < now() - make_interval(days => :keep_days) AS done
    FROM outbox_events WHERE id > :after_id ORDER BY id LIMIT :batch
), gone AS (
    DELETE FROM outbox_events o USING batch b WHERE o.id = b.id AND b.done RETURNING o.id
)
SELECT (SELECT count(*) FROM gone) AS deleted, coalesce((SELECT max(id) FROM batch), :after_id) AS last_id,
       coalesce((SELECT count(*) = :batch AND bool_and(old) FROM batch), false) AS more;

-- name: purge_provider_exchanges_batch(after_id, keep_days, batch)^
-- An exchange of an order not finished yet stays: staff read its log while they look into it.
WITH batch AS (
    SELECT id, order_ids, create_time < now() - make_interval(days => :keep_days) AS old
    FROM provider_exchanges WHERE id > :after_id ORDER BY id LIMIT :batch
), gone AS (
    DELETE FROM provider_exchanges e USING batch b
    WHERE e.id = b.id AND b.old
      AND NOT EXISTS (SELECT 1 FROM orders o WHERE o.id = ANY(b.order_ids)
                      AND o.status NOT IN ('completed', 'partial', 'canceled', 'failed', 'expired'))
    RETURNING e.id
)
SELECT (SELECT count(*) FROM gone) AS deleted, coalesce((SELECT max(id) FROM batch), :after_id) AS last_id,
       coalesce((SELECT count(*) = :batch AND bool_and(old) FROM batch), false) AS more;

-- name: purge_email_messages_batch(after_id, keep_days, batch)^
WITH batch AS (
    SELECT id, create_time < now() - make_interval(days => :keep_days) AS old
    FROM email_messages WHERE id > :after_id ORDER BY id LIMIT :batch
), gone AS (
    DELETE FROM email_messages m USING batch b WHERE m.id = b.id AND b.old RETURNING m.id
)
SELECT (SELECT count(*) FROM gone) AS deleted, coalesce((SELECT max(id) FROM batch), :after_id) AS last_id,
       coalesce((SELECT count(*) = :batch AND bool_and(old) FROM batch), false) AS more;

-- name: purge_sms_messages_batch(after_id, keep_days, batch)^
WITH batch AS (
    SELECT id, create_time < now() - make_interval(days => :keep_days) AS old
    FROM sms_messages WHERE id > :after_id ORDER BY id LIMIT :batch
), gone AS (
    DELETE FROM sms_messages m USING batch b WHERE m.id = b.id AND b.old RETURNING m.id
)
SELECT (SELECT count(*) FROM gone) AS deleted, coalesce((SELECT max(id) FROM batch), :after_id) AS last_id,
       coalesce((SELECT count(*) = :batch AND bool_and(old) FROM batch), false) AS more;

-- name: purge_idempotent_requests_batch(keep_days, batch)$
WITH old AS (
    SELECT rpc, actor, request_id FROM idempotent_requests
    WHERE created_at < now() - make_interval(days => :keep_days)
    ORDER BY created_at LIMIT :batch
), gone AS (
    DELETE FROM idempotent_requests r USING old
    WHERE r.rpc = old.rpc AND r.actor = old.actor AND r.request_id = old.request_id
    RETURNING 1
)
SELECT count(*) FROM gone;

-- name: purge_job_runs_batch(job, keep_days, batch)$
WITH old AS (
    SELECT job, period_start FROM job_runs
    WHERE job = :job AND period_start < now() - make_interval(days => :keep_days)
    ORDER BY period_start LIMIT :batch
), gone AS (
    DELETE FROM job_runs r USING old WHERE r.job = old.job AND r.period_start = old.period_start RETURNING 1
)
SELECT count(*) FROM gone;

-- name: purge_sessions_batch(keep_days, batch)$
-- Only live sessions are ever read (expired or revoked ones sign nobody in): kept keep_days past expiry.
WITH gone AS (
    DELETE FROM sessions WHERE id IN (
        SELECT id FROM sessions WHERE expire_time < now() - make_interval(days => :keep_days)
        ORDER BY expire_time LIMIT :batch)
    RETURNING 1
)
SELECT count(*) FROM gone;

-- name: purge_account_tokens_batch(keep_days, batch)$
WITH gone AS (
    DELETE FROM account_tokens WHERE id IN (
        SELECT id FROM account_tokens WHERE expire_time < now() - make_interval(days => :keep_days)
        ORDER BY expire_time LIMIT :batch)
    RETURNING 1
)
SELECT count(*) FROM gone;

-- name: purge_phone_codes_batch(keep_days, batch)$
WITH gone AS (
    DELETE FROM phone_codes WHERE id IN (
        SELECT id FROM phone_codes WHERE expire_time < now() - make_interval(days => :keep_days)
        ORDER BY expire_time LIMIT :batch)
    RETURNING 1
)
SELECT count(*) FROM gone;

-- name: purge_api_key_usage_batch(keep_days, batch)$
WITH old AS (
    SELECT api_key_id, day FROM api_key_usage_days
    WHERE day < (now() AT TIME ZONE 'UTC')::date - :keep_days::int
    ORDER BY day LIMIT :batch
), gone AS (
    DELETE FROM api_key_usage_days u USING old WHERE u.api_key_id = old.api_key_id AND u.day = old.day
    RETURNING 1
)
SELECT count(*) FROM gone;

-- name: count_event(day, subject)!
INSERT INTO event_counts (day, subject, count) VALUES (:day, :subject, 1)
ON CONFLICT ON CONSTRAINT event_counts_pkey DO UPDATE SET count = event_counts.count + 1;

-- name: list_event_counts(days)
SELECT to_char(day, 'YYYY-MM-DD') AS day, subject, count
FROM event_counts
WHERE day > (now() AT TIME ZONE 'UTC')::date - :days
ORDER BY day DESC, subject;

-- name: list_audit_events(action, actor, target, before_id, limit)
SELECT id, create_time, action, actor, target, client_ip, user_agent, request_id, before, after
FROM audit_events
WHERE (:action = '' OR action = :action)
  AND (:actor = '' OR actor = :actor)
  AND (:target = '' OR target = :target)
  AND id < :before_id
ORDER BY id DESC
LIMIT :limit;

-- name: purge_rate_limit_windows()!
DELETE FROM rate_limit_windows WHERE window_start < now() - interval '10 minutes';
