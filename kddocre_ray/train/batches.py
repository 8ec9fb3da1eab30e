"""Where a worker's training batches come from: the loop asks a batch source for one epoch.

A batch is the documents' features, their multi-hot labels and, when a teacher is distilled,
the teacher's logits for the same pairs. The loop never knows which stage it runs or where the
documents live; `InMemoryBatches` holds a split in the worker (annotated data, the in-memory KD
of `kddocre train`), the pipeline's streamed source reads Ray Data shards.
"""
from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

import torch

from ..data.features import Feature, label_matrix, length_grouped_batches
from ..data.rows import features_of, teacher_logits_of
from ..heap import trim


@dataclass
class Batch:
    features: list[Feature]
    labels: torch.Tensor  # (sum of n(n-1), C) multi-hot, pairs in batch order
    teacher: torch.Tensor | None = None  # the teacher's logits for the same rows, fp32

    def __len__(self) -> int:
        return len(self.features)


def make_batch(feats: list[Feature], num_classes: int, teacher: list[torch.Tensor] | None = None) -> Batch:
    labels = torch.cat([label_matrix(f, num_classes) for f in feats])
    return Batch(feats, labels, torch.cat(teacher).float() if teacher is not None else None)


class InMemoryBatches:
    """Length-grouped batches of a split held in memory, reshuffled each epoch; every rank
    takes the same number of batches (the leftover ones of an epoch are dropped when world > 1)."""

    def __init__(self, feats: list[Feature], num_classes: int, batch_size: int, seed: int,
                 rank: int = 0, world: int = 1, teacher: list[torch.Tensor] | None = None):
        if teacher is not None and len(teacher) != len(feats):
            raise ValueError(f"{len(teacher)} teacher logit tables for {len(feats)} documents")
        self.feats, self.teacher, self.num_classes = feats, teacher, num_classes
        self.batch_size, self.seed, self.rank, self.world = batch_size, seed, rank, world

    def __len__(self) -> int:
        """Batches per epoch on this rank."""
        return max(1, math.ceil(len(self.feats) / self.batch_size) // self.world)

    def epoch(self, epoch: int) -> Iterator[Batch]:
        batches = length_grouped_batches([len(f.input_ids) for f in self.feats], self.batch_size, self.seed + epoch)
        if self.world > 1:
            batches = batches[: len(batches) - len(batches) % self.world][self.rank::self.world]
        for idx in batches:
            teacher = [self.teacher[i] for i in idx] if self.teacher is not None else None
            yield make_batch([self.feats[i] for i in idx], self.num_classes, teacher)


class StreamedBatches:
    """Batches from this worker's Ray Data shard (`ray.train.get_dataset_shard`) of Parquet rows
    (data/rows.py), so that no process holds the corpus: rows arrive `window` at a time,
    shuffled within a buffer with a seed per epoch, and each window is cut into length-grouped
    batches. Ray Train splits the dataset with `streaming_split(equal=True)`, so every rank gets
    `rows // world` rows (the leftover ones are dropped) and takes the same number of steps.
    A killed run resumes at the start of the epoch it was in (a stream has no position to return to).
    """

    def __init__(self, shard, rows: int, num_classes: int, batch_size: int, seed: int, window: int,
                 world: int = 1, with_teacher: bool = False):
        self.shard, self.num_classes, self.batch_size, self.seed = shard, num_classes, batch_size, seed
        self.window, self.with_teacher = max(window, batch_size), with_teacher
        self.rows = rows // world

    def __len__(self) -> int:
        full, rest = divmod(self.rows, self.window)
        return full * math.ceil(self.window / self.batch_size) + math.ceil(rest / self.batch_size)

    def epoch(self, epoch: int) -> Iterator[Batch]:
        seed = self.seed + epoch
        for w, table in enumerate(self.shard.iter_batches(batch_size=self.window, batch_format="pyarrow",
                                                          local_shuffle_buffer_size=self.window,
                                                          local_shuffle_seed=seed)):
            feats = features_of(table)
            teacher = teacher_logits_of(table, self.num_classes) if self.with_teacher else None
            for idx in length_grouped_batches([len(f.input_ids) for f in feats], self.batch_size, seed * 7919 + w):
                yield make_batch([feats[i] for i in idx], self.num_classes,
                                 [teacher[i] for i in idx] if teacher is not None else None)
                trim()  # the step on the last batch is over: its memory goes back (heap.py)
