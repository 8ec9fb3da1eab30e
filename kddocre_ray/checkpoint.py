"""A model folder that reloads anywhere: weights, encoder config, tokenizer, schema and config.

The encoder's architecture and tokenizer are saved beside the weights, so a checkpoint does not
depend on the folder or package the encoder first came from. Loading is strict: a missing or
unexpected weight is an error, never a silently random layer.
"""
from __future__ import annotations

import json
import pickle
from pathlib import Path

import torch

from . import layout
from .config import Config, ModelConfig, from_dict, to_dict
from .data.docred import RelSchema
from .errors import InputError
from .model.docre import DocREModel
from .storage import check_files, file_record, files_under, local_copy, location, read_json, write_json

WEIGHTS, CONFIG, SCHEMA, ENCODER = "model.pt", "config.json", "relations.json", "encoder"
SAFE_WEIGHTS = "model.safetensors"  # an exported model's weights (export.py): tensors only, no pickle
CHECKSUMS = "checksums.json"  # size and sha256 of every file save_model wrote, recorded as it wrote them


def resolve_checkpoint(path: str | Path) -> Path:
    """A checkpoint folder, a run folder (its `checkpoint/`), or a folder whose `model.json`
    names the model it stands for (a pipeline's run folder names its fine-tuned model's), as a
    local folder (one in an object store is copied to this node's cache first)."""
    path = location(path)
    if (path / layout.MODEL).is_file():
        file = path / layout.MODEL
        pointer = read_json(file)
        if not (isinstance(pointer, dict) and isinstance(pointer.get("checkpoint"), str)):
            raise InputError('expected {"checkpoint": "the folder of the model this folder stands for"}', path=file)
        path = location(pointer["checkpoint"])
        if not path.exists():
            raise InputError(f"names the checkpoint {path}, which is not there", path=file)
    return local_copy(path / layout.CHECKPOINT if (path / layout.CHECKPOINT).is_dir() else path)


def point_to(folder: str | Path, checkpoint: str | Path) -> None:
    """Make `folder` stand for the model in `checkpoint` (`resolve_checkpoint(folder)` finds it)."""
    write_json({"checkpoint": str(checkpoint)}, location(folder) / layout.MODEL, indent=2)


def weights_name(path: str | Path) -> str:
    """The weights file of a checkpoint folder: an exported model's safetensors, else model.pt."""
    return SAFE_WEIGHTS if (Path(path) / SAFE_WEIGHTS).exists() else WEIGHTS


def save_model(path: str | Path, model: torch.nn.Module, conf: Config, schema: RelSchema, tokenizer,
               state_dict: dict | None = None, weights: str = WEIGHTS) -> None:
    """`state_dict` overrides the model's own (e.g. fp32 weights gathered from a ZeRO-3 engine);
    `weights`: WEIGHTS (torch's format, what training writes) or SAFE_WEIGHTS (safetensors)."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    state = state_dict if state_dict is not None else model.state_dict()
    if weights == SAFE_WEIGHTS:
        from safetensors.torch import save_file

        save_file({k: v.detach().contiguous() for k, v in state.items()}, path / SAFE_WEIGHTS, metadata={"format": "pt"})
    else:
        torch.save(state, path / WEIGHTS)
    model.encoder.config.save_pretrained(path / ENCODER)
    tokenizer.save_pretrained(path / ENCODER)
    (path / CONFIG).write_text(json.dumps(to_dict(conf), indent=2))
    (path / SCHEMA).write_text(json.dumps({"relations": list(schema.relations), "names": schema.names}, indent=2))
    files = [weights, CONFIG, SCHEMA, *files_under(path, [ENCODER])]
    (path / CHECKSUMS).write_text(json.dumps(file_record(path, files), indent=2))


def verify(path: str | Path, names: list[str] | None = None) -> int:
    """Check the files of a checkpoint folder (those in `names`, else all) against the sizes and
    digests recorded when it was saved; returns how many were checked (0: a checkpoint from before
    checksums were recorded). A missing, truncated or edited file is an InputError naming it."""
    path = Path(path)
    if not (path / CHECKSUMS).exists():
        return 0
    recorded = read_json(path / CHECKSUMS)
    if not isinstance(recorded, dict) or not all(isinstance(v, dict) and {"size", "sha256"} <= v.keys()
                                                 for v in recorded.values()):
        raise InputError("not a checksum table ({file: {size, sha256}})", path=path / CHECKSUMS)
    unknown = sorted(set(names or ()) - recorded.keys())
    if unknown:
        raise InputError(f"has no entry for {unknown}", path=path / CHECKSUMS)
    wanted = {n: recorded[n] for n in names} if names is not None else recorded
    for name, problem in check_files(path, wanted, digests=True)[:1]:
        raise InputError(f"{problem}, though the checkpoint was saved with it" if problem == "missing" else problem,
                         path=path / name)
    return len(wanted)


def load_model(path: str | Path, device: str | torch.device = "cpu") -> tuple[DocREModel, Config, RelSchema, object]:
    from transformers import AutoConfig, AutoModel, AutoTokenizer

    path = Path(path)
    for name in (weights_name(path), CONFIG, SCHEMA, ENCODER):
        if not (path / name).exists():
            raise InputError(f"not a kddocre checkpoint (no {name})", path=path)
    # every file as it was saved: an edited relations.json would otherwise map each class to another relation
    verify(path)
    conf = read_config(path)
    schema = read_schema(path)
    try:
        tokenizer = AutoTokenizer.from_pretrained(path / ENCODER)
        enc_cfg = AutoConfig.from_pretrained(path / ENCODER)
    except (OSError, ValueError, KeyError, TypeError) as e:  # transformers' words for a damaged config or vocabulary
        raise InputError(f"the encoder's config or tokenizer does not load ({type(e).__name__}: "
                         f"{str(e).splitlines()[0][:200]})", path=path / ENCODER) from None
    encoder = AutoModel.from_config(enc_cfg, attn_implementation="eager")
    model = DocREModel(encoder, conf.model, schema.num_classes, tokenizer.pad_token_id)
    try:
        model.load_state_dict(load_weights(path, verified=True), strict=True)
    except RuntimeError as e:  # another encoder, head size or schema than its config.json / relations.json say
        raise InputError(f"the weights do not fit the model that {CONFIG}, {SCHEMA} and {ENCODER}/ describe "
                         f"({str(e).splitlines()[0][:300]})", path=path / weights_name(path)) from None
    return model.to(device).eval(), conf, schema, tokenizer


def load_weights(path: str | Path, verified: bool = False) -> dict[str, torch.Tensor]:
    """The state dict of a checkpoint folder (tensors only: no pickled objects are loaded),
    checked against its recorded digest unless the caller has `verified` the folder."""
    path = resolve_checkpoint(path)
    name = weights_name(path)
    if not (path / name).exists():
        raise InputError(f"not a kddocre checkpoint (no {WEIGHTS} or {SAFE_WEIGHTS})", path=path)
    if not verified:
        verify(path, [name])
    try:
        if name == SAFE_WEIGHTS:
            from safetensors import SafetensorError
            from safetensors.torch import load_file

            try:
                state = load_file(path / name, device="cpu")
            except SafetensorError as e:
                raise RuntimeError(str(e)) from None
        else:
            state = torch.load(path / name, map_location="cpu", weights_only=True)
    except (RuntimeError, EOFError, pickle.UnpicklingError) as e:  # torch's words for a truncated or edited file
        raise InputError(f"not readable as model weights, truncated or corrupt ({type(e).__name__}: "
                         f"{str(e).splitlines()[0][:200]})", path=path / name) from None
    if not (isinstance(state, dict) and all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items())):
        raise InputError(f"not model weights (a state dict of tensors by name), but a {type(state).__name__}",
                         path=path / name)
    # Checkpoints from before the unused pooler was dropped carry its weights: nothing reads them.
    return {k: v for k, v in state.items() if not k.startswith("encoder.pooler.")}


# What an encoder's weights are shaped by, and what the head's are.
ENCODER_SHAPE = ("model_type", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size",
                 "vocab_size")
HEAD_SHAPE = ("emb_size", "block_size", "axial_layers", "axial_heads", "pair_dim")


def check_fits(path: str | Path, key: str, schema: RelSchema, rel_info: str, model: ModelConfig | None = None) -> None:
    """Refuse, before any work, a checkpoint named by config key `key` that does not fit: another
    relation schema than `rel_info`'s, and with `model` (its weights start this model: init_from)
    another encoder architecture or head size. Both sides are named."""
    from .model.encoder import encoder_config

    folder = resolve_checkpoint(path)
    where = f"{key}={path}"
    for name in (weights_name(folder), CONFIG, SCHEMA, ENCODER):
        if not (folder / name).exists():
            raise InputError(f"not a kddocre checkpoint or run folder (no {name} in {folder})", path=where)
    try:
        verify(folder)  # a truncated or edited file is named here, not in a worker
    except InputError as e:
        raise InputError(str(e), path=where) from None
    theirs = read_schema(folder)
    if theirs != schema:
        only_ckpt = [r for r in theirs.relations if r not in schema.rel2id]
        only_mine = [r for r in schema.relations if r not in theirs.rel2id]
        diff = "; ".join([*([f"only in the checkpoint: {only_ckpt[:5]}"] if only_ckpt else []),
                          *([f"only in data.rel_info: {only_mine[:5]}"] if only_mine else [])]
                         ) or "the same relations in another class order"
        raise InputError(f"made for a schema of {theirs.num_classes - 1} relations, but data.rel_info={rel_info} "
                         f"has {schema.num_classes - 1} ({diff})", path=where)
    if model is None:
        return
    saved_conf = read_config(folder)
    saved = read_json(folder / ENCODER / "config.json")
    if not isinstance(saved, dict):
        raise InputError("expected a JSON object (a transformers config)", path=folder / ENCODER / "config.json")
    mine = encoder_config(model.encoder).to_dict()

    def shape(cfg: dict) -> str:
        return ", ".join(f"{k}={cfg.get(k)}" for k in ENCODER_SHAPE)

    if any(saved.get(k) != mine.get(k) for k in ENCODER_SHAPE):
        raise InputError(f"made with encoder {saved_conf.model.encoder} ({shape(saved)}), but model.encoder="
                         f"{model.encoder} is {shape(mine)}", path=where)
    head = [f"model.{k}: checkpoint {getattr(saved_conf.model, k)}, this config {getattr(model, k)}"
            for k in HEAD_SHAPE if getattr(saved_conf.model, k) != getattr(model, k)]
    if head:
        raise InputError(f"its head has another shape ({'; '.join(head)})", path=where)


def read_schema(path: str | Path) -> RelSchema:
    """A checkpoint's relation schema (relations.json), in class order."""
    file = resolve_checkpoint(path) / SCHEMA
    s = read_json(file)
    relations, names = (s.get("relations"), s.get("names", {})) if isinstance(s, dict) else (None, None)
    if not (isinstance(relations, list) and all(isinstance(r, str) for r in relations) and isinstance(names, dict)):
        raise InputError('expected {"relations": [relation ids in class order], "names": {id: name}}', path=file)
    try:
        return RelSchema(tuple(relations), names, str(file))
    except ValueError as e:  # a reserved or repeated relation id
        raise InputError(str(e), path=file) from None


def read_config(path: str | Path) -> Config:
    """The config a checkpoint was trained with (config.json)."""
    file = Path(path) / CONFIG
    raw = read_json(file)
    try:
        return from_dict(raw)
    except Exception as e:  # OmegaConf's words for an unknown key or a wrong type
        raise InputError(f"not a kddocre config: {str(e).splitlines()[0]}", path=file) from None
