"""`kddocre`: train, distill, sweep, track, evaluate, predict, extract, export, verify and build distant corpora from
the command line."""
from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
from pathlib import Path

from .config import SoftLabelConfig
from .data.docred import load_schema
from .errors import InputError, RunFailed
from .storage import write_json

SAMPLE = Path(__file__).parent / "sample"
DEFAULT_REL_INFO = SAMPLE / "rel_info.json"  # DocRED's 96 relations, shipped with the package


def _train(args) -> None:
    from .train.run import run_train

    run_train(_job_config(args), overwrite=args.overwrite)


def _track(args) -> None:
    from .tracking import track_folder

    track_folder(args.run_dir, args.experiment)


def _distill(args) -> None:
    from .pipeline.run import run_pipeline

    run_pipeline(_job_config(args))


def _sweep(args) -> None:
    from .sweep import run_sweep

    summary = run_sweep(_job_config(args))
    if not summary["finished"]:
        sys.exit(130)  # interrupted (Ctrl-C, `ray job stop`): a job that did not finish must not read as done
    if summary["best"] is None:
        sys.exit(1)  # every trial failed


def _job_arguments(p, config_help: str, override_example: str, folder: str) -> None:
    """The arguments of a Ray-job subcommand (distill, sweep), read back by `_job_config`."""
    p.add_argument("--config", required=True, help=config_help)
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help=f"config overrides, e.g. {override_example}")
    p.add_argument("--output-dir", help=f"where stages and {folder} go (required as an absolute or "
                                        "shared-storage path under `ray job submit`)")
    p.add_argument("--skip-bad-docs", action="store_true", help="skip and count invalid documents instead of stopping")
    _failures_argument(p)
    _verbose_argument(p)


def _verbose_argument(p) -> None:
    p.add_argument("--verbose", action="store_true",
                   help="scale.verbose: Ray's own logs in full (Ray Data's progress bars and per-operator lines, Ray "
                        "Train's worker group and checkpoint lines); without it a run prints its own lines (stage, "
                        "epoch, F1, time left, where results are) and Ray's warnings and errors")


def _precision_argument(p) -> None:
    p.add_argument("--precision", choices=["fp32", "bf16", "fp16", "auto"], help="inference precision (default: the run's)")


def _failures_argument(p) -> None:
    p.add_argument("--max-failures", type=_failures, metavar="N",
                   help="scale.max_failures: times a run restarts its workers from its last checkpoint after a "
                        "worker, or the node it ran on, is lost (default 3; -1: without limit, 0: fail at once)")


def _job_config(args):
    """The config of a training subcommand (train, distill, sweep): --output-dir is `output_dir=`,
    --max-failures `scale.max_failures=`."""
    from .config import load_config

    overrides = [*args.overrides, *([f"output_dir={args.output_dir}"] if getattr(args, "output_dir", None) else []),
                 *([f"scale.max_failures={args.max_failures}"] if args.max_failures is not None else []),
                 *(["scale.verbose=true"] if getattr(args, "verbose", False) else [])]
    conf = load_config(args.config, overrides)
    if args.skip_bad_docs:
        conf.data.skip_bad_docs = True
    return conf


def _reference(args, schema, conf=None):
    from .data.distant import load_facts
    from .evaluation import Reference

    facts = load_facts(args.facts, schema) if args.facts else None
    if args.train:
        return Reference.from_train(_read(args.train, schema, args.skip_bad_docs), facts)
    if conf is not None:
        if not Path(conf.data.train.path).is_file():
            raise InputError(f"the checkpoint's config.json names data.train.path={conf.data.train.path}, which is "
                             "not here (Ign F1 needs the training facts): pass --train FILE or --facts FILE",
                             path=args.checkpoint)
        return Reference.from_config(conf, schema)
    if facts is not None:
        return Reference(facts, [])
    raise InputError("evaluate --pred needs --train FILE (Ign facts, frequent relations) or --facts FILE")


def _evaluate(args) -> None:
    from .evaluation import format_metrics
    from .inference import Predictor

    if bool(args.checkpoint) == bool(args.pred):
        raise InputError("evaluate: give either --checkpoint RUN --data FILE, or --pred FILE --gold FILE")
    if args.checkpoint:
        if not args.data:
            raise InputError("evaluate --checkpoint needs --data FILE")
        predictor = Predictor.load(args.checkpoint, precision=args.precision)
        gold = _read_gold(args.data, predictor.schema, args.skip_bad_docs)
        preds = predictor.predict_docs(gold)
        reference = _reference(args, predictor.schema, predictor.conf)
        if args.out:
            write_json(preds, args.out)
    else:
        if not args.gold:
            raise InputError("evaluate --pred needs --gold FILE")
        schema = load_schema(args.rel_info)
        gold = _read_gold(args.gold, schema, args.skip_bad_docs)
        preds = _read_preds(args.pred, gold, schema, args.skip_bad_preds)
        reference = _reference(args, schema)
    metrics = reference.score(preds, gold)
    if args.json:
        print(json.dumps(metrics))
    else:
        print(f"{len(gold)} documents, {len(preds)} predicted triples\n{format_metrics(metrics)}")


def _predict(args) -> None:
    if args.ray:
        return _predict_on_ray(args)
    from .extract import Extractor
    from .progress import Progress

    extractor = Extractor.load(args.checkpoint, precision=args.precision)
    docs = _read(args.data, extractor.schema, args.skip_bad_docs)
    progress, preds = Progress("predict", len(docs), log=_warn), []
    for k in range(0, len(docs), PREDICT_CHUNK):
        preds += extractor.triples(docs[k:k + PREDICT_CHUNK])
        progress.add(len(docs[k:k + PREDICT_CHUNK]))
    write_json(preds, args.out)
    print(f"{len(preds)} triples for {len(docs)} documents written to {args.out}")


PREDICT_CHUNK = 256  # documents predicted between two progress lines' checks (in process)


def _predict_on_ray(args) -> None:
    import ray

    from .cluster import init_ray
    from .config import Config, actor_threads
    from .pipeline.predict import predict_corpus

    if args.precision:
        raise InputError("predict --ray runs each actor in the checkpoint's own precision: drop --precision")
    for flag, value in (("--pool", args.pool), ("--batch-size", args.batch_size)):
        if value < 1:
            raise InputError(f"{flag} must be at least 1, not {value}")
    conf = Config()
    conf.scale.verbose = args.verbose
    init_ray(conf, log=_warn)
    conf.scale.use_gpu = ray.cluster_resources().get("GPU", 0) >= args.pool  # one GPU per actor, when there are
    stats = predict_corpus(args.checkpoint, args.data, args.out, args.pool, conf.scale.use_gpu,
                           actor_threads(conf.scale, args.pool), args.batch_size, args.skip_bad_docs, log=_warn)
    print(f"{stats['triples']} triples for {stats['predicted']} documents written to {args.out} (JSON Lines)")


def _extract(args) -> None:
    from .data.text import read_texts
    from .extract import Extractor
    from .storage import location, write_text

    texts = read_texts(args.text)  # every input checked before the model or spaCy loads
    extractor = Extractor.load(args.checkpoint, precision=args.precision)
    docs = extractor.documents(texts)
    records = extractor.predict(docs, args.min_score)
    if args.docs_out:
        write_json(docs, args.docs_out)
    lines = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records)
    if args.out == "-":
        sys.stdout.write(lines)
    else:
        write_text(location(args.out), lines)
    entities = sum(len(d["vertexSet"]) for d in docs)
    _warn(f"{len(records)} triples among {entities} entities of {len(docs)} documents"
          + (f" written to {args.out}" if args.out != "-" else "") + (f"; documents to {args.docs_out}" if args.docs_out else ""))


def _export(args) -> None:
    from .export import export_model

    out = export_model(args.run, args.out)
    print(f"model of {args.run} exported to {out}: load it with kddocre_ray.Extractor.load({str(out)!r})")


def _verify(args) -> None:
    """A pipeline's run folder: every stage it used; a stage folder: its manifest's files; else
    a checkpoint (a run folder's, or a checkpoint folder)."""
    from . import layout
    from .checkpoint import CHECKSUMS, resolve_checkpoint, verify
    from .pipeline.stages import verify_pipeline, verify_stage
    from .storage import location

    path = location(args.path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such folder")
    if (path / layout.PIPELINE).is_file():
        for folder, n in verify_pipeline(path):
            print(f"{folder}: {n} files match their manifest's sizes and sha256 digests")
        return
    if (path / layout.MANIFEST).is_file():
        print(f"{path}: {verify_stage(path)} files match their manifest's sizes and sha256 digests")
        return
    folder = resolve_checkpoint(path)
    checked = verify(folder)
    if not checked:
        raise InputError(f"no {CHECKSUMS} or {layout.MANIFEST}: not a checkpoint, stage or pipeline run folder, "
                         "or one saved before checksums were recorded", path=folder)
    print(f"{folder}: {checked} files match the sizes and sha256 digests recorded when it was saved")


def _distant(args) -> None:
    from .data.distant import distant_label, load_facts

    schema = load_schema(args.rel_info)
    docs = _read(args.docs, schema, args.skip_bad_docs)
    facts = load_facts(args.facts, schema)
    labelled, stats = distant_label(docs, facts)
    write_json(labelled, args.out)
    print(f"{stats.labels} labels on {stats.pairs} entity pairs in {stats.labelled_documents} of "
          f"{stats.documents} documents, from {len(facts)} facts; written to {args.out}")


def _read(path, schema, skip_bad, unique_titles: bool = False) -> list[dict]:
    from .data.splits import read_valid

    return read_valid(path, schema, skip_bad, log=_warn, unique_titles=unique_titles)


def _read_gold(path, schema, skip_bad) -> list[dict]:
    """Documents to score against: each with its labels (an empty list: no relation), titles
    unique (they key the scorer), at least one document."""
    from .data.splits import read_valid

    gold = read_valid(path, schema, skip_bad, log=_warn, unique_titles=True, require_labels=True)
    if not gold:
        raise InputError("no documents to score against", path=path)
    return gold


def _read_preds(path: str, gold: list[dict], schema, skip_bad: bool) -> list[dict]:
    """The scorable entries of a predictions file; skipped and duplicate ones said on stderr."""
    from .data.predictions import check_predictions
    from .storage import read_json

    checked = check_predictions(read_json(path), gold, schema, path, skip_bad)
    if checked.dropped:
        kinds = ", ".join(f"{n} {kind}" for kind, n in checked.dropped.most_common())
        _warn(f"{path}: skipped {sum(checked.dropped.values())} predictions that cannot be scored ({kinds})")
    if checked.duplicates:
        _warn(f"{path}: {checked.duplicates} duplicate triples counted once")
    return checked.preds


def _warn(msg: str) -> None:
    print(msg, file=sys.stderr)


def _failures(text: str) -> int:
    """`--max-failures`: a count, or -1 for no limit (Ray Train's FailureConfig)."""
    try:
        n = int(text)
    except ValueError:
        n = None
    if n is None or n < -1:
        raise argparse.ArgumentTypeError(f"{text!r}: give a count >= 0, or -1 for no limit")
    return n


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="kddocre",
        description="Document-level relation extraction with Adaptive Focal Loss and knowledge "
                    "distillation (KD-DocRE), trained on Ray. Data in DocRED JSON format (.json or .json.gz).",
        epilog="Start with: kddocre train --config configs/tiny.yaml.  Exit status: 0 done; 2 bad input "
               "(the message names the file, the entry and the field) or bad arguments; 1 a failure at run "
               "time; 130 an interrupted sweep.")
    sub = p.add_subparsers(dest="command", required=True)

    t = sub.add_parser("train", help="train a model through Ray Train and score it on dev and test",
                       description="Train through Ray Train's TorchTrainer (local Ray cluster unless "
                                   "scale.ray_address or RAY_ADDRESS names one), keep the best checkpoint by dev F1, "
                                   "score it, and write the run folder OUTPUT_DIR/NAME (config.yaml, checkpoint/, "
                                   "result.json, metrics.json). Rerunning an unfinished run resumes from its last "
                                   "checkpoint. The run is logged to MLflow (MLFLOW_TRACKING_URI, else sqlite:///mlflow.db "
                                   "in the working directory; tracking.enabled=false turns it off).",
                       epilog="Overrides are dotted config keys, e.g.: kddocre train --config configs/tiny.yaml "
                              "train.epochs=2 model.axial_layers=0 loss.name=atl name=my_run")
    t.add_argument("--config", required=True, help="YAML config file (see configs/)")
    t.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="config overrides")
    t.add_argument("--overwrite", action="store_true", help="replace a finished run of the same name")
    _failures_argument(t)
    _verbose_argument(t)
    t.add_argument("--skip-bad-docs", action="store_true", help="skip and count invalid documents instead of stopping")
    t.set_defaults(func=_train)

    k = sub.add_parser(
        "distill", help="the KD-DocRE pipeline: teacher, soft labels, student pretraining, fine-tuning, scores",
        description="Run the paper's method on the Ray cluster named by RAY_ADDRESS or scale.ray_address (a local "
                    "one when there is none): (1) train the teacher on data.train; (2) ingest pipeline.corpus and "
                    "write the teacher's logits for every entity pair to Parquet through a Ray Data actor pool; "
                    "(3) pretrain the student on the corpus with the relation loss on its distant labels plus "
                    "distill.weight x MSE (or KL) to the teacher's logits (distill.kd=none: labels only, no "
                    "teacher); (4) fine-tune it on data.train; (5) score it on dev and test. Each stage's output "
                    "goes to OUTPUT_DIR/stages/<stage>-<fingerprint>/ and is reused by any run that needs the "
                    "same stage; a rerun skips finished stages and resumes a killed one. The run folder "
                    "OUTPUT_DIR/NAME gets config.yaml, pipeline.json, metrics.json, result.json and plots/. MLflow "
                    "gets a parent run with a nested run per stage (MLFLOW_TRACKING_URI, else sqlite:///mlflow.db in "
                    "the working directory; tracking.enabled=false turns it off).",
        epilog="Examples: kddocre distill --config configs/tiny.yaml;  kddocre distill --config "
               "configs/redocred_mini/kd_mse.yaml distill.weight=2 name=kd_w2.  As a Ray job: ray job submit "
               "--working-dir . -- python jobs/distill.py --config configs/tiny.yaml --output-dir /abs/path")
    _job_arguments(k, "YAML config file with a distill: section (see configs/)", "distill.kd=kl", "the run folder")
    k.set_defaults(func=_distill)

    w = sub.add_parser(
        "sweep", help="Ray Tune over γ and the learning rates (ASHA on dev F1, one MLflow run per trial)",
        description="Search the config keys of sweep.space with Ray Tune; each trial is a real Ray Train run of the "
                    "project's training. sweep.level=teacher: each trial trains a teacher (γ, the teacher's learning "
                    "rates), stored as the pipeline's teacher stage so a pipeline with the chosen values reuses it. "
                    "sweep.level=kd: the trials share the pipeline's teacher and soft labels (built once first) and "
                    "each runs student pretraining, fine-tuning and scoring (KD weight, distill.* learning rates). "
                    "An empty sweep.space is the paper's grid loss.gamma = 0, 0.5, 1, 1.5, 2. A leaf of sweep.space "
                    "is a list (a grid) or {uniform: [lo, hi]} / {loguniform: [lo, hi]} (sweep.num_samples draws). "
                    "ASHA (sweep.scheduler) stops weak trials early on sweep.metric (dev_f1); as many trials run at "
                    "once as the cluster's CPUs (GPUs) hold. The sweep folder OUTPUT_DIR/NAME gets results.md, "
                    "results.csv, best.yaml (the best trial's config) and sweep.json; an interrupted sweep (Ctrl-C) "
                    "writes the table of what ran, no best.yaml, and exits 130; rerunning it resumes it "
                    "(Tuner.restore). Each trial is one MLflow run in tracking.experiment.",
        epilog="Examples: kddocre sweep --config configs/redocred_mini/sweep_gamma.yaml;  kddocre sweep --config "
               "configs/tiny.yaml name=lr 'sweep.space.train.encoder_lr={loguniform: [1e-5, 1e-4]}' "
               "sweep.num_samples=4.  As a Ray job: ray job submit --working-dir . -- python tune/sweep.py "
               "--config configs/tiny.yaml --output-dir /abs/path")
    _job_arguments(w, "YAML config file (see configs/); its sweep: section sets the search", "sweep.level=kd",
                   "the sweep folder")
    w.set_defaults(func=_sweep)

    m = sub.add_parser(
        "track", help="log a finished run folder to MLflow (after the store was down, or tracking was off)",
        description="Log a finished run folder (of kddocre train or kddocre distill) to the MLflow store named by "
                    "MLFLOW_TRACKING_URI (default sqlite:///mlflow.db here): parameters, per-epoch metrics, scores, "
                    "files and tags, as the live run would have; a pipeline becomes a parent run with a nested run "
                    "per stage. A folder already fully logged to that store (its tracking.json says so) is left alone.",
        epilog="Example: MLFLOW_TRACKING_URI=http://127.0.0.1:5000 kddocre track runs/tiny")
    m.add_argument("run_dir", help="run folder (holds config.yaml and metrics.json)")
    m.add_argument("--experiment", help="MLflow experiment (default: the run's tracking.experiment)")
    m.set_defaults(func=_track)

    e = sub.add_parser("evaluate", help="score a checkpoint on a labelled file, or a predictions file against gold",
                       description="Either run a checkpoint on a labelled file (--checkpoint RUN --data FILE), or "
                                   "score a DocRED submission file like the official script (--pred result.json "
                                   "--gold FILE --train TRAIN_FILE). Ign F1 ignores correct facts seen in training: "
                                   "from --train (its mention-name facts), --facts (a fact file), or the run's "
                                   "own train split.")
    e.add_argument("--checkpoint", help="run folder or checkpoint folder")
    e.add_argument("--data", help="labelled DocRED file to predict and score (with --checkpoint)")
    e.add_argument("--pred", help="predictions file in DocRED submission format")
    e.add_argument("--gold", help="gold DocRED file (with --pred)")
    e.add_argument("--train", help="training file: Ign facts and the 10 frequent relations")
    e.add_argument("--facts", help="fact file [[h_name, t_name, r], ...] for Ign F1 (e.g. DocRED's train_annotated.fact)")
    e.add_argument("--rel-info", default=str(DEFAULT_REL_INFO), help="relation schema for --pred mode (default: DocRED's)")
    _precision_argument(e)
    e.add_argument("--out", help="also write the predictions here (with --checkpoint)")
    e.add_argument("--json", action="store_true", help="print the metrics as one JSON object (percent)")
    e.add_argument("--skip-bad-docs", action="store_true", help="skip and count invalid documents instead of stopping")
    e.add_argument("--skip-bad-preds", action="store_true",
                   help="score without the predictions that cannot be scored (unknown title or relation, entity "
                        "out of range, ...) and count them by kind, instead of stopping")
    e.set_defaults(func=_evaluate)

    r = sub.add_parser("predict", help="write predicted triples for DocRED-format documents (labels not needed)")
    r.add_argument("--checkpoint", required=True, help="run folder or checkpoint folder")
    r.add_argument("--data", required=True, help="DocRED-format documents")
    r.add_argument("--out", required=True, help="output file, DocRED submission format")
    _precision_argument(r)
    r.add_argument("--skip-bad-docs", action="store_true", help="skip and count invalid documents instead of stopping")
    r.add_argument("--ray", action="store_true",
                   help="run on Ray (the cluster of RAY_ADDRESS, else a local one): the corpus streamed through a "
                        "pool of actors, never held in one process; --out is then written as JSON Lines, one triple "
                        "a line, in the corpus's order")
    r.add_argument("--pool", type=int, default=SoftLabelConfig.pool_size,
                   help="with --ray: actors (one GPU each when the cluster has as many)")
    r.add_argument("--batch-size", type=int, default=SoftLabelConfig.batch_size,
                   help="with --ray: documents per batch sent to an actor")
    _verbose_argument(r)
    r.set_defaults(func=_predict)

    x = sub.add_parser(
        "extract", help="raw text in, relation triples out (spaCy finds the entities; the [text] extra)",
        description="Build DocRED documents from raw text: sentences, tokens and named entities from spaCy's small "
                    "English pipeline, mentions grouped into entities by name (a later one-word name joins an earlier "
                    "entity of its type that holds it: 'Smith' after 'John Smith'), spaCy's labels mapped to DocRED's "
                    "six types; then predict their relations. Output: JSON Lines, one triple per line (title, head and "
                    "tail entity with name, type and mentions with sentence, token span and character offsets, "
                    "relation id and name, score = the relation's logit less the threshold's, above 0 when kept).",
        epilog="Example: echo 'Marie Curie was born in Warsaw.' | kddocre extract --checkpoint runs/tiny --text -")
    x.add_argument("--checkpoint", required=True, help="run folder, checkpoint folder or exported model folder")
    x.add_argument("--text", required=True, help="a plain-text file (one document, titled by its name), a JSON Lines "
                                                 "file of {title, text}, a folder of such files, or - (standard input)")
    x.add_argument("--out", default="-", help="where the triples go, JSON Lines (default: standard output)")
    x.add_argument("--docs-out", help="also write the DocRED documents built from the text here (JSON)")
    x.add_argument("--min-score", type=float, default=0.0,
                   help="keep relations scoring above this (default 0: the model's own decision; below 0 also less "
                        "certain ones, above 0 fewer)")
    _precision_argument(x)
    x.set_defaults(func=_extract)

    o = sub.add_parser(
        "export", help="write a run's model as a self-contained folder (safetensors, tokenizer, relations, model card)",
        description="Write the model of a run folder, a pipeline's run folder or a checkpoint folder to a new folder "
                    "that loads anywhere (kddocre_ray.Extractor.load(DIR), kddocre extract/predict --checkpoint DIR): "
                    "model.safetensors (no pickle), encoder/ (the encoder's config and tokenizer), relations.json, "
                    "config.json (the model config), checksums.json and README.md (a model card: data, metrics, the "
                    "command that made it).")
    o.add_argument("run", help="run folder, pipeline run folder or checkpoint folder")
    o.add_argument("--out", required=True, help="the folder to write (new, or empty)")
    o.set_defaults(func=_export)

    v = sub.add_parser("verify", help="check a model's or a pipeline's files against the sizes and digests "
                                      "recorded when they were written",
                       description="Read every file of a pipeline's run folder (each stage it used: the soft labels, "
                                   "the ingested rows, every checkpoint, the scores), of one stage folder, or of a "
                                   "checkpoint (a run folder's, or a checkpoint folder), and compare its size and "
                                   "sha256 with those recorded when it was written (manifest.json, checksums.json). "
                                   "A rerun of the pipeline checks sizes only and rebuilds a damaged stage; loading "
                                   "a checkpoint checks its weights' digest.")
    v.add_argument("path", help="pipeline run folder, stage folder, run folder or checkpoint folder")
    v.set_defaults(func=_verify)

    d = sub.add_parser("distant", help="label documents by knowledge-base name matching (distant supervision)",
                       description="For every ordered entity pair (h, t) label relation r when some mention name "
                                   "of h and some mention name of t form a fact [h_name, t_name, r] of the fact "
                                   "file (exact match). Existing labels are replaced. Output in DocRED format.")
    d.add_argument("--docs", required=True, help="DocRED-format documents (labels optional)")
    d.add_argument("--facts", required=True, help="JSON list of [head name, tail name, relation id]")
    d.add_argument("--out", required=True, help="output DocRED file (.json or .json.gz)")
    d.add_argument("--rel-info", default=str(DEFAULT_REL_INFO), help="relation schema (default: DocRED's)")
    d.add_argument("--skip-bad-docs", action="store_true", help="skip and count invalid documents instead of stopping")
    d.set_defaults(func=_distant)
    return p


def _interrupt(signum, frame) -> None:
    """SIGTERM handled as Ctrl-C: by whatever handles SIGINT now. Inside a training run that is
    Ray Train's handler, which aborts the run (its workers, placement group and cleaner actor go
    with it); elsewhere Python's, a KeyboardInterrupt."""
    handler = signal.getsignal(signal.SIGINT)
    if not callable(handler):
        raise KeyboardInterrupt
    handler(signal.SIGINT, frame)


def main(argv: list[str] | None = None) -> None:
    args = parser().parse_args(argv)
    # `ray job stop`, `kill` and schedulers send SIGTERM: end as Ctrl-C does, so that a training
    # run is aborted by Ray Train and a pipeline's unfinished MLflow runs are marked KILLED, within
    # the grace Ray gives before SIGKILL (RAY_JOB_STOP_WAIT_TIME_S, set to 30 s in cluster.yaml).
    before = signal.signal(signal.SIGTERM, _interrupt) if threading.current_thread() is threading.main_thread() else None
    try:
        args.func(args)
    except (InputError, FileNotFoundError, FileExistsError) as e:  # bad input: status 2
        _warn(f"kddocre {args.command}: {e}")
        raise SystemExit(2) from None
    except (ValueError, ConnectionError, RunFailed) as e:  # a failure at run time: status 1
        _warn(f"kddocre {args.command}: {e}")
        raise SystemExit(1) from None
    finally:
        if before is not None:
            signal.signal(signal.SIGTERM, before)


if __name__ == "__main__":
    main()
