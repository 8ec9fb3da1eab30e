"""The GPU code paths, checked on one CUDA device without Ray: the code the soft-label actors and
the Ray Train workers run, called directly (a machine with a GPU but without Ray can run it).

1. What `precision: auto` picks on this GPU.
2. Teacher inference (`Predictor`, which each soft-label actor wraps) with the given encoder
   over the given documents in fp32, bf16 and fp16: docs/s (median of --repeats passes), and how
   far the low-precision logits and decisions are from fp32's.
3. DeepSpeed training on this one GPU through `DeepSpeedStrategy` (what each Ray Train worker
   builds): configs/deepspeed/zero2.json under `auto` and configs/deepspeed/v100_fp16.json in fp16
   with dynamic loss scaling; --steps steps of 4 documents each, the same documents every step
   (a memorisation check: the loss must fall), loss scale and skipped steps, ms per step.
4. The paper's model shape (configs/docred_roberta_large.yaml: RoBERTa-large, random weights,
   so nothing is downloaded) on DocRED's largest document (42 entities, 1,024 tokens): peak GPU
   memory of DeepSpeed fp16 and bf16 steps, beside bench/memory_plan.py's arithmetic for one GPU.
5. The soft-label stage itself (`write_soft_labels`: Ray Data, one teacher actor holding the GPU)
   on a local Ray cluster over ingested rows, against the same teacher run in this process on the
   same GPU: the device and precision each actor ran in, and how far the written soft labels are
   from the in-process logits.

    python bench/gpu_check.py --encoder PATH_TO_MINILM --docs dev_revised.json   # 1-4
    python bench/gpu_check.py --rows ROWS_DIR --teacher CHECKPOINT --no-paper     # 1 and 5
Sections 2-3 run when --encoder and --docs are given, 5 when --rows and --teacher are (rows as
the ingest stage writes them, e.g. by bench/teacher_inference.py's make_inputs and _ingest).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "bench")]

from kddocre_ray.config import load_config  # noqa: E402
from kddocre_ray.data.docred import load_schema, read_docs  # noqa: E402
from kddocre_ray.data.features import Feature, doc_features, label_matrix  # noqa: E402
from kddocre_ray.inference import Predictor  # noqa: E402
from kddocre_ray.model.docre import build_model  # noqa: E402
from kddocre_ray.model.encoder import load_tokenizer  # noqa: E402
from kddocre_ray.precision import resolve_precision  # noqa: E402
from kddocre_ray.train.objective import Objective  # noqa: E402
from kddocre_ray.train.strategy import DeepSpeedStrategy  # noqa: E402

DS = REPO / "configs" / "deepspeed"
GB = 1e9


def sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def peak_gb(kind: str) -> float:
    if not torch.cuda.is_available():
        return float("nan")
    return (torch.cuda.max_memory_allocated() if kind == "allocated" else torch.cuda.max_memory_reserved()) / GB


def reset_peak() -> None:
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def decisions(logits: torch.Tensor) -> torch.Tensor:
    """Which (pair, class) a model predicts: the class logit above the TH logit (column 0)."""
    return logits[:, 1:] > logits[:, :1]


def inference(conf, schema, tokenizer, docs: list[dict], device, repeats: int) -> dict:
    model = build_model(conf.model, schema, tokenizer).float().to(device)
    out, reference = {}, None
    feats = [doc_features(d, tokenizer, schema) for d in docs]
    for precision in ("fp32", "bf16", "fp16"):
        p = Predictor(model, conf, schema, tokenizer, precision, device)
        p.logits(feats)  # warm-up pass: every shape meets its kernels once (16 docs left the first timed pass 4x slow)
        rates = []
        for _ in range(repeats):
            sync()
            t0 = time.perf_counter()
            logits = p.logits(feats)
            sync()
            rates.append(len(feats) / (time.perf_counter() - t0))
        row = {"docs_per_s": statistics.median(rates), "passes": rates}
        flat = torch.cat(logits)
        if reference is None:
            reference = flat
        else:
            row["max_abs_diff_vs_fp32"] = (flat - reference).abs().max().item()
            row["decisions_equal_to_fp32"] = (decisions(flat) == decisions(reference)).float().mean().item()
        row["finite"] = bool(torch.isfinite(flat).all())
        out[precision] = row
        print(f"inference {precision}: {row['docs_per_s']:.1f} docs/s over {len(feats)} docs "
              f"(passes {', '.join(f'{r:.1f}' for r in rates)})"
              + (f"; max |logit - fp32| {row['max_abs_diff_vs_fp32']:.3g}, decisions equal to fp32's "
                 f"{100 * row['decisions_equal_to_fp32']:.3f}%" if "max_abs_diff_vs_fp32" in row else ""), flush=True)
    return out


def ds_steps(model, conf, batches: list[list[Feature]], num_classes: int, config: Path, precision: str,
             device, steps: int) -> dict:
    """`steps` DeepSpeed steps cycling through `batches`, as the training loop takes them."""
    strategy = DeepSpeedStrategy(model.to(device), conf.train, precision, device, steps, str(config), world=1)
    objective = Objective(conf.loss)
    losses, times = [], []
    for step in range(steps):
        feats = batches[step % len(batches)]
        labels = torch.cat([label_matrix(f, num_classes) for f in feats]).to(device)
        sync()
        t0 = time.perf_counter()
        strategy.model.train()
        with strategy.autocast():
            logits = strategy.model(feats)
        loss = objective(logits, labels)["loss"]
        strategy.backward(loss)
        strategy.step(True)
        sync()
        times.append(time.perf_counter() - t0)
        losses.append(loss.item())
    engine = strategy.model
    scale = getattr(engine.optimizer, "loss_scale", None)
    row = {"config": config.name, "precision": precision, "zero_stage": strategy.stage,
           "params_dtype": str(next(strategy.module.parameters()).dtype), "losses": losses,
           "ms_per_step_median": 1000 * statistics.median(times[2:] or times),
           "loss_scale": float(scale) if scale is not None else None,
           "skipped_steps": int(getattr(engine, "skipped_steps", 0)),
           "peak_allocated_gb": peak_gb("allocated"), "peak_reserved_gb": peak_gb("reserved")}
    return row


def train(conf, schema, tokenizer, docs: list[dict], device, steps: int) -> list[dict]:
    feats = [f for f in (doc_features(d, tokenizer, schema) for d in docs) if f.labels]
    batches = [feats[i:i + 4] for i in range(0, 16, 4)]
    rows = []
    for config, precision in ((DS / "zero2.json", resolve_precision("auto", device)), (DS / "v100_fp16.json", "fp16")):
        torch.manual_seed(0)
        model = build_model(conf.model, schema, tokenizer).float()
        reset_peak()
        row = ds_steps(model, conf, batches, schema.num_classes, config, precision, device, steps)
        first, last = statistics.mean(row["losses"][:4]), statistics.mean(row["losses"][-4:])
        row["loss_first4_mean"], row["loss_last4_mean"] = first, last
        print(f"deepspeed {config.name} ({precision}, ZeRO-{row['zero_stage']}, weights {row['params_dtype']}): "
              f"loss {first:.4f} -> {last:.4f} over {steps} steps, {row['ms_per_step_median']:.0f} ms/step, "
              f"loss scale {row['loss_scale']}, skipped {row['skipped_steps']}, "
              f"peak {row['peak_allocated_gb']:.2f} GB", flush=True)
        rows.append(row)
        del model
    return rows


def paper_size(schema, device, entities: int, tokens: int, steps: int) -> list[dict]:
    import memory_plan
    from transformers import RobertaModel

    conf = load_config(REPO / "configs" / "docred_roberta_large.yaml")
    rc = memory_plan.roberta_large_config()
    rc._attn_implementation = "eager"  # the context pooling reads the attention probabilities
    g = torch.Generator().manual_seed(0)
    ids = [0, *torch.randint(3, 50000, (tokens - 2,), generator=g).tolist(), 2]
    spacing = (tokens - 2) // entities
    doc = Feature("largest", ids, [[1 + e * spacing] for e in range(entities)],
                  [(h, (h + 1) % entities, 1 + h % 96) for h in range(entities)])
    n = sum(memory_plan.parameters(conf).values())
    enc, _ = memory_plan.encoder_activations_gb(tokens)
    head = memory_plan.head_activations_gb(entities, tokens, conf)
    plan = memory_plan.states_gb(n, 2, 1) + enc + head + memory_plan.OVERHEAD_GB
    rows = []
    for config, precision in ((DS / "v100_fp16.json", "fp16"), (DS / "zero2.json", "bf16")):
        torch.manual_seed(0)
        model = build_model(conf.model, schema, SimpleNamespace(pad_token_id=1),
                            encoder=RobertaModel(rc, add_pooling_layer=False)).float()
        reset_peak()
        row = ds_steps(model, conf, [[doc]], schema.num_classes, config, precision, device, steps)
        row.update(entities=entities, tokens=tokens, parameters=n, plan_gb_one_gpu=plan)
        print(f"paper-size model ({n / 1e6:.1f} M parameters), {entities} entities, {tokens} tokens, "
              f"{config.name} ({precision}): peak allocated {row['peak_allocated_gb']:.2f} GB, reserved "
              f"{row['peak_reserved_gb']:.2f} GB (memory_plan.py's arithmetic for 1 GPU: {plan:.1f} GB incl. "
              f"{memory_plan.OVERHEAD_GB} overhead); {steps - row['skipped_steps']} of {steps} steps updated the weights; "
              f"{row['ms_per_step_median']:.0f} ms/step; "
              f"losses {', '.join(f'{x:.3f}' for x in row['losses'])}", flush=True)
        rows.append(row)
        del model
    return rows


def soft_labels(rows: Path, teacher: Path, work: Path, device, batch_size: int) -> dict:
    import pyarrow.parquet as pq
    import ray

    from kddocre_ray.data.rows import features_of, teacher_logits_of
    from kddocre_ray.pipeline.soft_labels import PoolOptions, TeacherLogits, write_soft_labels

    noted = work / "actors"
    noted.mkdir(parents=True)

    class NotingTeacher(TeacherLogits):  # defined here, so Ray ships it by value
        def __call__(self, table):
            with open(noted / f"{os.getpid()}.jsonl", "a") as f:
                f.write(json.dumps({"device": str(next(self.predictor.model.parameters()).device),
                                    "precision": self.predictor.precision, "rows": table.num_rows}) + "\n")
            return super().__call__(table)

    ray.init(address="local", num_cpus=4, num_gpus=1, include_dashboard=False, log_to_driver=False)
    try:
        stats = write_soft_labels(rows, teacher, work / "soft", pool_size=1, use_gpu=True, threads=2,
                                  batch_size=batch_size, options=PoolOptions(actor=NotingTeacher))
    finally:
        ray.shutdown()
    actors = [json.loads(line) for f in noted.glob("*.jsonl") for line in f.read_text().splitlines()]
    written = pq.read_table(work / "soft")
    predictor = Predictor.load(teacher, device)
    table = pq.read_table(rows)
    sync()
    t0 = time.perf_counter()
    plain = dict(zip(table.column("title").to_pylist(), predictor.logits(features_of(table))))
    sync()
    plain_s = time.perf_counter() - t0
    ours = dict(zip(written.column("title").to_pylist(), teacher_logits_of(written, predictor.schema.num_classes)))
    assert ours.keys() == plain.keys(), "the soft labels hold other documents than the rows"
    a = torch.cat([ours[t] for t in plain]).float()
    b = torch.cat([plain[t].to(torch.float16).float() for t in plain])
    row = {**stats, "actor_devices": sorted({x["device"] for x in actors}),
           "actor_precisions": sorted({x["precision"] for x in actors}), "actor_rows": sum(x["rows"] for x in actors),
           "in_process_docs_per_s": len(plain) / plain_s, "max_abs_diff_vs_in_process": (a - b).abs().max().item(),
           "decisions_equal_to_in_process": (decisions(a) == decisions(b)).float().mean().item()}
    print(f"soft labels through Ray Data: {row['documents']} documents, actor devices {row['actor_devices']} "
          f"({row['actor_precisions']}), {row['documents_per_s']:.1f} docs/s end to end (cluster start excluded; "
          f"in process on the same GPU: {row['in_process_docs_per_s']:.1f}); max |soft label - in-process logit| "
          f"{row['max_abs_diff_vs_in_process']:.3g}, decisions equal {100 * row['decisions_equal_to_in_process']:.3f}%",
          flush=True)
    return row


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--encoder", help="a folder holding the encoder (e.g. MiniLM-L6)")
    p.add_argument("--docs", help="DocRED-format documents (Re-DocRED dev_revised.json)")
    p.add_argument("--rows", help="ingested rows (a folder of Parquet shards) for the soft-label stage")
    p.add_argument("--teacher", help="a teacher checkpoint folder for the soft-label stage")
    p.add_argument("--batch-size", type=int, default=64, help="rows per Ray Data batch in the soft-label stage")
    p.add_argument("--no-paper", action="store_true", help="skip the paper-size memory check")
    p.add_argument("--paper-steps", type=int, default=10,
                   help="steps of the paper-size model: fp16's first steps overflow and are skipped, and Adam's "
                        "moments only exist after a step that is not, so the peak counts only after one")
    p.add_argument("--n-docs", type=int, default=500, help="documents for the inference timing")
    p.add_argument("--repeats", type=int, default=3, help="timed inference passes per precision")
    p.add_argument("--steps", type=int, default=30, help="DeepSpeed steps per configuration")
    p.add_argument("--entities", type=int, default=42)
    p.add_argument("--tokens", type=int, default=1024)
    p.add_argument("--json", help="write every figure here")
    args = p.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("no CUDA device: this check is for a GPU machine")
    for k, v in {"RANK": "0", "LOCAL_RANK": "0", "WORLD_SIZE": "1", "MASTER_ADDR": "127.0.0.1",
                 "MASTER_PORT": "29533"}.items():
        os.environ.setdefault(k, v)
    device = torch.device("cuda")
    schema = load_schema(REPO / "kddocre_ray" / "sample" / "rel_info.json")
    result = {"device": torch.cuda.get_device_name(), "torch": torch.__version__,
              "auto_precision": resolve_precision("auto", device)}
    print(f"{result['device']}, torch {result['torch']}: precision auto -> {result['auto_precision']}", flush=True)
    if args.encoder and args.docs:
        conf = load_config(REPO / "configs" / "tiny.yaml", [f"model.encoder={args.encoder}", "train.eval_batch_size=8"])
        tokenizer = load_tokenizer(args.encoder)
        docs = read_docs(args.docs, schema)[0][:args.n_docs]
        result["inference"] = inference(conf, schema, tokenizer, docs, device, args.repeats)
        result["deepspeed"] = train(conf, schema, tokenizer, docs, device, args.steps)
    if not args.no_paper:
        result["paper_size"] = paper_size(schema, device, args.entities, args.tokens, steps=args.paper_steps)
    if args.rows and args.teacher:
        import tempfile

        with tempfile.TemporaryDirectory() as work:
            result["soft_labels"] = soft_labels(Path(args.rows), Path(args.teacher), Path(work), device, args.batch_size)
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
