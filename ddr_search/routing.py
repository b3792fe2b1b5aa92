"""Similarity routing that can abstain: which domain module (if any) a query belongs to.

Each domain module carries a profile built from its own training queries' general-module embeddings and
a threshold calibrated on those queries alone. A store may also hold a background: general-module vectors
of queries that belong to no domain (the general module's profile). A domain's score is then how much
closer a query sits to its queries than to the background. A query goes to the accepting domain with the
highest score, or to the general module alone when no domain accepts it. Because every domain's score and
threshold depend on that domain and the store's fixed background only, adding, retraining or removing a
module changes nothing for queries that do not route to it (docs/routing.md). numpy only: the ONNX query
path uses it.

A threshold is a quantile of the domain's own leave-one-out scores. Which quantile is a per-module choice
(ddr_search.routing_quantile weighs it on dev queries) and can be changed without retraining (`recalibrate`).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from enum import StrEnum
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from ddr_search.errors import InputError, ModuleStoreError

PROFILES_DIR = "profiles"
DEFAULT_QUANTILE = 0.05  # chosen on dev data: bench/reports/routing.md, docs/routing.md
DEFAULT_NEIGHBOURS = 8
PROFILE_SIZE = 1024  # training queries kept per profile (fp16 on disk: 0.8 MB for 384 dimensions)

Matrix = NDArray[np.float32]


class ProfileMethod(StrEnum):
    CENTROID = "centroid"  # cosine to the mean training query
    KNN = "knn"  # mean cosine to the `neighbours` nearest training queries


@dataclass(frozen=True, slots=True)
class DomainProfile:
    """What routing knows of one domain module: representative query vectors and its threshold."""

    module: str
    vectors: Matrix  # [n, dim], unit rows (one row, the normalised centroid, for CENTROID)
    threshold: float
    method: ProfileMethod = ProfileMethod.KNN
    neighbours: int = DEFAULT_NEIGHBOURS
    quantile: float | None = DEFAULT_QUANTILE  # share of its own queries below the threshold (None: unrecorded)
    background: Matrix | None = None  # [m, dim] unit rows of queries of no domain; the score is relative to them

    def scores(self, queries: Matrix) -> NDArray[np.float32]:
        """[B] similarity of each (unit) query vector to this domain, minus that to the background."""
        own = self.similarity(queries)
        return own if self.background is None else own - background_scores(queries, self.background, self.neighbours)

    def similarity(self, queries: Matrix) -> NDArray[np.float32]:
        """[B] similarity of each (unit) query vector to this domain's queries alone."""
        sims = queries @ self.vectors.T
        if self.method is ProfileMethod.CENTROID:
            return sims[:, 0].astype(np.float32)
        return nearest_mean(sims, self.neighbours)


def nearest_mean(sims: NDArray[np.float32], neighbours: int) -> NDArray[np.float32]:
    """[B] mean of each row's `neighbours` largest similarities."""
    m = min(neighbours, sims.shape[1])
    return np.partition(sims, sims.shape[1] - m, axis=1)[:, -m:].mean(axis=1).astype(np.float32)


def background_scores(queries: Matrix, background: Matrix, neighbours: int = DEFAULT_NEIGHBOURS) -> NDArray[np.float32]:
    """[B] kNN similarity of (unit) queries to the background: how much they look like queries of no domain."""
    scores = np.empty(queries.shape[0], dtype=np.float32)
    for start in range(0, queries.shape[0], 1024):
        scores[start : start + 1024] = nearest_mean(queries[start : start + 1024] @ background.T, neighbours)
    return scores


def _unit(vectors: Matrix) -> Matrix:
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return (vectors / np.maximum(norms, 1e-12)).astype(np.float32)


def leave_one_out_scores(
    vectors: Matrix, method: ProfileMethod, neighbours: int, background: Matrix | None = None
) -> NDArray[np.float32]:
    """Each training query's score against the profile built from the others: an honest in-domain sample."""
    unit = _unit(vectors)
    if background is not None:
        return leave_one_out_scores(unit, method, neighbours) - background_scores(unit, background, neighbours)
    n = unit.shape[0]
    if n < 2:
        raise InputError(f"a routing profile needs at least 2 training queries, got {n}")
    if method is ProfileMethod.CENTROID:
        total = unit.sum(axis=0)
        others = _unit((total[None, :] - unit) / (n - 1))
        return np.einsum("nd,nd->n", unit, others).astype(np.float32)
    out = np.empty(n, dtype=np.float32)
    m = min(neighbours, n - 1)
    for start in range(0, n, 1024):
        sims = unit[start : start + 1024] @ unit.T
        rows = np.arange(sims.shape[0])
        sims[rows, rows + start] = -np.inf
        out[start : start + 1024] = np.partition(sims, n - m, axis=1)[:, -m:].mean(axis=1)
    return out


def profile_rows(count: int, *, limit: int | None = PROFILE_SIZE, seed: int = 0) -> NDArray[np.int64]:
    """The rows of `count` training queries a profile keeps: all, or `limit` of them (seeded, in order)."""
    if limit is None or count <= limit:
        return np.arange(count)
    return np.sort(np.random.default_rng(seed).choice(count, limit, replace=False))


def calibrate(
    module: str,
    vectors: Matrix,
    *,
    method: ProfileMethod | str = ProfileMethod.KNN,
    quantile: float = DEFAULT_QUANTILE,
    neighbours: int = DEFAULT_NEIGHBOURS,
    limit: int | None = PROFILE_SIZE,
    seed: int = 0,
    background: Matrix | None = None,
) -> DomainProfile:
    """A profile from a domain's training-query vectors; the threshold lets `quantile` of them fall below.

    More than `limit` vectors are sampled down (seeded) first: routing cost and disk stay bounded.
    The stored vectors are rounded to float16 before calibrating, so the threshold fits what is loaded.
    `background` (the store's, from `background_profile`): score the domain relative to it.
    """
    method = ProfileMethod(method)
    vectors = np.asarray(vectors, dtype=np.float32)[profile_rows(len(vectors), limit=limit, seed=seed)]
    unit = _unit(vectors).astype(np.float16).astype(np.float32)
    threshold = threshold_at(leave_one_out_scores(unit, method, neighbours, background), quantile)
    kept = _unit(unit.mean(axis=0, keepdims=True)) if method is ProfileMethod.CENTROID else unit
    kept = kept.astype(np.float16).astype(np.float32)
    return DomainProfile(module, kept, threshold, method, neighbours, quantile, background)


def background_profile(vectors: Matrix, *, limit: int | None = PROFILE_SIZE, seed: int = 0) -> Matrix:
    """The store's background from general-module vectors of queries no domain serves: unit rows, sampled
    down to `limit` (seeded) and rounded to float16 like the profiles (what is stored is what is scored)."""
    vectors = np.asarray(vectors, dtype=np.float32)[profile_rows(len(vectors), limit=limit, seed=seed)]
    return _unit(vectors).astype(np.float16).astype(np.float32)


def threshold_at(loo_scores: NDArray[np.float32], quantile: float) -> float:
    """The score below which `quantile` of a domain's own (leave-one-out) queries fall."""
    if not 0.0 <= quantile < 1.0:
        raise InputError(f"routing quantile must be in [0, 1), got {quantile}")
    return float(np.quantile(loo_scores, quantile)) if quantile > 0 else float(loo_scores.min())


def recalibrate(profile: DomainProfile, quantile: float, background: Matrix | None = None) -> DomainProfile:
    """The same profile with its threshold at another quantile, relative to `background` (default: its own):
    the stored queries are the ones `calibrate` scored, so this equals calibrating anew at `quantile`,
    without the module's data or any retraining."""
    if profile.method is ProfileMethod.CENTROID:
        raise InputError(f"{profile.module}: a centroid profile keeps no queries to recalibrate from")
    background = profile.background if background is None else background
    loo = leave_one_out_scores(profile.vectors, profile.method, profile.neighbours, background)
    return replace(profile, threshold=threshold_at(loo, quantile), quantile=quantile, background=background)


def profile_scores(queries: Matrix, profiles: Sequence[DomainProfile]) -> NDArray[np.float32]:
    """[B, N] margin of each query over each domain's threshold (>= 0: the domain accepts it)."""
    if not profiles:
        return np.zeros((queries.shape[0], 0), dtype=np.float32)
    unit = _unit(queries)
    shared: dict[tuple[int, int], NDArray[np.float32]] = {}  # every domain shares the store's background
    columns = []
    for p in profiles:
        score = p.similarity(unit)
        if p.background is not None:
            key = (id(p.background), p.neighbours)
            if key not in shared:
                shared[key] = background_scores(unit, p.background, p.neighbours)
            score = score - shared[key]
        columns.append(score - np.float32(p.threshold))
    return np.stack(columns, axis=1)


def choose_domains(margins: NDArray[np.float32], profiles: Sequence[DomainProfile]) -> list[str | None]:
    """Per query: among the modules whose margin is >= 0, the one with the highest score (margin plus
    threshold: the domain the query is most like, relative to the background), or None (the general module)."""
    if not profiles:
        return [None] * margins.shape[0]
    scores = margins + np.array([p.threshold for p in profiles], dtype=np.float32)[None, :]
    scores = np.where(margins >= 0, scores, -np.inf)
    best = scores.argmax(axis=1)
    return [profiles[b].module if margins[row, b] >= 0 else None for row, b in enumerate(best)]


def route(general_vectors: Matrix, profiles: Sequence[DomainProfile]) -> list[str | None]:
    """The auto routing rule every encoder applies to its general-module query vectors."""
    return choose_domains(profile_scores(general_vectors, profiles), profiles)


# -- on disk: <store>/profiles/<module>.safetensors, described by ModuleRecord.routing -----------------
# The background is the general module's profile: its record says {"role": "background"}; a domain profile
# scored relative to it says {"relative_to": <the general module's name>}.
BACKGROUND_ROLE = "background"


def _write_vectors(directory: Path, name: str, vectors: Matrix) -> dict[str, str | int | float]:
    from safetensors.numpy import save_file

    directory.mkdir(parents=True, exist_ok=True)
    file = directory / f"{name}.safetensors"
    save_file({"vectors": vectors.astype(np.float16)}, str(file))
    return {"queries": int(vectors.shape[0]), "sha256": hashlib.sha256(file.read_bytes()).hexdigest()}


def _read_vectors(directory: Path, name: str, record: Mapping[str, str | int | float]) -> Matrix:
    from safetensors.numpy import load_file

    file = directory / f"{name}.safetensors"
    if not file.exists():
        raise ModuleStoreError(f"{file} is listed in the manifest but missing")
    if hashlib.sha256(file.read_bytes()).hexdigest() != record["sha256"]:
        raise ModuleStoreError(f"{file} does not match its manifest checksum")
    return load_file(str(file))["vectors"].astype(np.float32)


def write_profile(directory: Path, profile: DomainProfile, background_name: str) -> dict[str, str | int | float]:
    """Write one profile's vectors (float16); returns what the manifest records about it."""
    record: dict[str, str | int | float] = {
        "method": profile.method.value,
        "neighbours": profile.neighbours,
        "threshold": profile.threshold,
        **_write_vectors(directory, profile.module, profile.vectors),
    }
    if profile.quantile is not None:
        record["quantile"] = profile.quantile
    if profile.background is not None:
        record["relative_to"] = background_name
    return record


def write_background(directory: Path, name: str, background: Matrix) -> dict[str, str | int | float]:
    """Write the store's background as module `name`'s (the general module's) profile."""
    return {"role": BACKGROUND_ROLE, **_write_vectors(directory, name, background)}


def read_profiles(
    directory: Path, records: Mapping[str, Mapping[str, str | int | float]]
) -> tuple[Matrix | None, dict[str, DomainProfile]]:
    """(the background or None, module -> profile) from the manifest's routing records, each file checked
    against its checksum. Raises ModuleStoreError for a missing or altered file."""
    background = None
    for name, record in records.items():
        if record.get("role") == BACKGROUND_ROLE:
            background = _read_vectors(directory, name, record)
    profiles = {}
    for name, record in records.items():
        if record.get("role") == BACKGROUND_ROLE:
            continue
        relative_to = record.get("relative_to")
        if relative_to is not None and background is None:
            raise ModuleStoreError(f"{name}'s routing profile is scored against {relative_to}'s background: missing")
        quantile = record.get("quantile")  # stores written before quantiles were recorded lack it
        profiles[name] = DomainProfile(
            name,
            _read_vectors(directory, name, record),
            float(record["threshold"]),
            ProfileMethod(str(record["method"])),
            int(record["neighbours"]),
            float(quantile) if quantile is not None else None,
            background if relative_to is not None else None,
        )
    return background, profiles
