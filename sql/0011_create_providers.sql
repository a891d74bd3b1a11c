-- Upstream providers, their health and circuit state (shared by every server copy), exchange
-- rates, the catalog's link to providers (cost kept apart from our price), pricing rules, and
-- sync runs with their progress.
CREATE TABLE providers (
    id                   bigint GENERATED ALWAYS AS IDENTITY CONSTRAINT providers_pkey PRIMARY KEY,
    name                 text        NOT NULL CONSTRAINT providers_name_check CHECK (length(name) BETWEEN 1 AND 100),
    protocol             text        NOT NULL DEFAULT 'standard',
    api_url              text        NOT NULL CONSTRAINT providers_api_url_check CHECK (api_url ~ '^https?://'),
    -- AES-GCM ciphertext ("<key id>:<base64>"); the key itself is never stored or returned.
    api_key_ciphertext   text        NOT NULL,
    currency             text        NOT NULL CONSTRAINT providers_currency_check CHECK (currency ~ '^[A-Z]{3}$'),
    status               text        NOT NULL DEFAULT 'enabled'
                                     CONSTRAINT providers_status_check CHECK (status IN ('enabled', 'disabled', 'deleted')),
    timeout_ms           integer     NOT NULL DEFAULT 15000 CONSTRAINT providers_timeout_ms_check CHECK (timeout_ms BETWEEN 100 AND 120000),
    max_concurrency      integer     NOT NULL DEFAULT 8 CONSTRAINT providers_max_concurrency_check CHECK (max_concurrency BETWEEN 1 AND 256),
    max_requests_per_s   integer     NOT NULL DEFAULT 10 CONSTRAINT providers_max_requests_per_s_check CHECK (max_requests_per_s BETWEEN 1 AND 10000),
    -- Whether services new upstream go on sale at once (priced by the rules) or wait for an admin.
    enable_new_services  boolean     NOT NULL DEFAULT true,
    balance_micros       bigint,
    balance_currency     text        NOT NULL DEFAULT '',
    balance_time         timestamptz,
    create_time          timestamptz NOT NULL DEFAULT now(),
    update_time          timestamptz NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX providers_name_key ON providers (lower(name)) WHERE status <> 'deleted';

-- One row per provider, updated after every call: health for the admin, and the circuit breaker.
CREATE TABLE provider_health (
    provider_id        bigint      NOT NULL CONSTRAINT provider_health_pkey PRIMARY KEY
                                   CONSTRAINT provider_health_provider_id_fkey REFERENCES providers (id),
    circuit_phase      text        NOT NULL DEFAULT 'closed'
                                   CONSTRAINT provider_health_circuit_phase_check CHECK (circuit_phase IN ('closed', 'open', 'half_open')),
    circuit_failures   integer     NOT NULL DEFAULT 0,
    circuit_opened_time timestamptz,
    circuit_probe_time  timestamptz,
    calls              bigint      NOT NULL DEFAULT 0,
    failures           bigint      NOT NULL DEFAULT 0,
    -- Recent error rate and latency: exponentially weighted, in parts per million and microseconds.
    recent_error_ppm   integer     NOT NULL DEFAULT 0,
    recent_latency_us  bigint      NOT NULL DEFAULT 0,
    last_error         text        NOT NULL DEFAULT '',
    last_call_time     timestamptz,
    last_failure_time  timestamptz
);

-- Panel-currency units per one unit of a provider's currency, set by an admin.
CREATE TABLE exchange_rates (
    currency    text           NOT NULL CONSTRAINT exchange_rates_pkey PRIMARY KEY
                               CONSTRAINT exchange_rates_currency_check CHECK (currency ~ '^[A-Z]{3}$'),
    rate        numeric(24, 10) NOT NULL CONSTRAINT exchange_rates_rate_check CHECK (rate > 0),
    update_time timestamptz    NOT NULL DEFAULT now()
);

ALTER TABLE services
    ADD COLUMN provider_id              bigint CONSTRAINT services_provider_id_fkey REFERENCES providers (id),
    ADD COLUMN upstream_service_id      text    NOT NULL DEFAULT '',
    -- The provider's price per 1000, in its currency, and what it comes to in ours at the rate in force.
    ADD COLUMN provider_rate_micros     bigint,
    ADD COLUMN provider_currency        text    NOT NULL DEFAULT '',
    ADD COLUMN exchange_rate            numeric(24, 10),
    ADD COLUMN cost_micros              bigint,
    -- An admin set the price by hand: pricing rules leave it alone.
    ADD COLUMN manual_price             boolean NOT NULL DEFAULT false,
    -- Fields an admin edited ('name', 'description', 'category'): a sync never overwrites them.
    ADD COLUMN admin_edited             text[]  NOT NULL DEFAULT '{}',
    -- Not sold until an admin accepts the new provider price.
    ADD COLUMN quarantined              boolean NOT NULL DEFAULT false,
    ADD COLUMN quarantine_reason        text    NOT NULL DEFAULT '',
    ADD COLUMN pending_provider_rate_micros bigint,
    ADD COLUMN pending_exchange_rate    numeric(24, 10),
    ADD COLUMN gone_upstream_time       timestamptz,
    ADD COLUMN average_completion_s     bigint,
    ADD CONSTRAINT services_provider_upstream_key UNIQUE (provider_id, upstream_service_id);

DROP INDEX services_on_sale_idx;
CREATE INDEX services_on_sale_idx ON services (sort_order, id) WHERE enabled AND NOT quarantined;
CREATE INDEX services_provider_id_idx ON services (provider_id);

-- Where else an order may go when the first provider refuses it, in order.
CREATE TABLE service_fallbacks (
    service_id          bigint  NOT NULL CONSTRAINT service_fallbacks_service_id_fkey REFERENCES services (id) ON DELETE CASCADE,
    position            integer NOT NULL,
    provider_id         bigint  NOT NULL CONSTRAINT service_fallbacks_provider_id_fkey REFERENCES providers (id),
    upstream_service_id text    NOT NULL CONSTRAINT service_fallbacks_upstream_check CHECK (length(upstream_service_id) BETWEEN 1 AND 100),
    CONSTRAINT service_fallbacks_pkey PRIMARY KEY (service_id, position)
);

-- Markup over cost: per service, else per category, else the default rule (both ids null).
CREATE TABLE pricing_rules (
    id              bigint GENERATED ALWAYS AS IDENTITY CONSTRAINT pricing_rules_pkey PRIMARY KEY,
    category_id     bigint CONSTRAINT pricing_rules_category_id_fkey REFERENCES categories (id) ON DELETE CASCADE,
    service_id      bigint CONSTRAINT pricing_rules_service_id_fkey REFERENCES services (id) ON DELETE CASCADE,
    markup_bps      integer NOT NULL DEFAULT 0 CONSTRAINT pricing_rules_markup_bps_check CHECK (markup_bps BETWEEN 0 AND 10000000),
    fixed_micros    bigint  NOT NULL DEFAULT 0 CONSTRAINT pricing_rules_fixed_micros_check CHECK (fixed_micros BETWEEN 0 AND 1000000000000000),
    -- Prices are rounded up to a multiple of this (100 = 0.0001).
    round_to_micros bigint  NOT NULL DEFAULT 100 CONSTRAINT pricing_rules_round_to_micros_check CHECK (round_to_micros BETWEEN 1 AND 1000000000),
    create_time     timestamptz NOT NULL DEFAULT now(),
    update_time     timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT pricing_rules_scope_check CHECK (category_id IS NULL OR service_id IS NULL)
);
CREATE UNIQUE INDEX pricing_rules_scope_key ON pricing_rules (coalesce(category_id, 0), coalesce(service_id, 0));
INSERT INTO pricing_rules (markup_bps, fixed_micros, round_to_micros) VALUES (3000, 0, 100);

CREATE TABLE sync_runs (
    id            bigint GENERATED ALWAYS AS IDENTITY CONSTRAINT sync_runs_pkey PRIMARY KEY,
    provider_id   bigint  NOT NULL CONSTRAINT sync_runs_provider_id_fkey REFERENCES providers (id),
    status        text    NOT NULL DEFAULT 'queued'
                          CONSTRAINT sync_runs_status_check CHECK (status IN ('queued', 'running', 'succeeded', 'failed')),
    trigger       text    NOT NULL DEFAULT 'manual',
    total         integer NOT NULL DEFAULT 0,
    processed     integer NOT NULL DEFAULT 0,
    created       integer NOT NULL DEFAULT 0,
    updated       integer NOT NULL DEFAULT 0,
    quarantined   integer NOT NULL DEFAULT 0,
    disabled      integer NOT NULL DEFAULT 0,
    unchanged     integer NOT NULL DEFAULT 0,
    -- Upstream services of a type smm does not know: listed in error, not imported.
    skipped       integer NOT NULL DEFAULT 0,
    error         text    NOT NULL DEFAULT '',
    create_time   timestamptz NOT NULL DEFAULT now(),
    start_time    timestamptz,
    finish_time   timestamptz
);
-- At most one sync waiting or running per provider.
CREATE UNIQUE INDEX sync_runs_active_key ON sync_runs (provider_id) WHERE status IN ('queued', 'running');
