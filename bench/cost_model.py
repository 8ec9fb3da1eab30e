r"""What soft labels and a student epoch cost at the paper's scale (DocRED's 101,873 distant
documents), from the figures measured in bench/results and DocRED's entity counts. Arithmetic,
printed with its inputs, for the README's cost model:

    python bench/cost_model.py [--docs 101873]

- Storage: a document of n entities has n(n-1) ordered pairs of 97 float16 logits; the bytes per
  pair on disk (Parquet, snappy) are the measured ones of bench/scale.py (scale_2cpu.json).
- Time per document:
  * measured on this 2-core CPU: the tiny model (scale_2cpu.json), MiniLM (teacher_inference);
  * measured on one H200: MiniLM inference (gpu_check_h200.json); the paper's model
    (RoBERTa-large + ATLOP's head + 2 axial layers) one training step on DocRED's largest document
    (gpu_paper_h200.json; fp16, where most steps overflowed and skipped the optimizer, so a little
    under a full step), from which its inference is taken as a third of a step (forward only);
    the mean document scales by its tokens (the encoder's chunks dominate; the head's pairs, 389
    against 1,722, would make the mean document cheaper still);
  * on a V100 (not measured here): between the H200's time (overhead-bound, as batch-1 steps are:
    the H200 step reached about 1% of its peak) and that time x 7.9 (compute-bound: 989 / 125 dense
    fp16 TFLOPS). bench/memory_plan.py says one document per V100 fits for training (ZeRO 2).
- On G GPUs the documents split evenly (the soft-label pool has one actor per GPU; Ray Train one
  worker per GPU), plus the measured start-up of a stage (actors or workers placed and loaded).
"""
from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results"
DATA = REPO.parent / "shared" / "data"
CLASSES, FP16 = 97, 2
V100_SLOWDOWN = 989 / 125  # H200 over V100, dense fp16 tensor TFLOPS (vendor figures)


def entity_counts() -> list[int]:
    """Entities per document in DocRED's own files here: the 200 training documents and test.json."""
    docs = [d for f in (DATA / "docred" / "partial" / "docred_200.json", DATA / "docred" / "test.json")
            for d in json.loads(f.read_text())]
    return [len(d["vertexSet"]) for d in docs]


def mean_tokens() -> float:
    """Words per DocRED document x 1.3 subwords per word, plus two `*` markers per mention."""
    docs = json.loads((DATA / "docred" / "test.json").read_text())
    return statistics.mean(1.3 * sum(map(len, d["sents"])) + 2 * sum(map(len, d["vertexSet"])) for d in docs)


def load(name: str) -> dict:
    return json.loads((RESULTS / name).read_text())


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--docs", type=int, default=101_873, help="documents (DocRED's distant corpus: 101,873)")
    args = p.parse_args()
    n = entity_counts()
    pairs = [k * (k - 1) for k in n]
    mean_pairs, max_pairs = statistics.mean(pairs), max(pairs)
    scale = load("scale_2cpu.json")
    big = next(r for r in reversed(scale["results"]) if "unfinished" not in r)  # the largest size run whole
    soft = big["stages"]["soft_labels"]
    corpus = [d for f in ("dev", "test") for d in json.loads((DATA / "re-docred" / f"{f}_revised.json").read_text())]
    corpus_pairs = statistics.mean(len(d["vertexSet"]) * (len(d["vertexSet"]) - 1) for d in corpus)  # scale.py's corpus
    per_pair = soft["bytes_per_doc"] / corpus_pairs
    print(f"DocRED entities per document ({len(n)} documents): mean {statistics.mean(n):.1f}, max {max(n)}; "
          f"ordered pairs n(n-1): mean {mean_pairs:.0f}, max {max_pairs}")
    print(f"soft labels on disk: {soft['bytes_per_doc']:,} bytes per document at {corpus_pairs:.0f} pairs "
          f"(bench/scale.py, {big['documents']:,} documents) = {per_pair:.1f} bytes per pair "
          f"(raw: {CLASSES} x {FP16} = {CLASSES * FP16})")
    print(f"  mean DocRED document: {mean_pairs:.0f} x {per_pair:.1f} = {mean_pairs * per_pair / 1e3:.1f} KB; "
          f"largest: {max_pairs} x {per_pair:.1f} = {max_pairs * per_pair / 1e3:.1f} KB")
    print(f"  {args.docs:,} documents: {args.docs:,} x {mean_pairs * per_pair / 1e3:.1f} KB = "
          f"{args.docs * mean_pairs * per_pair / 1e9:.2f} GB\n")

    tokens = mean_tokens()
    paper = {r["config"]: r for r in load("gpu_paper_h200.json")["paper_size"]}["v100_fp16.json"]
    step_s = paper["ms_per_step_median"] / 1e3
    infer_max = step_s / 3
    infer_mean = infer_max * tokens / paper["tokens"]
    train_mean = step_s * tokens / paper["tokens"]
    minilm_cpu = load("teacher_inference_minilm_10k_pool2.json")
    minilm_cpu = next(iter(minilm_cpu.values())) if "ray_end_to_end_docs_per_s" not in minilm_cpu else minilm_cpu
    rows = [  # (what, where, soft-label seconds per document, student seconds per document, source)
        ("tiny model", "2-core CPU", 1 / soft["docs_per_s"], 1 / big["stages"]["student"]["docs_per_s"],
         "scale_2cpu.json (measured)"),
        ("MiniLM-L6 teacher", "2-core CPU", 1 / minilm_cpu["ray_end_to_end_docs_per_s"], None,
         "teacher_inference_minilm_10k_pool2.json (measured)"),
        ("MiniLM-L6 teacher", "1 H200", 1 / load("gpu_check_h200.json")["inference"]["bf16"]["docs_per_s"], None,
         "gpu_check_h200.json (measured, in process)"),
        ("paper's model", "1 H200", infer_mean, train_mean,
         f"gpu_paper_h200.json: step {step_s * 1e3:.0f} ms at {paper['tokens']} tokens; x {tokens:.0f}/{paper['tokens']} "
         "tokens; inference = step / 3"),
        ("paper's model", "1 V100, overhead-bound", infer_mean, train_mean, "= the H200's (projection)"),
        ("paper's model", "1 V100, compute-bound", infer_mean * V100_SLOWDOWN, train_mean * V100_SLOWDOWN,
         f"the H200's x {V100_SLOWDOWN:.1f} (projection)"),
    ]
    print(f"mean DocRED document: {tokens:.0f} subword tokens (words x 1.3 + markers)\n")
    print("| model | hardware | soft labels ms/doc | 1 GPU | 8 GPUs | student epoch ms/doc | 1 GPU | 8 GPUs | from |")
    print("|---|---|---|---|---|---|---|---|---|")
    def hours(s: float | None, gpus: int, where: str) -> str:
        return "" if s is None or "CPU" in where and gpus > 1 else f"{args.docs * s / gpus / 3600:.2f} h"

    def ms(s: float | None) -> str:
        return "" if s is None else f"{s * 1e3:.1f}"

    for what, where, soft_s, train_s, src in rows:
        print(f"| {what} | {where} | {ms(soft_s)} | {hours(soft_s, 1, where)} | {hours(soft_s, 8, where)} | "
              f"{ms(train_s)} | {hours(train_s, 1, where)} | {hours(train_s, 8, where)} | {src} |")
    print("\nOn the CPU rows the '1 GPU' column is the 2-core machine itself. 8 GPUs: the documents split "
          "evenly over 8 actors or workers; add each stage's start-up (20-60 s here) once.")


if __name__ == "__main__":
    main()
