-- Staff are alerted when a provider's balance falls below low_balance_micros (in the provider's
-- currency; 0 turns it off): a provider out of funds rejects every order, and smm then fails them
-- or sends them to a fallback. low_balance_alert_time is when the current low spell was reported
-- (once per spell); a balance at or above the mark clears it, so the next fall is reported again.
ALTER TABLE providers
    ADD COLUMN low_balance_micros bigint NOT NULL DEFAULT 0
        CONSTRAINT providers_low_balance_micros_check CHECK (low_balance_micros >= 0),
    ADD COLUMN low_balance_alert_time timestamptz;
