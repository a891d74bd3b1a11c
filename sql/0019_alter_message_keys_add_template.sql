-- One message per (event, recipient, template), not per (event, recipient): one event may plan
-- two messages for one person (order_placed and low_balance for the same order), and keyed by
-- recipient alone the second was folded into the first and never sent. A dead letter's admin
-- alert is planned under the dead letter's own id (see server/notifications/logic.py), so the
-- event_id column holds that key for alerts.
ALTER TABLE email_messages
    DROP CONSTRAINT email_messages_event_recipient_key,
    ADD CONSTRAINT email_messages_event_recipient_template_key UNIQUE (event_id, to_address, template);

ALTER TABLE sms_messages
    DROP CONSTRAINT sms_messages_event_recipient_key,
    ADD CONSTRAINT sms_messages_event_recipient_template_key UNIQUE (event_id, to_number, template);
