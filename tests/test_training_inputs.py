"""The training door (train/inputs.py): what a `kddocre train` config names (its splits, schema,
facts and DeepSpeed file) is read on the driver before Ray starts; each malformed case ends with
status 2 and one line naming the file, the entry and the field. Rows folders and checkpoints
have their own modules (test_rows.py, test_checkpoints.py)."""
import json

import pytest

from conftest import REPO, TINY, make_doc
from kddocre_ray.cli import main


def write(path, obj) -> str:
    path.write_text(obj if isinstance(obj, str) else json.dumps(obj))
    return str(path)


def ds(tmp_path, obj) -> str:
    return f"train.deepspeed_config={write(tmp_path / 'ds.json', obj)}"


DEEPSPEED = ["train.strategy=deepspeed"]

# (overrides, given tmp_path; what the one line must say)
CASES = {
    "deepspeed-not-json": (lambda p: [*DEEPSPEED, ds(p, "{zero")], "ds.json: not a valid JSON file"),
    "deepspeed-a-list": (lambda p: [*DEEPSPEED, ds(p, [1])], "ds.json: expected a JSON object (a DeepSpeed config)"),
    "deepspeed-other-batch": (lambda p: [*DEEPSPEED, ds(p, {"train_micro_batch_size_per_gpu": 8})],
                              "ds.json: train_micro_batch_size_per_gpu: 8, but train.batch_size makes it 4"),
    "deepspeed-zero-stage": (lambda p: [*DEEPSPEED, ds(p, {"zero_optimization": {"stage": 5}})],
                             "ds.json: zero_optimization: expected an object with stage 0, 1, 2 or 3"),
    "deepspeed-enabled-word": (lambda p: [*DEEPSPEED, ds(p, {"bf16": {"enabled": "yes"}})],
                               'ds.json: bf16: expected {"enabled": true, false or "auto"}'),
    "deepspeed-forces-fp16": (lambda p: [*DEEPSPEED, "train.precision=bf16", ds(p, {"fp16": {"enabled": True}})],
                              "ds.json: fp16: enabled is true but train.precision resolves to bf16"),
    "deepspeed-no-file": (lambda p: DEEPSPEED, "train.strategy=deepspeed needs a DeepSpeed JSON file"),
    "fp16-on-cpu": (lambda p: ["train.precision=fp16"], "train.precision=fp16 needs a GPU"),
    "bad-train-document": (lambda p: [f"data.train.path={write(p / 'train.json', [make_doc(), {'title': 'x'}])}"],
                           'train.json: document 1 ("x"): sents: missing'),
    "bad-dev-document": (lambda p: [f"data.dev.path={write(p / 'dev.json', [make_doc(labels=[{'h': 0, 't': 9, 'r': 'P17'}])])}"],
                         'dev.json: document 0 ("doc"): labels[0].t: entity 9 out of range (document has 3)'),
    "empty-slice": (lambda p: ["data.dev.start=100", "data.dev.end=200"], "no documents in data.dev (start=100, end=200)"),
    "facts-not-a-list": (lambda p: [f"data.train_facts={write(p / 'f.json', {'a': 1})}"],
                         "f.json: expected a JSON list of facts, got dict"),
    "fact-not-a-triple": (lambda p: [f"data.train_facts={write(p / 'f.json', [['a', 'b', 'P17'], ['a', 'b']])}"],
                          'f.json: fact 1: expected [head name, tail name, relation id], got ["a", "b"]'),
    "schema-mixed": (lambda p: [f"data.rel_info={write(p / 'rel.json', {'P17': 'country', 'P131': 3})}"],
                     "rel.json: values must be all relation names (str) or all class ids (int)"),
    "schema-with-gaps": (lambda p: [f"data.rel_info={write(p / 'rel.json', {'Na': 0, 'P17': 1, 'P131': 3})}"],
                         "rel.json: relation ids must be 1..2"),
    "schema-lacks-a-relation": (lambda p: [f"data.rel_info={write(p / 'rel.json', {'P131': 'located in'})}"],
                                "labels[0].r: unknown relation"),
    "missing-file": (lambda p: [f"data.test.path={p / 'absent.json'}"], "input files not found: data.test.path="),
    "longer-than-the-encoder": (lambda p: ["model.max_length=1024"],
                                "model.max_length=1024 is longer than the 512 positions encoder tiny-random has"),
    "encoder-not-a-model": (lambda p: [f"model.encoder={p}"], "model.encoder="),
    "encoder-hub-name": (lambda p: ["model.encoder=no-such-org/no-such-model"],
                         "model.encoder=no-such-org/no-such-model: not a packaged encoder (minilm, mpnet, tiny-random), "
                         "a folder holding a transformers model and tokenizer, or a model in the local Hugging Face "
                         "cache (nothing is downloaded)"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_training_input_ends_with_status_2_before_ray_starts(tmp_path, capsys, monkeypatch, case):
    import ray

    monkeypatch.setattr(ray, "init", lambda *a, **k: pytest.fail("Ray started on bad input"))
    overrides, says = CASES[case]
    with pytest.raises(SystemExit) as e:
        main(["train", "--config", str(REPO / "configs" / "tiny.yaml"), *TINY, *overrides(tmp_path),
              f"output_dir={tmp_path / 'runs'}", "tracking.enabled=false"])
    err = capsys.readouterr().err
    assert e.value.code == 2 and says in err and err.count("\n") == 1, err
    assert not (tmp_path / "runs").exists()  # no run folder begun


def test_the_shipped_deepspeed_files_pass_the_door():
    from kddocre_ray.config import load_config
    from kddocre_ray.train.inputs import check_deepspeed_file

    for name in ("zero2", "zero3"):
        conf = load_config(REPO / "configs" / "tiny.yaml", [*TINY, *DEEPSPEED,
                                                            f"train.deepspeed_config={REPO}/configs/deepspeed/{name}.json"])
        check_deepspeed_file(conf.train.deepspeed_config, conf, 2)  # raises on a bad file


@pytest.mark.parametrize("joined", [False, True])
def test_a_run_bigger_than_the_cluster_is_refused_on_a_local_one_and_waits_on_a_joined_one(monkeypatch, joined):
    """Ray would wait for the resources without a word: a local cluster never gets them (bad
    input, named); a joined one may, when its autoscaler adds nodes (said, then it waits)."""
    import ray

    from kddocre_ray.cluster import check_room
    from kddocre_ray.config import load_config
    from kddocre_ray.errors import InputError

    monkeypatch.setattr(ray, "cluster_resources", lambda: {"CPU": 2.0})
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    conf = load_config(REPO / "configs" / "tiny.yaml", ["scale.use_gpu=true"] + (["scale.ray_address=auto"] * joined))
    if joined:
        said = []
        check_room(conf, 1, 2, log=said.append)
        assert said == ["[kddocre] scale.num_workers=1 x 2 CPUs and a GPU each (scale.use_gpu) needs 1 GPU, more than "
                        "the cluster has now (2 CPUs, 0 GPUs): waiting for the autoscaler to add nodes"]
        return
    with pytest.raises(InputError, match=r"^scale.num_workers=1 x 2 CPUs and a GPU each \(scale.use_gpu\) needs 1 "
                                         r"GPU, but this machine's Ray cluster has 2 CPUs and 0 GPUs: set scale.use_gpu"):
        check_room(conf, 1, 2)
    conf.scale.use_gpu = False
    with pytest.raises(InputError, match="scale.num_workers=3 x 1 CPUs needs 3 CPU, but .*lower scale.num_workers"):
        check_room(conf, 3, 1)
    check_room(conf, 2, 1)  # room enough: no word


@pytest.mark.parametrize("value", ["-5", "two"])
def test_max_failures_is_a_count_or_minus_one(capsys, value):
    with pytest.raises(SystemExit) as e:
        main(["train", "--config", str(REPO / "configs" / "tiny.yaml"), "--max-failures", value])
    assert e.value.code == 2 and "give a count >= 0, or -1 for no limit" in capsys.readouterr().err


def test_an_output_folder_that_cannot_be_written_is_named_before_any_work(tmp_path, capsys, monkeypatch):
    """A folder under a file stands for a read-only or full disk here (the tests may run as root,
    whom file modes do not stop)."""
    import ray

    monkeypatch.setattr(ray, "init", lambda *a, **k: pytest.fail("Ray started"))
    (tmp_path / "file").write_text("x")
    with pytest.raises(SystemExit) as e:
        main(["train", "--config", str(REPO / "configs" / "tiny.yaml"), *TINY, f"output_dir={tmp_path / 'file' / 'runs'}"])
    err = capsys.readouterr().err
    assert e.value.code == 2 and f"{tmp_path / 'file' / 'runs'}: cannot write here (" in err
