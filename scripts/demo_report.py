"""Turn a `scripts/demo --record` transcript into docs/demo.md, with the numbers behind its one example.

    python scripts/demo_report.py TRANSCRIPT OUT.md      (run by `./scripts/demo --record docs/demo.md`)

The demo shows one question side by side; this adds how the medical module does on every MedQuAD
question whose answer the demo ships (ddr_search/demo/medquad-questions.jsonl, test topics the module
never trained on): how often each routing puts the answer first, searched in the demo store.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
QUESTIONS = REPO / "ddr_search" / "demo" / "medquad-questions.jsonl"

HEADER = """# The demo, as `./scripts/demo` prints it

Regenerate: `./scripts/demo --record docs/demo.md` (a fresh `DDR_HOME` gives the same output). The demo
store holds the project's own legal / medical / tech documents and 196 MedQuAD answers (CC BY 4.0) from
topics of MedQuAD's test split, which the shipped medical module never saw in training.
"""


def top1_table() -> str:
    from ddr_search.client import DDRSearch
    from ddr_search.types import RoutingMode, SearchMode

    rows = [json.loads(line) for line in QUESTIONS.read_text().splitlines() if line.strip()]
    ways = {
        "general module alone (`--routing none`)": {"routing": RoutingMode.NONE},
        "auto routing (the default, no domain given)": {},
        "prior routing (`--domain medical`)": {"domain": "medical"},
    }
    lines = [
        "",
        f"## Every shipped MedQuAD question ({len(rows)}), dense search over the whole demo store",
        "",
        "| routing | answer ranked first | reached the medical module |",
        "|---|---|---|",
    ]
    with DDRSearch() as client:
        for label, options in ways.items():
            first = routed = 0
            for row in rows:
                hits = client.search(row["question"], k=1, mode=SearchMode.DENSE, **options)
                first += bool(hits) and hits[0].id == row["answer_id"]
                routed += bool(hits) and "medical" in hits[0].routing
            lines.append(f"| {label} | {first / len(rows):.1%} | {routed / len(rows):.1%} |")
    lines += [
        "",
        "Auto routing sends most of these questions to the medical module without being told their domain;",
        "the few others stay on the general module or reach another module, so it keeps a little less than",
        "prior routing does here. Over MedQuAD's whole test split, with MedQuAD's answers as the corpus, see",
        "`bench/reports/quality.md` (DDR-auto and DDR-prior against the frozen encoder).",
    ]
    return "\n".join(lines) + "\n"


def main() -> int:
    transcript, out = Path(sys.argv[1]), Path(sys.argv[2])
    # Progress bars clear their line with spaces and carriage returns: keep what a reader would see.
    lines = [line.split("\r")[-1].rstrip() for line in transcript.read_text().splitlines()]
    text = "\n".join(line for line in lines if line or not line.strip()) + "\n"
    out.write_text(HEADER + text + top1_table())
    return 0


if __name__ == "__main__":
    sys.exit(main())
