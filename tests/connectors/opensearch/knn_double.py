"""TEST DOUBLE: the k-NN / neural-search parts of OpenSearch that osmem-server does not implement.

osmem-server (the real, in-memory OpenSearch API server the tests start) answers 400 to `knn`,
`hybrid`, search pipelines and `_plugins/*`. `KnnDoubleConnection` is an opensearch-py connection
that sends every request to osmem-server except those, which it answers itself, reproducing
OpenSearch's *documented* behaviour:

- `knn` (exact search over the documents osmem holds, filtered by the efficient `filter` that osmem
  evaluates): score per the k-NN "Spaces" table - innerproduct (faiss): d = -x.y,
  score = 1 / (1 + d) if d >= 0 else 1 - d; cosinesimil: d = 1 - cos, score = (2 - d) / 2;
  l2: score = 1 / (1 + sum (x_i - y_i)^2); l1 likewise with |x_i - y_i|.
- `hybrid` + search pipeline: each sub-query's results normalised on their own (min_max with the
  neural-search floor 0.001 for the minimum and 1.0 when min == max; l2), combined by the weighted
  arithmetic mean (a document a sub-query missed scores 0 there), or RRF: sum w_i / (rank_constant + rank).
- `PUT/GET /_search/pipeline/<name>` and temporary pipelines in the request body; `_cat/plugins`.

Every request body it answers is first checked against the documented 2.19 / 3.x shape (keys,
types, ranges, weights summing to 1.0, at most 5 hybrid sub-queries, vector dimension equal to the
mapping's), and a bad one gets the 400 a cluster would give. It records those bodies for assertions.
It also injects bulk faults on demand (whole-request 503s, per-item 429s) to exercise retries.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from typing import Any

from opensearchpy import Urllib3HttpConnection

KNN_KEYS = {"vector", "k", "filter", "min_score", "max_distance", "method_parameters", "rescore", "boost", "_name",
            "expand_nested_docs"}
HYBRID_KEYS = {"queries", "filter", "pagination_depth"}
SEARCH_KEYS = {"query", "size", "from", "_source", "track_total_hits", "search_pipeline", "explain", "timeout"}
PIPELINE_KEYS = {"description", "phase_results_processors", "request_processors", "response_processors", "version"}
MIN_SCORE = 0.001


class Rejected(Exception):
    def __init__(self, reason: str, kind: str = "illegal_argument_exception", status: int = 400) -> None:
        super().__init__(reason)
        self.kind = kind
        self.status = status


@dataclass
class DoubleState:
    """Shared by every connection of one client: stored pipelines, recorded bodies, injected faults."""

    plugins: tuple[str, ...] = ("opensearch-knn", "opensearch-neural-search")
    pipelines: dict[str, dict[str, Any]] = field(default_factory=dict)
    searches: list[dict[str, Any]] = field(default_factory=list)  # every knn / hybrid body answered
    bulk_bodies: list[list[str]] = field(default_factory=list)  # ids sent in each bulk request
    fail_bulk_requests: int = 0  # answer this many bulk requests with 503
    reject_items_once: set[str] = field(default_factory=set)  # answer these ids' first index op with 429
    fail_paths: dict[str, int] = field(default_factory=dict)  # path suffix -> how many requests answer 503


def _check(cond: bool, reason: str, kind: str = "parsing_exception") -> None:
    if not cond:
        raise Rejected(reason, kind)


def validate_pipeline(body: Any) -> None:
    """normalization-processor (2.10+) / score-ranker-processor (2.19+) as the docs define them."""
    _check(isinstance(body, dict), "pipeline body must be an object")
    _check(set(body) <= PIPELINE_KEYS, f"unknown pipeline keys {sorted(set(body) - PIPELINE_KEYS)}")
    procs = body.get("phase_results_processors")
    _check(isinstance(procs, list) and len(procs) == 1, "expected one phase_results_processor")
    (name, proc), = procs[0].items()
    _check(name in ("normalization-processor", "score-ranker-processor"), f"Invalid processor type {name}")
    combination = proc.get("combination", {})
    weights = combination.get("parameters", {}).get("weights")
    if weights is not None:
        _check(all(isinstance(w, int | float) and 0.0 <= w <= 1.0 for w in weights), "weights must be in [0, 1]")
        _check(abs(sum(weights) - 1.0) <= 0.01, "sum of weights for combination must be equal to 1.0",
               "illegal_argument_exception")
    if name == "normalization-processor":
        _check(set(proc) <= {"normalization", "combination", "tag", "description", "ignore_failure"},
               f"unknown normalization-processor keys {sorted(proc)}")
        technique = proc.get("normalization", {}).get("technique", "min_max")
        _check(technique in ("min_max", "l2", "z_score"), f"provided normalization technique [{technique}] is not "
               "supported")
        comb = combination.get("technique", "arithmetic_mean")
        _check(comb in ("arithmetic_mean", "geometric_mean", "harmonic_mean"),
               f"provided combination technique [{comb}] is not supported")
        _check(set(combination) <= {"technique", "parameters"}, f"unknown combination keys {sorted(combination)}")
    else:
        _check(set(proc) <= {"combination", "tag", "description"}, f"unknown score-ranker keys {sorted(proc)}")
        _check(combination.get("technique", "rrf") == "rrf", "score-ranker-processor supports only rrf")
        rc = combination.get("rank_constant", 60)
        _check(isinstance(rc, int) and 1 <= rc <= 10_000, "rank_constant must be in [1, 10000]")
        _check(set(combination) <= {"technique", "rank_constant", "parameters"}, "unknown combination keys")


def validate_knn(clause: Any, fields: dict[str, dict[str, Any]]) -> tuple[str, dict[str, Any]]:
    _check(isinstance(clause, dict) and len(clause) == 1, "[knn] expects exactly one vector field")
    (fname, inner), = clause.items()
    _check(fname in fields, f"Field '{fname}' is not knn_vector type.", "illegal_argument_exception")
    _check(isinstance(inner, dict) and set(inner) <= KNN_KEYS, f"[knn] unknown field {sorted(set(inner) - KNN_KEYS)}")
    _check(sum(key in inner for key in ("k", "min_score", "max_distance")) == 1,
           "[knn] requires exactly one of k, distance or score to be set")
    vector = inner.get("vector")
    _check(isinstance(vector, list) and all(isinstance(x, int | float) for x in vector), "[knn] vector must be numbers")
    dim = int(fields[fname]["dimension"])
    _check(len(vector) == dim, f"Query vector has invalid dimension: {len(vector)}. Dimension should be: {dim}",
           "illegal_argument_exception")
    k = inner.get("k")
    _check(isinstance(k, int) and 1 <= k <= 10_000, "[knn] requires k in [1, 10000]")
    if "filter" in inner:
        _check(isinstance(inner["filter"], dict) and len(inner["filter"]) == 1, "[knn] filter must be one query")
    return fname, inner


def space_score(space: str, x: list[float], y: list[float]) -> float:
    """The k-NN plugin's documented score for one document (the 'Spaces' table)."""
    if space == "innerproduct":
        d = -sum(a * b for a, b in zip(x, y, strict=True))
        return 1.0 / (1.0 + d) if d >= 0 else 1.0 - d
    if space == "l2":
        return 1.0 / (1.0 + sum((a - b) ** 2 for a, b in zip(x, y, strict=True)))
    if space == "l1":
        return 1.0 / (1.0 + sum(abs(a - b) for a, b in zip(x, y, strict=True)))
    if space == "cosinesimil":
        norms = math.sqrt(sum(a * a for a in x)) * math.sqrt(sum(b * b for b in y))
        if norms == 0:
            raise Rejected("zero vector is not supported for cosine similarity")
        d = 1.0 - sum(a * b for a, b in zip(x, y, strict=True)) / norms
        return (2.0 - d) / 2.0
    raise Rejected(f"the double does not implement space_type {space}")


def normalize(scores: list[float], technique: str) -> list[float]:
    if not scores:
        return []
    if technique == "min_max":
        low, high = min(scores), max(scores)
        if high == low:
            return [1.0] * len(scores)
        return [max((s - low) / (high - low), 0.0) or MIN_SCORE for s in scores]
    if technique == "l2":
        norm = math.sqrt(sum(s * s for s in scores))
        return [s / norm if norm else 0.0 for s in scores]
    raise Rejected(f"the double does not implement normalization {technique}")


class KnnDoubleConnection(Urllib3HttpConnection):
    """See the module docstring. Construct clients with `connection_class=KnnDoubleConnection, double=state`."""

    def __init__(self, *args: Any, double: DoubleState, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.double = double

    # -- plumbing ---------------------------------------------------------------------------------

    def _forward(self, method: str, url: str, body: Any = None, params: dict[str, Any] | None = None) -> Any:
        raw = None if body is None else json.dumps(body).encode()
        _status, _headers, data = super().perform_request(method, url, params=params, body=raw)
        return json.loads(data) if data else {}

    @staticmethod
    def _reply(payload: Any, status: int = 200) -> tuple[int, dict[str, str], str]:
        return status, {"content-type": "application/json"}, json.dumps(payload)

    def perform_request(self, method: str, url: str, params: Any = None, body: Any = None,  # type: ignore[override]
                        timeout: Any = None, ignore: Any = (), headers: Any = None) -> Any:
        params = dict(params or {})
        path = url.split("?")[0]
        try:
            answer = self._route(method, path, params, body)
        except Rejected as e:
            payload = {"error": {"root_cause": [{"type": e.kind, "reason": str(e)}], "type": e.kind, "reason": str(e)},
                       "status": e.status}
            self._raise_error(e.status, json.dumps(payload), "application/json")
        if answer is not None:
            return answer
        return super().perform_request(method, url, params=params, body=body, timeout=timeout, ignore=ignore,
                                       headers=headers)

    def _route(self, method: str, path: str, params: dict[str, Any], body: Any) -> Any:
        for suffix, left in self.double.fail_paths.items():
            if path.endswith(suffix) and left > 0:
                self.double.fail_paths[suffix] = left - 1
                raise Rejected(f"injected failure of {path}", "cluster_manager_not_discovered_exception", 503)
        if path == "/_cat/plugins":
            return self._reply([{"name": "node-1", "component": p, "version": "3.3.0"} for p in self.double.plugins])
        m = re.fullmatch(r"/_search/pipeline/([^/]+)", path)
        if m:
            return self._pipeline(method, m.group(1), body)
        if path.endswith("/_bulk"):
            return self._bulk(path, params, body)
        if path == "/_msearch" or path.endswith("/_msearch"):
            return self._msearch(path, params, body)
        m = re.fullmatch(r"/([^/_][^/]*)/_search", path)
        if m and body:
            request = json.loads(body)
            if self._needs_double(request, params):
                return self._reply(self._search(m.group(1), request, params))
        return None

    @staticmethod
    def _needs_double(request: dict[str, Any], params: dict[str, Any]) -> bool:
        query = request.get("query") or {}
        return "knn" in query or "hybrid" in query or "search_pipeline" in request or "search_pipeline" in params

    # -- pipelines --------------------------------------------------------------------------------

    def _pipeline(self, method: str, name: str, body: Any) -> Any:
        if method == "PUT":
            pipeline = json.loads(body)
            validate_pipeline(pipeline)
            self.double.pipelines[name] = pipeline
            return self._reply({"acknowledged": True})
        if name not in self.double.pipelines:
            return self._raise_error(404, json.dumps({"error": {"type": "resource_not_found_exception",
                                                               "reason": f"pipeline [{name}] not found"}}),
                                     "application/json")
        if method == "DELETE":
            del self.double.pipelines[name]
            return self._reply({"acknowledged": True})
        return self._reply({name: self.double.pipelines[name]})

    # -- bulk fault injection ----------------------------------------------------------------------

    def _bulk(self, path: str, params: dict[str, Any], body: Any) -> Any:
        lines = [ln for ln in (body.decode() if isinstance(body, bytes) else body).split("\n") if ln.strip()]
        ops: list[tuple[str, str | None]] = []
        i = 0
        while i < len(lines):
            action = json.loads(lines[i])
            (op, _meta), = action.items()
            has_source = op in ("index", "create", "update")
            ops.append((lines[i], lines[i + 1] if has_source else None))
            i += 2 if has_source else 1
        ids = [next(iter(json.loads(a).values())).get("_id") for a, _ in ops]
        self.double.bulk_bodies.append(ids)
        if self.double.fail_bulk_requests > 0:
            self.double.fail_bulk_requests -= 1
            raise Rejected("injected: node overloaded", "unavailable_shards_exception", 503)
        rejected = [doc_id in self.double.reject_items_once for doc_id in ids]
        if not any(rejected):
            return None
        self.double.reject_items_once -= set(ids)
        kept = [op for op, r in zip(ops, rejected, strict=True) if not r]
        items: list[dict[str, Any]] = []
        if kept:
            payload = "\n".join(x for a, s in kept for x in (a, s) if x is not None) + "\n"
            _status, _h, data = super().perform_request("POST", path, params=params, body=payload.encode())
            items = json.loads(data)["items"]
        out, it = [], iter(items)
        for doc_id, r, (action_line, _) in zip(ids, rejected, ops, strict=True):
            op = next(iter(json.loads(action_line)))
            if r:
                out.append({op: {"_id": doc_id, "status": 429, "error": {
                    "type": "es_rejected_execution_exception", "reason": "injected: write queue full"}}})
            else:
                out.append(next(it))
        return self._reply({"took": 1, "errors": True, "items": out})

    # -- search -----------------------------------------------------------------------------------

    def _msearch(self, path: str, params: dict[str, Any], body: Any) -> Any:
        text = body.decode() if isinstance(body, bytes) else body
        lines = [json.loads(ln) for ln in text.split("\n") if ln.strip()]
        pairs = list(zip(lines[0::2], lines[1::2], strict=True))
        if not any(self._needs_double(b, {}) for _, b in pairs):
            return None
        responses = []
        for header, request in pairs:
            index = header.get("index") or path.split("/")[1]
            try:
                if self._needs_double(request, {}):
                    responses.append({**self._search(index, request, {}), "status": 200})
                else:
                    responses.append({**self._forward("POST", f"/{index}/_search", request), "status": 200})
            except Rejected as e:
                responses.append({"error": {"type": e.kind, "reason": str(e)}, "status": e.status})
        return self._reply({"took": 1, "responses": responses})

    def _vector_fields(self, index: str) -> dict[str, dict[str, Any]]:
        mapping = self._forward("GET", f"/{index}/_mapping")
        props = next(iter(mapping.values()))["mappings"].get("properties", {})
        out = {}
        for name, spec in props.items():
            if spec.get("type") == "knn_vector":
                method = spec.get("method", {})
                out[name] = {"dimension": spec["dimension"],
                             "space_type": method.get("space_type", spec.get("space_type", "l2"))}
        return out

    def _search(self, index: str, request: dict[str, Any], params: dict[str, Any]) -> dict[str, Any]:
        _check(set(request) <= SEARCH_KEYS, f"unknown search keys {sorted(set(request) - SEARCH_KEYS)}")
        self.double.searches.append({"index": index, "params": dict(params), "body": request})
        size = int(request.get("size", 10))
        offset = int(request.get("from", 0))
        query = request["query"]
        if "knn" in query:
            _check(len(query) == 1, "[knn] must be the only clause of its query object")
            ranked = self._knn(index, query["knn"])
        elif "hybrid" in query:
            ranked = self._hybrid(index, query["hybrid"], request, params, size, offset)
        else:
            raise Rejected("the double answers only knn and hybrid queries")
        page = ranked[offset : offset + size]
        sources = self._sources(index, [doc_id for doc_id, _ in page], request.get("_source", True))
        hits = [{"_index": index, "_id": doc_id, "_score": score, **sources.get(doc_id, {})} for doc_id, score in page]
        return {"took": 1, "timed_out": False, "hits": {"total": {"value": len(ranked), "relation": "eq"},
                                                         "max_score": hits[0]["_score"] if hits else None,
                                                         "hits": hits}}

    def _sources(self, index: str, ids: list[str], source: Any) -> dict[str, dict[str, Any]]:
        if source is False or not ids:
            return {}
        docs = self._forward("POST", f"/{index}/_mget", {"ids": ids})["docs"]
        excludes = set(source.get("excludes", [])) if isinstance(source, dict) else set()
        return {d["_id"]: {"_source": {k: v for k, v in d["_source"].items() if k not in excludes}}
                for d in docs if d.get("found")}

    def _knn(self, index: str, clause: Any, extra_filter: dict[str, Any] | None = None) -> list[tuple[str, float]]:
        fields = self._vector_fields(index)
        fname, inner = validate_knn(clause, fields)
        filters = [f for f in (inner.get("filter"), extra_filter) if f]
        query = {"bool": {"filter": filters}} if filters else {"match_all": {}}
        found = self._forward("POST", f"/{index}/_search", {"query": query, "size": 10_000, "_source": [fname]})
        space = fields[fname]["space_type"]
        scored = [(h["_id"], space_score(space, inner["vector"], h["_source"][fname]))
                  for h in found["hits"]["hits"] if h["_source"].get(fname) is not None]
        scored.sort(key=lambda x: -x[1])  # stable: ties keep index order, as one segment would
        return scored[: inner["k"]]

    def _pipeline_for(self, request: dict[str, Any], params: dict[str, Any]) -> dict[str, Any]:
        if isinstance(request.get("search_pipeline"), dict):
            validate_pipeline(request["search_pipeline"])
            return request["search_pipeline"]
        name = params.get("search_pipeline")
        _check(name is not None, "hybrid query needs a search pipeline with a normalization or score-ranker "
               "processor", "illegal_argument_exception")
        _check(name in self.double.pipelines, f"Pipeline {name} is not defined", "illegal_argument_exception")
        return self.double.pipelines[name]

    def _hybrid(self, index: str, clause: Any, request: dict[str, Any], params: dict[str, Any], size: int,
                offset: int) -> list[tuple[str, float]]:
        _check(isinstance(clause, dict) and set(clause) <= HYBRID_KEYS,
               f"[hybrid] unknown field {sorted(set(clause) - HYBRID_KEYS)}")
        subs = clause.get("queries")
        _check(isinstance(subs, list) and 1 <= len(subs) <= 5, "Number of sub-queries exceeds maximum supported by "
               "[hybrid] query (5)" if isinstance(subs, list) else "[hybrid] requires queries")
        depth = clause.get("pagination_depth")
        if offset:
            _check(depth is not None, "pagination_depth is missing in the search request",
                   "illegal_argument_exception")
        if depth is not None:
            _check(isinstance(depth, int) and 1 <= depth <= 10_000, "pagination_depth must be in [1, 10000]")
        depth = depth or (offset + size)
        pipeline = self._pipeline_for(request, params)
        (name, proc), = pipeline["phase_results_processors"][0].items()
        combination = proc.get("combination", {})
        weights = combination.get("parameters", {}).get("weights") or [1.0 / len(subs)] * len(subs)
        _check(len(weights) == len(subs), f"number of weights [{len(weights)}] must match number of sub-queries "
               f"[{len(subs)}] in hybrid query", "illegal_argument_exception")
        extra = clause.get("filter")
        results: list[list[tuple[str, float]]] = []
        for sub in subs:
            if "knn" in sub:
                results.append(self._knn(index, sub["knn"], extra))
            else:
                q = {"bool": {"must": [sub], "filter": [extra]}} if extra else sub
                hits = self._forward("POST", f"/{index}/_search", {"query": q, "size": depth, "_source": False})
                results.append([(h["_id"], float(h["_score"])) for h in hits["hits"]["hits"]])
        combined: dict[str, float] = {}
        if name == "score-ranker-processor":
            rc = combination.get("rank_constant", 60)
            for w, lst in zip(weights, results, strict=True):
                for rank, (doc_id, _) in enumerate(lst, start=1):
                    combined[doc_id] = combined.get(doc_id, 0.0) + w / (rc + rank)
        else:
            technique = proc.get("normalization", {}).get("technique", "min_max")
            _check(combination.get("technique", "arithmetic_mean") == "arithmetic_mean",
                   "the double implements only arithmetic_mean", "illegal_argument_exception")
            norm = [dict(zip([d for d, _ in lst], normalize([s for _, s in lst], technique), strict=True))
                    for lst in results]
            for doc_id in {d for lst in results for d, _ in lst}:
                scores = [n.get(doc_id, 0.0) for n in norm]
                used = [(w, s) for w, s in zip(weights, scores, strict=True) if s >= 0]
                total = sum(w for w, _ in used)
                combined[doc_id] = sum(w * s for w, s in used) / total if total else 0.0
        return sorted(combined.items(), key=lambda x: (-x[1], x[0]))
