"""What each pipeline stage reports, through one small interface.

Stages call `started`, `finished` (parameters, per-epoch metrics, final metrics, files) or
`skipped`; a training stage passes `callbacks` to Ray Train (per-epoch reports as they happen);
the pipeline calls `ended` last (metrics None: it failed). `RunReport` keeps it in the run
folder's `pipeline.json` and the log; `tracking.MlflowReporter` logs it to MLflow; `Reporters`
sends each event to several.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Protocol

from .. import layout
from ..storage import read_json, write_json


class Reporter(Protocol):
    def started(self, stage: str, fingerprint: str, params: dict) -> None: ...

    def skipped(self, stage: str, fingerprint: str, folder: Path) -> None: ...

    def finished(self, stage: str, folder: Path, metrics: dict, history: list[dict], files: list[str]) -> None: ...

    def callbacks(self, stage: str) -> list: ...

    def ended(self, metrics: dict | None) -> None: ...


class Reporters:
    """Every event to each reporter, in order."""

    def __init__(self, *reporters: Reporter):
        self.reporters = reporters

    def started(self, stage: str, fingerprint: str, params: dict) -> None:
        for r in self.reporters:
            r.started(stage, fingerprint, params)

    def skipped(self, stage: str, fingerprint: str, folder: Path) -> None:
        for r in self.reporters:
            r.skipped(stage, fingerprint, folder)

    def finished(self, stage: str, folder: Path, metrics: dict, history: list[dict], files: list[str]) -> None:
        for r in self.reporters:
            r.finished(stage, folder, metrics, history, files)

    def callbacks(self, stage: str) -> list:
        return [c for r in self.reporters for c in r.callbacks(stage)]

    def ended(self, metrics: dict | None) -> None:
        for r in self.reporters:
            r.ended(metrics)


class RunReport:
    """`pipeline.json`: one entry per stage (folder, fingerprint, ran / skipped, seconds,
    metrics), rewritten atomically after every event so a killed run shows where it stopped."""

    def __init__(self, run_dir: Path, log=print):
        self.path, self.log = run_dir / layout.PIPELINE, log
        self.data = read_json(self.path) if self.path.exists() else {"stages": {}}
        self._t0: dict[str, float] = {}

    def _save(self) -> None:
        write_json(self.data, self.path, indent=2)

    def started(self, stage: str, fingerprint: str, params: dict) -> None:
        self._t0[stage] = time.time()
        self.data["stages"][stage] = {"fingerprint": fingerprint, "status": "running", "params": params}
        self._save()
        self.log(f"[kddocre] stage {stage} ({fingerprint}): running")

    def skipped(self, stage: str, fingerprint: str, folder: Path) -> None:
        self.data["stages"][stage] = {"fingerprint": fingerprint, "status": "skipped", "folder": str(folder)}
        self._save()
        self.log(f"[kddocre] stage {stage} ({fingerprint}): complete in {folder}, skipped")

    def finished(self, stage: str, folder: Path, metrics: dict, history: list[dict], files: list[str]) -> None:
        entry = self.data["stages"].setdefault(stage, {})
        seconds = time.time() - self._t0.get(stage, time.time())
        entry.update(status="ran", folder=str(folder), seconds=seconds, metrics=metrics, files=files)
        self._save()
        self.log(f"[kddocre] stage {stage}: done in {seconds:.0f}s -> {folder}")

    def callbacks(self, stage: str) -> list:
        return []

    def ended(self, metrics: dict | None) -> None:
        self.data["status"] = "failed" if metrics is None else "done"
        self._save()
