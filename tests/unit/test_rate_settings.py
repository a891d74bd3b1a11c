"""Rate-limit settings (SMM_RATE_*) must make sense: a limit of 0 or less refuses every call (or,
for the penalty threshold, tightens every address from its first call), and a sync interval of 0
or less spins the sync loop against PostgreSQL."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from core.config import load_settings

RATE_FIELDS = (
    "rate_per_ip_per_min",
    "rate_login_per_ip_per_min",
    "rate_login_per_account_per_min",
    "rate_per_user_per_min",
    "rate_per_api_key_per_min",
    "rate_auth_failures_before_penalty",
    "rate_reset_per_ip_per_min",
    "rate_reset_per_account_per_min",
    "rate_sms_per_account_per_min",
    "rate_sync_s",
)


@pytest.mark.parametrize("field", RATE_FIELDS)
@pytest.mark.parametrize("value", [0, -1])
def test_a_rate_setting_of_zero_or_less_is_refused(field: str, value: int) -> None:
    with pytest.raises(ValidationError, match=field):
        load_settings(**{field: value})


def test_positive_rate_settings_are_taken() -> None:
    settings = load_settings(rate_per_ip_per_min=1, rate_sync_s=0.1)
    assert (settings.rate_per_ip_per_min, settings.rate_sync_s) == (1, 0.1)


def test_the_limiter_knows_api_keys_by_the_prefix_they_are_issued_with() -> None:
    from server.accounts.apikeys import KEY_PREFIX
    from server.common.ratelimit import API_KEY_PREFIX

    assert API_KEY_PREFIX == KEY_PREFIX
