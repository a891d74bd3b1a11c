-- Drip-feed that smm schedules itself, for services whose provider has no drip-feed: each run is
-- its own upstream order of `quantity`, sent when due; the order's money stays on the order (one
-- hold, one settle/release when the last run ends).
ALTER TABLE services
    -- The provider's own drip-feed (set by the sync). `dripfeed` is what the panel offers: when it is
    -- on and this is off, smm sends the runs itself.
    ADD COLUMN upstream_dripfeed boolean NOT NULL DEFAULT false;
UPDATE services SET upstream_dripfeed = dripfeed WHERE provider_id IS NOT NULL;

ALTER TABLE orders
    ADD COLUMN panel_dripfeed boolean NOT NULL DEFAULT false;

CREATE TABLE order_runs (
    order_id            bigint      NOT NULL CONSTRAINT order_runs_order_id_fkey REFERENCES orders (id),
    run_no              integer     NOT NULL CONSTRAINT order_runs_run_no_check CHECK (run_no >= 1),
    quantity            bigint      NOT NULL CONSTRAINT order_runs_quantity_check CHECK (quantity > 0),
    state               text        NOT NULL DEFAULT 'scheduled' CONSTRAINT order_runs_state_check CHECK (state IN (
                            'scheduled', 'submitting', 'in_progress', 'processing', 'completed', 'partial',
                            'canceled', 'failed', 'needs_review')),
    due_time            timestamptz NOT NULL,
    -- Which provider (0 = primary, then fallbacks) this run's next submission goes to.
    attempt             integer     NOT NULL DEFAULT 0,
    provider_id         bigint      CONSTRAINT order_runs_provider_id_fkey REFERENCES providers (id),
    upstream_service_id text        NOT NULL DEFAULT '',
    upstream_order_id   text        NOT NULL DEFAULT '',
    start_count         bigint,
    -- What the run did not deliver, once it ended (its whole quantity when it failed or was canceled).
    remains             bigint      CONSTRAINT order_runs_remains_check CHECK (remains BETWEEN 0 AND quantity),
    note                text        NOT NULL DEFAULT '',
    next_poll_time      timestamptz,
    submit_time         timestamptz,
    finish_time         timestamptz,
    update_time         timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT order_runs_pkey PRIMARY KEY (order_id, run_no)
);
CREATE INDEX order_runs_due_idx ON order_runs (due_time) WHERE state = 'scheduled';
CREATE INDEX order_runs_poll_idx ON order_runs (next_poll_time) WHERE state IN ('in_progress', 'processing');

ALTER TABLE order_submissions
    ADD COLUMN run_no integer;

-- Looking for an order whose answer was lost (server/orders/reconcile.py): the ids a provider
-- gave smm around a moment.
CREATE INDEX order_submissions_accepted_idx ON order_submissions (provider_id, create_time)
    WHERE state = 'accepted';
ALTER TABLE orders
    -- The automatic look for a needs-review order upstream is not tried again before this time.
    ADD COLUMN reconcile_time timestamptz;

CREATE OR REPLACE VIEW order_details AS
SELECT o.id, o.user_id, o.service_id, s.name AS service_name, s.type AS service_type, o.status, o.link,
       o.quantity, o.runs, o.interval_minutes, o.upstream_params, o.billable, o.price_micros,
       o.charged_micros, o.released_micros, o.provider_id, o.upstream_service_id, o.upstream_order_id,
       o.attempt, o.start_count, o.remains, o.source, o.status_note, o.create_time, o.update_time,
       o.cancel_state, o.cancel_message, o.finish_time, s.refill AS service_refill, s.refill_days,
       s.cancel AS service_cancel, o.pinned_provider, o.panel_dripfeed
FROM orders o JOIN services s ON s.id = o.service_id;
