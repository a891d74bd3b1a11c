-- One row per job period: the scheduler's ticks may arrive more than once; the job runs once.
CREATE TABLE job_runs (
    job          text        NOT NULL,
    period_start timestamptz NOT NULL,
    result       text        NOT NULL DEFAULT '',
    finish_time  timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT job_runs_pkey PRIMARY KEY (job, period_start)
);

-- Daily counts of domain events (analytics worker); each event id is counted once through
-- idempotent_requests.
CREATE TABLE event_counts (
    day     date   NOT NULL,
    subject text   NOT NULL,
    count   bigint NOT NULL DEFAULT 0,
    CONSTRAINT event_counts_pkey PRIMARY KEY (day, subject)
);
