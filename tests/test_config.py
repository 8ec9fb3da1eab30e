"""Config: YAML + `extends` + dotted overrides; unknown keys and bad choices fail loudly."""
import re
from pathlib import Path

import pytest

from conftest import REPO
from kddocre_ray.config import from_dict, load_config, to_dict
from kddocre_ray.errors import InputError

CONFIGS = REPO / "configs"


def test_every_shipped_config_loads():
    for path in CONFIGS.rglob("*.yaml"):
        conf = load_config(path)
        assert Path(conf.data.rel_info).is_absolute()


def test_variants_extend_the_benchmark_base():
    atlop = load_config(CONFIGS / "redocred_mini" / "atlop.yaml")
    teacher = load_config(CONFIGS / "redocred_mini" / "teacher.yaml")
    assert (atlop.loss.name, atlop.model.axial_layers) == ("atl", 0)
    assert (teacher.loss.name, teacher.model.axial_layers) == ("afl", 2)
    assert atlop.train == teacher.train and atlop.data == teacher.data  # shared facts come from base.yaml
    assert (atlop.data.train.start, atlop.data.train.end, atlop.data.dev.start) == (0, 450, 450)


def test_overrides_are_typed():
    conf = load_config(CONFIGS / "tiny.yaml", ["train.epochs=7", "train.head_lr=0.5", "loss.name=atl"])
    assert conf.train.epochs == 7 and conf.train.head_lr == 0.5 and conf.loss.name == "atl"


@pytest.mark.parametrize("override", ["train.epoch=3", "model.axial=2", "train.epochs=many"])
def test_unknown_or_mistyped_keys_are_rejected(override):
    with pytest.raises(ValueError, match="override"):
        load_config(CONFIGS / "tiny.yaml", [override])


def test_unknown_key_in_file_names_the_file(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("extends: %s\ntrain: {lr: 1}\n" % (CONFIGS / "tiny.yaml"))
    with pytest.raises(ValueError, match="bad.yaml"):
        load_config(bad)


@pytest.mark.parametrize("override, choices", [
    ("loss.name=focal", "afl, atl, bce"), ("distill.kd=l2", "mse, kl, none"),
    ("pipeline.student_strategy=fsdp", "ddp, deepspeed"), ("train.precision=fp8", "fp32, bf16, fp16, auto"),
])
def test_bad_choice_is_rejected_naming_the_key_and_the_choices(override, choices):
    with pytest.raises(ValueError) as e:
        load_config(CONFIGS / "tiny.yaml", [override])
    assert override.split("=")[0] in str(e.value) and f"expected one of [{choices}]" in str(e.value)


def test_a_choice_reads_as_its_plain_string_everywhere_it_goes():
    """MLflow parameters, fingerprints and YAML all see "kl", never "KD.kl"."""
    from kddocre_ray.config import KD, flatten, to_yaml

    conf = load_config(CONFIGS / "tiny.yaml", ["distill.kd=kl", "pipeline.student_strategy=deepspeed",
                                               "pipeline.student_deepspeed_config=configs/deepspeed/zero2.json"])
    assert conf.distill.kd is KD.kl and conf.distill.kd == "kl" and str(conf.distill.kd) == "kl"
    flat = flatten(to_dict(conf))
    assert flat["distill.kd"] == "kl" and type(flat["distill.kd"]) is str
    assert flat["pipeline.student_strategy"] == "deepspeed"
    assert "kd: kl" in to_yaml(conf) and "KD." not in to_yaml(conf)


def test_round_trip_through_dict():
    conf = load_config(CONFIGS / "tiny.yaml")
    assert from_dict(to_dict(conf)) == conf


def test_chunk_overlap_must_fit_the_window():
    with pytest.raises(ValueError, match="chunk_overlap"):
        load_config(CONFIGS / "tiny.yaml", ["model.max_length=128"])  # overlap 128 >= window 126


@pytest.mark.parametrize("override, message", [
    ("loss.gamma=-0.5", "loss.gamma=-0.5 must be >= 0"), ("train.epochs=0", "train.epochs=0 must be >= 1"),
    ("train.batch_size=0", "train.batch_size=0 must be >= 1"), ("scale.num_workers=0", "must be >= 1"),
    ("soft_labels.pool_size=0", "soft_labels.pool_size=0 must be >= 1"), ("train.head_lr=-1e-4", "must be >= 0"),
    ("distill.temperature=0", "distill.temperature=0.0 must be > 0"), ("train.warmup_ratio=1.5", "must be <= 1"),
    ("pipeline.finetune_epochs=0", "pipeline.finetune_epochs=0 must be >= 1"), ("model.num_labels=0", "-1 (no limit)"),
])
def test_numbers_out_of_range_are_refused_naming_key_and_value(override, message):
    with pytest.raises(InputError, match=re.escape(message)):
        load_config(CONFIGS / "tiny.yaml", [override])


def test_the_edges_of_each_range_are_allowed():
    """A learning rate of 0 freezes (the sweep tests use it), -1 labels means no limit, 0 steps no cap."""
    conf = load_config(CONFIGS / "tiny.yaml", ["train.encoder_lr=0", "train.head_lr=0", "model.num_labels=-1",
                                               "train.max_steps=0", "loss.gamma=0", "train.warmup_ratio=1"])
    assert conf.train.head_lr == 0 and conf.model.num_labels == -1


def test_path_keys_come_from_the_fields_marked_as_paths():
    """One declaration (`path_field`) drives absolute paths, fingerprints and the input check:
    every marked key, nested sections and optional ones included, and no other."""
    from dataclasses import dataclass, field

    from kddocre_ray.config import PATH_KEYS, DataSource, _path_keys, path_field

    assert set(PATH_KEYS) == {
        "data.rel_info", "data.train.path", "data.dev.path", "data.test.path", "data.train_facts",
        "data.train_rows", "train.deepspeed_config", "train.init_from", "distill.teacher", "pipeline.corpus",
        "pipeline.facts", "pipeline.student_deepspeed_config"}

    @dataclass
    class Section:
        a: str | None = path_field()
        b: int = 0
        src: DataSource | None = None
        inner: DataSource = field(default_factory=DataSource)

    assert _path_keys(Section) == ("a", "src.path", "inner.path")


def test_relative_paths_are_made_absolute_and_uris_kept(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    conf = load_config(CONFIGS / "tiny.yaml", ["pipeline.corpus=corpus.json", "distill.teacher=mock://b/teacher"])
    assert conf.pipeline.corpus == str(tmp_path / "corpus.json")
    assert conf.distill.teacher == "mock://b/teacher"


@pytest.mark.parametrize("text, overrides, says", [
    ("- a\n- b\n", [], "c.yaml: expected a mapping of config sections"),
    ("a: [\n", [], "c.yaml: not a YAML config: did not find expected node content at line 2, column 1"),
    ("\x00binary", [], "c.yaml: not a YAML config: unacceptable character"),
    ("extends: absent.yaml\n", [], "c.yaml: extends: absent.yaml: no such file"),
    ("extends: c.yaml\n", [], "c.yaml: circular 'extends: c.yaml'"),
    ("train: {epochs: many}\n", [], "c.yaml: train.epochs: Value 'many' of type 'str' could not be converted to Integer"),
    ("trian: {epochs: 1}\n", [], "c.yaml: trian: Key 'trian' not in 'Config'"),
    ("name: x\n", ["train.epochs"], "command-line override: 'train.epochs': expected a dotted key=value"),
    ("name: x\n", ["train=3"], "command-line override: 'train=3': train is a section of keys, not a value"),
    ("data: {train: x.json}\n", [], "c.yaml: data.train is a section of keys, not a value"),
    ("name: x\n", ["name=[abc"], "command-line override: 'name=[abc': while parsing a flow sequence: did not find"),
    ("name: x\n", ["train..epochs=1"], "command-line override: 'train..epochs=1': expected a dotted key=value"),
    ("name: x\n", ["extends=x.yaml"], "'extends=x.yaml': extends is read from config files only"),
    ("name: ${nope}\n", [], "c.yaml: name: Interpolation key 'nope' not found"),
    ("extends: " + str(CONFIGS / "tiny.yaml") + "\n", ["train.encoder_lr=inf"], "train.encoder_lr=inf must be a finite"),
    ("extends: " + str(CONFIGS / "tiny.yaml") + "\n", ["data.dev.start=5", "data.dev.end=2"],
     "data.dev.end=2 must be above data.dev.start=5"),
    ("name: x\n", ["loss.name=focal"], "loss.name"),
    ("extends: " + str(CONFIGS / "tiny.yaml") + "\n", ["train.epochs=0"], "train.epochs=0 must be >= 1"),
    ("name: x\n", [], "c.yaml: required keys not set: ['data.rel_info', 'data.train.path']"),
], ids=["a-list", "unclosed", "binary", "missing-base", "circular", "wrong-type", "unknown-section", "no-equals",
        "section-as-value", "section-as-value-in-file", "unclosed-value", "double-dot", "extends-override", "interpolation", "infinite",
        "reversed-slice", "bad-choice", "out-of-range", "required-unset"])
def test_a_bad_config_or_override_ends_with_status_2_naming_file_and_key(tmp_path, capsys, text, overrides, says):
    from kddocre_ray.cli import main

    (tmp_path / "c.yaml").write_text(text)
    with pytest.raises(SystemExit) as e:
        main(["train", "--config", str(tmp_path / "c.yaml"), *overrides])
    err = capsys.readouterr().err
    assert e.value.code == 2 and says in err and err.count("\n") == 1, err


def test_a_config_that_is_no_file_is_named(tmp_path, capsys):
    from kddocre_ray.cli import main

    for path, says in ((tmp_path / "absent.yaml", "absent.yaml: no such config file"), (tmp_path, "not a file")):
        with pytest.raises(SystemExit) as e:
            main(["train", "--config", str(path)])
        assert e.value.code == 2 and says in capsys.readouterr().err
