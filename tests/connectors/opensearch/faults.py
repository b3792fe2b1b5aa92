"""TEST DOUBLE of failures only: an opensearch-py connection that sends every request to the real node,
records what it sent, and on demand answers in the node's place with the failures a loaded or broken
cluster gives (whole-request 503s, per-item 429s in a bulk, a 503 on one path).

A real node rejects bulk items with 429 only under write-queue pressure, which a test cannot time; so the
failures are injected here and everything else, including the items that are not rejected, is the real
node's answer. Construct clients with `connection_class=FaultConnection, faults=state`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from opensearchpy import Urllib3HttpConnection


@dataclass
class FaultState:
    """Shared by every connection of one client: what was sent, and the failures still to inject."""

    searches: list[dict[str, Any]] = field(default_factory=list)  # {"path", "params", "body"} of each search
    bulk_bodies: list[list[str]] = field(default_factory=list)  # ids sent in each bulk request
    bulk_params: list[dict[str, Any]] = field(default_factory=list)  # query parameters of each bulk request
    fail_bulk_requests: int = 0  # answer this many bulk requests with 503
    reject_items_once: set[str] = field(default_factory=set)  # answer these ids' next op with 429
    fail_paths: dict[str, int] = field(default_factory=dict)  # path suffix -> how many requests answer 503


def _text(body: Any) -> str:
    return body.decode() if isinstance(body, bytes) else str(body)


class FaultConnection(Urllib3HttpConnection):
    """See the module docstring."""

    def __init__(self, *args: Any, faults: FaultState, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.faults = faults

    def _fail(self, status: int, kind: str, reason: str) -> None:
        payload = {
            "error": {"root_cause": [{"type": kind, "reason": reason}], "type": kind, "reason": reason},
            "status": status,
        }
        self._raise_error(status, json.dumps(payload), "application/json")

    def perform_request(
        self,
        method: str,
        url: str,
        params: Any = None,
        body: Any = None,  # type: ignore[override]
        timeout: Any = None,
        ignore: Any = (),
        headers: Any = None,
    ) -> Any:
        path = url.split("?")[0]
        for suffix, left in self.faults.fail_paths.items():
            if path.endswith(suffix) and left > 0:
                self.faults.fail_paths[suffix] = left - 1
                self._fail(503, "cluster_manager_not_discovered_exception", f"injected failure of {path}")
        if path.endswith("/_search") and body:
            self.faults.searches.append({"path": path, "params": dict(params or {}), "body": json.loads(body)})
        if path.endswith("/_msearch") and body:
            lines = [json.loads(ln) for ln in _text(body).split("\n") if ln.strip()]
            for request in lines[1::2]:
                self.faults.searches.append({"path": path, "params": {}, "body": request})
        if path.endswith("/_bulk"):
            answer = self._bulk(path, params, body)
            if answer is not None:
                return answer
        return super().perform_request(
            method, url, params=params, body=body, timeout=timeout, ignore=ignore, headers=headers
        )

    def _bulk(self, path: str, params: Any, body: Any) -> Any:
        lines = [ln for ln in _text(body).split("\n") if ln.strip()]
        ops: list[tuple[str, str | None]] = []
        i = 0
        while i < len(lines):
            ((op, _meta),) = json.loads(lines[i]).items()
            has_source = op in ("index", "create", "update")
            ops.append((lines[i], lines[i + 1] if has_source else None))
            i += 2 if has_source else 1
        ids = [next(iter(json.loads(a).values())).get("_id") for a, _ in ops]
        self.faults.bulk_bodies.append(ids)
        self.faults.bulk_params.append(dict(params or {}))
        if self.faults.fail_bulk_requests > 0:
            self.faults.fail_bulk_requests -= 1
            self._fail(503, "unavailable_shards_exception", "injected: node overloaded")
        rejected = [doc_id in self.faults.reject_items_once for doc_id in ids]
        if not any(rejected):
            return None
        self.faults.reject_items_once -= set(ids)
        kept = [op for op, r in zip(ops, rejected, strict=True) if not r]
        items: list[dict[str, Any]] = []
        if kept:
            payload = "\n".join(x for a, s in kept for x in (a, s) if x is not None) + "\n"
            _status, _h, data = super().perform_request("POST", path, params=params, body=payload.encode())
            items = json.loads(data)["items"]
        out, real = [], iter(items)
        for doc_id, r, (action_line, _) in zip(ids, rejected, ops, strict=True):
            op = next(iter(json.loads(action_line)))
            if r:
                out.append(
                    {
                        op: {
                            "_id": doc_id,
                            "status": 429,
                            "error": {
                                "type": "es_rejected_execution_exception",
                                "reason": "injected: write queue full",
                            },
                        }
                    }
                )
            else:
                out.append(next(real))
        return 200, {"content-type": "application/json"}, json.dumps({"took": 1, "errors": True, "items": out})
