"""The door of a training run: every file its config names is read and checked on the driver,
before Ray starts or a worker trains, so that bad input ends in one InputError naming the file,
the entry and the field, never in a worker's traceback an hour in.

The workers read the same files again (they may run on other machines); what they would refuse
is refused here first.
"""
from __future__ import annotations

from ..checkpoint import check_fits
from ..config import KD, Config, Precision, StrategyName, missing_paths
from ..data.distant import load_facts
from ..data.docred import RelSchema, load_schema
from ..data.rows import check_rows
from ..data.splits import load_split
from ..errors import InputError
from ..storage import check_writable
from .strategy import deepspeed_config


def check_train_inputs(conf: Config) -> RelSchema:
    """Check what `kddocre train` with `conf` reads; returns the relation schema."""
    missing = missing_paths(conf)
    if missing:
        raise FileNotFoundError(f"input files not found: {', '.join(missing)}")
    check_writable(conf.output_dir)
    check_encoder(conf.model.encoder, conf.model.max_length)
    d = conf.data
    schema = load_schema(d.rel_info)
    for split in ("train", "dev", "test"):
        src = getattr(d, split)
        if src is None:
            continue
        docs = load_split(src, schema, d.skip_bad_docs, log=lambda *a: None)  # the workers report skipped ones
        if not docs:
            raise InputError(f"no documents in data.{split} (start={src.start}, end={src.end})", path=src.path)
    if d.train_facts:
        load_facts(d.train_facts, schema)
    if conf.train.init_from:
        check_fits(conf.train.init_from, "train.init_from", schema, d.rel_info, conf.model)
    if conf.distill.teacher:
        check_fits(conf.distill.teacher, "distill.teacher", schema, d.rel_info)
    if conf.train.precision == Precision.fp16 and not conf.scale.use_gpu:
        raise InputError("train.precision=fp16 needs a GPU (scale.use_gpu=true); on CPU use bf16, fp32 or auto")
    if conf.train.strategy == StrategyName.deepspeed:
        check_deepspeed_file(conf.train.deepspeed_config, conf, conf.scale.num_workers)
    if d.train_rows:
        check_rows(d.train_rows, schema.num_classes, with_teacher=conf.distill.kd != KD.none)
    return schema


def check_encoder(name: str, max_length: int) -> None:
    """The encoder's architecture and tokenizer load here, offline, as each worker will load
    them, and its position embeddings cover `model.max_length`."""
    from ..model.encoder import encoder_config, load_tokenizer

    try:
        positions = getattr(encoder_config(name), "max_position_embeddings", None)
        load_tokenizer(name)
    except FileNotFoundError as e:  # a packaged encoder whose extra is not installed says how to get it
        raise InputError(str(e), field=f"model.encoder={name}") from None
    except (OSError, ValueError, KeyError) as e:  # transformers' words for no such model, or a damaged one
        raise InputError("not a packaged encoder (minilm, mpnet, tiny-random), a folder holding a transformers "
                         "model and tokenizer, or a model in the local Hugging Face cache (nothing is downloaded): "
                         f"{str(e).splitlines()[0][:200]}", field=f"model.encoder={name}") from None
    if positions is not None and max_length > positions:
        raise InputError(f"model.max_length={max_length} is longer than the {positions} positions encoder {name} has "
                         "(long documents are cut into chunks of max_length: lower it)")


def check_deepspeed_file(path: str, conf: Config, workers: int) -> None:
    """The DeepSpeed file as each worker will read it; a precision of `auto` resolves only on the
    workers' device, so its agreement with the file is checked there."""
    precision = None if conf.train.precision == Precision.auto else str(conf.train.precision)
    deepspeed_config(path, conf.train, precision, workers)
