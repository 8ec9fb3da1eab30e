"""One predictor: a model loaded once, run on batches of documents of similar length.

`kddocre predict` / `evaluate`, run scoring, the training loop's dev evaluation and the teacher
actors that write soft labels all predict through this class, so they batch, cast and decode
the same way. Pure torch; knows nothing of Ray.
"""
from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import torch

from .checkpoint import load_model, resolve_checkpoint
from .config import Config
from .data.docred import RelSchema
from .data.features import Feature, doc_features, per_document
from .decode import decode, to_triples
from .precision import autocast, resolve_precision


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


class Predictor:
    def __init__(self, model: torch.nn.Module, conf: Config, schema: RelSchema, tokenizer,
                 precision: str, device: torch.device):
        self.model, self.conf, self.schema, self.tokenizer = model, conf, schema, tokenizer
        self.precision, self.device = precision, device

    @classmethod
    def load(cls, path: str | Path, device: torch.device | None = None, precision: str | None = None) -> Predictor:
        """From a run or checkpoint folder, on `device` (a GPU when there is one), in `precision`
        (default: the run's own setting, resolved for that device)."""
        device = device or default_device()
        model, conf, schema, tokenizer = load_model(resolve_checkpoint(path), device)
        return cls(model, conf, schema, tokenizer, resolve_precision(precision or conf.train.precision, device), device)

    def features(self, docs: list[dict]) -> list[Feature]:
        return [doc_features(d, self.tokenizer, self.schema) for d in docs]

    @torch.no_grad()
    def batches(self, feats: list[Feature]) -> Iterator[tuple[list[int], torch.Tensor]]:
        """(indices into `feats`, their pair logits concatenated) per batch, shortest first."""
        self.model.eval()
        order = sorted(range(len(feats)), key=lambda i: len(feats[i].input_ids))
        size = self.conf.train.eval_batch_size
        for k in range(0, len(order), size):
            idx = order[k:k + size]
            with autocast(self.precision, self.device):
                logits = self.model([feats[i] for i in idx])
            yield idx, logits.float()

    def logits(self, feats: list[Feature]) -> list[torch.Tensor]:
        """Per document, in input order: (n(n-1), C) fp32 logits on the CPU, pairs in `pair_index` order."""
        out: list[torch.Tensor | None] = [None] * len(feats)
        for idx, logits in self.batches(feats):
            for i, part in zip(idx, per_document(logits.cpu(), [feats[i] for i in idx])):
                out[i] = part
        return out

    def decoded(self, feats: list[Feature], min_score: float = 0.0) -> Iterator[tuple[int, torch.Tensor, torch.Tensor]]:
        """Per document, as its batch finishes: (its index in `feats`, the (pair, class) relations kept
        at `min_score` (see `decode`), their scores: logits less the threshold class's, or a BCE
        model's logits), pairs in `pair_index` order."""
        fixed = self.conf.loss.name == "bce"  # a BCE model has no TH class: threshold 0
        for idx, logits in self.batches(feats):
            keep = decode(logits, self.conf.model.num_labels, fixed, min_score)
            score = logits if fixed else logits - logits[:, :1]
            batch = [feats[i] for i in idx]
            yield from zip(idx, per_document(keep, batch), per_document(score, batch))

    def triples_by_doc(self, feats: list[Feature]) -> list[list[dict]]:
        """Predicted relations in DocRED submission format, per document, in input order."""
        out: list[list[dict]] = [[] for _ in feats]
        for i, keep, _ in self.decoded(feats):
            out[i] = to_triples(keep, feats[i], self.schema.id2rel)
        return out

    def triples(self, feats: list[Feature]) -> list[dict]:
        """Predicted relations in DocRED submission format, documents in input order."""
        return [t for doc in self.triples_by_doc(feats) for t in doc]

    def predict_docs(self, docs: list[dict]) -> list[dict]:
        return self.triples(self.features(docs))
