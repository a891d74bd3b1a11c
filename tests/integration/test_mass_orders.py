"""Mass orders (``OrdersLogic.place_mass``) and their Idempotency-Key, end to end through the edge."""

from __future__ import annotations

import pytest

from tests.fix_shop import Shop
from tests.integration.test_accounts import bearer, register
from tests.integration.test_edge_http import assert_error

pytestmark = pytest.mark.integration
URL = "/api/v1/dashboard/orders/mass"


async def test_a_mass_order_key_sent_again_with_its_lines_moved_places_nothing_twice(shop: Shop) -> None:
    """The same Idempotency-Key with other text was refused only when a line number it uses had
    been placed under that key: the same order one line lower (a blank line added, say, by a client
    that rebuilt the text for its retry) was a fresh key and was placed and charged again."""
    ann = await shop.user("ann@example.com", "5.00")
    likes = shop.service_id("2")  # 0.325 per 1000
    headers = {**ann, "Idempotency-Key": "mass-shift"}
    line = f"{likes} | https://x.com/once | 1000"
    first = await shop.http.post(URL, json={"lines": line}, headers=headers)
    assert first.status_code == 200, first.text
    [placed] = first.json()["lines"]
    assert (placed["line"], placed["error"]) == (1, "")
    for moved in (f"\n{line}", f"\n\n{line}\n", f"{line}\n{likes} | https://x.com/more | 1000"):
        again = await shop.http.post(URL, json={"lines": moved}, headers=headers)
        error = assert_error(again, 400, "FAILED_PRECONDITION", "REQUEST_ID_REUSED")
        assert error["message"] == "this Idempotency-Key was already used for a different order"
    assert await shop.balance(ann) == ("4.675", "0.325")
    same = await shop.http.post(URL, json={"lines": line}, headers=headers)
    assert same.json()["lines"] == first.json()["lines"], same.text
    listed = (await shop.http.get("/api/v1/dashboard/orders", headers=ann)).json()["orders"]
    assert [o["id"] for o in listed] == [placed["orderId"]]
    assert await shop.balance(ann) == ("4.675", "0.325")
    assert (await shop.verify()).ok


async def test_a_mass_order_key_whose_lines_were_all_refused_is_still_that_request(shop: Shop) -> None:
    """Nothing placed under a key left nothing to compare, so the key took any other text; a retry
    of the same text still places the lines refused the first time (here: once funded)."""
    account = await register(shop.http, "ann@example.com")
    ann = bearer(account["token"])
    likes = shop.service_id("2")
    headers = {**ann, "Idempotency-Key": "mass-refused"}
    text = f"{likes} | https://x.com/a | 1000"
    refused = await shop.http.post(URL, json={"lines": text}, headers=headers)
    assert (refused.json()["placed"], refused.json()["refused"]) == (0, 1), refused.text
    other = await shop.http.post(URL, json={"lines": f"{likes} | https://x.com/b | 1000"}, headers=headers)
    assert_error(other, 400, "FAILED_PRECONDITION", "REQUEST_ID_REUSED")
    await shop.fund(account["user"]["id"], "1.00")
    retried = await shop.http.post(URL, json={"lines": text}, headers=headers)
    assert (retried.json()["placed"], retried.json()["refused"]) == (1, 0), retried.text
    assert await shop.balance(ann) == ("0.675", "0.325")
    assert (await shop.verify()).ok
