"""Ingest and soft labels through Ray Data on a local cluster, with a random tiny teacher: the
Parquet rows hold exactly one logit vector per (document, ordered entity pair) of the corpus,
equal to the teacher's logits computed directly, to float16 precision."""
import json
import os
import signal
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import torch

from conftest import REPO, SAMPLE, TINY
from kddocre_ray.config import load_config
from kddocre_ray.data.docred import load_schema
from kddocre_ray.data.rows import FEATURE_SCHEMA, SOFT_LABEL_SCHEMA, teacher_logits_of
from kddocre_ray.errors import InputError
from kddocre_ray.pipeline.soft_labels import TeacherLogits


class NotingTeacher(TeacherLogits):
    """The stage's actor, noting the priority (niceness) its process runs at and the rows it took."""

    def __init__(self, checkpoint: str, threads: int, notes: str):
        super().__init__(checkpoint, threads)
        self.notes = Path(notes)
        (self.notes / f"{os.getpid()}.nice").write_text(str(os.nice(0)))

    def __call__(self, table):
        with open(self.notes / f"{os.getpid()}.rows", "a") as f:
            f.write(f"{table.num_rows}\n")
        return super().__call__(table)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """The shipped distant sample plus a one-entity document (no pairs) and a broken one."""
    docs = json.loads((SAMPLE / "distant.json").read_text())[:10]
    lonely = {**docs[0], "title": "lonely", "vertexSet": docs[0]["vertexSet"][:1], "labels": []}
    broken = {**docs[1], "title": "broken", "vertexSet": [[{"name": "x", "pos": [0, 99], "sent_id": 0, "type": "PER"}]] * 2}
    path = tmp_path_factory.mktemp("corpus") / "distant.json"
    path.write_text(json.dumps(docs[:4] + [lonely] + docs[4:7] + [broken] + docs[7:]))
    return path, docs


@pytest.fixture(scope="module")
def teacher(tmp_path_factory):
    from kddocre_ray.checkpoint import save_model
    from kddocre_ray.model.docre import build_model
    from kddocre_ray.model.encoder import load_tokenizer

    conf = load_config(REPO / "configs" / "tiny.yaml", [*TINY, "train.precision=fp32", "model.axial_layers=1"])
    schema, tokenizer = load_schema(conf.data.rel_info), load_tokenizer(conf.model.encoder)
    path = tmp_path_factory.mktemp("teacher")
    save_model(path, build_model(conf.model, schema, tokenizer, seed=3), conf, schema, tokenizer)
    return path


@pytest.fixture(scope="module")
def soft(corpus, teacher, tmp_path_factory):
    import ray

    from kddocre_ray.pipeline.ingest import ingest_corpus
    from kddocre_ray.pipeline.soft_labels import PoolOptions, write_soft_labels

    out = tmp_path_factory.mktemp("stages")
    schema = load_schema(SAMPLE / "rel_info.json")
    notes = out / "actors"
    notes.mkdir()
    ray.init()  # the session's cluster of 2 CPUs (conftest.ray_head)
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # workers do not import tests/
    context = ray.data.DataContext.get_current()
    context.wait_for_min_actors_s = 120  # both actors loaded before the first batch: no race for the work
    try:
        ingest = ingest_corpus(str(corpus[0]), schema, "tiny-random", out / "rows", skip_bad=True, rows_per_shard=16)
        # A pool of 2 on 2 CPUs (a pool holding every CPU hangs Ray Data: soft_labels.actor_cpus),
        # with Ray Data's own block size, under which the one shard is read as one block.
        stats = write_soft_labels(out / "rows", teacher, out / "soft", pool_size=2, use_gpu=False, threads=1,
                                  batch_size=3, options=PoolOptions(block_bytes=None, actor=NotingTeacher,
                                                                    actor_kwargs={"notes": str(notes)}))
    finally:
        context.wait_for_min_actors_s = -1
        ray.shutdown()
    return ingest, stats, out


def test_ingest_counts_and_keys(soft, corpus):
    ingest, _, out = soft
    assert (ingest["documents"], ingest["bad_documents"], ingest["no_pair_documents"], ingest["rows"]) == (12, 1, 1, 10)
    assert ingest["shards"] == 1 and len(list((out / "rows").glob("*.parquet"))) == 1  # one shard: one block to share
    table = pq.read_table(out / "rows")
    assert table.schema.equals(FEATURE_SCHEMA)
    # file order 0-3 kept, 4 (one entity) dropped, 5-7 kept, 8 (broken) skipped, 9-11 kept
    assert sorted(table.column("doc_index").to_pylist()) == [0, 1, 2, 3, 5, 6, 7, 9, 10, 11]
    assert set(table.column("corpus").to_pylist()) == {ingest["corpus"]}


def test_soft_labels_equal_the_teachers_logits(soft, corpus, teacher):
    from kddocre_ray.inference import Predictor

    _, stats, out = soft
    table = pq.read_table(out / "soft")
    assert table.schema.equals(SOFT_LABEL_SCHEMA)
    assert stats["documents"] == table.num_rows == 10
    file_index = {0: 0, 1: 1, 2: 2, 3: 3, 5: 4, 6: 5, 7: 6, 9: 7, 10: 8, 11: 9}  # doc_index -> docs[k]
    docs = corpus[1]
    predictor = Predictor.load(teacher, torch.device("cpu"), "fp32")
    expected = predictor.logits(predictor.features(docs))
    stored = teacher_logits_of(table, predictor.schema.num_classes)
    assert stats["pairs"] == sum(e.shape[0] for e in expected)
    for doc_index, got in zip(table.column("doc_index").to_pylist(), stored):
        want = expected[file_index[doc_index]]
        assert got.shape == want.shape  # one C-vector per ordered entity pair
        torch.testing.assert_close(got, want.half().float(), rtol=2e-3, atol=2e-3)
    assert stats["bytes_per_document"] > 0


def test_a_pool_of_two_on_two_cpus_finishes_and_shares_the_batches(soft):
    """Ray Data starts its actors first: had they reserved both CPUs, its read tasks would never
    run. And the corpus is one shard, which Ray Data reads as one block, one actor's task: the
    stage cuts the rows into blocks of one batch, so both actors take batches (of at most 3 rows)."""
    _, _, out = soft
    rows = {f.stem: [int(x) for x in f.read_text().split()] for f in (out / "actors").glob("*.rows")}
    assert len(rows) == 2 and all(rows.values())
    assert sum(sum(r) for r in rows.values()) == 10 and max(max(r) for r in rows.values()) <= 3


def test_actors_reserve_at_most_one_cpu_and_leave_one_for_ray_data():
    from kddocre_ray.pipeline.soft_labels import actor_cpus

    assert actor_cpus(1, 2) == 1.0 and actor_cpus(4, 64) == 1.0  # one each where the cluster has room
    assert actor_cpus(2, 2) == 0.5 and actor_cpus(4, 4) == 0.75  # the pool shares all but one CPU
    assert actor_cpus(1, 1) == 0.0 and actor_cpus(2, 0) == 0.0  # a one-CPU (or GPU-only) cluster


def test_teacher_actors_run_at_the_drivers_priority_not_rays_nice_15(soft):
    """Ray lowers its workers' priority by 15; a teacher actor at that priority loses its threads to
    every wake-up of Ray's own processes (soft_labels.ACTOR_ENV)."""
    _, _, out = soft
    niceness = [int(f.read_text()) for f in (out / "actors").glob("*.nice")]
    assert niceness and set(niceness) == {os.nice(0)}


def assert_same_soft_labels(got_dir: Path, want_dir: Path, documents: int) -> None:
    """Every (corpus, doc_index) of `want_dir` written once in `got_dir`, with its logits, and the
    stage's count of documents agreeing."""
    schema = load_schema(SAMPLE / "rel_info.json")

    def by_key(table):
        keys = list(zip(table.column("corpus").to_pylist(), table.column("doc_index").to_pylist()))
        assert len(set(keys)) == len(keys)  # no row twice
        return dict(zip(keys, teacher_logits_of(table, schema.num_classes)))

    got, want = by_key(pq.read_table(got_dir)), by_key(pq.read_table(want_dir))
    assert got.keys() == want.keys() and documents == len(want)
    for key in want:
        torch.testing.assert_close(got[key], want[key], rtol=2e-3, atol=2e-3)


class DyingTeacher(TeacherLogits):
    """The stage's actor, SIGKILLing its own process in its second batch once per test (a marker
    file says it did), as a preempted node or the OOM killer would: mid-corpus, batch in hand."""

    def __init__(self, checkpoint: str, threads: int, marker: str):
        super().__init__(checkpoint, threads)
        self.marker, self.calls = Path(marker), 0

    def __call__(self, table):
        self.calls += 1
        if self.calls == 2 and not self.marker.exists():
            self.marker.write_text(str(os.getpid()))
            os.kill(os.getpid(), signal.SIGKILL)
        return super().__call__(table)


@pytest.mark.parametrize("pool", [1, 2])
def test_a_teacher_actor_killed_mid_corpus_costs_a_retry_not_a_row(soft, teacher, tmp_path, pool):
    """Ray restarts the actor and Ray Data retries its batch: every (corpus, doc_index) is written
    exactly once, with the logits of the uninterrupted run (`soft`), whether the pool had one
    actor or two."""
    import ray

    from kddocre_ray.pipeline.soft_labels import PoolOptions, write_soft_labels

    _, _, out = soft
    marker = tmp_path / "killed"
    ray.init()
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    try:
        stats = write_soft_labels(out / "rows", teacher, tmp_path / "soft", pool_size=pool, use_gpu=False, threads=1,
                                  batch_size=3, options=PoolOptions(block_bytes=None, actor=DyingTeacher,
                                                                    actor_kwargs={"marker": str(marker)}))
    finally:
        ray.shutdown()
    assert marker.exists()  # an actor did die mid-corpus
    assert_same_soft_labels(tmp_path / "soft", out / "soft", stats["documents"])


def test_a_row_whose_logits_disagree_with_its_entities_is_named(soft):
    _, _, out = soft
    table = pq.read_table(out / "soft").slice(0, 1)
    with pytest.raises(InputError, match=r"^soft labels: document \d+ \(.*\): teacher_logits: \d+ values, expected n\(n-1\)C"):
        teacher_logits_of(table, 50)


def test_streamed_batches_give_every_rank_the_same_steps_and_every_row_once():
    """Two ranks read one Ray Data stream split with equal=True (as Ray Train splits it): 25 rows
    each, windows of 16 + 9 rows in batches of 4 -> 4 + 3 = 7 steps on both ranks, as
    `len(source)` predicted for the schedule; every row is seen once per epoch, in an order that
    changes with the epoch."""
    import threading

    import ray

    from kddocre_ray.data.features import Feature
    from kddocre_ray.data.rows import feature_table
    from kddocre_ray.train.batches import StreamedBatches

    feats = [Feature(f"d{i}", list(range(5 + i % 7)), [[1], [2]], [(0, 1, 1)]) for i in range(50)]
    ray.init()  # the session's cluster of 2 CPUs (conftest.ray_head)
    try:
        shards = ray.data.from_arrow(feature_table(feats, "c", list(range(50)))).streaming_split(2, equal=True)
        seen = {}

        def consume(rank: int) -> None:
            source = StreamedBatches(shards[rank], 50, 3, batch_size=4, seed=0, window=16, world=2)
            seen[rank] = (len(source), [[[f.title for f in b.features] for b in source.epoch(e)] for e in (0, 1)])

        threads = [threading.Thread(target=consume, args=(r,)) for r in (0, 1)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=120)
    finally:
        ray.shutdown()
    for epoch in (0, 1):
        assert [len(seen[r][1][epoch]) for r in (0, 1)] == [seen[0][0], seen[1][0]] == [7, 7]
        titles = [t for r in (0, 1) for batch in seen[r][1][epoch] for t in batch]
        assert sorted(titles) == sorted(f"d{i}" for i in range(50))
    assert seen[0][1][0] != seen[0][1][1]


class NodeMarkingTeacher(TeacherLogits):
    """The stage's actor, noting the node of each batch it computes; slowed to two batches a second
    until a node has been lost (a `lost` file says so), so that the loss comes mid-corpus."""

    def __init__(self, checkpoint: str, threads: int, marks: str):
        super().__init__(checkpoint, threads)
        self.marks = Path(marks)

    def __call__(self, table):
        import time

        import ray

        if not (self.marks.parent / "lost").exists():
            time.sleep(0.5)
        out = super().__call__(table)
        node = ray.get_runtime_context().get_node_id()
        with open(self.marks / node, "a") as f:
            f.write(f"{table.num_rows}\n")
        return out


def test_a_node_lost_mid_corpus_costs_its_actors_not_the_stage(soft, teacher, tmp_path, monkeypatch):
    """A two-node cluster (ray.cluster_utils: a head with no CPU for work, node A with 2): the
    stage's pool of 2 starts on A; once A has computed a batch, node B joins and A's processes are
    all killed (raylet, object store, workers). Ray restarts the actors on B and remakes what A's
    object store held: the stage completes with every (corpus, doc_index) once and the logits of
    the uninterrupted run (`soft`)."""
    import threading
    import time

    import ray
    from ray.cluster_utils import Cluster

    from conftest import free_port
    from kddocre_ray.pipeline.soft_labels import PoolOptions, write_soft_labels

    _, _, out = soft
    monkeypatch.delenv("RAY_ADDRESS")
    marks = tmp_path / "marks"
    marks.mkdir()
    # the GCS declares a silent node dead after 2 missed health checks 0.5 s apart (Ray's default: 5 x 3 s)
    checks = {"health_check_initial_delay_ms": 0, "health_check_period_ms": 500, "health_check_failure_threshold": 2}
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0, "gcs_server_port": free_port(),
                                                            "include_dashboard": False, "_system_config": checks})
    result: dict = {}
    try:
        node_a = cluster.add_node(num_cpus=2)
        ray.init(address=cluster.address)
        ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])

        def stage() -> None:
            try:
                result["stats"] = write_soft_labels(
                    out / "rows", teacher, tmp_path / "soft", pool_size=2, use_gpu=False, threads=1, batch_size=1,
                    options=PoolOptions(block_bytes=None, actor=NodeMarkingTeacher, actor_kwargs={"marks": str(marks)}))
            except BaseException as exc:  # noqa: BLE001 - reported by the test below
                result["error"] = exc

        thread = threading.Thread(target=stage)
        thread.start()
        deadline = time.time() + 180
        while not (marks / node_a.node_id).exists():
            assert thread.is_alive() and time.time() < deadline, result
            time.sleep(0.1)
        node_b = cluster.add_node(num_cpus=2)
        cluster.remove_node(node_a, allow_graceful=False)
        (tmp_path / "lost").touch()
        thread.join(timeout=300)
        assert not thread.is_alive(), "the stage did not finish within 5 minutes of the loss"
    finally:
        ray.shutdown()
        cluster.shutdown()
    assert "error" not in result, result.get("error")
    done_on = {f.name: sum(map(int, f.read_text().split())) for f in marks.iterdir()}
    assert done_on.get(node_b.node_id, 0) > 0, done_on  # the loss came mid-corpus: B did the rest
    assert_same_soft_labels(tmp_path / "soft", out / "soft", result["stats"]["documents"])
