-- Admin alerts that come in bursts (an order gone to review, a dead letter of one durable) go out
-- at most once per SMM_ADMIN_ALERT_INTERVAL_S per channel and kind: the first opens a window, the
-- ones planned within it are recorded 'quieted' (one row per admin, never sent) and counted in
-- held_back, which the first alert after the window reports (server/notifications/quiet.py).
CREATE TABLE admin_alert_windows (
    channel   text        NOT NULL CONSTRAINT admin_alert_windows_channel_check CHECK (channel IN ('email', 'sms')),
    -- 'review', or 'dlq:<durable>'.
    kind      text        NOT NULL,
    open_time timestamptz NOT NULL,
    held_back integer     NOT NULL DEFAULT 0,
    CONSTRAINT admin_alert_windows_pkey PRIMARY KEY (channel, kind)
);

ALTER TABLE email_messages
    DROP CONSTRAINT email_messages_status_check,
    ADD CONSTRAINT email_messages_status_check
        CHECK (status IN ('queued', 'sent', 'delivered', 'bounced', 'complained', 'failed', 'suppressed', 'quieted'));

ALTER TABLE sms_messages
    DROP CONSTRAINT sms_messages_status_check,
    ADD CONSTRAINT sms_messages_status_check
        CHECK (status IN ('queued', 'sending', 'sent', 'delivered', 'undelivered', 'failed', 'suppressed', 'quieted'));
