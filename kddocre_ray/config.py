"""One config system: dataclasses, filled from YAML, overridden by dotted `key=value` arguments.

OmegaConf's structured configs give the type checks and reject unknown keys, so a typo in a
YAML file or on the command line fails loudly instead of silently training the wrong thing.
"""
from __future__ import annotations

import dataclasses
import math
import os
import re
import types
import typing
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any

from omegaconf import MISSING, OmegaConf

from .errors import InputError
from .storage import location, resolve


def path_field(default: Any = None) -> Any:
    """A config field whose value is a file or folder (local or an object-store URI): made absolute
    at load time (Ray workers run in other directories), fingerprinted by content
    (fingerprint.py), and checked to exist before a pipeline starts. PATH_KEYS lists them."""
    return field(default=default, metadata={"path": True})


class Choice(str, Enum):
    """A config value from a fixed set: OmegaConf refuses any other and names the choices. A
    member compares, prints and serializes as its plain string ("mse"), as YAML and MLflow show it."""

    def __str__(self) -> str:
        return self.value


class LossName(Choice):
    afl = "afl"
    atl = "atl"
    bce = "bce"


class AflWeight(Choice):
    paper = "paper"  # positives weighted by (1-P)^gamma (Eq. 9-11)
    official = "official"  # 1 + (1-P)^gamma, as in the authors' released code


class Precision(Choice):
    fp32 = "fp32"
    bf16 = "bf16"
    fp16 = "fp16"
    auto = "auto"  # bf16 where the hardware runs it natively, fp16 on older GPUs, else fp32


class StrategyName(Choice):
    ddp = "ddp"
    deepspeed = "deepspeed"


class KD(Choice):
    mse = "mse"  # the paper
    kl = "kl"  # with distill.temperature
    none = "none"  # NA: distant labels only, no teacher


class InitFrom(Choice):
    last = "last"  # the student's last epoch (no dev split during pretraining)
    best = "best"  # its best epoch by dev F1 (dev scored after every pretraining epoch)


class SweepLevel(Choice):
    teacher = "teacher"  # each trial trains its own teacher (γ, the teacher's learning rates)
    kd = "kd"  # the trials share the pipeline's teacher and soft labels (KD weight, student learning rates)


class SweepMetric(Choice):
    """What a sweep maximizes: a trial's epochs report these (train/worker.py evaluate_dev)."""

    dev_f1 = "dev_f1"
    dev_ign_f1 = "dev_ign_f1"


class SweepScheduler(Choice):
    asha = "asha"  # stops weak trials early
    fifo = "fifo"  # every trial runs its whole budget


@dataclass
class DataSource:
    """A DocRED-format file, optionally a slice [start, end) of its documents in file order."""

    path: str = path_field(MISSING)
    start: int = 0
    end: int | None = None


@dataclass
class DataConfig:
    rel_info: str = path_field(MISSING)  # rel_info.json (DocRED) or rel2id.json (ATLOP)
    train: DataSource = field(default_factory=DataSource)
    dev: DataSource | None = None
    test: DataSource | None = None
    # Fact file ([h_name, t_name, r] triples) for Ign F1; default: the facts of the train split.
    train_facts: str | None = path_field()
    skip_bad_docs: bool = False
    # Featurized Parquet rows (the pipeline's ingest or soft-label stage): when set, the training
    # documents stream from here through Ray Data instead of `train`, which then only supplies
    # the Ign facts and the probe document.
    train_rows: str | None = path_field()


@dataclass
class ModelConfig:
    encoder: str = "minilm"  # "minilm", "tiny-random", a Hugging Face name, or a folder
    max_length: int = 512  # encoder window, special tokens included
    chunk_overlap: int = 128  # subwords shared by consecutive chunks of a long document
    emb_size: int = 768  # ATLOP's entity-pair embedding size
    block_size: int = 64  # grouped bilinear block size
    bilinear_chunk: int = 512  # pairs per slice of the grouped bilinear: bounds its memory, not its result
    axial_layers: int = 0  # 0 = no axial attention (the ATLOP-equivalent head)
    axial_heads: int = 4
    pair_dim: int = 0  # width of the n x n pair table; 0 = the encoder's hidden size
    num_labels: int = 4  # at most this many relations per pair at decoding; -1 = no limit


@dataclass
class LossConfig:
    name: LossName = LossName.afl
    gamma: float = 0.5
    afl_weight: AflWeight = AflWeight.paper


@dataclass
class TrainConfig:
    epochs: int = 5
    batch_size: int = 4  # documents per optimizer step (per worker), before accumulation
    grad_accum: int = 1
    encoder_lr: float = 5e-5
    head_lr: float = 1e-4
    adam_eps: float = 1e-6
    weight_decay: float = 0.0
    warmup_ratio: float = 0.06
    max_grad_norm: float = 1.0
    seed: int = 66
    patience: int = 0  # epochs without dev F1 improvement before stopping; 0 = never stop early
    precision: Precision = Precision.auto
    max_steps: int = 0  # stop after this many optimizer steps (smoke tests); 0 = no limit
    eval_batch_size: int = 8
    strategy: StrategyName = StrategyName.ddp
    deepspeed_config: str | None = path_field()  # JSON file, e.g. configs/deepspeed/zero2.json
    # A checkpoint folder (or run folder) whose weights start this run: weights only, with a
    # fresh optimizer and schedule (fine-tuning a pretrained student). Not the same as resuming.
    init_from: str | None = path_field()


@dataclass
class ScaleConfig:
    num_workers: int = 1
    use_gpu: bool = False
    cpus_per_worker: int = 0  # 0 = the machine's cores divided among the workers
    ray_address: str | None = None  # None = start a local Ray cluster (or join RAY_ADDRESS)
    # Times a training run restarts its worker group from its last checkpoint after losing a worker
    # (a killed process, a preempted node) before it fails; -1 = without limit, 0 = fail at once.
    max_failures: int = 3
    # Ray's own logs in full (Ray Data's progress bars and per-operator lines, Ray Train's worker
    # group and checkpoint lines); off, a run prints its own lines and Ray's warnings and errors
    verbose: bool = False


@dataclass
class DistillConfig:
    """Knowledge distillation (KD-DocRE), what changes a student's loss: besides the relation
    loss on its (distant) labels it learns the teacher's logits, L = L_RE + weight * L_KD.
    `teacher`: for `kddocre train` alone, a teacher run or checkpoint folder whose logits on the
    train split are computed in memory (the pipeline writes its teacher's as soft labels)."""

    kd: KD = KD.mse
    weight: float = 1.0
    temperature: float = 1.0  # KL's temperature
    teacher: str | None = path_field()


@dataclass
class PipelineConfig:
    """The pipeline's stage schedule (`jobs/distill.py`), what changes which stages run and
    their configs: the student pretrains on `corpus`, then is fine-tuned on `data.train`."""

    corpus: str | None = path_field()  # distantly labelled DocRED JSON (.json / .json.gz), e.g. from `kddocre distant`
    # A fact file ([h_name, t_name, r] triples): when set, the corpus is labelled at ingest by
    # knowledge-base name matching, as `kddocre distant` does (its own labels are replaced).
    facts: str | None = path_field()
    rows_per_shard: int = 1000  # documents per Parquet shard of the ingested corpus
    window: int = 256  # rows a student worker holds at once to form length-grouped batches
    # Student pretraining on the corpus; unset learning rates are train.encoder_lr / head_lr.
    pretrain_epochs: int = 2
    pretrain_encoder_lr: float | None = None
    pretrain_head_lr: float | None = None
    # Fine-tuning on data.train from the student's weights; unset values are train.*'s.
    finetune_epochs: int | None = None
    finetune_encoder_lr: float | None = None
    finetune_head_lr: float | None = None
    init_from: InitFrom = InitFrom.last  # which of the student's checkpoints fine-tuning starts from
    # Scale of the student stages (pretraining and fine-tuning) when it differs from the
    # teacher's: e.g. a teacher on one GPU, students on four with DeepSpeed. Unset = scale / train.
    student_workers: int | None = None
    student_strategy: StrategyName | None = None
    student_deepspeed_config: str | None = path_field()


@dataclass
class SoftLabelConfig:
    """How the soft-label stage runs: how fast, never what it writes."""

    pool_size: int = 1  # teacher actors (one GPU each with scale.use_gpu)
    batch_size: int = 64  # documents per Ray Data batch sent to a teacher actor


@dataclass
class TrackingConfig:
    """MLflow (tracking.py): the store is MLFLOW_TRACKING_URI, else sqlite:///mlflow.db here."""

    enabled: bool = True
    experiment: str = "kddocre"  # runs to compare side by side share an experiment
    # The final model (of `kddocre train`, and of a pipeline) as an MLflow model, registered under
    # `model_name` ("" = the run's name): `mlflow models serve -m models:/NAME/VERSION` serves it
    log_model: bool = True
    model_name: str = ""


@dataclass
class SweepConfig:
    """Ray Tune over config keys (tune/sweep.py). `space` mirrors the config's own nesting; a
    leaf is a list (a grid: every value is tried) or {uniform: [lo, hi]} / {loguniform: [lo, hi]}
    (drawn `num_samples` times). Empty = the paper's grid over loss.gamma."""

    level: SweepLevel = SweepLevel.teacher
    space: dict[str, Any] = field(default_factory=dict)
    num_samples: int = 1  # draws of the distributions (a grid is crossed with each draw)
    metric: SweepMetric = SweepMetric.dev_f1  # maximized; a trial counts by its best epoch
    scheduler: SweepScheduler = SweepScheduler.asha
    grace_period: int = 1  # epochs every trial gets before ASHA may stop it
    reduction_factor: int = 2
    max_concurrent_trials: int = 0  # 0 = as many as the cluster's CPUs (GPUs) run at once


PAPER_GAMMA_GRID = [0.0, 0.5, 1.0, 1.5, 2.0]  # the paper's γ grid (Tan et al. 2022, Table 6)


def flatten(d: dict, prefix: str = "") -> dict[str, Any]:
    """{"a": {"b": 1}} -> {"a.b": 1}: the dotted names the command line takes."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(flatten(v, key + "."))
        else:
            out[key] = v
    return out


def _cores_each(processes: int) -> int:
    """This machine's cores shared out evenly, so that the processes never oversubscribe them."""
    return max(1, (os.cpu_count() or 1) // processes)


def worker_cpus(scale: ScaleConfig) -> int:
    """CPUs (and torch threads) per worker: as set, or this machine's cores shared out evenly."""
    return scale.cpus_per_worker or _cores_each(scale.num_workers)


def actor_threads(scale: ScaleConfig, pool_size: int) -> int:
    """Torch threads per teacher actor of the soft-label stage: a GPU actor runs like a training
    worker; CPU actors share this machine's cores out evenly."""
    return worker_cpus(scale) if scale.use_gpu else _cores_each(pool_size)


@dataclass
class Config:
    extends: str | None = None  # base YAML file this one overrides (see _yaml_chain)
    name: str = "run"
    output_dir: str = "runs"
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    scale: ScaleConfig = field(default_factory=ScaleConfig)
    distill: DistillConfig = field(default_factory=DistillConfig)
    pipeline: PipelineConfig = field(default_factory=PipelineConfig)
    soft_labels: SoftLabelConfig = field(default_factory=SoftLabelConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    sweep: SweepConfig = field(default_factory=SweepConfig)


_KEY = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*")


def is_dotted_key(key: str) -> bool:
    """`train.epochs`, not `.epochs`, `train..epochs` or `train[epochs]`."""
    return bool(_KEY.fullmatch(key))


def load_config(path: str | os.PathLike | None = None, overrides: list[str] = ()) -> Config:
    """Defaults, then the YAML file, then `a.b=value` overrides; validated, paths made absolute."""
    cfg = OmegaConf.structured(Config)
    for layer, data in _yaml_chain(Path(path)) if path is not None else []:
        try:
            cfg = OmegaConf.merge(cfg, data)
        except Exception as e:  # OmegaConf names the key; add the file
            key = _value_for_section(OmegaConf.to_container(data))
            raise InputError(f"{key} is a section of keys, not a value" if key else _omegaconf_message(e),
                             path=layer) from None
    for o in overrides:  # one at a time, so that a message names the one at fault
        key = o.split("=", 1)[0]
        if "=" not in o or not is_dotted_key(key):
            raise InputError(f"{o!r}: expected a dotted key=value (e.g. train.epochs=3)", path="command-line override")
        if key == "extends":
            raise InputError(f"{o!r}: extends is read from config files only (give the file with --config)",
                             path="command-line override")
        try:
            cfg = OmegaConf.merge(cfg, OmegaConf.from_dotlist([o]))
        except Exception as e:
            said = (f"{key} is a section of keys, not a value: set its keys ({key}.<name>=...)"
                    if _names_section(key) else _omegaconf_message(e))
            raise InputError(f"{o!r}: {said}", path="command-line override") from None
    try:
        OmegaConf.resolve(cfg)
    except Exception as e:  # an ${interpolation} that does not resolve
        raise InputError(_omegaconf_message(e), path=path or "config") from None
    missing = OmegaConf.missing_keys(cfg)
    if missing:
        raise InputError(f"{path or 'config'}: required keys not set: {sorted(missing)}")
    conf: Config = OmegaConf.to_object(cfg)
    _check(conf, str(path or "config"))
    return _absolute_paths(conf)


def _omegaconf_message(e: Exception) -> str:
    """OmegaConf's (or PyYAML's) error as one line that names the key:
    `train.epochs: Value 'many' ... Integer`, `while parsing a flow sequence: expected ',' or ']'`."""
    if getattr(e, "problem", None):  # PyYAML: where it was, then what it found
        first = ": ".join(x for x in (getattr(e, "context", None), e.problem) if x)
    else:
        first = str(getattr(e, "msg", None) or e).splitlines()[0]
    key = getattr(e, "full_key", None)
    return f"{key}: {first}" if key else first


# What the types alone do not say: the smallest value each number may take (unset optional values
# are not checked; a learning rate of 0 freezes, a temperature of 0 would divide by zero).
AT_LEAST = {
    "loss.gamma": 0, "train.epochs": 1, "train.batch_size": 1, "train.grad_accum": 1, "train.eval_batch_size": 1,
    "train.encoder_lr": 0, "train.head_lr": 0, "train.weight_decay": 0, "train.warmup_ratio": 0,
    "train.patience": 0, "train.max_steps": 0, "scale.num_workers": 1, "scale.cpus_per_worker": 0,
    "model.max_length": 8, "model.emb_size": 1, "model.block_size": 1, "model.bilinear_chunk": 1,
    "model.axial_layers": 0, "model.axial_heads": 1, "model.pair_dim": 0, "model.num_labels": -1,
    "distill.weight": 0, "pipeline.pretrain_epochs": 1, "pipeline.pretrain_encoder_lr": 0,
    "pipeline.pretrain_head_lr": 0, "pipeline.finetune_epochs": 1, "pipeline.finetune_encoder_lr": 0,
    "pipeline.finetune_head_lr": 0, "pipeline.student_workers": 1, "pipeline.rows_per_shard": 1,
    "pipeline.window": 1, "soft_labels.pool_size": 1, "soft_labels.batch_size": 1, "data.train.start": 0,
    "data.dev.start": 0, "data.test.start": 0, "sweep.num_samples": 1, "sweep.grace_period": 1,
    "sweep.reduction_factor": 2, "sweep.max_concurrent_trials": 0, "scale.max_failures": -1,
}
ABOVE = {"train.adam_eps": 0, "train.max_grad_norm": 0, "distill.temperature": 0}
AT_MOST = {"train.warmup_ratio": 1}


def _check(conf: Config, where: str) -> None:
    """What the types alone do not say: each number in its range, consistent model sizes."""
    flat = flatten(to_dict(conf))
    for bound, ok, say in ((AT_LEAST, lambda v, b: v >= b, ">="), (ABOVE, lambda v, b: v > b, ">"),
                           (AT_MOST, lambda v, b: v <= b, "<=")):
        for key, limit in bound.items():
            value = flat.get(key)
            if value is not None and not ok(value, limit):
                raise InputError(f"{key}={value!r} must be {say} {limit}", path=where)
    p = conf.pipeline
    for strategy, file, keys in (
            (conf.train.strategy, conf.train.deepspeed_config, ("train.strategy", "train.deepspeed_config")),
            (p.student_strategy, p.student_deepspeed_config or conf.train.deepspeed_config,
             ("pipeline.student_strategy", "pipeline.student_deepspeed_config"))):
        if strategy == StrategyName.deepspeed and not file:
            raise InputError(f"{keys[0]}=deepspeed needs a DeepSpeed JSON file: set {keys[1]} "
                             "(e.g. configs/deepspeed/zero2.json)", path=where)
    for key, value in flat.items():
        if isinstance(value, float) and not math.isfinite(value):
            raise InputError(f"{key}={value!r} must be a finite number", path=where)
    for split in ("train", "dev", "test"):
        src = getattr(conf.data, split)
        if src is not None and src.end is not None and src.end <= src.start:
            raise InputError(f"data.{split}.end={src.end} must be above data.{split}.start={src.start} "
                             "(documents [start, end) in file order; leave end unset for all)", path=where)
    if conf.distill.teacher and conf.distill.kd == KD.none:
        raise InputError("distill.teacher is set but distill.kd=none: choose mse or kl, or drop the teacher",
                         path=where)
    m = conf.model
    if m.num_labels == 0:
        raise InputError("model.num_labels=0 must be -1 (no limit) or >= 1", path=where)
    if not 0 <= m.chunk_overlap < m.max_length - 2:
        raise InputError(f"{where}: model.chunk_overlap={m.chunk_overlap} must be in [0, "
                         f"model.max_length - 2 = {m.max_length - 2})")
    if m.emb_size % m.block_size:  # bilinear_chunk >= 1 is in AT_LEAST
        raise InputError(f"{where}: model.emb_size={m.emb_size} must be a multiple of "
                         f"model.block_size={m.block_size}")


def with_values(conf: Config, values: dict[str, Any], where: str = "override") -> Config:
    """A copy of `conf` with dotted keys set (a sweep trial's values), type-checked and
    validated like the config file itself: an unknown key or a wrong type fails here."""
    cfg = OmegaConf.structured(conf)
    for key, value in values.items():
        if OmegaConf.select(cfg, key, throw_on_missing=False, default=_ABSENT) is _ABSENT:
            raise InputError(f"{where}: {key} is not a config key")
        try:
            OmegaConf.update(cfg, key, value, merge=isinstance(value, dict))  # a dict sets some keys of a section
        except Exception as e:  # OmegaConf names the type problem
            raise InputError(f"{key}={value!r}: {_omegaconf_message(e)}", path=where) from None
    out: Config = OmegaConf.to_object(cfg)
    _check(out, where)
    return out


_ABSENT = object()


def _yaml_chain(path: Path) -> list[tuple[Path, Any]]:
    """A config may start with `extends: base.yaml` (relative to itself): variants of one setup
    then state only what differs, and every shared fact lives in the base file. Returns each
    file of the chain, base first, with its content (each file is read once)."""
    chain = [(path, _read_yaml(path))]
    while True:
        current, data = chain[0]
        parent = data.get("extends")
        if not parent:
            break
        parent_path = (current.parent / str(parent)).resolve()
        if parent_path in [p for p, _ in chain]:
            raise InputError(f"circular 'extends: {parent}'", path=current)
        if not parent_path.is_file():
            raise InputError(f"extends: {parent}: no such file ({parent_path})", path=current)
        chain.insert(0, (parent_path, _read_yaml(parent_path)))
    return chain


def _read_yaml(path: Path):
    """One YAML config file as an OmegaConf mapping; anything else is an InputError naming it."""
    if not path.is_file():
        raise InputError("no such config file" if not path.exists() else "not a file", path=path)
    try:
        cfg = OmegaConf.load(path)
    except Exception as e:  # PyYAML's words, with the line; OmegaConf's first line
        mark = getattr(e, "problem_mark", None)
        said = (f"{getattr(e, 'problem', None) or e} at line {mark.line + 1}, column {mark.column + 1}" if mark
                else _omegaconf_message(e))
        raise InputError(f"not a YAML config: {said}", path=path) from None
    if not OmegaConf.is_dict(cfg):
        raise InputError(f"expected a mapping of config sections (name:, data:, train: ...), got a "
                         f"{type(OmegaConf.to_container(cfg)).__name__}", path=path)
    return cfg


def _section_of(cls: type, name: str) -> type | None:
    """The dataclass a field of `cls` holds (a config section), or None for a plain value."""
    hint = typing.get_type_hints(cls)[name]
    return next((t for t in (typing.get_args(hint) if isinstance(hint, types.UnionType) else (hint,))
                 if dataclasses.is_dataclass(t)), None)


def _path_keys(cls: type, prefix: str = "") -> tuple[str, ...]:
    """The dotted names of the fields declared with `path_field`, in declaration order."""
    out = []
    for f in dataclasses.fields(cls):
        if f.metadata.get("path"):
            out.append(prefix + f.name)
        section = _section_of(cls, f.name)
        if section is not None:
            out.extend(_path_keys(section, f"{prefix}{f.name}."))
    return tuple(out)


def _names_section(key: str) -> bool:
    """Whether a dotted key names a whole config section (`data.train`), not a value."""
    cls: type | None = Config
    for name in key.split("."):
        if cls is None or name not in {f.name for f in dataclasses.fields(cls)}:
            return False
        cls = _section_of(cls, name)
    return cls is not None


def _value_for_section(data: Any, cls: type = None, prefix: str = "") -> str | None:
    """The dotted key where `data` (a config file's mapping) gives a plain value for a whole
    section (`data: {train: x.json}` for `data.train: {path: x.json}`), which OmegaConf's merge
    error does not name."""
    cls = cls or Config
    names = {f.name for f in dataclasses.fields(cls)}
    for name, value in (data.items() if isinstance(data, dict) else ()):
        section = _section_of(cls, name) if name in names else None
        if section is None or value is None:
            continue
        if not isinstance(value, dict):
            return prefix + name
        inner = _value_for_section(value, section, f"{prefix}{name}.")
        if inner:
            return inner
    return None


PATH_KEYS = _path_keys(Config)


def path_values(conf: Config) -> dict[str, str]:
    """The set values of PATH_KEYS (a missing dev or test split has none)."""
    flat = flatten(to_dict(conf))
    return {k: flat[k] for k in PATH_KEYS if flat.get(k)}


def missing_paths(conf: Config) -> list[str]:
    """`key=value` of each set path key whose file or folder is not there (checked through
    storage, so an object-store URI is looked up in its store)."""
    return [f"{k}={v}" for k, v in path_values(conf).items() if not location(v).exists()]


def _absolute_paths(conf: Config) -> Config:
    """Ray workers run in other directories: resolve paths against the caller's cwd now.
    Folders in an object store (output_dir=s3://bucket/runs) stay URIs."""
    cfg = OmegaConf.structured(conf)
    for key, value in path_values(conf).items():
        OmegaConf.update(cfg, key, resolve(value))
    out: Config = OmegaConf.to_object(cfg)
    out.output_dir = resolve(out.output_dir)
    return out


def to_dict(conf: Config) -> dict[str, Any]:
    return OmegaConf.to_container(OmegaConf.structured(conf), resolve=True, enum_to_str=True)


def from_dict(d: dict[str, Any]) -> Config:
    return OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(Config), d))


def to_yaml(conf: Config) -> str:
    """The resolved config: `extends` is dropped, since its layers are already merged in."""
    cfg = OmegaConf.structured(conf)
    cfg.extends = None
    return OmegaConf.to_yaml(cfg)


def read_resolved(path: str | os.PathLike) -> Config:
    """A run folder's config.yaml, as written by `to_yaml` (older ones still name their `extends`)."""
    try:
        d = OmegaConf.to_container(OmegaConf.create(location(path).read_text()))  # local or in an object store
        if not isinstance(d, dict):
            raise ValueError(f"expected a mapping of config sections, got a {type(d).__name__}")
        d.pop("extends", None)
        return from_dict(d)  # a missing mandatory value fails here too
    except InputError:
        raise
    except Exception as e:  # PyYAML's or OmegaConf's words
        raise InputError(f"not a resolved kddocre config: {_omegaconf_message(e)}", path=path) from None

