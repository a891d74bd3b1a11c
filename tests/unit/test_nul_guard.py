"""fields_with_nul: every string holding a NUL is named by its path, at any depth."""

from __future__ import annotations

from smm.v1 import accounts_service_pb2 as apb
from smm.v1 import orders_service_pb2 as opb
from smm.v1 import providers_service_pb2 as ppb
from smm.v1 import wallet_service_pb2 as wpb

from server.common.nul_guard import fields_with_nul


def test_clean_messages_have_none() -> None:
    assert fields_with_nul(wpb.CreateBalanceAdjustmentRequest(user_id=1, amount="0", reason="fine")) == []
    assert (
        fields_with_nul(opb.Order(parameters={"comments": "a\nb"}, timeline=[opb.OrderEvent(note="x")])) == []
    )


def test_top_level_nested_repeated_and_map_fields_are_named() -> None:
    adjustment = wpb.CreateBalanceAdjustmentRequest(user_id=1, amount="1", reason="a\x00", request_id="\x00")
    assert fields_with_nul(adjustment) == ["reason", "request_id"]
    update = ppb.UpdateProviderRequest(provider=ppb.Provider(name="x\x00y"))
    assert fields_with_nul(update) == ["provider.name"]
    order = opb.Order(
        timeline=[opb.OrderEvent(note="ok"), opb.OrderEvent(note="bad\x00")],
        parameters={"comments": "\x00", "ok": "fine"},
    )
    assert fields_with_nul(order) == ["timeline[1].note", "parameters['comments']"]
    key = apb.CreateApiKeyRequest(allowed_ips=["127.0.0.1", "10.0.0.1\x00"])
    assert fields_with_nul(key) == ["allowed_ips"]
