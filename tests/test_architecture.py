"""Keeps the design's one-way dependencies and the instant CLI true as the code grows."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
EDGES = {"ddr_search/client.py", "ddr_search/factory.py"}  # plus ddr_search/cli/: the only wiring places
OUTER = ("connectors", "onnx_export", "workers")


def imported_packages(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def python_files(folder: str) -> list[Path]:
    return sorted((REPO / folder).rglob("*.py"))


@pytest.mark.parametrize("path", python_files("ddr_search"), ids=lambda p: str(p.relative_to(REPO)))
def test_core_imports_no_outer_package(path):
    relative = path.relative_to(REPO).as_posix()
    if relative in EDGES or relative.startswith("ddr_search/cli/"):
        return
    outer = {name for name in imported_packages(path) if name.split(".")[0] in OUTER}
    assert not outer, f"{relative} (core) imports {sorted(outer)}: go through a Protocol in ddr_search.types"


@pytest.mark.parametrize(
    "path", [p for folder in OUTER for p in python_files(folder)], ids=lambda p: str(p.relative_to(REPO))
)
def test_outer_packages_import_only_the_core(path):
    relative = path.relative_to(REPO).as_posix()
    own = relative.split("/")[0]
    wiring = {"ddr_search.client", "ddr_search.factory"}
    bad = {
        name
        for name in imported_packages(path)
        if (name.split(".")[0] in OUTER and name.split(".")[0] != own)
        or name in wiring
        or name.startswith("ddr_search.cli")
    }
    assert not bad, f"{relative} imports {sorted(bad)}: outer packages may import only the ddr_search core"


def test_cli_starts_without_heavy_imports():
    """`ddr-search --help` must be instant: no torch/transformers/onnxruntime/celery at import."""
    code = (
        "import sys, ddr_search.cli.main as m; m.cli.main(['--help'], standalone_mode=False); "
        "heavy = sorted(n for n in ('torch', 'transformers', 'onnxruntime', 'celery', 'opensearchpy', 'bm25s') "
        "if n in sys.modules); print('HEAVY=' + ','.join(heavy))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO)
    assert result.stdout.splitlines()[-1] == "HEAVY=", f"heavy modules imported by the CLI: {result.stdout}"
