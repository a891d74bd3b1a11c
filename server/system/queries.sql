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

-- name: purge_published_outbox(keep_days)!
DELETE FROM outbox_events
WHERE published_at IS NOT NULL AND published_at < now() - make_interval(days => :keep_days);

-- name: purge_idempotent_requests(keep_days)!
DELETE FROM idempotent_requests WHERE created_at < now() - make_interval(days => :keep_days);

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
