"""What makes two runs the same: the result-changing config values, file contents, code version.

One list (`NOT_RESULT_KEYS`, everything else counts) drives both the refusal of a resume whose
config changed and, in the pipeline, which stages rerun. Paths never enter a fingerprint: a path
is replaced by a digest of the file (or folder) it names, because under `ray job submit` the
working directory, and so every absolute path, changes with each submission.
"""
from __future__ import annotations

import hashlib
import json
import os
from functools import lru_cache
from pathlib import Path
from typing import Any

from . import layout
from .config import PATH_KEYS, Config, flatten, to_dict
from .errors import InputError
from .storage import RemotePath, local_copy, location, read_json, sha256_file

# Keys that name where things go or how fast they run, never what a run computes. The worker
# count is not here: it changes the global batch.
NOT_RESULT_KEYS = frozenset({
    "extends", "name", "output_dir", "scale.ray_address", "scale.cpus_per_worker", "scale.max_failures",
    "scale.verbose",
    "train.eval_batch_size",
    "model.bilinear_chunk", "pipeline.rows_per_shard", "tracking.enabled", "tracking.experiment",
    "tracking.log_model", "tracking.model_name",
})
# Sections that change no result: how the soft labels are computed (speed only), and how runs are
# organized (a sweep's teacher is the same stage as a pipeline's teacher with the same values).
NOT_RESULT_SECTIONS = ("soft_labels.", "sweep.")
_PACKAGE = Path(__file__).resolve().parent


def digest(obj: Any) -> str:
    """A short stable hash of JSON-able data."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


def path_digest(path: str | os.PathLike) -> str:
    """Digest of a file's bytes, or of a folder's files (names relative to it, and contents).

    A finished pipeline stage is its manifest's fingerprint, and a run folder is its exported
    checkpoint: neither is read whole (soft labels and Ray Train's checkpoints are large). In an
    object store, a folder is digested from its node-local copy (storage.local_copy)."""
    p = location(path)
    if (p / layout.MANIFEST).is_file():
        manifest = read_json(p / layout.MANIFEST)
        if not (isinstance(manifest, dict) and isinstance(manifest.get("fingerprint"), str)):
            raise InputError("no fingerprint: not the manifest of a pipeline stage", path=p / layout.MANIFEST)
        return manifest["fingerprint"]
    if (p / layout.CHECKPOINT).is_dir():
        p = p / layout.CHECKPOINT
    if isinstance(p, RemotePath):
        if p.is_file():
            return hashlib.sha256(p.read_bytes()).hexdigest()[:16]
        p = local_copy(p)  # raises FileNotFoundError if there is nothing there
    if p.is_dir():
        files = sorted(f for f in p.rglob("*") if f.is_file())
        return digest([(str(f.relative_to(p)), _file_digest(str(f), *_stamp(f))) for f in files])
    if not p.exists():
        raise FileNotFoundError(f"{p}: no such file or folder")
    return _file_digest(str(p), *_stamp(p))


def _stamp(p: Path) -> tuple[int, int]:
    st = p.stat()
    return st.st_size, st.st_mtime_ns


@lru_cache(maxsize=256)
def _file_digest(path: str, size: int, mtime_ns: int) -> str:
    """Cached by (path, size, mtime): a large corpus is read once per process."""
    return sha256_file(path)[:16]


def result_values(conf: Config, exclude: tuple[str, ...] = ()) -> dict[str, Any]:
    """The config as dotted keys, without NOT_RESULT_KEYS (and `exclude`), paths replaced by
    content digests."""
    values = {k: v for k, v in flatten(to_dict(conf)).items()
              if k not in NOT_RESULT_KEYS and k not in exclude and not k.startswith(NOT_RESULT_SECTIONS)}
    for key in PATH_KEYS:
        if values.get(key):
            values[key] = "sha256:" + path_digest(values[key])
    return values


def changed_keys(before: dict[str, Any], after: dict[str, Any]) -> list[str]:
    """'key: old -> new' for every key whose value differs (or exists on one side only)."""
    keys = sorted(set(before) | set(after))
    return [f"{k}: {before.get(k)!r} -> {after.get(k)!r}" for k in keys if before.get(k) != after.get(k)]


@lru_cache(maxsize=1)
def code_version() -> str:
    """Hash of the package's Python sources: a README or test commit does not change it, a code
    change does (the git commit would retrain a teacher for a typo in the docs)."""
    files = sorted(_PACKAGE.rglob("*.py"))
    return digest([(str(f.relative_to(_PACKAGE)), hashlib.sha256(f.read_bytes()).hexdigest()) for f in files])
