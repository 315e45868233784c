"""Reconstruction jobs for ``scenegrad demo``: ``scenegrad reconstruct`` in a child process.

A child process (rather than a thread) makes cancel immediate and complete: the whole process
group is stopped, whatever stage it is in, and its memory goes with it. Progress comes from two
places the pipeline already writes: ``report.json`` (stages done, rewritten after each stage) and
the progress bars on its standard error (the current stage's percentage and ETA).

>>> parse_bar("splat (fast):  87%|########6 | 130/150 [00:27<00:04,  4.29it/s, loss=0.02]")
('splat (fast)', 130, 150, 4.0)
"""

from __future__ import annotations

import collections
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from scenegrad.recon.reconstruct import STAGES

#: Share of a typical run's time per stage (measured on the tiny and fast presets), for the overall
#: percentage and ETA.
STAGE_WEIGHTS = {"frames": 0.03, "poses": 0.32, "splats": 0.55, "mesh": 0.05, "render": 0.05}
_BAR = re.compile(r"^(?P<desc>[^\r\n]*?):\s*\d+%\|.*\|\s*(?P<n>\d+)/(?P<total>\d+)\s*\[[\d:]+<(?P<left>[\d:]+|\?)")


def parse_bar(line: str) -> tuple[str, int, int, float | None] | None:
    """``(description, n, total, seconds left)`` of a tqdm progress line, or ``None`` for other lines."""
    match = _BAR.match(line.strip())
    if match is None:
        return None
    left = match["left"]
    seconds = None
    if left != "?":
        seconds = 0.0
        for part in left.split(":"):
            seconds = seconds * 60 + int(part)
    return match["desc"].strip(), int(match["n"]), int(match["total"]), seconds


@dataclass
class JobStatus:
    """A snapshot of a job. ``state``: running, done, failed or cancelled; ``fraction`` of the whole
    run in ``[0, 1]``; ``eta`` seconds left (``None`` while unknown); ``stage_detail`` the current
    progress bar's text; ``log_tail`` the last lines of output; ``error`` the reason of a failure."""

    state: str
    stage: str | None
    stages_done: tuple[str, ...]
    fraction: float
    elapsed: float
    eta: float | None
    stage_detail: str
    log_tail: str
    error: str | None = None

    def summary(self) -> str:
        """One line for the page, e.g. ``splats (3/5) · 62% · 0:41 elapsed · about 0:25 left``."""
        def clock(s: float) -> str:
            return f"{int(s) // 60}:{int(s) % 60:02d}"

        if self.state != "running":
            return {"done": f"done in {clock(self.elapsed)}", "cancelled": "cancelled",
                    "failed": f"failed: {self.error}"}[self.state]
        where = f"{self.stage} ({STAGES.index(self.stage) + 1}/{len(STAGES)})" if self.stage else "starting"
        left = f" · about {clock(self.eta)} left" if self.eta is not None else ""
        return f"{where} · {self.fraction * 100:.0f}% · {clock(self.elapsed)} elapsed{left}"


class ReconstructJob:
    """``scenegrad reconstruct INPUT --out OUT ...`` in a child process, with progress and cancel.

    ``options`` become command-line flags (``max_frames=12`` -> ``--max-frames 12``). The child's
    output is also written to ``OUT/../log.txt``.
    """

    def __init__(self, input_path: Path, out: Path, log_lines: int = 40, **options):
        self.input_path, self.out = Path(input_path), Path(out)
        self.log_path = self.out.parent / "log.txt"
        self.command = [sys.executable, "-m", "scenegrad.apps", "reconstruct", str(self.input_path),
                        "--out", str(self.out)]
        for name, value in options.items():
            if value is not None:
                self.command += [f"--{name.replace('_', '-')}", str(value)]
        self._lines: collections.deque[str] = collections.deque(maxlen=log_lines)
        self._bar = ""
        self._bar_stage: str | None = None
        self._fraction = 0.0
        self._cancelled = threading.Event()
        self._process: subprocess.Popen | None = None
        self._reader: threading.Thread | None = None
        self._start = 0.0
        self._end: float | None = None

    def start(self) -> ReconstructJob:
        import scenegrad

        package_parent = str(Path(scenegrad.__file__).resolve().parent.parent)
        path = os.environ.get("PYTHONPATH", "")
        env = {**os.environ, "PYTHONUNBUFFERED": "1",
               "PYTHONPATH": package_parent + (os.pathsep + path if path else "")}
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._start = time.monotonic()
        self._process = subprocess.Popen(self.command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL, env=env, start_new_session=True)
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        return self

    def _read(self) -> None:
        assert self._process is not None and self._process.stdout is not None
        pending = ""
        with open(self.log_path, "w", encoding="utf-8") as log:
            while chunk := self._process.stdout.read1(65536):
                pending += chunk.decode("utf-8", errors="replace")
                *complete, pending = re.split(r"[\r\n]", pending)
                for line in complete:
                    self._take(line, log)
            if pending:
                self._take(pending, log)
        self._end = time.monotonic()

    def _take(self, line: str, log) -> None:
        if not line.strip():
            return
        for folder, name in ((self.out.parent, "<session>"), (self.input_path.parent, "<input>")):
            line = line.replace(str(folder), name)
        if parse_bar(line) is not None:
            self._bar = line.strip()
            self._bar_stage = self._current_stage(self._done())
        else:
            self._lines.append(line.rstrip())
            log.write(line.rstrip() + "\n")
            log.flush()

    @property
    def running(self) -> bool:
        return self._process is not None and (self._process.poll() is None or
                                              (self._reader is not None and self._reader.is_alive()))

    def cancel(self) -> None:
        """Stop the child process group (terminate, then kill after 5 s)."""
        self._cancelled.set()
        process = self._process
        if process is None or process.poll() is not None:
            return
        try:
            os.killpg(process.pid, signal.SIGTERM)
            process.wait(5)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(5)
        except ProcessLookupError:
            pass

    def wait(self, timeout: float | None = None) -> JobStatus:
        assert self._process is not None
        self._process.wait(timeout)
        if self._reader is not None:
            self._reader.join(timeout)
        return self.status()

    def _done(self) -> tuple[str, ...]:
        try:
            stages = json.loads((self.out / "report.json").read_text())["stages"]
        except (OSError, ValueError, KeyError):
            return ()
        return tuple(s for s in STAGES if stages.get(s, {}).get("done"))

    @staticmethod
    def _current_stage(done: tuple[str, ...]) -> str | None:
        return next((s for s in STAGES if s not in done), None)

    def status(self) -> JobStatus:
        done = self._done()
        stage = self._current_stage(done)
        bar = parse_bar(self._bar) if self._bar_stage == stage and stage is not None else None
        inside = bar[1] / bar[2] if bar and bar[2] else 0.0
        fraction = sum(STAGE_WEIGHTS[s] for s in done) + (STAGE_WEIGHTS[stage] * inside if stage else 0.0)
        self._fraction = max(self._fraction, min(fraction, 1.0))
        elapsed = (self._end or time.monotonic()) - self._start if self._start else 0.0
        eta = elapsed * (1 - self._fraction) / self._fraction if self._fraction > 0.05 else None
        code = self._process.poll() if self._process is not None else None
        reading = self._reader is not None and self._reader.is_alive()
        error = None
        if self._cancelled.is_set():
            state = "cancelled"
        elif code is None or reading:
            state = "running"
        elif code == 0 and stage is None:
            state, self._fraction, eta = "done", 1.0, 0.0
        else:
            state = "failed"
            messages = [line for line in self._lines if line.startswith("scenegrad reconstruct:")]
            error = (messages[-1].removeprefix("scenegrad reconstruct:").strip() if messages
                     else (self._lines[-1] if self._lines else f"exit code {code}"))
        return JobStatus(state=state, stage=stage if state == "running" else None, stages_done=done,
                         fraction=self._fraction, elapsed=elapsed, eta=eta if state == "running" else None,
                         stage_detail=self._bar if state == "running" else "",
                         log_tail="\n".join([*self._lines, *([self._bar] if self._bar and state == "running"
                                                             else [])]),
                         error=error)
