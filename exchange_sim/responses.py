"""HTTP responses the simulator's REST endpoints and its control API both send.

Apart from ``server.py`` so that the control API (``control_api.py``) does not import the server back.
"""

from __future__ import annotations

import http
from typing import Any

import orjson
from websockets.datastructures import Headers
from websockets.http11 import Response


def json_response(status: int, body: Any, headers: dict[str, str] | None = None) -> Response:
    """An HTTP response with a JSON body (websockets' Response; the connection closes after it)."""
    payload = body if isinstance(body, bytes) else orjson.dumps(body)
    hdrs = Headers()
    hdrs["Content-Type"] = "application/json;charset=UTF-8"
    hdrs["Content-Length"] = str(len(payload))
    hdrs["Connection"] = "close"
    for k, v in (headers or {}).items():
        hdrs[k] = v
    return Response(status, http.HTTPStatus(status).phrase, hdrs, payload)


def binance_error(status: int, code: int, msg: str, headers: dict[str, str] | None = None) -> Response:
    """An error as Binance answers it: ``{"code": <negative code>, "msg": ...}``."""
    return json_response(status, {"code": code, "msg": msg}, headers)
