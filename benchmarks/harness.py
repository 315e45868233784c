"""The small harness every ``benchmarks/bench_*.py`` uses.

Each benchmark times a few *implementations* (scenegrad's native kernel, its reference, peers such
as nvdiffrast or Open3D when installed) on the same *cases*, in the same run, and reports medians,
spread and ratios against a chosen baseline implementation: machines here are noisy, ratios
measured side by side are what we compare across runs.

Usage inside a benchmark::

    args = parse_args("mesh")                     # --json PATH, --quick, --device, --repeat
    bench = Benchmark("mesh", args)
    bench.run("spot 512", "native", fn)           # fn() runs the work once
    bench.finish(baseline="reference")            # prints the table, writes the JSON
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

RESULTS_DIR = Path(__file__).resolve().parent / "results"


@dataclass
class Timing:
    case: str
    impl: str
    median_ms: float
    min_ms: float
    max_ms: float
    iqr_ms: float
    runs: int
    note: str = ""


@dataclass
class Benchmark:
    name: str
    args: argparse.Namespace
    timings: list[Timing] = field(default_factory=list)
    skipped: list[tuple[str, str, str]] = field(default_factory=list)

    def run(self, case: str, impl: str, fn: Callable[[], object], *, repeat: int | None = None,
            warmup: int = 1, note: str = "") -> Timing | None:
        """Time ``fn`` (warm-up runs first) and record the median; errors are recorded, not raised."""
        device = torch.device(self.args.device)
        repeat = repeat or self.args.repeat
        try:
            for _ in range(warmup):
                fn()
            _sync(device)
            samples = []
            budget_end = time.perf_counter() + self.args.max_seconds
            for _ in range(repeat):
                start = time.perf_counter()
                fn()
                _sync(device)
                samples.append((time.perf_counter() - start) * 1e3)
                if time.perf_counter() > budget_end:
                    break
        except Exception as error:  # a peer failing must not hide the others' figures
            self.skip(case, impl, f"error: {type(error).__name__}: {error}")
            return None
        samples.sort()
        q1, q3 = (samples[len(samples) // 4], samples[(3 * len(samples)) // 4]) if len(samples) > 1 else (0, 0)
        timing = Timing(case, impl, statistics.median(samples), samples[0], samples[-1], q3 - q1, len(samples), note)
        self.timings.append(timing)
        print(f"  {case:<28} {impl:<22} {timing.median_ms:10.2f} ms  (n={timing.runs})", file=sys.stderr)
        return timing

    def skip(self, case: str, impl: str, why: str) -> None:
        self.skipped.append((case, impl, why))
        print(f"  {case:<28} {impl:<22} skipped: {why}", file=sys.stderr)

    def ratios(self, baseline: str) -> dict[str, dict[str, float]]:
        """``{case: {impl: baseline_ms / impl_ms}}``: how many times faster than the baseline."""
        out: dict[str, dict[str, float]] = {}
        for case in dict.fromkeys(t.case for t in self.timings):
            base = next((t for t in self.timings if t.case == case and t.impl == baseline), None)
            if base is None:
                continue
            out[case] = {t.impl: base.median_ms / t.median_ms for t in self.timings if t.case == case}
        return out

    def finish(self, baseline: str) -> Path:
        """Print the table and write the JSON (``--json`` or ``benchmarks/results/<name>.json``)."""
        ratios = self.ratios(baseline)
        _print_table(self.name, self.timings, ratios, baseline)
        for case, impl, why in self.skipped:
            print(f"skipped: {case} / {impl}: {why}")
        path = Path(self.args.json) if self.args.json else RESULTS_DIR / f"{self.name}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        payload = {
            "benchmark": self.name,
            "machine": machine(),
            "baseline": baseline,
            "timings": [asdict(t) for t in self.timings],
            "speedup_vs_baseline": ratios,
            "skipped": [{"case": c, "impl": i, "why": w} for c, i, w in self.skipped],
        }
        path.write_text(json.dumps(payload, indent=2))
        print(f"wrote {path}")
        return path


def parse_args(name: str, argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=f"scenegrad benchmark: {name}")
    parser.add_argument("--json", default=None, help=f"output path (default benchmarks/results/{name}.json)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--repeat", type=int, default=10, help="timed runs per case (after warm-up)")
    parser.add_argument("--max-seconds", type=float, default=20.0, help="time budget per case and impl")
    parser.add_argument("--quick", action="store_true", help="small cases only (a smoke run)")
    return parser.parse_args(argv)


def machine() -> dict[str, object]:
    info: dict[str, object] = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cpu": platform.processor() or platform.machine(),
        "threads": torch.get_num_threads(),
    }
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _print_table(name: str, timings: list[Timing], ratios: dict[str, dict[str, float]], baseline: str) -> None:
    try:
        from rich.console import Console
        from rich.table import Table
    except ImportError:  # pragma: no cover - rich is a dependency
        for t in timings:
            print(f"{t.case}\t{t.impl}\t{t.median_ms:.2f} ms")
        return
    table = Table(title=f"benchmark: {name} (speed-up = {baseline} time / impl time)")
    for column in ("case", "impl", "median ms", "min–max ms", "runs", "speed-up", "note"):
        table.add_column(column, justify="right" if "ms" in column or column in ("runs", "speed-up") else "left")
    for t in timings:
        ratio = ratios.get(t.case, {}).get(t.impl)
        table.add_row(
            t.case, t.impl, f"{t.median_ms:.2f}", f"{t.min_ms:.2f}–{t.max_ms:.2f}", str(t.runs),
            f"{ratio:.2f}×" if ratio is not None else "–", t.note,
        )
    Console(width=max(140, shutil.get_terminal_size().columns)).print(table)
