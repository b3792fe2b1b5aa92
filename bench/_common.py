"""What every benchmark shares: where the repository, the reports and the shared data are (the data path
honours DDR_SHARED_DATA, as the tests do), a description of the machine a report was measured on, dense
runs over a set's cached frozen passages, and writing a report."""

from __future__ import annotations

import json
import os
import platform
from collections.abc import Callable
from importlib import metadata
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
REPORTS = REPO / "bench" / "reports"
SHARED_DATA = Path(os.environ.get("DDR_SHARED_DATA", REPO.parent / "shared" / "data"))
BEIR = SHARED_DATA / "beir"


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def matrix_isa() -> list[str]:
    """The CPU's int8 / bf16 / matrix instruction sets (AMX >> AVX-512 VNNI / BF16 >> AVX2): the same code runs several
    times faster or slower with them, so a report names them next to the CPU."""
    try:
        flags = set(Path("/proc/cpuinfo").read_text().split())
    except OSError:
        return []
    return sorted(
        flags & {"avx2", "avx512f", "avx512_vnni", "avx512_bf16", "avx_vnni", "amx_int8", "amx_bf16", "amx_tile"}
    )


def machine(*packages: str) -> dict[str, object]:
    """CPU (with its matrix instruction sets), cores, Python, platform, load average (the machine is shared:
    it says how busy it was) and the versions of `packages`."""
    versions: dict[str, str | None] = {}
    for package in packages:
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = None
    return {
        "cpu": f"{cpu_model()} ({', '.join(matrix_isa()) or 'none of AVX2, AVX-512, AMX'})",
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "load_average_1_5_15": [round(x, 2) for x in os.getloadavg()],
        "versions": versions,
    }


def write_report(folder: Path, name: str, report: dict, markdown: str, plot: Callable[[Path], None] | None) -> None:
    """`name`.json, `name`.md and (when `plot` is given) `name`.png in `folder`; the markdown is printed too."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{name}.json").write_text(json.dumps(report, indent=2) + "\n")
    (folder / f"{name}.md").write_text(markdown)
    if plot is not None:
        plot(folder / f"{name}.png")
    print(markdown)


class Dense:
    """Dense runs over a set's cached frozen passages, keeping each query's routing weights."""

    def __init__(self, corpus, frozen, cache_dir: Path) -> None:
        from ddr_search.evaluation.cache import encode_corpus
        from ddr_search.evaluation.harness import passage_texts

        self.ids, texts = passage_texts(corpus)
        self.matrix = encode_corpus(frozen, self.ids, texts, cache_dir=cache_dir, show_progress=False).vectors
        self.texts = texts

    def run(self, encoder, queries, **kwargs):
        from ddr_search.evaluation.harness import exact_top_k

        qids = list(queries)
        encoding = encoder.encode_queries([queries[q] for q in qids], **kwargs)
        tops = exact_top_k(encoding.vectors, self.matrix, 100)
        runs = {q: [(self.ids[r], s) for r, s in top] for q, top in zip(qids, tops, strict=True)}
        return runs, dict(zip(qids, encoding.weights, strict=True)), encoding.vectors
