"""MLflow tracking: every `kddocre train` is one MLflow run, every pipeline a parent run with a
nested run per stage. Ray and MLflow meet only here and at the jobs' edge.

Which process writes what (one writer at a time, so a SQLite store never locks):
  driver      the runs, their parameters and tags, final metrics, artifacts (before and after
              each training stage's `fit()`, while no other process logs)
  controller  per-epoch metrics while `fit()` runs, from Ray Train's `after_report` callback
              (`EpochMetrics`: Ray Train V2 returns nothing to the driver until `fit()` ends)
Both write to the same absolute store URI: `MLFLOW_TRACKING_URI`, else `sqlite:///<cwd>/mlflow.db`
(Ray's processes run in other folders, so a relative URI would scatter stores).

Tracking never stops training: the first failure (store unreachable, server gone) is reported
once and tracking is off for the rest of the run; the run folder keeps everything, and
`kddocre track RUN_DIR` logs it afterwards by replaying the same events from its files.
The run folder's `tracking.json` holds the run ids, so a resumed run continues its MLflow runs.
"""
from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ray.train import UserCallback

from . import layout
from .cluster import submitted_job
from .config import flatten
from .errors import InputError
from .storage import Location, is_remote, location, on_disk, read_json, write_json

ARTIFACT_SUFFIXES = (".json", ".yaml", ".png")  # small files; never weights or Parquet shards
MAX_ARTIFACT_BYTES = 50 << 20
# A client default of about four minutes of retries per call would stall training when the server
# dies; these apply unless the user sets them.
HTTP_DEFAULTS = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2", "MLFLOW_HTTP_REQUEST_TIMEOUT": "20"}


def store_uri(default_dir: Path | None = None) -> str:
    """MLFLOW_TRACKING_URI, else `mlflow.db` in `default_dir` (the working directory unless told)."""
    uri = os.environ.get("MLFLOW_TRACKING_URI")
    return uri or f"sqlite:///{Path(default_dir or Path.cwd()).resolve() / 'mlflow.db'}"


def flat_params(config: dict) -> dict[str, str]:
    """Dotted keys, the names the command line takes; unset values as ''."""
    return {k: "" if v is None else str(v) for k, v in flatten(config).items() if k != "extends"}


def numeric(metrics: dict, prefix: str = "") -> dict[str, float]:
    """The numbers of a (nested) metrics dict as dotted MLflow metric names."""
    return {f"{prefix}{k}": float(v) for k, v in flatten(metrics).items()
            if isinstance(v, (int, float)) and not isinstance(v, bool)}


def final_scores(metrics: dict) -> dict[str, float]:
    """A scored run's numbers: `test_*`, and `best_dev_*` for the checkpoint kept by dev F1 (the
    per-epoch `dev_f1` curve keeps its own name)."""
    prefix = {"dev": "best_dev_", "test": "test_"}
    return {k: v for split in prefix if isinstance(metrics.get(split), dict)
            for k, v in numeric(metrics[split], prefix[split]).items()}


def git_commit() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent, capture_output=True,
                             text=True, timeout=10)
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


class Tracker:
    """An MLflow client that reports its first failure once and then stands down."""

    def __init__(self, experiment: str, log: Callable[[str], None] = print, uri: str | None = None):
        from mlflow import MlflowClient

        for k, v in HTTP_DEFAULTS.items():
            os.environ.setdefault(k, v)
        self.uri, self.say, self.ok = uri or store_uri(), log, True
        self.experiment_id: str | None = None
        self.client = self.call(MlflowClient, self.uri)  # an unknown scheme fails here
        if not self.ok or (self.uri.startswith("http") and not self._reachable()):
            return
        self.experiment_id = self.call(self._experiment, experiment)
        if self.ok:
            log(f"[kddocre] MLflow: experiment {experiment} in {self.uri} (view: mlflow ui --backend-store-uri "
                f"{self.uri} --host 127.0.0.1)" if self.uri.startswith("sqlite")
                else f"[kddocre] MLflow: experiment {experiment} at {self.uri}")

    def _reachable(self) -> bool:
        import requests

        try:
            requests.get(self.uri.rstrip("/") + "/health", timeout=5).raise_for_status()
            return True
        except requests.RequestException as e:
            self._fail(e)
            return False

    def _experiment(self, name: str) -> str:
        found = self.client.get_experiment_by_name(name)
        if found is not None:
            return found.experiment_id
        location = None
        if self.uri.startswith("sqlite:///"):  # artifacts beside the database, wherever the process runs
            location = (Path(self.uri.removeprefix("sqlite:///")).parent / "mlartifacts").as_uri()
        # a training experiment: the UI opens on its runs, not on the GenAI overview
        return self.client.create_experiment(name, artifact_location=location,
                                             tags={"mlflow.experimentKind": "custom_model_development"})

    def _fail(self, e: Exception) -> None:
        self.ok = False
        self.say(f"[kddocre] MLflow tracking at {self.uri} failed ({type(e).__name__}: {str(e)[:300]}); training "
                 "goes on without it and the run folder keeps everything: log it afterwards with "
                 "`kddocre track RUN_DIR`")

    def call(self, fn: Callable, *args, **kwargs) -> Any:
        if not self.ok:
            return None
        try:
            return fn(*args, **kwargs)
        except Exception as e:  # noqa: BLE001 - any tracking error must leave training running
            self._fail(e)
            return None

    # -- logging helpers (each one guarded) --
    def create_run(self, name: str, tags: dict[str, str], parent: str | None = None,
                   start_ms: int | None = None) -> str | None:
        if parent:
            tags = {**tags, "mlflow.parentRunId": parent}
        run = self.call(self.client.create_run, self.experiment_id, start_time=start_ms, tags=tags, run_name=name)
        return run.info.run_id if run else None

    def resume(self, run_id: str) -> bool:
        """Continue an existing run (a resumed pipeline or training run); False when the store
        does not hold it (a new store at the same address), so a fresh run is opened instead."""
        from mlflow.exceptions import MlflowException

        if not self.ok:
            return False
        try:
            self.client.get_run(run_id)
        except MlflowException as e:
            if e.error_code == "RESOURCE_DOES_NOT_EXIST":
                return False
            self._fail(e)
            return False
        except Exception as e:  # noqa: BLE001
            self._fail(e)
            return False
        self.call(self.client.update_run, run_id, status="RUNNING")
        return self.ok

    def log(self, run_id: str | None, params: dict | None = None, metrics: dict | None = None,
            tags: dict | None = None, step: int = 0) -> None:
        from mlflow.entities import Metric, Param, RunTag

        if not run_id:
            return
        now = int(time.time() * 1000)
        ps = [Param(k, v[:6000]) for k, v in (params or {}).items()]
        ms = [Metric(k, v, now, step) for k, v in (metrics or {}).items()]
        ts = [RunTag(k, str(v)) for k, v in (tags or {}).items()]
        for i in range(0, max(len(ps), len(ms), len(ts), 1), 100):  # MLflow takes 100 params per batch
            self.call(self.client.log_batch, run_id, metrics=ms[i:i + 100], params=ps[i:i + 100], tags=ts[i:i + 100])

    def log_history(self, run_id: str | None, history: list[dict]) -> None:
        """Per-epoch metrics at step = epoch, skipping epochs the live callback already logged."""
        if not run_id or not history:
            return
        logged = self.call(self.client.get_metric_history, run_id, "epoch_time_s") or []
        done = {m.step for m in logged}
        for epoch in history:
            if epoch.get("epoch") not in done:
                self.log(run_id, metrics=epoch_metrics(epoch), step=int(epoch.get("epoch", 0)))

    def log_files(self, run_id: str | None, folder: Location, names: list[str]) -> None:
        for name in names:
            for path in sorted(folder.glob(name), key=str):
                if path.is_file() and path.suffix in ARTIFACT_SUFFIXES and path.stat().st_size < MAX_ARTIFACT_BYTES:
                    parent = str(path.parent.relative_to(folder)) if path.parent != folder else None
                    with on_disk(path) as local:  # a file in an object store: a temporary local copy
                        self.call(self.client.log_artifact, run_id, str(local), parent)

    def end(self, run_id: str | None, ok: bool = True, end_ms: int | None = None) -> None:
        if run_id:
            self.call(self.client.set_terminated, run_id, "FINISHED" if ok else "FAILED", end_ms)


def continued_run(tracker: Tracker, runs: dict[str, str], key: str,
                  create: Callable[[], str | None]) -> tuple[str | None, bool]:
    """The run recorded under `key` in `runs` (a folder's record of its MLflow runs), continued if
    the store still holds it; else a new one from `create()`, recorded in `runs` (the caller saves
    the record). Returns the run id (None while tracking is down) and whether it was continued."""
    if key in runs and tracker.resume(runs[key]):
        return runs[key], True
    run_id = create()
    if run_id:
        runs[key] = run_id
    return run_id, False


def epoch_metrics(report: dict) -> dict[str, float]:
    """An epoch's report as metrics at step = epoch ("score" is Ray's ranking key, not ours)."""
    return {k: v for k, v in numeric(report).items() if k not in ("score", "epoch")}


class EpochMetrics(UserCallback):
    """Ray Train callback (`after_report`, in the controller): each epoch's metrics into the
    stage's MLflow run as `fit()` runs. Failures are reported once and never stop training."""

    def __init__(self, uri: str, run_id: str):
        self.uri, self.run_id, self.ok = uri, run_id, True
        self.client = None  # made in the controller, on first use

    def after_report(self, run_context, metrics: list[dict], checkpoint) -> None:
        if not self.ok or not metrics:
            return
        try:
            from mlflow import MlflowClient
            from mlflow.entities import Metric

            self.client = self.client or MlflowClient(self.uri)
            report, now = metrics[0], int(time.time() * 1000)  # rank 0's report
            step = int(report.get("epoch", 0))
            self.client.log_batch(
                self.run_id, metrics=[Metric(k, v, now, step) for k, v in epoch_metrics(report).items()])
        except Exception as e:  # noqa: BLE001
            self.ok = False
            print(f"[kddocre] MLflow: per-epoch logging to {self.uri} failed ({type(e).__name__}: {e}); "
                  "training goes on, the run folder keeps the history")


class MlflowReporter:
    """The pipeline's `Reporter` (pipeline/report.py) in MLflow, and a plain training run's.

    A pipeline (with its fingerprint) is a parent run with a nested run per stage; a plain
    training run (no fingerprint) is one run. The run folder's `tracking.json` keeps the run ids: a
    rerun with the same config continues the parent run, and a stage logged before at the same
    fingerprint continues its run (a stage that is then skipped gets the tag
    `kddocre.last_invocation=skipped`). A stage skipped because another pipeline built it (the
    teacher that NA / KD-KL / KD-MSE share) gets a run tagged `kddocre.status=skipped` that names
    the folder it reuses. `replay` (kddocre track): the events come from the folder's files later,
    so the git commit of the code now is not claimed for them."""

    def __init__(self, conf, run_dir: Path, fingerprint: str | None = None, log: Callable[[str], None] = print,
                 tracker: Tracker | None = None, replay: bool = False):
        """`fingerprint`: the pipeline's (its last stage's, which covers every stage before it);
        None for a plain training run, which has no parent run."""
        from .config import to_dict

        self.conf, self.run_dir, self.replay = conf, location(run_dir), replay
        self.nested, self.fingerprint = fingerprint is not None, fingerprint
        if tracker is None:
            # a submitted job's working directory is Ray's temporary copy: its default store goes to output_dir
            default_dir = Path(conf.output_dir) if submitted_job() and not is_remote(conf.output_dir) else None
            tracker = Tracker(conf.tracking.experiment, log, store_uri(default_dir))
        self.tracker = tracker
        self.params = flat_params(to_dict(conf))
        self.parent: str | None = None
        # replay: when the events happened (ms), from the folder's files; live runs use the clock
        self.when: tuple[int | None, int | None] = (None, None)
        self.runs: dict[str, str] = {}  # "stage:fingerprint" -> run id, as in tracking.json
        self.current: dict[str, str] = {}  # stage -> its run in this invocation
        state = self._state()
        if not self.nested or state.get("fingerprint") == self.fingerprint:
            self.runs = dict(state.get("runs", {}))

    # -- tracking.json: the run ids of this run folder --
    def _state(self) -> dict:
        path = self.run_dir / layout.TRACKING
        state = read_json(path) if path.exists() else {}
        return state if state.get("uri") == self.tracker.uri else {}

    def _save(self, complete: bool = False) -> None:
        if self.tracker.ok:
            write_json({"uri": self.tracker.uri, "experiment_id": self.tracker.experiment_id,
                        "fingerprint": self.fingerprint, "parent": self.parent, "runs": self.runs,
                        "complete": complete}, self.run_dir / layout.TRACKING, indent=2)

    def _tags(self, **more) -> dict[str, str]:
        tags = {"kddocre.run_folder": str(self.run_dir.resolve()), **{f"kddocre.{k}": str(v) for k, v in more.items()}}
        if self.replay:
            tags["kddocre.logged_afterwards"] = "true"
        else:
            tags["mlflow.source.git.commit"] = git_commit()
        return tags

    def _open_parent(self) -> None:
        if not self.nested or self.parent or not self.tracker.ok:
            return
        previous = self._state().get("parent") if self.runs else None
        if previous and self.tracker.resume(previous):
            self.parent = previous
            return
        self.runs = {}
        self.parent = self.tracker.create_run(self.conf.name, self._tags(kind="pipeline", fingerprint=self.fingerprint),
                                              start_ms=self.when[0])
        self.tracker.log(self.parent, params=self.params)
        self._save()

    def _open(self, stage: str, fingerprint: str, params: dict, **tags) -> str | None:
        """The stage's run: continued when this folder already tracked it at this fingerprint."""
        self._open_parent()

        def create() -> str | None:
            name = f"{self.conf.name}/{stage}" if self.nested else self.conf.name
            run_id = self.tracker.create_run(name, self._tags(stage=stage, fingerprint=fingerprint, **tags), self.parent,
                                             self.when[0])
            self.tracker.log(run_id, params=flat_params(params))
            return run_id

        run_id, continued = continued_run(self.tracker, self.runs, f"{stage}:{fingerprint}", create)
        if continued:
            self.tracker.log(run_id, tags={f"kddocre.{k}": v for k, v in tags.items()})
        elif run_id:
            self._save()
        if run_id:
            self.current[stage] = run_id
        return run_id

    # -- the Reporter protocol --
    def started(self, stage: str, fingerprint: str, params: dict) -> None:
        self._open(stage, fingerprint, params, status="ran")

    def callbacks(self, stage: str) -> list:
        run_id = self.current.get(stage)
        return [EpochMetrics(self.tracker.uri, run_id)] if run_id and self.tracker.ok else []

    def skipped(self, stage: str, fingerprint: str, folder: Path) -> None:
        self._open_parent()
        key = f"{stage}:{fingerprint}"
        if key in self.runs:  # this pipeline logged it before: its run stands
            self.tracker.log(self.runs[key], tags={"kddocre.last_invocation": "skipped"})
            return
        manifest = read_json(folder / layout.MANIFEST) if (folder / layout.MANIFEST).exists() else {}
        run_id = self._open(stage, fingerprint, manifest.get("values", {}), status="skipped",
                            stage_folder=folder.resolve())
        self.tracker.log(run_id, metrics=numeric(manifest.get("counts", {})))
        self.tracker.end(run_id, end_ms=self.when[1])

    def finished(self, stage: str, folder: Path, metrics: dict, history: list[dict], files: list[str]) -> None:
        run_id = self.current.get(stage)
        run_metrics = read_json(folder / layout.METRICS) if (folder / layout.METRICS).exists() else {}
        extra = {k: run_metrics[k] for k in ("precision", "device", "workers") if k in run_metrics}
        scores = final_scores(run_metrics)
        tags = {"kddocre.stage_folder": str(folder.resolve())}
        if (folder / layout.CHECKPOINT).is_dir():
            tags["kddocre.checkpoint"] = str((folder / layout.CHECKPOINT).resolve())
        headline = {k: v for k, v in numeric(metrics).items() if not k.startswith("dev_")}  # dev: best_dev_*
        self.tracker.log(run_id, params={f"run.{k}": str(v) for k, v in extra.items()},
                         metrics={**headline, **scores}, tags=tags)
        self.tracker.log_history(run_id, history)
        self.tracker.log_files(run_id, folder, [layout.CONFIG, layout.MANIFEST, *files])
        if not self.nested:  # a plain training run: its model is the run's result
            self._log_model(run_id, folder)
        self.tracker.end(run_id, end_ms=self.when[1])
        if not self.nested:
            self._save(complete=self.tracker.ok)

    def ended(self, metrics: dict | None) -> None:
        """The pipeline is over: its scores and files on the parent run. `metrics=None`: it failed,
        and its unfinished runs are marked FAILED."""
        if metrics is None:
            for run_id in [*self.runs.values(), self.parent]:
                if run_id:
                    self.tracker.call(self._fail_if_running, run_id)
            return
        if not self.nested:
            return
        self.tracker.log(self.parent, metrics=final_scores(metrics))
        self.tracker.log_files(self.parent, self.run_dir, [layout.CONFIG, layout.PIPELINE, layout.METRICS,
                                                           layout.RESULT, f"{layout.PLOTS}/*.png"])
        self._log_model(self.parent, self.run_dir)  # the fine-tuned model the run folder stands for
        self.tracker.end(self.parent, end_ms=self.when[1])
        self._save(complete=self.tracker.ok)

    def _log_model(self, run_id: str | None, folder: Location) -> None:
        """The final model as an MLflow model registered under tracking.model_name (registry.py).
        A failure here is said and the run still ends well: the model stays in its run folder, and
        `kddocre export` / `kddocre_ray.Extractor` use it from there."""
        if not (run_id and self.tracker.ok and self.conf.tracking.log_model):
            return
        from .registry import log_model

        name = self.conf.tracking.model_name or self.conf.name
        try:
            version = log_model(self.tracker.client, run_id, folder, name)
        except Exception as e:  # noqa: BLE001 - the run's own results are safe in its folder
            self.tracker.say(f"[kddocre] MLflow: the model was not logged ({type(e).__name__}: {str(e)[:300]})")
            return
        self.tracker.say(f"[kddocre] MLflow: model registered as {name} version {version} (serve it: mlflow models "
                         f"serve -m models:/{name}/{version} --env-manager local)")

    def _fail_if_running(self, run_id: str) -> None:
        """FAILED, or KILLED when the pipeline was stopped: Ctrl-C or SIGTERM (cli.main), which Ray
        Train's own handler ends with SystemExit."""
        stopped = isinstance(sys.exc_info()[1], (KeyboardInterrupt, SystemExit))  # called in run_pipeline's except
        if self.tracker.client.get_run(run_id).info.status == "RUNNING":
            self.tracker.client.set_terminated(run_id, "KILLED" if stopped else "FAILED")


def check_run_folder(run_dir: Location) -> None:
    """What `track_folder` replays, checked first: metrics.json an object whose history is a
    list of epochs (numbers by name, an integer epoch), pipeline.json (when there is one) an
    object of stages, each with its fingerprint and status."""
    metrics = read_json(run_dir / layout.METRICS)
    if not isinstance(metrics, dict):
        raise InputError("expected a JSON object of scores", path=run_dir / layout.METRICS)
    histories = [("history", metrics.get("history", []))]
    histories += [(f"histories.{k}", v) for k, v in (metrics.get("histories") or {}).items()] \
        if isinstance(metrics.get("histories", {}), dict) else [("histories", None)]
    for field, history in histories:
        if not isinstance(history, list):
            raise InputError("expected a list of epochs", path=run_dir / layout.METRICS, field=field)
        for i, epoch in enumerate(history):
            if not (isinstance(epoch, dict) and type(epoch.get("epoch", 0)) is int
                    and all(isinstance(v, (int, float, str, type(None))) for v in epoch.values())):
                raise InputError("expected an object of numbers with an integer epoch", path=run_dir / layout.METRICS,
                                 field=f"{field}[{i}]")
    if not (run_dir / layout.PIPELINE).exists():
        return
    report = read_json(run_dir / layout.PIPELINE)
    stages = report.get("stages") if isinstance(report, dict) else None
    if not isinstance(stages, dict) or "evaluate" not in stages:
        raise InputError('expected {"stages": {stage: {...}}} with every stage up to "evaluate"',
                         path=run_dir / layout.PIPELINE)
    for name, entry in stages.items():
        if not (isinstance(entry, dict) and isinstance(entry.get("fingerprint"), str)
                and entry.get("status") in ("ran", "skipped")):
            raise InputError('expected {"fingerprint": ..., "status": "ran" or "skipped", ...}: a pipeline that '
                             "finished", path=run_dir / layout.PIPELINE, field=f"stages.{name}")


def track_folder(run_dir: Path, experiment: str | None = None, log: Callable[[str], None] = print) -> dict:
    """Log a finished run folder (a pipeline's or a `kddocre train` run's) to MLflow afterwards,
    by replaying the events the live run would have reported, from the folder's files."""
    from .config import read_resolved, to_dict
    from .fingerprint import digest

    run_dir = location(run_dir)
    if not (run_dir / layout.METRICS).exists() or not (run_dir / layout.CONFIG).exists():
        raise FileNotFoundError(f"{run_dir}: not a finished run folder (needs config.yaml and metrics.json)")
    conf = read_resolved(run_dir / layout.CONFIG)
    check_run_folder(run_dir)
    tracker = Tracker(experiment or conf.tracking.experiment, log)
    if not tracker.ok:
        raise ConnectionError(f"MLflow store {tracker.uri} cannot be reached; nothing was logged")
    state = read_json(run_dir / layout.TRACKING) if (run_dir / layout.TRACKING).exists() else {}
    if state.get("uri") == tracker.uri and state.get("complete"):
        log(f"[kddocre] {run_dir} is already tracked in {tracker.uri} (tracking.json); nothing to do")
        return state
    (run_dir / layout.TRACKING).unlink(missing_ok=True)  # a partial record: log everything afresh
    pipeline = run_dir / layout.PIPELINE
    if pipeline.exists():
        stages = read_json(pipeline)["stages"]
        histories = read_json(run_dir / layout.METRICS).get("histories", {})  # when a stage folder is gone
        reporter = MlflowReporter(conf, run_dir, stages["evaluate"]["fingerprint"], log, tracker, replay=True)
        finished = _mtime_ms(run_dir / layout.METRICS)
        reporter.when = (finished - int(1000 * sum(e.get("seconds", 0) for e in stages.values())), finished)
        reporter._open_parent()
        for stage, entry in stages.items():
            folder = location(entry.get("folder", ""))
            end = _mtime_ms(folder / layout.MANIFEST) or finished
            reporter.when = (end - int(1000 * entry.get("seconds", 0)), end)
            if entry["status"] == "skipped":
                reporter.skipped(stage, entry["fingerprint"], folder)
                continue
            reporter.started(stage, entry["fingerprint"], entry.get("params", {}))
            done = read_json(folder / layout.METRICS) if (folder / layout.METRICS).exists() else {}
            history = done.get("history", histories.get(stage, [])) if stage != "evaluate" else []
            reporter.finished(stage, folder, entry.get("metrics", {}), history, entry.get("files", []))
        reporter.when = (None, finished)
        reporter.ended(read_json(run_dir / layout.METRICS))
    else:
        metrics = read_json(run_dir / layout.METRICS)
        values = read_json(run_dir / layout.FINGERPRINT) if (run_dir / layout.FINGERPRINT).exists() else {}
        reporter = MlflowReporter(conf, run_dir, None, log, tracker, replay=True)
        finished = _mtime_ms(run_dir / layout.METRICS)
        reporter.when = (finished - int(1000 * metrics.get("train_time_s", 0)), finished)
        reporter.started("train", digest(values), to_dict(conf))
        reporter.finished("train", run_dir, {"train_time_s": metrics.get("train_time_s", 0.0)},
                          metrics.get("history", []), [layout.METRICS, layout.RESULT])
    if not tracker.ok:
        raise ConnectionError(f"logging {run_dir} to {tracker.uri} failed part-way; rerun `kddocre track`")
    log(f"[kddocre] {run_dir} logged to {tracker.uri}")
    return read_json(run_dir / layout.TRACKING)


def _mtime_ms(path: Path) -> int | None:
    """When a file was last written: a replayed run's times come from its folder's files."""
    return int(path.stat().st_mtime * 1000) if path.exists() else None
