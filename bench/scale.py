r"""The pipeline at the paper's scale: ingest, soft labels (a pool of 2 teacher actors) and one epoch
of student pretraining on a synthetic distant corpus of 1,000 / 10,000 / 100,000 documents, with
documents/s per stage, soft-label bytes per document, disk use, and the peak private memory (USS)
of the driver, of each teacher actor and of each Ray Train worker. Memory is flat when the peaks
at the largest corpus are within 10% of those at the one before.

    python bench/scale.py --docs 1000,10000,100000 --json bench/results/scale_2cpu.json

The corpus: Re-DocRED's 1,000 labelled dev and test documents (../shared/data) repeated under new
titles, written here a document at a time (never committed, never held whole). The models: the
tiny random encoder (`tiny-random`, a 2-layer random BERT) with a light head (emb 128, block 16,
no axial layer: one epoch on 100,000 documents then fits in about an hour here); a teacher trained one epoch on the shipped sample, then `run_pipeline(until=...)`
one stage at a time, each in its own driver process, so each stage's driver and Ray processes are
measured alone. Precision: the config's `auto`. A sampler in this process reads the USS of the
driver and of every process under it (Ray's daemons, workers and actors) every --every seconds
(about 0.1 of a core); each process is named by its Ray title (`ray::RayTrainWorker`, ...). Each
stage also keeps a trace, every ~10 s, of each role's largest USS less object-store pages: a peak
reached once and then held (a plateau) reads differently from one still climbing at the end.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
SOURCES = [REPO.parent / "shared" / "data" / "re-docred" / f"{split}_revised.json" for split in ("dev", "test")]
STAGES = ("teacher", "ingest", "soft_labels", "student")
# What a process is, by the title Ray gives it (first match wins): the roles the issue asks for first.
ROLES = [("teacher actor", ("TeacherLogits",)), ("train worker", ("RayTrainWorker",)),
         ("ingest task", ("_featurize_shard",)), ("read task", ("ReadFiles", "ReadParquet")),
         ("split coordinator", ("SplitCoordinator",)), ("other Ray worker", ("ray::",)),
         ("Ray daemons", ("raylet", "gcs_server", "dashboard", "log_monitor", "monitor.py", "runtime_env",
                          "default_worker", "ray/_private", "ray/autoscaler"))]


RANKED = [name for name, _ in ROLES] + ["other"]


def overrides(corpus: Path, out: Path, extra: list[str]) -> list[str]:
    sample = REPO / "kddocre_ray" / "sample"
    return [f"output_dir={out}", "name=scale", "tracking.enabled=false",
            f"data.train.path={sample / 'train.json'}", f"data.dev.path={sample / 'dev.json'}",
            f"data.test.path={sample / 'test.json'}", f"data.rel_info={sample / 'rel_info.json'}",
            "model.encoder=tiny-random", "model.emb_size=128", "model.block_size=16", "model.axial_layers=0",
            "train.epochs=1", "train.batch_size=8", "scale.num_workers=2", "scale.max_failures=0",
            f"pipeline.corpus={corpus}", "pipeline.pretrain_epochs=1", "soft_labels.pool_size=2", *extra]


def write_corpus(docs: int, path: Path) -> None:
    """`docs` real documents under new titles, one JSON list written a document at a time."""
    if path.exists():
        return
    real = [d for src in SOURCES for d in json.loads(src.read_text())]
    tmp = path.with_suffix(".tmp")
    with open(tmp, "w") as f:
        f.write("[")
        for i in range(docs):
            d = real[i % len(real)]
            f.write(("," if i else "") + json.dumps({**d, "title": f"{d['title']} #{i // len(real)}"}, ensure_ascii=False))
        f.write("]")
    tmp.rename(path)


def role(title: str) -> str:
    for name, marks in ROLES:
        if any(m in title for m in marks):
            return name
    return "other"


class Sampler:
    """Peak USS of a process and everything under it, per pid, with the most telling title seen."""

    def __init__(self, root: int, every: float):
        self.root, self.every = root, every
        self.peak: dict[int, float] = {}  # USS, MB
        # USS less the object store's pages that only this process has touched (Ray's shared-memory
        # file counts as private there): what the process itself holds
        self.heap: dict[int, float] = {}
        self.role: dict[int, int] = {}  # 0: the driver, else 1 + the index of its most telling role seen
        # [seconds, {role: largest heap now, MB}] per sample: whether a peak is a plateau or a climb
        self.trace: list[list] = []
        self._t0 = time.time()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(self.every):
            try:
                root = psutil.Process(self.root)
                procs = [root, *root.children(recursive=True)]
            except psutil.NoSuchProcess:
                return
            now: dict[str, float] = {}
            for p in procs:
                try:
                    title = " ".join(p.cmdline())[:300]
                    uss = store = 0
                    for m in p.memory_maps(grouped=True):
                        private = m.private_clean + m.private_dirty
                        uss += private
                        store += private if "plasma" in m.path or m.path.startswith("/dev/shm") else 0
                except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
                    continue
                self.peak[p.pid] = max(uss / 2**20, self.peak.get(p.pid, 0.0))
                self.heap[p.pid] = max((uss - store) / 2**20, self.heap.get(p.pid, 0.0))
                rank = 0 if p.pid == self.root else 1 + RANKED.index(role(title))  # an idle worker may take a task later
                self.role[p.pid] = min(rank, self.role.get(p.pid, rank))
                name = self._name(p.pid)
                now[name] = round(max((uss - store) / 2**20, now.get(name, 0.0)), 1)
            self.trace.append([round(time.time() - self._t0, 1), dict(sorted(now.items()))])

    def __enter__(self) -> Sampler:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    def _name(self, pid: int) -> str:
        return "driver" if self.role[pid] == 0 else RANKED[self.role[pid] - 1]

    def by_role(self, which: str = "peak") -> dict[str, list[float]]:
        """Each role's peaks (`peak`: USS, `heap`: USS less object-store pages), one per process, largest first."""
        out: dict[str, list[float]] = {}
        for pid, peak in getattr(self, which).items():
            out.setdefault(self._name(pid), []).append(round(peak, 1))
        return {k: sorted(v, reverse=True) for k, v in sorted(out.items())}


def du_mb(path: Path) -> float:
    files = [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file()]
    return sum(p.stat().st_size for p in files) / 2**20


def run_stage(stage: str, corpus: Path, out: Path, extra: list[str], every: float, log: Path) -> dict:
    """One stage (the stages before it are built) in its own driver process, sampled."""
    cmd = [sys.executable, __file__, "--stage", stage, "--corpus", str(corpus), "--out", str(out), "--set", *extra]
    t0 = time.time()
    with open(log, "a") as f:
        proc = subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, cwd=REPO)
        with Sampler(proc.pid, every) as sampler:
            rc = proc.wait()
    if rc:
        raise SystemExit(f"stage {stage} failed (exit {rc}); its log: {log}")
    return {"wall_s": round(time.time() - t0, 1), "uss_mb": sampler.by_role(), "heap_mb": sampler.by_role("heap"),
            "heap_trace": sampler.trace[::max(1, round(10 / every))]}  # one sample per ~10 s


def _stage(stage: str, corpus: str, out: str, extra: list[str]) -> None:
    """In the driver process: the pipeline up to `stage`."""
    from kddocre_ray.config import load_config
    from kddocre_ray.pipeline.run import run_pipeline

    conf = load_config(REPO / "configs" / "tiny.yaml", overrides(Path(corpus), Path(out), extra))
    run_pipeline(conf, until=stage)


def measure(docs: int, work: Path, extra: list[str], every: float, stopped: dict | None = None) -> dict:
    """Every stage at `docs` documents, each in a fresh folder; or, for a size `stopped` before its end
    (same commit), the stages it lacks, after the ones it measured (whose folders are their outputs)."""
    from kddocre_ray.config import load_config
    from kddocre_ray.pipeline.stages import plan

    corpus = work / f"corpus-{docs}.json"
    t0 = time.time()
    write_corpus(docs, corpus)
    print(f"[scale] {docs} documents: corpus written ({du_mb(corpus):.0f} MB, {time.time() - t0:.0f} s)", flush=True)
    out = work / f"runs-{docs}"
    folders = {s.name: s.folder for s in plan(load_config(REPO / "configs" / "tiny.yaml", overrides(corpus, out, extra)))}
    kept = {k: v for k, v in (stopped or {}).get("stages", {}).items() if (folders[k] / "manifest.json").exists()}
    if list(kept) != list(STAGES[:len(kept)]):
        kept = {}
    # Stages found finished would be skipped, not measured: those to measure start from nothing.
    for folder in [folders[s] for s in STAGES[len(kept):]] if kept else [out]:
        shutil.rmtree(folder, ignore_errors=True)
    result = {"documents": docs, "corpus_mb": round(du_mb(corpus), 1), "stages": dict(kept)}
    if kept:
        result["resumed"] = f"{', '.join(kept)} measured before this run (same commit); the rest measured in it"
        print(f"[scale] {docs} documents: {', '.join(kept)} kept from the stopped run", flush=True)
    for stage in STAGES[len(kept):]:
        fig = run_stage(stage, corpus, out, extra, every, work / f"log-{docs}.txt")
        manifest = json.loads((folders[stage] / "manifest.json").read_text())
        counts = manifest["counts"]
        if stage == "student":
            metrics = json.loads((folders[stage] / "metrics.json").read_text())
            seconds, rows = metrics["train_time_s"], counts.get("rows", docs)
        else:
            seconds, rows = manifest.get("seconds") or counts.get("seconds"), counts.get("rows", docs)
        fig.update(seconds=round(seconds, 1), disk_mb=round(du_mb(folders[stage]), 1))
        if stage != "teacher":
            fig["docs_per_s"] = round(rows / seconds, 2)
        if stage == "soft_labels":
            fig["bytes_per_doc"] = round(du_mb(folders[stage]) * 2**20 / rows)
        result["stages"][stage] = fig
        print(f"[scale] {docs} documents, {stage}: {json.dumps(fig)}", flush=True)
    return result


def flatness(results: list[dict]) -> list[str]:
    """Peak USS (and USS less object-store pages) per role at the largest corpus against the one
    before (the issue's 10% rule)."""
    if len(results) < 2:
        return []
    a, b = results[-2], results[-1]
    lines = []
    for stage in [s for s in STAGES[1:] if s in a["stages"] and s in b["stages"]]:  # a stopped run lacks some
        for name, peaks in b["stages"][stage]["uss_mb"].items():
            before = a["stages"][stage]["uss_mb"].get(name)
            if before and name != "other":
                heap_a, heap_b = (max(r["stages"][stage]["heap_mb"][name]) for r in (a, b))
                ratio, heap_ratio = max(peaks) / max(before), heap_b / heap_a
                lines.append(f"{stage:12s} {name:17s} USS {max(before):6.0f} -> {max(peaks):6.0f} MB x{ratio:.3f} "
                             f"{'flat' if ratio <= 1.10 else 'GROWS'};  less store pages {heap_a:6.0f} -> "
                             f"{heap_b:6.0f} MB x{heap_ratio:.3f} {'flat' if heap_ratio <= 1.10 else 'GROWS'}")
    return lines


def table(results: list[dict]) -> str:
    rows = ["| documents | stage | docs/s | stage s | wall s | disk MB | driver USS MB | actors / workers USS MB |",
            "|---|---|---|---|---|---|---|---|"]
    for r in results:
        for stage in [s for s in STAGES[1:] if s in r["stages"]]:
            f = r["stages"][stage]
            workers = f["uss_mb"].get("teacher actor") or f["uss_mb"].get("train worker") or f["uss_mb"].get("ingest task") or []
            rows.append(f"| {r['documents']:,} | {stage} | {f.get('docs_per_s', '')} | {f['seconds']} | {f['wall_s']} | "
                        f"{f['disk_mb']:,} | {max(f['uss_mb'].get('driver', [0])):.0f} | "
                        f"{', '.join(f'{x:.0f}' for x in workers)} |")
    return "\n".join(rows)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--docs", default="1000,10000,100000", help="corpus sizes, comma-separated, smallest first")
    p.add_argument("--work", default="/tmp/kddocre-scale", help="corpora, stages and logs (about 10 GB at 100,000)")
    p.add_argument("--every", type=float, default=2.0, help="seconds between memory samples")
    p.add_argument("--json", help="write the figures here, after each corpus size; sizes it already holds "
                                  "for the same commit and overrides are kept, not measured again")
    p.add_argument("--set", nargs="*", default=[], help="more config overrides (key=value)")
    p.add_argument("--stage", help=argparse.SUPPRESS)
    p.add_argument("--corpus", help=argparse.SUPPRESS)
    p.add_argument("--out", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.stage:
        return _stage(args.stage, args.corpus, args.out, args.set)
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True).stdout.strip()
    header = {"machine": f"{os.cpu_count()} cores", "commit": commit, "overrides": args.set}
    done = {}  # a rerun of the same command at the same commit keeps the sizes already measured
    if args.json and Path(args.json).exists():
        before = json.loads(Path(args.json).read_text())
        if all(before.get(k) == v for k, v in header.items()):
            done = {r["documents"]: r for r in before["results"]}
    results = []
    for docs in [int(x) for x in args.docs.split(",")]:
        if docs in done and "unfinished" not in done[docs]:
            print(f"[scale] {docs} documents: measured before at this commit, kept", flush=True)
            results.append(done[docs])
        else:  # a stopped size goes on from the stages it finished
            results.append(measure(docs, work, args.set, args.every, done.get(docs)))
        if args.json:
            Path(args.json).write_text(json.dumps({**header, "results": results}, indent=2))
    print(table(results))
    print("\n".join(flatness(results)))


if __name__ == "__main__":
    main()
