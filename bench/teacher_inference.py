r"""Teacher inference through Ray Data against a plain in-process loop (documents/s), the peak
memory of the driver and of each teacher actor (peak RSS, and private USS / PSS, which leave out
the object store's shared pages), and soft-label bytes per document.

    python bench/teacher_inference.py --encoder minilm --docs 1000 --repeats 3        # speed ratio
    python bench/teacher_inference.py --encoder tiny-random --docs 1000,10000 --no-plain \
        --set model.emb_size=128 model.block_size=16                                  # memory scaling

Documents: DocRED's test.json (../shared/data, 1,000 documents) repeated under new titles up to
--docs, ingested once (kddocre's ingest stage, in its own process). The teacher is the benchmark
teacher's architecture (AFL + axial 2 x 4, configs/redocred_mini/teacher.yaml) on the chosen
encoder with an untrained head: speed and memory do not depend on the weights' values.
Precision: the config's `auto` (printed). Rows, each in its own spawned process:
  plain    one process, `cpu_count` threads: the ingested rows, Predictor.logits batch by batch
           (the rows' conversion to features included, model loading excluded)
  ray      the soft-label stage's own `write_soft_labels`: read_parquet -> map_batches on a pool
           of teacher actors -> write_parquet.
           end to end: documents / wall time of the whole call (actor start, teacher load, writes)
           steady: documents/s inside the actors once each has finished its first batch
Ratios are ray / plain from the same repeat; the figures printed are medians over repeats.
"""
from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
SHARED = REPO.parent / "shared" / "data" / "docred" / "test.json"

from kddocre_ray.pipeline.soft_labels import TeacherLogits  # noqa: E402


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def node_shmem_mb() -> float:
    """The machine's resident shared memory (/proc/meminfo's Shmem): Ray's object store lives in a
    shared-memory file, and the pages it has touched stay resident until the store goes, so this is
    what the store costs the node, whichever process touched them."""
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("Shmem:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def private_mb() -> dict[str, float]:
    """This process's unique (USS) and proportional (PSS) memory now: unlike RSS, neither counts the
    shared pages of Ray's object store or of shared libraries in full, so growth with the corpus
    shows here and not in what the process merely maps."""
    import psutil

    m = psutil.Process().memory_full_info()
    return {"uss_mb": m.uss / 2**20, "pss_mb": m.pss / 2**20}


def memory_breakdown() -> dict[str, float]:
    """Where an actor's memory is: private anonymous pages (heaps: glibc, mimalloc, torch), its
    share (PSS) of the object store's shared-memory file, and the bytes Arrow holds alive now (in
    an actor: the batches Ray Data has not yet sent on as a block)."""
    import psutil
    import pyarrow as pa

    anon = store = 0
    for m in psutil.Process().memory_maps(grouped=True):
        if "plasma" in m.path or m.path.startswith("/dev/shm"):
            store += m.pss
        elif not m.path.startswith("/"):  # [heap], [anon], [stack]: not a file
            anon += m.private_clean + m.private_dirty
    return {"anon_mb": anon / 2**20, "store_pss_mb": store / 2**20, "arrow_mb": pa.total_allocated_bytes() / 2**20}


class MemorySampler:
    """The highest USS / PSS of this process, sampled every `every` seconds while in the block."""

    def __init__(self, every: float = 2.0):
        import threading

        self.every, self.peak = every, {"uss_mb": 0.0, "pss_mb": 0.0, "node_shmem_mb": 0.0}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(self.every):
            self._sample()

    def _sample(self) -> None:
        now = {**private_mb(), "node_shmem_mb": node_shmem_mb()}
        self.peak = {k: max(v, self.peak[k]) for k, v in now.items()}

    def __enter__(self) -> MemorySampler:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self._sample()


class TimedTeacherLogits(TeacherLogits):
    """The product's actor, recording each batch's wall-clock span and its own peak memory."""

    def __init__(self, checkpoint: str, threads: int, timing_dir: str):
        super().__init__(checkpoint, threads)
        self.log = Path(timing_dir) / f"actor-{os.getpid()}.jsonl"
        self.trim_s, trim = 0.0, self.trim

        def timed_trim() -> None:
            t = time.perf_counter()
            trim()
            self.trim_s += time.perf_counter() - t
        self.trim = timed_trim

    def __call__(self, table):
        t0, c0, trim0 = time.time(), os.times(), self.trim_s
        out = super().__call__(table)
        t1, c1 = time.time(), os.times()
        memory = {**private_mb(), **memory_breakdown()}
        with open(self.log, "a") as f:
            f.write(json.dumps({"start": t0, "end": t1, "rows": table.num_rows, "peak_mb": peak_rss_mb(),
                                "user_s": c1.user - c0.user, "sys_s": c1.system - c0.system, "nice": os.nice(0),
                                "trim_s": self.trim_s - trim0, "probe_s": time.time() - t1, **memory}) + "\n")
        return out


def make_inputs(encoder: str, docs: int, work: Path, overrides: list[str]) -> tuple[Path, Path]:
    """The corpus (docs copies of real documents under new titles) and an untrained teacher."""
    from kddocre_ray.checkpoint import save_model
    from kddocre_ray.config import load_config
    from kddocre_ray.data.docred import load_schema
    from kddocre_ray.model.docre import build_model
    from kddocre_ray.model.encoder import load_tokenizer
    from kddocre_ray.storage import read_json, write_json

    real = read_json(SHARED)
    corpus = [{**real[i % len(real)], "title": f"{real[i % len(real)]['title']} #{i // len(real)}"} for i in range(docs)]
    write_json(corpus, work / "corpus.json")
    conf = load_config(REPO / "configs" / "redocred_mini" / "teacher.yaml", [f"model.encoder={encoder}", *overrides])
    schema, tokenizer = load_schema(conf.data.rel_info), load_tokenizer(encoder)
    save_model(work / "teacher", build_model(conf.model, schema, tokenizer, seed=0), conf, schema, tokenizer)
    return work / "corpus.json", work / "teacher"


def _ingest(corpus: str, out: str, encoder: str, rows_per_shard: int) -> dict:
    import ray

    from kddocre_ray.data.docred import load_schema
    from kddocre_ray.pipeline.ingest import ingest_corpus

    ray.init(address="local", num_cpus=os.cpu_count(), log_to_driver=False)
    try:
        return ingest_corpus(corpus, load_schema(REPO / "kddocre_ray" / "sample" / "rel_info.json"), encoder,
                             Path(out), rows_per_shard=rows_per_shard, log=lambda *a: None)
    finally:
        ray.shutdown()


def _plain(rows: str, teacher: str, batch_size: int, docs: int | None = None) -> dict:
    import pyarrow.compute as pc
    import pyarrow.parquet as pq
    import torch

    from kddocre_ray.data.rows import features_of
    from kddocre_ray.inference import Predictor

    torch.set_num_threads(os.cpu_count() or 1)
    predictor = Predictor.load(teacher, torch.device("cpu"))
    table = pq.read_table(rows)
    if docs is not None:  # the first `docs` documents of the corpus file, whatever the rows' order
        table = table.filter(pc.less(table.column("doc_index"), docs))
    start = time.perf_counter()
    for k in range(0, table.num_rows, batch_size):
        predictor.logits(features_of(table.slice(k, batch_size)))
    seconds = time.perf_counter() - start
    return {"docs_per_s": table.num_rows / seconds, "seconds": seconds, "precision": predictor.precision,
            "peak_mb": peak_rss_mb()}


def _ray(rows: str, teacher: str, out: str, pool: int, batch_size: int, block_mb: float | None,
         nice: int | None = None, store_mb: int | None = None) -> dict:
    import ray
    import ray.cloudpickle

    from kddocre_ray.pipeline.soft_labels import PoolOptions, write_soft_labels

    ray.cloudpickle.register_pickle_by_value(sys.modules[TimedTeacherLogits.__module__])
    timing = Path(out).with_name(Path(out).name + "-timing")
    timing.mkdir()
    shmem_before = node_shmem_mb()
    ray.init(address="local", num_cpus=os.cpu_count(), log_to_driver=False,
             **({} if store_mb is None else {"object_store_memory": store_mb * 2**20}))
    try:
        start = time.time()
        with MemorySampler() as driver:
            stats = write_soft_labels(Path(rows), Path(teacher), Path(out), pool, False,
                                      max(1, (os.cpu_count() or 1) // pool), batch_size, log=lambda *a: None,
                                      options=PoolOptions(
                                          actor=TimedTeacherLogits, actor_kwargs={"timing_dir": str(timing)},
                                          **({} if block_mb is None else {"block_bytes": int(block_mb * 2**20)}),
                                          # the actors at another priority than the stage's (Ray's own default is 15)
                                          **({} if nice is None else {"actor_env": {"RAY_worker_niceness": str(nice)}})))
        wall = time.time() - start
    finally:
        ray.shutdown()
    actors = [[json.loads(line) for line in f.read_text().splitlines()] for f in sorted(timing.glob("*.jsonl"))]
    first_end = min(b[0]["end"] for b in actors)
    last_end = max(b[-1]["end"] for b in actors)
    after_first = sum(x["rows"] for b in actors for x in b[1:])
    return {"docs_per_s_end_to_end": stats["documents"] / wall, "seconds": wall,
            "docs_per_s_steady": after_first / (last_end - first_end) if last_end > first_end else float("nan"),
            "driver_peak_mb": peak_rss_mb(), "actor_peak_mb": [b[-1]["peak_mb"] for b in actors],
            "driver_peak_uss_mb": driver.peak["uss_mb"], "driver_peak_pss_mb": driver.peak["pss_mb"],
            # the node's resident shared memory (the object store's pages) at its peak, less before Ray started
            "node_shmem_growth_mb": driver.peak["node_shmem_mb"] - shmem_before,
            # per actor, its share of the object store after every tenth of its batches
            "actor_store_pss_curve": [[round(b[min(len(b) - 1, len(b) * k // 10)]["store_pss_mb"]) for k in range(1, 11)]
                                      for b in actors],
            # an actor's private memory after its first batch and at its last: equal if it does not grow
            "actor_uss_mb_first_last": [(b[0]["uss_mb"], b[-1]["uss_mb"]) for b in actors],
            "actor_peak_pss_mb": [max(x["pss_mb"] for x in b) for b in actors],
            "actor_peak_uss_mb": [max(x["uss_mb"] for x in b) for b in actors],
            # per actor, the highest of each figure over its first and over its last 1,000 documents
            "actor_windows": [{k: (max(x[k] for x in _window(b, 1000)), max(x[k] for x in _window(b[::-1], 1000)))
                               for k in ("uss_mb", "anon_mb", "store_pss_mb", "arrow_mb")} for b in actors],
            "actor_nice": sorted({x["nice"] for b in actors for x in b}),
            "actor_cores": [sum(x["user_s"] + x["sys_s"] for x in b) / sum(x["end"] - x["start"] for x in b) for b in actors],
            # per actor, mean seconds per batch in malloc_trim (inside the batch's span) and in the bench's
            # memory probes (after it, still inside the steady window), and the mean batch span
            "actor_batch_s": [statistics.mean(x["end"] - x["start"] for x in b) for b in actors],
            "actor_trim_s": [statistics.mean(x["trim_s"] for x in b) for b in actors],
            "actor_probe_s": [statistics.mean(x["probe_s"] for x in b) for b in actors],
            "bytes_per_document": stats["bytes_per_document"], "bytes": stats["bytes"], "pairs": stats["pairs"],
            "documents": stats["documents"]}


def _window(batches: list[dict], docs: int) -> list[dict]:
    """The leading batches that together hold `docs` documents (at least one batch)."""
    out, n = [], 0
    for b in batches:
        if out and n >= docs:
            break
        out.append(b)
        n += b["rows"]
    return out


def in_child(fn, *args):
    """Run `fn` in a fresh spawned process: its peak memory is its own, and the driver stays idle."""
    with multiprocessing.get_context("spawn").Pool(1) as p:
        return p.apply(fn, args)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--encoder", default="minilm", help="minilm (real weights) or tiny-random")
    p.add_argument("--docs", default="1000", help="corpus sizes, comma-separated (e.g. 1000,10000)")
    p.add_argument("--repeats", type=int, default=1)
    p.add_argument("--pool", type=int, default=1, help="teacher actors (each runs cpu_count // pool torch threads)")
    p.add_argument("--rows-per-shard", type=int, default=500,
                   help="documents per ingested Parquet shard (pipeline.rows_per_shard); the stage cuts the rows "
                        "into one-batch blocks whatever the shard size")
    p.add_argument("--batch-size", type=int, default=64, help="documents per Ray Data batch (and per plain step)")
    p.add_argument("--block-mb", type=float, help="Ray Data's target block size in the soft-label stage (MiB; "
                   "default: the stage's own, soft_labels.BLOCK_BYTES; 128 is Ray's default)")
    p.add_argument("--no-plain", action="store_true", help="Ray Data rows only (memory scaling)")
    p.add_argument("--plain-docs", type=int, metavar="N",
                   help="the plain loop runs on the corpus's first N documents only (doc_index < N). Its rate has "
                        "no start-up in it (the model loads outside the timed loop), and the corpus is test.json "
                        "repeated, so --plain-docs 1000 times every distinct document once: the same rate as "
                        "over 10,000 copies, in a tenth of the time")
    p.add_argument("--object-store-mb", type=int, metavar="MB",
                   help="the local Ray cluster's object store size (default: Ray's, 30%% of free memory)")
    p.add_argument("--compare-nice", type=int, metavar="N",
                   help="per repeat, also run the Ray row with the teacher actors and the stage's write tasks at "
                        "niceness N (15 = Ray's default for workers; the stage runs them at 0: soft_labels.ACTOR_ENV)")
    p.add_argument("--compare-pool", type=int, metavar="N",
                   help="per repeat, also run the Ray row with a pool of N teacher actors (cpu_count // N threads each)")
    p.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                   help="teacher config overrides, e.g. model.emb_size=128 model.block_size=16 (a light head "
                        "for the memory-scaling runs)")
    p.add_argument("--json", help="also write the figures here")
    args = p.parse_args()
    from kddocre_ray.data.docred import load_schema

    classes = load_schema(REPO / "kddocre_ray" / "sample" / "rel_info.json").num_classes
    results = {}
    for n in [int(x) for x in args.docs.split(",")]:
        with tempfile.TemporaryDirectory() as tmp:
            work = Path(tmp)
            corpus, teacher = make_inputs(args.encoder, n, work, args.set)
            other_label = ", ".join(f"{k} {v}" for k, v in (("pool", args.compare_pool), ("nice", args.compare_nice))
                                    if v is not None)
            ingest = in_child(_ingest, str(corpus), str(work / "rows"), args.encoder, args.rows_per_shard)
            runs = []
            for r in range(args.repeats):
                ray_row = in_child(_ray, str(work / "rows"), str(teacher), str(work / f"soft{r}"), args.pool, args.batch_size,
                                   args.block_mb, None, args.object_store_mb)
                other = None if args.compare_nice is None and args.compare_pool is None else in_child(
                    _ray, str(work / "rows"), str(teacher), str(work / f"soft{r}-other"), args.compare_pool or args.pool,
                    args.batch_size, args.block_mb, args.compare_nice, args.object_store_mb)
                plain = None if args.no_plain else in_child(_plain, str(work / "rows"), str(teacher), args.batch_size,
                                                               args.plain_docs)
                runs.append({"ray": ray_row, "plain": plain, "ray_other": other})
                line = (f"docs {n} repeat {r + 1}: ray end-to-end {ray_row['docs_per_s_end_to_end']:.2f} docs/s, "
                        f"steady {ray_row['docs_per_s_steady']:.2f}; driver {ray_row['driver_peak_mb']:.0f} MB, "
                        f"actors {[round(x) for x in ray_row['actor_peak_mb']]} MB (RSS); private (USS) driver "
                        f"{ray_row['driver_peak_uss_mb']:.0f} MB, actors first/last batch "
                        f"{[(round(a), round(b)) for a, b in ray_row['actor_uss_mb_first_last']]} MB; peaks over "
                        f"the first / last 1,000 documents: "
                        + "; ".join(", ".join(f"{k[:-3]} {a:.0f} / {b:.0f}" for k, (a, b) in w.items())
                                    for w in ray_row["actor_windows"]) + " MB")
                line += (f"; node shared memory +{ray_row['node_shmem_growth_mb']:.0f} MB; actor store PSS by tenths "
                         f"{ray_row['actor_store_pss_curve']} MB")
                line += f"; actor nice {ray_row['actor_nice']}, cores {[round(c, 2) for c in ray_row['actor_cores']]}"
                line += (f"; per batch: span {[round(x, 3) for x in ray_row['actor_batch_s']]} s, of which trim "
                         f"{[round(x, 3) for x in ray_row['actor_trim_s']]} s; probes after "
                         f"{[round(x, 3) for x in ray_row['actor_probe_s']]} s")
                if other:
                    line += (f"; at {other_label}: steady {other['docs_per_s_steady']:.2f}, end-to-end "
                             f"{other['docs_per_s_end_to_end']:.2f}, cores {[round(c, 2) for c in other['actor_cores']]}")
                if plain:
                    line += (f"; plain {plain['docs_per_s']:.2f} docs/s ({plain['precision']}); ratios steady "
                             f"{ray_row['docs_per_s_steady'] / plain['docs_per_s']:.2f}, end-to-end "
                             f"{ray_row['docs_per_s_end_to_end'] / plain['docs_per_s']:.2f}")
                print(line, flush=True)
        med = lambda xs: statistics.median(xs)  # noqa: E731
        row = runs[0]["ray"]
        per_value = row["bytes"] / (row["pairs"] * classes)
        summary = {
            "documents": n, "rows": ingest["rows"], "encoder": args.encoder, "overrides": args.set,
            "block_mb": args.block_mb, "object_store_mb": args.object_store_mb, "plain_docs": args.plain_docs,
            "repeats": args.repeats,
            "ray_end_to_end_docs_per_s": med([x["ray"]["docs_per_s_end_to_end"] for x in runs]),
            "ray_steady_docs_per_s": med([x["ray"]["docs_per_s_steady"] for x in runs]),
            "driver_peak_mb": med([x["ray"]["driver_peak_mb"] for x in runs]),
            "actor_peak_mb": med([max(x["ray"]["actor_peak_mb"]) for x in runs]),
            "driver_peak_uss_mb": med([x["ray"]["driver_peak_uss_mb"] for x in runs]),
            "driver_peak_pss_mb": med([x["ray"]["driver_peak_pss_mb"] for x in runs]),
            "actor_peak_pss_mb": med([max(x["ray"]["actor_peak_pss_mb"]) for x in runs]),
            "actor_peak_uss_mb": med([max(x["ray"]["actor_peak_uss_mb"]) for x in runs]),
            "actor_uss_growth_mb": med([max(b - a for a, b in x["ray"]["actor_uss_mb_first_last"]) for x in runs]),
            "actor_windows_first_last_1000": runs[0]["ray"]["actor_windows"],
            "node_shmem_growth_mb": med([x["ray"]["node_shmem_growth_mb"] for x in runs]),
            "actor_store_pss_curve": runs[0]["ray"]["actor_store_pss_curve"],
            "bytes_per_document": row["bytes_per_document"], "mean_pairs": row["pairs"] / row["documents"],
            "bytes_per_docred_sized_document": per_value * 20 * 19 * 97,
        }
        if args.compare_nice is not None or args.compare_pool is not None:
            summary.update({other_label.replace(" ", "_").replace(",_", "_"): {
                "ray_steady_docs_per_s": med([x["ray_other"]["docs_per_s_steady"] for x in runs]),
                "ray_end_to_end_docs_per_s": med([x["ray_other"]["docs_per_s_end_to_end"] for x in runs]),
                "actor_cores": med([max(x["ray_other"]["actor_cores"]) for x in runs]),
                **({} if args.no_plain else {
                    "ratio_steady": med([x["ray_other"]["docs_per_s_steady"] / x["plain"]["docs_per_s"] for x in runs]),
                    "ratio_end_to_end": med([x["ray_other"]["docs_per_s_end_to_end"] / x["plain"]["docs_per_s"]
                                             for x in runs])})}})
        summary["actor_cores"] = med([max(x["ray"]["actor_cores"]) for x in runs])
        if not args.no_plain:
            summary.update(
                plain_docs_per_s=med([x["plain"]["docs_per_s"] for x in runs]), precision=runs[0]["plain"]["precision"],
                ratio_steady=med([x["ray"]["docs_per_s_steady"] / x["plain"]["docs_per_s"] for x in runs]),
                ratio_end_to_end=med([x["ray"]["docs_per_s_end_to_end"] / x["plain"]["docs_per_s"] for x in runs]))
        results[n] = summary
        print(json.dumps(summary, indent=2), flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
