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
from .config import Config, from_dict, to_dict
from .data.docred import RelSchema
from .errors import InputError
from .model.docre import DocREModel
from .storage import check_files, file_record, files_under, local_copy, location, read_json, write_json

WEIGHTS, CONFIG, SCHEMA, ENCODER = "model.pt", "config.json", "relations.json", "encoder"
CHECKSUMS = "checksums.json"  # size and sha256 of every file save_model wrote, recorded as it wrote them


def resolve_checkpoint(path: str | Path) -> Path:
    """A checkpoint folder, a run folder (its `checkpoint/`), or a folder whose `model.json`
    names the model it stands for (a pipeline's run folder names its fine-tuned model's), as a
    local folder (one in an object store is copied to this node's cache first)."""
    path = location(path)
    if (path / layout.MODEL).is_file():
        path = location(read_json(path / layout.MODEL)["checkpoint"])
    return local_copy(path / layout.CHECKPOINT if (path / layout.CHECKPOINT).is_dir() else path)


def point_to(folder: str | Path, checkpoint: str | Path) -> None:
    """Make `folder` stand for the model in `checkpoint` (`resolve_checkpoint(folder)` finds it)."""
    write_json({"checkpoint": str(checkpoint)}, location(folder) / layout.MODEL, indent=2)


def save_model(path: str | Path, model: torch.nn.Module, conf: Config, schema: RelSchema, tokenizer,
               state_dict: dict | None = None) -> None:
    """`state_dict` overrides the model's own (e.g. fp32 weights gathered from a ZeRO-3 engine)."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    torch.save(state_dict if state_dict is not None else model.state_dict(), path / WEIGHTS)
    model.encoder.config.save_pretrained(path / ENCODER)
    tokenizer.save_pretrained(path / ENCODER)
    (path / CONFIG).write_text(json.dumps(to_dict(conf), indent=2))
    (path / SCHEMA).write_text(json.dumps({"relations": list(schema.relations), "names": schema.names}, indent=2))
    files = [WEIGHTS, CONFIG, SCHEMA, *files_under(path, [ENCODER])]
    (path / CHECKSUMS).write_text(json.dumps(file_record(path, files), indent=2))


def verify(path: str | Path, names: list[str] | None = None) -> int:
    """Check the files of a checkpoint folder (those in `names`, else all) against the sizes and
    digests recorded when it was saved; returns how many were checked (0: a checkpoint from before
    checksums were recorded). A missing, truncated or edited file is an InputError naming it."""
    path = Path(path)
    if not (path / CHECKSUMS).is_file():
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
    for name in (WEIGHTS, CONFIG, SCHEMA, ENCODER):
        if not (path / name).exists():
            raise InputError(f"not a kddocre checkpoint (no {name})", path=path)
    conf = from_dict(json.loads((path / CONFIG).read_text()))
    schema = read_schema(path)
    tokenizer = AutoTokenizer.from_pretrained(path / ENCODER)
    enc_cfg = AutoConfig.from_pretrained(path / ENCODER)
    encoder = AutoModel.from_config(enc_cfg, attn_implementation="eager")
    model = DocREModel(encoder, conf.model, schema.num_classes, tokenizer.pad_token_id)
    try:
        model.load_state_dict(load_weights(path), strict=True)
    except RuntimeError as e:  # another encoder, head size or schema than its config.json / relations.json say
        raise InputError(f"the weights do not fit the model that {CONFIG}, {SCHEMA} and {ENCODER}/ describe "
                         f"({str(e).splitlines()[0][:300]})", path=path / WEIGHTS) from None
    return model.to(device).eval(), conf, schema, tokenizer


def load_weights(path: str | Path) -> dict[str, torch.Tensor]:
    """The state dict of a checkpoint folder (tensors only: no pickled objects are loaded)."""
    path = resolve_checkpoint(path)
    if not (path / WEIGHTS).exists():
        raise InputError(f"not a kddocre checkpoint (no {WEIGHTS})", path=path)
    verify(path, [WEIGHTS])
    try:
        state = torch.load(path / WEIGHTS, map_location="cpu", weights_only=True)
    except (RuntimeError, EOFError, pickle.UnpicklingError) as e:  # torch's words for a truncated or edited file
        raise InputError(f"not readable as model weights, truncated or corrupt ({type(e).__name__}: "
                         f"{str(e).splitlines()[0][:200]})", path=path / WEIGHTS) from None
    # Checkpoints from before the unused pooler was dropped carry its weights: nothing reads them.
    return {k: v for k, v in state.items() if not k.startswith("encoder.pooler.")}


def read_schema(path: str | Path) -> RelSchema:
    s = json.loads((resolve_checkpoint(path) / SCHEMA).read_text())
    return RelSchema(tuple(s["relations"]), s.get("names", {}))
