-- Rate-limit counters shared by every server copy. UNLOGGED: no WAL, so a request costs no
-- durable write; after a crash the table starts empty, which only resets the windows.
CREATE UNLOGGED TABLE rate_limit_windows (
    key          text        NOT NULL,
    window_start timestamptz NOT NULL,
    hits         integer     NOT NULL DEFAULT 0,
    CONSTRAINT rate_limit_windows_pkey PRIMARY KEY (key, window_start)
);
