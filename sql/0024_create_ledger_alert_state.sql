-- The ledger check's last alert: a digest of the set of problems it alerted about (one row, or
-- none while the ledger is clean). The hourly `ledger-verify` job alerts when the set it finds
-- differs from this one, so an unchanged breakage is alerted once, not every hour; a clean run
-- deletes the row, so the next breakage alerts again. Written by server/wallet/logic.py only.
CREATE TABLE ledger_alert_state (
    singleton       boolean     NOT NULL DEFAULT true,
    problems_digest bytea       NOT NULL,
    problem_count   integer     NOT NULL,
    alert_time      timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT ledger_alert_state_pkey PRIMARY KEY (singleton),
    CONSTRAINT ledger_alert_state_singleton_check CHECK (singleton),
    CONSTRAINT ledger_alert_state_digest_check CHECK (length(problems_digest) = 32)
);
