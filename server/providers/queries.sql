-- name: insert_provider(name, protocol, api_url, api_key_ciphertext, currency, status, timeout_ms, max_concurrency, max_requests_per_s, enable_new_services, low_balance_micros)^
INSERT INTO providers (name, protocol, api_url, api_key_ciphertext, currency, status, timeout_ms, max_concurrency,
                       max_requests_per_s, enable_new_services, low_balance_micros)
VALUES (:name, :protocol, :api_url, :api_key_ciphertext, :currency, :status, :timeout_ms, :max_concurrency,
        :max_requests_per_s, :enable_new_services, :low_balance_micros)
RETURNING id;

-- name: insert_provider_health(provider_id)!
INSERT INTO provider_health (provider_id) VALUES (:provider_id) ON CONFLICT DO NOTHING;

-- name: list_providers()
SELECT p.id, p.name, p.protocol, p.api_url, p.api_key_ciphertext, p.currency, p.status, p.timeout_ms,
       p.max_concurrency, p.max_requests_per_s, p.enable_new_services, p.low_balance_micros, p.balance_micros,
       p.balance_currency,
       p.balance_time, p.create_time, p.update_time,
       h.circuit_phase, h.calls, h.failures, h.recent_error_ppm, h.recent_latency_us, h.last_error,
       h.last_call_time, h.last_failure_time, p.webhook_secret_ciphertext <> '' AS webhooks_enabled
FROM providers p JOIN provider_health h ON h.provider_id = p.id
WHERE p.status <> 'deleted'
ORDER BY p.id;

-- name: get_provider(id)^
SELECT p.id, p.name, p.protocol, p.api_url, p.api_key_ciphertext, p.currency, p.status, p.timeout_ms,
       p.max_concurrency, p.max_requests_per_s, p.enable_new_services, p.low_balance_micros, p.balance_micros,
       p.balance_currency,
       p.balance_time, p.create_time, p.update_time,
       h.circuit_phase, h.calls, h.failures, h.recent_error_ppm, h.recent_latency_us, h.last_error,
       h.last_call_time, h.last_failure_time, p.webhook_secret_ciphertext <> '' AS webhooks_enabled
FROM providers p JOIN provider_health h ON h.provider_id = p.id
WHERE p.id = :id AND p.status <> 'deleted';

-- name: lock_provider(id)$
SELECT id FROM providers WHERE id = :id AND status <> 'deleted' FOR UPDATE;

-- name: update_provider(id, name, protocol, api_url, api_key_ciphertext, currency, status, timeout_ms, max_concurrency, max_requests_per_s, enable_new_services, low_balance_micros)!
-- A changed mark is judged afresh at the next balance read (the spell's report is cleared with it).
UPDATE providers
SET name = :name, protocol = :protocol, api_url = :api_url, api_key_ciphertext = :api_key_ciphertext,
    currency = :currency, status = :status, timeout_ms = :timeout_ms, max_concurrency = :max_concurrency,
    max_requests_per_s = :max_requests_per_s, enable_new_services = :enable_new_services,
    low_balance_alert_time = CASE WHEN low_balance_micros = :low_balance_micros THEN low_balance_alert_time END,
    low_balance_micros = :low_balance_micros, update_time = now()
WHERE id = :id;

-- name: record_balance(id, balance_micros, balance_currency)^
-- The balance, and whether it starts a low spell: below the provider's mark, with the spell not
-- yet reported (the row lock orders two reads of one provider, so only one of them reports it).
-- A balance at or above the mark ends the spell.
WITH before AS (
    SELECT id, low_balance_alert_time IS NOT NULL AS reported FROM providers WHERE id = :id FOR UPDATE
)
UPDATE providers p
SET balance_micros = :balance_micros, balance_currency = :balance_currency, balance_time = now(),
    low_balance_alert_time = CASE WHEN p.low_balance_micros > 0 AND :balance_micros < p.low_balance_micros
                                  THEN coalesce(p.low_balance_alert_time, now()) END
FROM before b
WHERE p.id = b.id
RETURNING p.name, p.currency, p.low_balance_micros,
          (p.low_balance_micros > 0 AND :balance_micros < p.low_balance_micros AND NOT b.reported) AS newly_low;

-- name: read_circuit(provider_id)^
-- The breaker's state without a lock: enough when the state would stay as it is.
SELECT circuit_phase, circuit_failures,
       extract(epoch FROM circuit_opened_time)::float8 AS opened_at,
       extract(epoch FROM circuit_probe_time)::float8 AS probe_at
FROM provider_health WHERE provider_id = :provider_id;

-- name: lock_circuit(provider_id)^
SELECT circuit_phase, circuit_failures,
       extract(epoch FROM circuit_opened_time)::float8 AS opened_at,
       extract(epoch FROM circuit_probe_time)::float8 AS probe_at
FROM provider_health WHERE provider_id = :provider_id FOR UPDATE;

-- name: store_circuit(provider_id, phase, failures, opened_at, probe_at)!
UPDATE provider_health
SET circuit_phase = :phase, circuit_failures = :failures,
    circuit_opened_time = to_timestamp(:opened_at::float8), circuit_probe_time = to_timestamp(:probe_at::float8)
WHERE provider_id = :provider_id;

-- name: record_call(provider_id, failed, latency_us, error, logged, order_ids, action, params, http_status, body, outcome, reason, latency_ms)!
-- Health after one call: totals, and exponentially weighted recent error rate (ppm) and latency (1/8 weight);
-- with ``logged``, the exchange goes into the per-order provider log in the same statement (one commit).
WITH logged AS (
    INSERT INTO provider_exchanges (provider_id, order_ids, action, params, http_status, body, outcome, reason,
                                    latency_ms)
    SELECT :provider_id, :order_ids::bigint[], :action::text, :params::jsonb, :http_status::integer, :body::text,
           :outcome::text, :reason::text, :latency_ms::integer
    WHERE :logged::boolean
)
UPDATE provider_health
SET calls = calls + 1,
    failures = failures + CASE WHEN :failed THEN 1 ELSE 0 END,
    recent_error_ppm = recent_error_ppm + ((CASE WHEN :failed THEN 1000000 ELSE 0 END) - recent_error_ppm) / 8,
    recent_latency_us = CASE WHEN calls = 0 THEN :latency_us
                             ELSE recent_latency_us + (:latency_us - recent_latency_us) / 8 END,
    last_error = CASE WHEN :failed THEN :error ELSE last_error END,
    last_call_time = now(),
    last_failure_time = CASE WHEN :failed THEN now() ELSE last_failure_time END
WHERE provider_id = :provider_id;

-- name: list_exchange_rates()
SELECT currency, rate, update_time FROM exchange_rates ORDER BY currency;

-- name: get_exchange_rate(currency)$
SELECT rate FROM exchange_rates WHERE currency = :currency;

-- name: set_exchange_rate(currency, rate)^
INSERT INTO exchange_rates (currency, rate) VALUES (:currency, :rate)
ON CONFLICT ON CONSTRAINT exchange_rates_pkey DO UPDATE SET rate = excluded.rate, update_time = now()
RETURNING currency, rate, update_time;

-- name: insert_sync_run(provider_id, trigger)^
INSERT INTO sync_runs (provider_id, trigger) VALUES (:provider_id, :trigger)
ON CONFLICT (provider_id) WHERE status IN ('queued', 'running') DO NOTHING
RETURNING id, provider_id, status, trigger, total, processed, created, updated, quarantined, disabled, unchanged,
          skipped, error, create_time, start_time, finish_time;

-- name: active_sync_run(provider_id)^
SELECT id, provider_id, status, trigger, total, processed, created, updated, quarantined, disabled, unchanged,
       skipped, error, create_time, start_time, finish_time
FROM sync_runs WHERE provider_id = :provider_id AND status IN ('queued', 'running');

-- name: get_sync_run(id)^
SELECT id, provider_id, status, trigger, total, processed, created, updated, quarantined, disabled, unchanged,
       skipped, error, create_time, start_time, finish_time
FROM sync_runs WHERE id = :id;

-- name: list_sync_runs(provider_id, limit)
SELECT id, provider_id, status, trigger, total, processed, created, updated, quarantined, disabled, unchanged,
       skipped, error, create_time, start_time, finish_time
FROM sync_runs WHERE provider_id = :provider_id ORDER BY id DESC LIMIT :limit;

-- name: start_sync_run(id)^
-- Claims a queued run; a run already running (a redelivered event) or finished is not started again.
UPDATE sync_runs SET status = 'running', start_time = now()
WHERE id = :id AND status = 'queued'
RETURNING id;

-- name: sync_progress(id, total, processed)!
UPDATE sync_runs SET total = :total, processed = :processed WHERE id = :id;

-- name: finish_sync_run(id, status, total, processed, created, updated, quarantined, disabled, unchanged, skipped, error)!
UPDATE sync_runs
SET status = :status, total = :total, processed = :processed, created = :created, updated = :updated,
    quarantined = :quarantined, disabled = :disabled, unchanged = :unchanged, skipped = :skipped,
    error = :error, finish_time = now()
WHERE id = :id;

-- name: fail_stale_sync_runs(provider_id)!
-- A run left "running" by a crashed server copy for longer than any sync takes, and a run still
-- "queued" a sync period (an hour) later: its event never got a RunSync through (dead-lettered
-- while the server was down), and it would block every later sync of the provider. A failed run
-- is never started, should its event come back from the DLQ.
UPDATE sync_runs
SET status = 'failed', error = CASE WHEN status = 'running' THEN 'interrupted' ELSE 'never started' END,
    finish_time = now()
WHERE provider_id = :provider_id
  AND ((status = 'running' AND start_time < now() - interval '30 minutes')
       OR (status = 'queued' AND create_time < now() - interval '1 hour'));

-- name: enabled_provider_ids()
SELECT id FROM providers WHERE status = 'enabled' ORDER BY id;

-- name: insert_exchange(provider_id, order_ids, action, params, http_status, body, outcome, reason, latency_ms)!
INSERT INTO provider_exchanges (provider_id, order_ids, action, params, http_status, body, outcome, reason, latency_ms)
VALUES (:provider_id, :order_ids, :action, :params, :http_status, :body, :outcome, :reason, :latency_ms);

-- name: webhook_secret(id)$
SELECT webhook_secret_ciphertext FROM providers WHERE id = :id AND status IN ('enabled', 'disabled');

-- name: set_webhook_secret(id, ciphertext)!
UPDATE providers SET webhook_secret_ciphertext = :ciphertext, update_time = now() WHERE id = :id;

-- name: open_orders(provider_id)$
-- Orders with this provider that are not finished, drip-feed runs and refills out at it (a
-- deleted provider is never asked about one again: it would stay open for ever, and with it its
-- order's hold or the order's one open refill). A run at a fallback is not its order's provider.
-- The orders tables are read here, never written.
SELECT (SELECT count(*) FROM orders
        WHERE provider_id = :provider_id
          AND status NOT IN ('completed', 'partial', 'canceled', 'failed', 'expired'))
     + (SELECT count(*) FROM order_runs
        WHERE provider_id = :provider_id AND state IN ('submitting', 'in_progress', 'processing', 'needs_review'))
     + (SELECT count(*) FROM order_refills
        WHERE provider_id = :provider_id AND status IN ('pending', 'in_progress'));
