"""Routing designs compared on dev queries: which module does each query reach? (issue 10, item 1)

    python bench/routing.py            # writes bench/reports/routing.{json,md}

A router must send a domain's queries to its module and every other query to the general module alone.
Compared, on the frozen encoder's query embeddings (the general module is an exact no-op):

- learned: the paper's softmax router, trained here on the same profile queries; it cannot abstain.
- centroid: cosine to the mean of a domain's training queries, a threshold per domain.
- knn: mean cosine to the m nearest training queries of a domain, a threshold per domain.
- centroid-emb: centroid on the router's cheap features (mean of the embedding layer) instead.

Thresholds are calibrated per domain from that domain's training queries alone (leave-one-out scores,
the `quantile` lowest accepted), so adding a domain never moves another domain's threshold. `quantile`
is chosen on dev data: in-domain dev queries (SciFact 20% of train, NFCorpus dev, MedQuAD dev +
LiveQA-Med held out, PubMedQA 20% of train) and the WikiQA train questions as out-of-domain queries.
The zero-shot collections (CACM, Cranfield, ADI, WikiQA test) are reported, never tuned on.

A second table measures the arrangement the store ships: the three shipped domains (scifact, nfcorpus,
medical) and a routing background of queries that belong to no domain (the release's: half of PubMedQA's
and of WikiQA's train questions, scripts/release_modules.py), kNN scored relative to it or not, on the
same dev queries; the other halves of PubMedQA and WikiQA train are the out-of-domain dev queries there.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from pathlib import Path

import numpy as np
from _common import BEIR, REPO, REPORTS, SHARED_DATA, machine

sys.path.insert(0, str(REPO / "scripts"))
from release_modules import PRETRAINED, background_split, general_query_sets  # the release's background: one home

QUANTILES = (0.0, 0.01, 0.02, 0.05, 0.1, 0.2)
SHIPPED_DOMAINS = ("scifact", "nfcorpus", "medical")
BACKGROUND_QUANTILES = (0.02, 0.05, 0.1, 0.2, 0.3)


def shipped_quantiles() -> dict[str, float]:
    """Each shipped domain's routing quantile, as the packaged store records it (chosen on dev: docs/routing.md)."""
    from ddr_search.manifest import read_manifest

    modules = read_manifest(PRETRAINED).modules
    return {d: float(modules[d].routing["quantile"]) for d in SHIPPED_DOMAINS}


def held_out(key: str, fraction: float) -> bool:
    """A stable split by id (md5), so every run and every method holds out the same queries."""
    return int(hashlib.md5(key.encode()).hexdigest(), 16) % 1000 < fraction * 1000


def beir_queries(name: str, split: str) -> dict[str, str]:
    from ddr_search.data.beir import read_qrels, read_queries

    queries = read_queries(BEIR / name / "queries.jsonl")
    qrels = read_qrels(BEIR / name / "qrels" / f"{split}.tsv", queries=queries)
    return {q: queries[q] for q in qrels}


def jsonl_queries(path: Path) -> dict[str, str]:
    return {f"{path.stem}-{i}": json.loads(line)["query"] for i, line in enumerate(path.open()) if line.strip()}


def query_sets() -> tuple[dict[str, dict[str, str]], dict[str, dict[str, str]], dict[str, dict[str, str]]]:
    """(profile queries per domain, dev queries per domain, out-of-domain queries per set)."""
    scifact = beir_queries("scifact", "train")
    pubmed = beir_queries("pubmedqa", "train")
    liveqa = jsonl_queries(SHARED_DATA / "train" / "liveqa-med" / "pairs.jsonl")
    medquad = beir_queries("medquad", "train")
    profile = {
        "scifact": {q: t for q, t in scifact.items() if not held_out(q, 0.2)},
        "nfcorpus": beir_queries("nfcorpus", "train"),
        "medical": {**medquad, **{q: t for q, t in liveqa.items() if not held_out(q, 0.2)}},
        "pubmedqa": {q: t for q, t in pubmed.items() if not held_out(q, 0.2)},
    }
    dev = {
        "scifact": {q: t for q, t in scifact.items() if held_out(q, 0.2)},
        "nfcorpus": beir_queries("nfcorpus", "dev"),
        "medical": {**beir_queries("medquad", "dev"), **{q: t for q, t in liveqa.items() if held_out(q, 0.2)}},
        "pubmedqa": {q: t for q, t in pubmed.items() if held_out(q, 0.2)},
    }
    outside = {
        "wikiqa-train": jsonl_queries(SHARED_DATA / "train" / "wikiqa" / "train.jsonl"),
        "wikiqa-test": jsonl_queries(SHARED_DATA / "train" / "wikiqa" / "test.jsonl"),
        **{name: beir_queries(name, "test") for name in ("cacm", "cranfield", "adi")},
    }
    return profile, dev, outside


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reports", type=Path, default=REPORTS)
    parser.add_argument("--profile-size", type=int, default=1024, help="training queries kept per domain")
    parser.add_argument("--neighbours", type=int, default=8)
    args = parser.parse_args()

    import torch

    from ddr_search.model.encoder import TorchEncoder
    from ddr_search.routing import calibrate, choose_domains, profile_scores
    from ddr_search.types import RoutingMode

    torch.set_num_threads(2)
    profile_q, dev_q, outside_q = query_sets()
    frozen = TorchEncoder.load(None)
    start = time.perf_counter()

    def embed(texts: dict[str, str]) -> np.ndarray:
        return frozen.encode_queries(list(texts.values()), routing=RoutingMode.NONE).vectors

    @torch.inference_mode()
    def cheap(texts: dict[str, str]) -> np.ndarray:
        batch = frozen.tokenize(list(texts.values()), frozen.max_query_length)
        feats = frozen.model.router_features(batch["input_ids"], batch["attention_mask"]).numpy()
        return feats / np.linalg.norm(feats, axis=1, keepdims=True)

    rng = np.random.default_rng(0)

    def sample(texts: dict[str, str]) -> dict[str, str]:
        keys = sorted(texts)
        if len(keys) > args.profile_size:
            keys = sorted(rng.choice(keys, args.profile_size, replace=False).tolist())
        return {k: texts[k] for k in keys}

    profile_q = {d: sample(t) for d, t in profile_q.items()}
    features = {"frozen": embed, "emb": cheap}
    vectors: dict[str, dict[str, dict[str, np.ndarray]]] = {}
    for feature, fn in features.items():
        vectors[feature] = {
            "profile": {d: fn(t) for d, t in profile_q.items()},
            "dev": {d: fn(t) for d, t in dev_q.items()},
            "outside": {d: fn(t) for d, t in outside_q.items()},
        }
    embed_seconds = time.perf_counter() - start

    designs = {"centroid": ("frozen", "centroid"), "knn": ("frozen", "knn"), "centroid-emb": ("emb", "centroid")}
    results: dict[str, dict[str, object]] = {}
    for design, (feature, method) in designs.items():
        v = vectors[feature]
        for quantile in QUANTILES:
            profiles = [
                calibrate(d, v["profile"][d], method=method, quantile=quantile, neighbours=args.neighbours)
                for d in profile_q
            ]
            row: dict[str, object] = {}
            for d, dev in v["dev"].items():
                chosen = choose_domains(profile_scores(dev, profiles), profiles)
                row[d] = float(np.mean([c == d for c in chosen]))
            for name, queries in v["outside"].items():
                chosen = choose_domains(profile_scores(queries, profiles), profiles)
                row[name] = float(np.mean([c is None for c in chosen]))
            results[f"{design} q={quantile}"] = row
            print(f"{design:<13} q={quantile:<5} " + " ".join(f"{k}={x:.3f}" for k, x in row.items()), flush=True)
    results["learned softmax router"] = learned_router(frozen, profile_q, dev_q, outside_q)
    v = vectors["frozen"]
    profiles = [calibrate(d, v["profile"][d], quantile=CHOICE_QUANTILE, neighbours=args.neighbours) for d in profile_q]
    choice = {rule: {d: choice_accuracy(v["dev"][d], d, profiles, rule) for d in v["dev"]} for rule in CHOICE_RULES}
    several = {d: float(np.mean((profile_scores(q, profiles) >= 0).sum(axis=1) >= 2)) for d, q in v["dev"].items()}
    background_texts, evidence = background_queries()
    shipped = with_background(
        embed(background_texts),
        {d: v["profile"][d] for d in SHIPPED_DOMAINS},
        {d: v["dev"][d] for d in SHIPPED_DOMAINS},
        {name: embed(texts) for name, texts in evidence.items()}
        | {name: vectors for name, vectors in v["outside"].items() if name != "wikiqa-train"},  # half is background
        args.neighbours,
    )
    report = {
        "machine": machine("torch"),
        "profile_size": args.profile_size,
        "neighbours": args.neighbours,
        "queries": {
            "profile": {d: len(t) for d, t in profile_q.items()},
            "dev": {d: len(t) for d, t in dev_q.items()},
            "outside": {d: len(t) for d, t in outside_q.items()},
        },
        "embed_seconds": round(embed_seconds, 1),
        "results": results,
        "choice": choice,
        "accepted_by_several": several,
        "background_queries": len(background_texts),
        "with_background": shipped,
    }
    args.reports.mkdir(parents=True, exist_ok=True)
    (args.reports / "routing.json").write_text(json.dumps(report, indent=2) + "\n")
    (args.reports / "routing.md").write_text(markdown(report))
    print(markdown(report))
    return 0


def learned_router(frozen, profile_q, dev_q, outside_q) -> dict[str, object]:
    """The paper's router: softmax over one row per domain on the embedding-layer features, trained here
    with cross-entropy on the same profile queries (no bias, as in DDR); the top row is where a query goes."""
    import torch

    from ddr_search.model.router import Router

    @torch.inference_mode()
    def features(texts: dict[str, str]) -> torch.Tensor:
        batch = frozen.tokenize(list(texts.values()), frozen.max_query_length)
        return frozen.model.router_features(batch["input_ids"], batch["attention_mask"]).clone()

    domains = list(profile_q)
    x = torch.cat([features(profile_q[d]) for d in domains])
    y = torch.cat([torch.full((len(profile_q[d]),), i) for i, d in enumerate(domains)])
    router = Router(x.shape[1], len(domains))
    optimizer = torch.optim.Adam(router.parameters(), lr=1e-2)
    for _ in range(300):  # full batch: a few thousand rows of 384 features
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(router(x), y).backward()
        optimizer.step()
    row: dict[str, object] = {}
    with torch.no_grad():
        for d, texts in dev_q.items():
            row[d] = float((router(features(texts)).argmax(-1) == domains.index(d)).float().mean())
    for name in outside_q:
        row[name] = 0.0  # a softmax over domain rows never abstains
    return row


def background_queries() -> tuple[dict[str, str], dict[str, dict[str, str]]]:
    """(the release's background questions, the other halves as out-of-domain dev sets), split as the
    release splits them (`background_split`), so the background never scores its own questions."""
    background: dict[str, str] = {}
    evidence: dict[str, dict[str, str]] = {}
    for name, (_, queries, qrels) in general_query_sets(SHARED_DATA).items():
        kept, held = background_split(queries, qrels)
        background |= {f"{name}/{q}": queries[q] for q in kept}
        evidence[f"{name} (other half)"] = {q: queries[q] for q in held}
    return background, evidence


def with_background(
    background_vectors: np.ndarray,
    profile: dict[str, np.ndarray],
    dev: dict[str, np.ndarray],
    outside: dict[str, np.ndarray],
    neighbours: int,
) -> dict[str, dict[str, float]]:
    """The shipped arrangement: the shipped domains' kNN profiles without and relative to the background
    (as `ddr_search.routing` stores it), at several quantiles and at the shipped ones; same columns as the
    first table (own module for a domain's dev queries, the general module alone for the others)."""
    from ddr_search.routing import background_profile, calibrate

    background = background_profile(background_vectors)
    settings: dict[str, tuple[np.ndarray | None, dict[str, float]]] = {}
    for quantile in BACKGROUND_QUANTILES:
        settings[f"knn q={quantile}"] = (None, dict.fromkeys(profile, quantile))
        settings[f"knn relative to the background q={quantile}"] = (background, dict.fromkeys(profile, quantile))
    chosen = shipped_quantiles()
    shipped = ", ".join(f"{d} {q}" for d, q in chosen.items())
    settings[f"knn relative to the background, shipped quantiles ({shipped})"] = (background, chosen)
    rows: dict[str, dict[str, float]] = {}
    for name, (scored_against, quantiles) in settings.items():
        profiles = [
            calibrate(d, vectors, quantile=quantiles[d], neighbours=neighbours, background=scored_against)
            for d, vectors in profile.items()
        ]
        row = {d: share_routed(queries, profiles, d) for d, queries in dev.items()}
        row |= {set_name: share_routed(queries, profiles, None) for set_name, queries in outside.items()}
        rows[name] = row
        print(f"{name:<50} " + " ".join(f"{k}={x:.3f}" for k, x in row.items()), flush=True)
    return rows


def share_routed(queries: np.ndarray, profiles, target: str | None) -> float:  # type: ignore[no-untyped-def]
    """Share of `queries` that auto routing sends to `target` (None: the general module alone)."""
    from ddr_search.routing import choose_domains, profile_scores

    return float(np.mean([c == target for c in choose_domains(profile_scores(queries, profiles), profiles)]))


CHOICE_QUANTILE = 0.05
CHOICE_RULES = ("margin", "score", "vote4", "vote8")


def choice_accuracy(queries: np.ndarray, domain: str, profiles, rule: str) -> float:  # type: ignore[no-untyped-def]
    """Share of `domain`'s dev queries reaching it when a query several domains accept goes to the one with
    the largest margin over its threshold, the largest kNN score (the shipped rule), or the most of the k
    nearest profile queries pooled over the accepting domains (votek; ties by margin). Which queries are
    accepted at all does not depend on the rule, so out-of-domain queries are unaffected."""
    from ddr_search.routing import profile_scores

    margins = profile_scores(queries, profiles)
    unit = queries / np.linalg.norm(queries, axis=1, keepdims=True)
    hits = 0
    for row, margin in enumerate(margins):
        accepted = [i for i in range(len(profiles)) if margin[i] >= 0]
        if not accepted:
            continue
        if rule == "margin":
            best = max(accepted, key=lambda i: margin[i])
        elif rule == "score":
            best = max(accepted, key=lambda i: margin[i] + profiles[i].threshold)
        else:
            k = int(rule.removeprefix("vote"))
            pooled = sorted((s, i) for i in accepted for s in np.sort(profiles[i].vectors @ unit[row])[-k:])[-k:]
            best = max(accepted, key=lambda i: (sum(1 for _, j in pooled if j == i), margin[i]))
        hits += profiles[best].module == domain
    return hits / len(queries)


def design_table(rows: dict[str, dict[str, float | None]]) -> list[str]:
    """A markdown table: one row per design, one column per query set (the first row's sets)."""
    columns = list(next(iter(rows.values())).keys())
    lines = ["| design | " + " | ".join(columns) + " |", "|---|" + "---|" * len(columns)]
    for name, row in rows.items():
        lines.append(f"| {name} | " + " | ".join("-" if row[c] is None else f"{row[c]:.3f}" for c in columns) + " |")
    return lines


def markdown(report: dict) -> str:
    results = report["results"]
    lines = [
        "# Routing: which module does a dev query reach? (frozen query embeddings)",
        "",
        "Reproduce: `python bench/routing.py`. In-domain columns: share of a domain's dev queries routed to its",
        "own module. Out-of-domain columns: share routed to the general module alone. `q` = the share of a",
        "domain's own training queries (leave-one-out) allowed below its threshold.",
        "",
        *design_table(results),
    ]
    domains = list(report["accepted_by_several"])
    lines += [
        "",
        f"## Which accepting domain wins (knn, q = {CHOICE_QUANTILE})",
        "",
        "Share of each domain's dev queries reaching its module under each rule for queries that several",
        "domains accept (the share accepted by two or more in the first row). The shipped rule is `score`",
        "(relative to the store's background, which these profiles do not have: docs/routing.md).",
        "",
        "| rule | " + " | ".join(domains) + " | mean |",
        "|---|" + "---|" * (len(domains) + 1),
        "| accepted by 2+ | " + " | ".join(f"{report['accepted_by_several'][d]:.3f}" for d in domains) + " | |",
    ]
    for rule, row in report["choice"].items():
        mean = sum(row.values()) / len(row)
        lines.append(f"| {rule} | " + " | ".join(f"{row[d]:.3f}" for d in domains) + f" | {mean:.3f} |")
    lines += [
        "",
        "## The shipped arrangement: three domains and a background of queries of no domain",
        "",
        "The shipped domains' kNN profiles, scored as they are or relative to a background of",
        f"{report['background_queries']} train questions of no domain (half of PubMedQA's and of WikiQA's, as the",
        "release builds it); out-of-domain columns: the other halves (dev) and the zero-shot sets (never tuned",
        "on). Every domain at one quantile, then at the quantiles the release chose on dev.",
        "",
        *design_table(report["with_background"]),
    ]
    counts = report["queries"]
    lines += [
        "",
        f"Queries: profile {counts['profile']}, dev {counts['dev']}, outside {counts['outside']}.",
        f"Profile size {report['profile_size']}, neighbours {report['neighbours']}; "
        f"embedding all queries took {report['embed_seconds']} s.",
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
