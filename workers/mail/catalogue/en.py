"""English: the reference catalogue. Every key the templates and ``render.py`` use is here, and
nothing else (tests/unit/test_mail_render.py checks both ways)."""

from __future__ import annotations

MESSAGES: dict[str, str] = {
    # The frame of every subject, and the layout.
    "layout.subject": "{panel_name}: {subject}",
    "layout.sent_by": "Sent by {panel_name}.",
    "layout.support": "Questions? Write to us:",
    "layout.reason_account": (
        "You receive this email because it concerns your account; it is sent whatever your "
        "notification settings."
    ),
    "layout.reason_notification": (
        "You receive this email because this notification is turned on in your account settings."
    ),
    "layout.unsubscribe": "Unsubscribe from these emails",
    "layout.unsubscribe_text": "To stop these emails, open {url}",
    # Shared phrases.
    "common.greeting": "Hello,",
    "common.greeting_named": "Hello {name},",
    "common.pair": "{label}: {value}",
    "common.money": "{amount} {currency}",
    "common.link_expires": "The link works once and until {expires}.",
    "common.copy_link": "If the button does not work, copy this address into your browser:",
    "common.label_balance": "Balance now",
    "common.view_wallet": "Open my balance",
    # Orders.
    "order.label_order": "Order",
    "order.number": "#{order_id}",
    "order.label_service": "Service",
    "order.label_link": "Link",
    "order.label_quantity": "Quantity",
    "order.label_price": "Price",
    "order.label_charged": "Charged",
    "order.label_remains": "Not delivered",
    "order.label_released": "Back to your balance",
    "order.released_note": "{amount} went back to your balance.",
    "order.view": "View the order",
    # verify_email
    "verify_email.subject": "Confirm your email address",
    "verify_email.intro": "Please confirm that this is your email address by opening the link below.",
    "verify_email.button": "Confirm my address",
    "verify_email.ignore": "If you did not sign up on {panel_name}, ignore this message.",
    # password_reset
    "password_reset.subject": "Reset your password",
    "password_reset.intro": (
        "Someone (we hope you) asked to reset the password of your {panel_name} account. Open the "
        "link below to choose a new one."
    ),
    "password_reset.button": "Choose a new password",
    "password_reset.ignore": "If it was not you, ignore this message: your password stays as it is.",
    # email_change (to the new address)
    "email_change.subject": "Confirm your new email address",
    "email_change.intro": "Open the link below to make this the address of your {panel_name} account.",
    "email_change.button": "Confirm my new address",
    "email_change.ignore": "If you did not ask for this change, ignore this message: nothing changes.",
    # email_change_notice (to the old address)
    "email_change_notice.subject": "Your email address is being changed",
    "email_change_notice.intro": (
        "Someone asked to change the address of your {panel_name} account to {new_email}."
    ),
    "email_change_notice.pending": "The change happens only when that address confirms it.",
    "email_change_notice.warning": "If it was not you, change your password now.",
    # api_key_created
    "api_key_created.subject": "New API key: {key_name}",
    "api_key_created.intro": "A new API key was created for your {panel_name} account.",
    "api_key_created.label_name": "Name",
    "api_key_created.label_prefix": "Key",
    "api_key_created.prefix": "{key_prefix}…",
    "api_key_created.label_created": "Created",
    "api_key_created.no_secret": (
        "The full key was shown once, when it was created; it is never sent by email."
    ),
    "api_key_created.warning": "If you did not create this key, revoke it and change your password now.",
    # order_placed
    "order_placed.subject": "Order #{order_id} placed",
    "order_placed.intro": "We received your order. We will write again when it is done.",
    "order_placed.held": (
        "The price is held on your balance until the order finishes; whatever is not delivered "
        "goes back to your balance."
    ),
    # order_completed
    "order_completed.subject": "Order #{order_id} completed",
    "order_completed.intro": "Your order is complete.",
    # order_partial
    "order_partial.subject": "Order #{order_id} partially completed",
    "order_partial.intro": (
        "Your order ended before all of it could be delivered. You pay only for what was delivered; "
        "the rest went back to your balance."
    ),
    # order_canceled
    "order_canceled.subject": "Order #{order_id} canceled",
    "order_canceled.intro": "Your order was canceled.",
    # refill_done
    "refill_done.subject": "Refill of order #{order_id} completed",
    "refill_done.intro": "The refill #{refill_id} of your order is complete.",
    # low_balance
    "low_balance.subject": "Your balance is low",
    "low_balance.intro": "Your balance is {balance}, below the {threshold} you asked us to watch for.",
    "low_balance.advice": "Add funds so that your orders and subscriptions keep running.",
    "low_balance.button": "Add funds",
    "low_balance.settings": "You can change this threshold in your account settings.",
    # balance_adjusted
    "balance_adjusted.subject": "Your balance was adjusted",
    "balance_adjusted.intro": "The {panel_name} team adjusted your balance.",
    "balance_adjusted.label_amount": "Amount",
    "balance_adjusted.label_reason": "Reason",
    "balance_adjusted.questions": "If something looks wrong, contact support.",
    # payment_receipt
    "payment_receipt.subject": "Receipt for your payment {payment_id}",
    "payment_receipt.intro": "Thank you: we received your payment and added it to your balance.",
    "payment_receipt.label_payment": "Payment",
    "payment_receipt.label_amount": "Amount",
    "payment_receipt.label_method": "Method",
    "payment_receipt.label_paid": "Date",
    "payment_receipt.keep": "Keep this email as your receipt.",
    # admin_alert
    "admin_alert.subject": "Alert: {title}",
    "admin_alert.intro": "{panel_name} needs the attention of its staff:",
    "admin_alert.item": "- {line}",
    "admin_alert.button": "Open the admin",
    "admin_alert.reason": "You receive this alert because you are on the staff of {panel_name}.",
    # Text messages (workers/texts/templates): short, one panel-name prefix each.
    "sms.phone_verification": (
        "{panel_name}: your verification code is {code}. It works once, for {minutes} minutes. "
        "Never share it."
    ),
    "sms.order_completed": (
        "{panel_name}: order #{order_id} ({service_name}) is complete. Charged {charged} {currency}."
    ),
    "sms.order_partial": (
        "{panel_name}: order #{order_id} ({service_name}) ended partially: {remains} not delivered, "
        "{released} {currency} back to your balance."
    ),
    "sms.order_canceled": (
        "{panel_name}: order #{order_id} ({service_name}) was canceled; {released} {currency} went "
        "back to your balance."
    ),
    "sms.api_key_created": (
        '{panel_name}: a new API key "{key_name}" ({key_prefix}...) was created on your account. '
        "Not you? Revoke it and change your password."
    ),
    "sms.security_notice": "{panel_name}: {what} ({time}). Not you? Secure your account now.",
    "sms.security_password_changed": "your password was changed",
    "sms.security_password_reset": "your password was reset",
    "sms.security_email_changed": "your account's email address was changed",
    "sms.security_two_factor_enabled": "two-factor sign-in was turned on",
    "sms.security_two_factor_disabled": "two-factor sign-in was turned off",
    "sms.admin_alert": "{panel_name} alert: {title}",
    "sms.admin_alert_item": "- {line}",
    "sms.admin_alert_more": "(+{count} more)",
}
