"""Numeric settings outside what they can mean are refused at start, naming the setting: a zero
relay batch, dispatch concurrency or pool size stalled the system silently, a zero or negative
timeout failed every call, a negative cache or grace period meant nothing."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from core.config import load_settings

# (setting, the first value refused, the least value accepted)
BOUNDS = (
    ("relay_batch", 0, 1),
    ("relay_poll_s", 0, 0.01),
    ("db_pool_min", -1, 0),
    ("db_pool_max", 0, 2),
    ("db_pool_timeout_s", 0, 0.1),
    ("session_ttl_h", 0, 1),
    ("api_key_rotation_grace_h", -1, 0),
    ("api_key_usage_flush_s", 0, 0.1),
    ("api_key_cache_s", -1, 0),
    ("verify_email_ttl_s", 0, 1),
    ("reset_password_ttl_s", 0, 1),
    ("change_email_ttl_s", 0, 1),
    ("smtp_port", 0, 1),
    ("phone_code_ttl_minutes", 0, 1),
    ("phone_code_max_attempts", 0, 1),
    ("order_stuck_after_h", 0, 1),
    ("subscription_default_posts", -1, 0),
    ("admin_alert_interval_s", -1, 0),
    ("dispatch_concurrency", 0, 1),
    ("sync_price_jump_percent", -1, 0),
    ("provider_failure_threshold", 0, 1),
    ("provider_circuit_reset_s", 0, 0.1),
    ("provider_state_cache_s", -1, 0),
    ("demo_provider_step_s", 0, 0.01),
    ("max_body_bytes", 0, 1),
    ("rpc_timeout_s", 0, 0.1),
    ("reseller_add_timeout_s", 0, 0.1),
)


@pytest.mark.parametrize(("field", "refused", "accepted"), BOUNDS, ids=[b[0] for b in BOUNDS])
def test_a_setting_out_of_its_range_is_refused(field: str, refused: float, accepted: float) -> None:
    with pytest.raises(ValidationError, match=field):
        load_settings(**{field: refused})
    assert getattr(load_settings(**{field: accepted}), field) == accepted


def test_a_port_above_65535_is_refused() -> None:
    with pytest.raises(ValidationError, match="smtp_port"):
        load_settings(smtp_port=65536)


def test_a_subscription_default_above_the_most_posts_an_order_may_have_is_refused() -> None:
    with pytest.raises(ValidationError, match="subscription_default_posts"):
        load_settings(subscription_default_posts=10_001)
    assert load_settings(subscription_default_posts=10_000).subscription_default_posts == 10_000


def test_alerts_cannot_be_held_back_longer_than_a_day() -> None:
    with pytest.raises(ValidationError, match="admin_alert_interval_s"):
        load_settings(admin_alert_interval_s=86_401)
    assert load_settings(admin_alert_interval_s=86_400).admin_alert_interval_s == 86_400


def test_the_pool_cannot_be_smaller_than_its_minimum() -> None:
    with pytest.raises(ValidationError, match="db_pool_max"):
        load_settings(db_pool_min=8, db_pool_max=4)
    settings = load_settings(db_pool_min=4, db_pool_max=4)
    assert (settings.db_pool_min, settings.db_pool_max) == (4, 4)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("grpc_addr", "127.0.0.1:99999"),  # gRPC listened on a random port instead
        ("grpc_addr", "127.0.0.1:0"),
        ("edge_addr", "127.0.0.1:70000"),  # a traceback from bind()
        ("edge_addr", "nonsense"),  # a traceback from the port's int()
        ("edge_addr", ":8080"),
        ("demo_provider_addr", "127.0.0.1:port"),
    ],
)
def test_a_listen_address_must_be_host_and_a_port_in_range(field: str, value: str) -> None:
    with pytest.raises(ValidationError, match=f"{field}[\\s\\S]*HOST:PORT"):
        load_settings(**{field: value})


def test_listen_addresses_in_every_written_form_are_accepted() -> None:
    settings = load_settings(grpc_addr="[::]:50051", edge_addr="0.0.0.0:1", demo_provider_addr="")
    assert (settings.grpc_addr, settings.edge_addr, settings.demo_provider_addr) == (
        "[::]:50051",
        "0.0.0.0:1",
        "",
    )
    assert load_settings(demo_provider_addr="localhost:65535").demo_provider_addr == "localhost:65535"
