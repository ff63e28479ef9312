"""A controller's reference list longer than the limit: the surplus is one line in the flow's
record, not one error per item (a list of millions of items made as many strings, joined,
logged and stored in the flow's decision)."""

from __future__ import annotations

import base64
import json
from types import SimpleNamespace

from infra.safe_fetch import FetchPolicy
from services.notifier.adapters import SafeReferenceSource
from tests.paths import PEOPLE
from tests.support.static_server import serving


async def test_a_list_far_over_the_limit_uses_the_first_items_and_says_how_many_were_left() -> None:
    photo = "data:image/jpeg;base64," + base64.b64encode((PEOPLE / "obama.jpg").read_bytes()).decode()
    listing = json.dumps([photo, photo, *([0] * 1_000_000)]).encode()
    source = SafeReferenceSource(FetchPolicy.create("127.0.0.1", timeout_s=20), max_references=3)
    with serving(listing, "application/json") as server:
        flow = SimpleNamespace(callback_base_url=server.url, token="t", datastore_base_url=None)
        references = await source.fetch(flow)  # type: ignore[arg-type]
    assert len(references.images) == 2
    assert references.errors == [
        "999999 references over the limit of 3: not used",
        "reference 2: not a string",
    ]
