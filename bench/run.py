"""`make bench`: run every benchmark module in bench/ and write its figures to bench/results/.

A benchmark module is `bench/bench_<name>.py` with `run() -> dict`. Figures are ratios measured
within one run (the machines are noisy); each result file carries the machine facts it ran on.
Run one with `python -m bench.run fetch` (names without the `bench_` prefix).
"""

from __future__ import annotations

import importlib
import json
import os
import platform
import sys
import time
import traceback
from datetime import UTC, datetime
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
RESULTS_DIR = BENCH_DIR / "results"


def discover() -> list[str]:
    return sorted(p.stem.removeprefix("bench_") for p in BENCH_DIR.glob("bench_*.py"))


def machine() -> dict[str, object]:
    return {
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "platform": platform.platform(),
    }


def main(argv: list[str] | None = None) -> int:
    names = (argv if argv is not None else sys.argv[1:]) or discover()
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    failures = 0
    for name in names:
        print(f"== bench {name}", flush=True)
        started = time.perf_counter()
        try:
            module = importlib.import_module(f"bench.bench_{name}")
            figures = module.run()
            status = "ok"
        except Exception:
            failures += 1
            figures = {"error": traceback.format_exc()}
            status = "error"
        result = {
            "benchmark": name,
            "status": status,
            "measuredAt": datetime.now(UTC).isoformat(),
            "seconds": round(time.perf_counter() - started, 2),
            "machine": machine(),
            "figures": figures,
        }
        (RESULTS_DIR / f"{name}.json").write_text(json.dumps(result, indent=2, default=str) + "\n")
        print(json.dumps(figures, indent=2, default=str), flush=True)
    return 1 if failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
