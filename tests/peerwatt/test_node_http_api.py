"""The node's HTTP API (peerwatt.node.http_api) against hostile requests: query values out of range."""

from __future__ import annotations

import pytest

from chain.canonical import MAX_SAFE_INTEGER
from peerwatt.node.http_api import NodeHttpApi
from tests.support.market_ledger import closed_market_data


@pytest.fixture(scope="module")
def api(tmp_path_factory):
    api = NodeHttpApi(closed_market_data(tmp_path_factory.mktemp("node")), dict, "127.0.0.1", 0)
    yield api
    api.server.server_close()


def _range(name: str, lo: int = 0) -> str:
    return f"{name} must be a whole number {lo}..{MAX_SAFE_INTEGER}"


@pytest.mark.parametrize(
    ("path", "error"),
    [
        ("/v1/blocks?from=99999999999999999999", _range("from")),
        ("/v1/blocks?from=" + "9" * 5000, _range("from")),
        ("/v1/blocks?from=" + "0" * 5000 + "1&limit=" + "9" * 5000, _range("limit", 1)),
        (f"/v1/blocks?from={MAX_SAFE_INTEGER + 1}", _range("from")),
        ("/v1/blocks?from=-5", _range("from")),
        ("/v1/blocks?from=1_0", _range("from")),
        ("/v1/blocks?from=%201%20", _range("from")),
        ("/v1/blocks?from=%D9%A1", _range("from")),  # ARABIC-INDIC DIGIT ONE: int() takes it
        ("/v1/blocks?from=0x10", _range("from")),
        ("/v1/blocks?limit=0", _range("limit", 1)),
        ("/v1/proof?height=99999999999999999999&index=0", _range("height")),
        ("/v1/proof?height=1&index=99999999999999999999", _range("index")),
        ("/v1/proof?height=1&index=-1", _range("index")),
        ("/v1/proof?height=1", "index is missing"),
        ("/v1/proof?index=0", "height is missing"),
    ],
)
def test_a_query_value_out_of_range_is_a_400_naming_it(api, path, error):
    assert api.handle(path) == (400, {"error": f"bad request: {error}"})


def test_values_at_the_bounds_are_served(api):
    assert api.handle(f"/v1/blocks?from={MAX_SAFE_INTEGER}&limit={MAX_SAFE_INTEGER}") == (200, {"blocks": []})
    assert api.handle(f"/v1/proof?height={MAX_SAFE_INTEGER}&index={MAX_SAFE_INTEGER}")[0] == 404
    code, body = api.handle("/v1/blocks?from=0001&limit=2")
    assert code == 200 and [b["header"]["height"] for b in body["blocks"]] == [1, 2]
    code, body = api.handle("/v1/proof?height=1&index=0")
    assert code == 200 and body["index"] == 0
