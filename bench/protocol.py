r"""The seeds behind every headline claim: each variant of docs/results.md's main table at seeds 66,
42 and 7 (BENCHMARK.md's reference budget, precision `auto`), run one after another, then the
table of mean +- sample std with the per-seed values, and the table of the paper's claims.

    python bench/protocol.py                         # run what is missing, then print both tables
    python bench/protocol.py --only KD-MSE --seeds 42
    python bench/protocol.py --table-only --runs docs/runs/protocol   # the committed tables, again
    python bench/protocol.py --copy-to docs/runs/protocol             # the run files to commit

A run is `kddocre train` or `kddocre distill` (jobs/distill.py) on its config with `train.seed`,
`name` and `output_dir` set; tracked in MLflow as any run (experiment `tracking.experiment`). A
finished run (its metrics.json) is skipped; a killed one is resumed by running the same command
again (Ray Train's checkpoints, the pipeline's finished stages). The distant variants of one seed
share that seed's teacher, ingested rows and soft labels (the stages' fingerprints, one
`output_dir`); the teacher's row is the KD-MSE pipeline's teacher stage, never trained twice.
Each invocation's command, commit, machine and wall time go to `protocol.json` in --out.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.results_table import stage_folders  # noqa: E402
from kddocre_ray import layout  # noqa: E402

SEEDS = (66, 42, 7)
LOG = "protocol.json"


@dataclass(frozen=True)
class Variant:
    name: str  # its row in the table
    config: str  # under configs/redocred_mini/
    job: str  # `kddocre train` or `kddocre distill`
    stage: str | None = None  # a row read from that stage of the config's pipeline, not a run of its own

    def run_name(self, seed: int) -> str:
        return f"{Path(self.config).stem}_s{seed}"


VARIANTS = [Variant("ATLOP-equivalent", "atlop.yaml", "train"), Variant("+ AFL", "afl.yaml", "train"),
            Variant("teacher", "kd_mse.yaml", "distill", stage="teacher"), Variant("NA", "na.yaml", "distill"),
            Variant("KD-MSE", "kd_mse.yaml", "distill"), Variant("KD-KL", "kd_kl.yaml", "distill")]
# (row name, metrics key): the main table's columns
COLUMNS = [("F1", "f1"), ("Ign F1", "ign_f1"), ("long-tail F1", "long_tail_f1"), ("Infer-F1", "infer_f1"),
           ("P", "precision"), ("R", "recall")]
# The paper's claims as paired differences of one seed's rows: (claim, better, worse, metrics
# keys whose difference is measured; two keys: the gain in the first less the gain in the second).
CLAIMS = [("AFL over ATL", "+ AFL", "ATLOP-equivalent", ("f1",)),
          ("axial attention", "teacher", "+ AFL", ("f1",)),
          ("KD-MSE over NA (the teacher's share)", "KD-MSE", "NA", ("f1",)),
          ("KD-MSE over KD-KL", "KD-MSE", "KD-KL", ("f1",)),
          ("KD-MSE over its teacher", "KD-MSE", "teacher", ("f1",)),
          ("AFL gains more on the long tail than on frequent relations", "+ AFL", "ATLOP-equivalent",
           ("long_tail_f1", "freq_f1"))]
# The paper's figure for each claim (Tan et al. 2022: DocRED, RoBERTa-large), where one is at hand;
# no verdict depends on it.
PAPER: dict[str, str] = {}


def test_metrics(runs: Path, variant: Variant, seed: int) -> dict | None:
    """The test metrics of `variant` at `seed` in `runs`, or None while it has none; a stage's row
    is read where results_table.stage_folders finds that stage."""
    run = runs / variant.run_name(seed)
    if variant.stage is None:
        path = run / layout.METRICS
    elif (run / layout.PIPELINE).exists() and variant.stage in (folders := stage_folders(run)):
        path = folders[variant.stage] / layout.METRICS
    else:
        return None
    return json.loads(path.read_text())["test"] if path.exists() else None


def _mean_std(values: list[float]) -> str:
    """Mean ± sample std; one value has no std (a dash)."""
    std = f"{statistics.stdev(values):.2f}" if len(values) > 1 else "–"
    return f"{statistics.mean(values):.2f} ± {std}"


def main_table(runs: Path, seeds: tuple[int, ...]) -> str:
    """Per variant: mean ± sample std over the seeds it has, then each seed's value in `seeds` order
    (a dash where a seed is missing: such a row says how many it has)."""
    head = ["variant", "seeds", *(name for name, _ in COLUMNS)]
    lines = [f"Each cell: mean ± sample std over the seeds (per seed: {' / '.join(map(str, seeds))}).", "",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for v in VARIANTS:
        found = {s: test_metrics(runs, v, s) for s in seeds}
        have = [s for s in seeds if found[s] is not None]
        if not have:
            continue
        cells = [v.name, f"{len(have)} of {len(seeds)}"]
        for _, key in COLUMNS:
            per_seed = " / ".join(f"{found[s][key]:.2f}" if found[s] else "–" for s in seeds)
            cells.append(f"{_mean_std([found[s][key] for s in have])} ({per_seed})")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def verdict(deltas: list[float]) -> str:
    """Holds when every seed's difference is positive, does not hold when every one is negative or
    zero; otherwise the seeds disagree: inside the noise."""
    if len(deltas) < 2:
        return "one seed: not judged"
    if min(deltas) > 0:
        return "holds"
    if max(deltas) <= 0:
        return "does not hold"
    return "inside the noise"


def claims_table(runs: Path, seeds: tuple[int, ...], paper: dict[str, str]) -> str:
    """Each claim's per-seed difference (seeds holding both rows): mean, min and max, the paper's
    figure and the verdict."""
    rows = {v.name: v for v in VARIANTS}
    lines = ["| claim | difference (F1 points unless said) | mean Δ | min Δ | max Δ | seeds | paper | here |",
             "|---|---|---|---|---|---|---|---|"]
    for claim, better, worse, keys in CLAIMS:
        deltas = []
        for s in seeds:
            a, b = test_metrics(runs, rows[better], s), test_metrics(runs, rows[worse], s)
            if a and b:
                gains = [a[k] - b[k] for k in keys]
                deltas.append(gains[0] - (gains[1] if len(gains) > 1 else 0.0))
        if not deltas:
            continue
        what = f"{better} − {worse}" + (f": Δ{keys[0]} − Δ{keys[1]}" if len(keys) > 1 else "")
        lines.append(f"| {claim} | {what} | {statistics.mean(deltas):+.2f} | {min(deltas):+.2f} | {max(deltas):+.2f} | "
                     f"{len(deltas)} | {paper.get(claim, 'not at hand')} | {verdict(deltas)} |")
    return "\n".join(lines)


def runs_table(runs: Path) -> str:
    """Each run as protocol.json logged it: its command, when it first started, its wall time over
    every invocation (a killed run is finished by the next), the commit(s) and the machine(s)."""
    if not (runs / LOG).exists():
        return f"(no {LOG} in {runs})"
    lines = ["| run | command | started | invocations | wall min | commit | machine | last exit |",
             "|---|---|---|---|---|---|---|---|"]
    for name, entries in json.loads((runs / LOG).read_text()).items():
        commits, machines = (", ".join(dict.fromkeys(e[k] for e in entries)) for k in ("commit", "machine"))
        wall = sum(e["wall_s"] for e in entries) / 60
        command = re.sub(r"/\S*?/(?=(configs|runs)/)", "", entries[0]["command"])  # as run from the repository root
        lines.append(f"| {name} | `{command}` | {entries[0]['started']} | {len(entries)} | {wall:.1f} | "
                     f"{commits} | {machines} | {entries[-1]['exit']} |")
    return "\n".join(lines)


def machine() -> str:
    flags = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    model = next((line.split(":", 1)[1].strip() for line in flags.splitlines() if line.startswith("model name")),
                 platform.processor())
    return f"{os.cpu_count()} cores {model}, {'native' if 'avx512_bf16' in flags or 'amx_bf16' in flags else 'no native'} bf16"


def commit() -> str:
    head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True).stdout.strip()
    dirty = subprocess.run(["git", "status", "--porcelain", "--", "kddocre_ray", "configs"], cwd=REPO,
                           capture_output=True, text=True).stdout.strip()
    return head + ("+changes" if dirty else "")


def command(v: Variant, seed: int, out: Path, extra: list[str]) -> list[str]:
    return [sys.executable, "-m", "kddocre_ray.cli", v.job, "--config", str(REPO / "configs" / "redocred_mini" / v.config),
            f"train.seed={seed}", f"name={v.run_name(seed)}", f"output_dir={out}", *extra]


def run_all(out: Path, variants: list[Variant], seeds: tuple[int, ...], extra: list[str]) -> None:
    """Seed by seed, each variant's run unless finished; each invocation logged to protocol.json."""
    out.mkdir(parents=True, exist_ok=True)
    log_path = out / LOG
    log = json.loads(log_path.read_text()) if log_path.exists() else {}
    for seed in seeds:
        for v in [v for v in variants if v.stage is None]:
            name = v.run_name(seed)
            if (out / name / layout.METRICS).exists():
                print(f"[protocol] {name}: finished, skipped", flush=True)
                continue
            cmd = command(v, seed, out, extra)
            print(f"[protocol] {name}: {' '.join(cmd[1:])}", flush=True)
            t0 = time.time()
            done = subprocess.run(cmd, cwd=REPO)
            entry = {"command": " ".join(["kddocre", *cmd[3:]]), "commit": commit(), "machine": machine(),
                     "started": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(t0)),
                     "wall_s": round(time.time() - t0), "exit": done.returncode}
            log.setdefault(name, []).append(entry)
            log_path.write_text(json.dumps(log, indent=2))
            if done.returncode:
                raise SystemExit(f"[protocol] {name} failed (exit {done.returncode}); run the same command again "
                                 "to resume it")


def copy_runs(runs: Path, dest: Path, seeds: tuple[int, ...]) -> None:
    """What the tables read, for docs/runs/: each run folder's config, metrics and pipeline.json,
    and its finished stages' manifests and metrics under stages/ (a pipeline still running gives
    the teacher's row once its teacher stage has finished); the checkpoints stay behind."""
    wanted = (layout.CONFIG, layout.METRICS, layout.PIPELINE, layout.MANIFEST)
    for v in [v for v in VARIANTS if v.stage is None]:
        for seed in seeds:
            run = runs / v.run_name(seed)
            if not (run / layout.METRICS).exists() and not (run / layout.PIPELINE).exists():
                continue
            target = dest / run.name
            target.mkdir(parents=True, exist_ok=True)
            for name in wanted:
                if (run / name).exists():
                    shutil.copy2(run / name, target / name)
            if (run / layout.PIPELINE).exists():
                for folder in stage_folders(run).values():
                    if folder == run:
                        continue
                    (target / layout.STAGES / folder.name).mkdir(parents=True, exist_ok=True)
                    for name in (layout.METRICS, layout.MANIFEST, layout.CONFIG):
                        if (folder / name).exists():
                            shutil.copy2(folder / name, target / layout.STAGES / folder.name / name)
    if (runs / LOG).exists():
        shutil.copy2(runs / LOG, dest / LOG)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="runs/protocol", help="where the runs go (their stages under OUT/stages)")
    p.add_argument("--runs", help="the run folders the tables read (default: --out)")
    p.add_argument("--seeds", default=",".join(map(str, SEEDS)), help="comma-separated")
    p.add_argument("--only", help="variants to run, comma-separated (default: all): "
                                  + ", ".join(v.name for v in VARIANTS if v.stage is None))
    p.add_argument("--table-only", action="store_true", help="run nothing: print the tables from the run folders")
    p.add_argument("--copy-to", help="copy the files the tables read (no checkpoints) to this folder, then stop")
    p.add_argument("--set", nargs="*", default=[], help="more config overrides for every run (key=value)")
    args = p.parse_args(argv)
    seeds = tuple(int(s) for s in args.seeds.split(","))
    out = Path(args.out).resolve()  # the runs start from the repository root
    runs = Path(args.runs) if args.runs else out
    if args.copy_to:
        return copy_runs(runs, Path(args.copy_to), seeds)
    if not args.table_only:
        names = set(args.only.split(",")) if args.only else {v.name for v in VARIANTS}
        unknown = names - {v.name for v in VARIANTS}
        if unknown:
            p.error(f"--only: no variant {', '.join(sorted(unknown))}")
        run_all(out, [v for v in VARIANTS if v.name in names], seeds, args.set)
    print(main_table(runs, seeds))
    print()
    print(claims_table(runs, seeds, PAPER))
    print()
    print(runs_table(runs))


if __name__ == "__main__":
    main()
