"""What every benchmark shares: where the repository, the reports and the shared data are (the data path
honours DDR_SHARED_DATA, as the tests do), and a description of the machine a report was measured on."""

from __future__ import annotations

import os
import platform
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


def machine(*packages: str) -> dict[str, object]:
    """CPU, cores, Python, platform, load average (the machine is shared: it says how busy it was) and
    the versions of `packages`."""
    versions: dict[str, str | None] = {}
    for package in packages:
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = None
    return {
        "cpu": cpu_model(),
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "load_average_1_5_15": [round(x, 2) for x in os.getloadavg()],
        "versions": versions,
    }
