-- name: user_contact(id)^
SELECT id, email, name, status, notification_preferences, phone, phone_verified_at IS NOT NULL AS phone_verified
FROM users WHERE id = :id;

-- name: account_contact(id)^
-- Where an account email goes: the address, or for an email change the pending one.
SELECT id, email, status, pending_email, email_verified_at IS NOT NULL AS email_verified
FROM users WHERE id = :id;

-- name: admin_contacts()
SELECT id, email, name, status, notification_preferences, phone, phone_verified_at IS NOT NULL AS phone_verified
FROM users WHERE role = 'admin' AND status = 'active' ORDER BY id;

-- name: order_facts(id)^
-- What an order email says (orders and services are read here, never written).
SELECT o.id, o.user_id, o.status, o.source, o.link, o.quantity, o.price_micros, o.charged_micros,
       o.released_micros, o.remains, s.name AS service_name
FROM orders o JOIN services s ON s.id = o.service_id
WHERE o.id = :id;

-- name: review_provider(id)^
-- The provider whose answer about an order in review is unknown: the one its newest submission
-- went to (a fallback's, if it came to that), else the order's own.
SELECT p.id, p.name FROM providers p
WHERE p.id = coalesce(
    (SELECT provider_id FROM order_submissions WHERE order_id = :id ORDER BY id DESC LIMIT 1),
    (SELECT provider_id FROM orders WHERE id = :id));

-- name: wallet_available(user_id)$
SELECT coalesce((SELECT available_micros FROM wallets WHERE user_id = :user_id), 0);

-- name: is_suppressed(address)$
SELECT EXISTS (SELECT 1 FROM email_suppressions WHERE lower(address) = lower(:address));

-- name: plan_message(event_id, user_id, to_address, template, status, resend_failed, context, unsubscribe_url)!
-- Once per (event, recipient, template), with what it says: a redelivery sends what the first
-- planning stored. A message that failed is planned again (queued, or suppressed if the address is
-- suppressed now), with what it says now, when the event comes back and ``resend_failed``.
INSERT INTO email_messages (event_id, user_id, to_address, template, status, context, unsubscribe_url)
VALUES (:event_id, :user_id, :to_address, :template, :status, :context, :unsubscribe_url)
ON CONFLICT ON CONSTRAINT email_messages_event_recipient_template_key DO UPDATE
SET status = excluded.status, context = excluded.context, unsubscribe_url = excluded.unsubscribe_url,
    update_time = now()
WHERE email_messages.status = 'failed' AND :resend_failed::boolean;

-- name: planned_message(event_id, to_address, template)^
SELECT id, status, context, unsubscribe_url FROM email_messages
WHERE event_id = :event_id AND to_address = :to_address AND template = :template;

-- name: record_delivery(id, status, transport, transport_message_id, error)$
UPDATE email_messages
SET status = :status, transport = :transport, transport_message_id = :transport_message_id, error = :error,
    update_time = now()
WHERE id = :id AND status IN ('queued', 'failed')
RETURNING id;

-- name: delivery_event(transport_message_id, status)^
-- A provider's delivery news; a later 'delivered' never hides an earlier bounce or complaint.
UPDATE email_messages SET status = :status, update_time = now()
WHERE transport_message_id = :transport_message_id AND status NOT IN ('bounced', 'complained')
RETURNING id, to_address, create_time;

-- name: lift_bounce(address, planned_at)!
-- A message planned after the address bounced was delivered: the mailbox takes mail again. Only a
-- bounce is lifted (a complaint is the user asking for no mail), and only by a message planned
-- after it (late news of an older message says nothing about the mailbox now).
DELETE FROM email_suppressions
WHERE lower(address) = lower(:address) AND reason = 'bounced' AND create_time < :planned_at;

-- name: suppress_address(address, reason)!
INSERT INTO email_suppressions (address, reason) VALUES (:address, :reason)
ON CONFLICT (lower(address)) DO NOTHING;

-- name: set_preference(id, topic, enabled)$
UPDATE users
SET notification_preferences = jsonb_set(
        coalesce(notification_preferences, '{}'::jsonb) || jsonb_build_object('email', coalesce(notification_preferences -> 'email', '{}'::jsonb)),
        ARRAY['email', :topic::text], to_jsonb(:enabled::boolean)),
    update_time = now()
WHERE id = :id
RETURNING id;

-- name: list_user_messages(user_id, limit)
-- Both channels, newest first.
(SELECT id, 'email' AS channel, to_address, template, status, transport, error, create_time, update_time
 FROM email_messages WHERE user_id = :user_id ORDER BY id DESC LIMIT :limit)
UNION ALL
(SELECT id, 'sms' AS channel, to_number, template, status, transport, error, create_time, update_time
 FROM sms_messages WHERE user_id = :user_id ORDER BY id DESC LIMIT :limit)
ORDER BY create_time DESC, id DESC
LIMIT :limit;

-- name: is_number_suppressed(number)$
SELECT EXISTS (SELECT 1 FROM sms_suppressions WHERE number = :number);

-- name: plan_sms(event_id, user_id, to_number, template, status, resend_failed)!
-- Once per (event, number, template). A text that failed before reaching the provider (no SID)
-- is planned again when the event comes back and ``resend_failed``; one with a SID never is.
INSERT INTO sms_messages (event_id, user_id, to_number, template, status)
VALUES (:event_id, :user_id, :to_number, :template, :status)
ON CONFLICT ON CONSTRAINT sms_messages_event_recipient_template_key DO UPDATE
SET status = excluded.status, update_time = now()
WHERE sms_messages.status = 'failed' AND sms_messages.transport_message_id = ''
  AND :resend_failed::boolean;

-- name: get_planned_sms(event_id, to_number, template)^
SELECT id, status FROM sms_messages
WHERE event_id = :event_id AND to_number = :to_number AND template = :template;

-- name: record_sms_delivery(id, status, allowed, transport, transport_message_id, error, error_code)^
-- The worker's news about its own attempt; never over what the provider reported since.
UPDATE sms_messages
SET status = :status, transport = :transport,
    transport_message_id = CASE WHEN :transport_message_id = '' THEN transport_message_id
                                ELSE :transport_message_id END,
    error = :error, error_code = :error_code, update_time = now()
WHERE id = :id AND status = ANY(:allowed)
RETURNING id, to_number;

-- name: apply_sms_status(id, transport_message_id, status, rank, error, error_code)^
-- The provider's news; callbacks may come out of order, so a status only ever moves forward.
UPDATE sms_messages
SET status = :status, transport_message_id = :transport_message_id, error = :error, error_code = :error_code,
    update_time = now()
WHERE (id = :id OR (:id = 0 AND transport_message_id = :transport_message_id))
  AND transport_message_id IN ('', :transport_message_id)
  AND (CASE status WHEN 'queued' THEN 0 WHEN 'sending' THEN 1 WHEN 'sent' THEN 2 ELSE 3 END) < :rank
RETURNING id, to_number;

-- name: suppress_number(number, reason, error_code)!
INSERT INTO sms_suppressions (number, reason, error_code) VALUES (:number, :reason, :error_code)
ON CONFLICT ON CONSTRAINT sms_suppressions_pkey DO NOTHING;

-- name: email_alert_status(event_id)$
-- How an admin alert was first planned for this event (a redelivery follows it); NULL if never.
SELECT status FROM email_messages WHERE event_id = :event_id AND template = 'admin_alert' ORDER BY id LIMIT 1;

-- name: sms_alert_status(event_id)$
SELECT status FROM sms_messages WHERE event_id = :event_id AND template = 'admin_alert' ORDER BY id LIMIT 1;

-- name: ensure_alert_window(channel, kind)!
INSERT INTO admin_alert_windows (channel, kind, open_time) VALUES (:channel, :kind, 'epoch')
ON CONFLICT ON CONSTRAINT admin_alert_windows_pkey DO NOTHING;

-- name: lock_alert_window(channel, kind)^
-- Alerts of one kind are planned one at a time, so two at once cannot both open a window.
SELECT open_time, held_back, now() AS now FROM admin_alert_windows
WHERE channel = :channel AND kind = :kind
FOR UPDATE;

-- name: reopen_alert_window(channel, kind)!
UPDATE admin_alert_windows SET open_time = now(), held_back = 0 WHERE channel = :channel AND kind = :kind;

-- name: hold_back_alert(channel, kind)!
UPDATE admin_alert_windows SET held_back = held_back + 1 WHERE channel = :channel AND kind = :kind;
