"""The `kddocre` command line: official-style scoring of a predictions file, distant corpus
building, error messages and help."""
import json

import pytest

from conftest import SHARED, make_doc
from kddocre_ray.cli import main, parser


def write(path, obj):
    path.write_text(json.dumps(obj))
    return str(path)


def test_evaluate_pred_json(tmp_path, capsys):
    """Gold: (1,2,P17) and (0,1,P27). Predicted: (1,2,P17) correct and in train; (0,2,P27) wrong.
    P = 1/2, R = 1/2, F1 = 50; Ign: (1-1)/(2-1) = 0 -> Ign F1 0."""
    gold = [make_doc(labels=[{"h": 1, "t": 2, "r": "P17", "evidence": []},
                             {"h": 0, "t": 1, "r": "P27", "evidence": []}])]
    train = [make_doc(title="train", labels=[{"h": 1, "t": 2, "r": "P17", "evidence": []}])]
    preds = [{"title": "doc", "h_idx": 1, "t_idx": 2, "r": "P17", "evidence": []},
             {"title": "doc", "h_idx": 0, "t_idx": 2, "r": "P27", "evidence": []}]
    main(["evaluate", "--pred", write(tmp_path / "p.json", preds), "--gold", write(tmp_path / "g.json", gold),
          "--train", write(tmp_path / "t.json", train), "--json"])
    m = json.loads(capsys.readouterr().out)
    assert (m["precision"], m["recall"], m["f1"], m["ign_f1"]) == pytest.approx((50.0, 50.0, 50.0, 0.0))


def test_bad_document_error_names_file_document_and_field(tmp_path, capsys):
    doc = make_doc()
    doc["vertexSet"][1][0]["pos"] = [3, 40]
    gold = write(tmp_path / "gold.json", [make_doc(title="first"), doc])
    with pytest.raises(SystemExit) as e:
        main(["evaluate", "--pred", write(tmp_path / "p.json", []), "--gold", gold, "--facts",
              write(tmp_path / "f.json", [])])
    msg = capsys.readouterr().err
    assert e.value.code == 2  # bad input
    assert "gold.json" in msg and "document 1" in msg and '"doc"' in msg and "vertexSet[1][0].pos" in msg


def test_skip_bad_docs_counts_them(tmp_path, capsys):
    doc = make_doc(labels=[{"h": 0, "t": 9, "r": "P17", "evidence": []}])
    gold = write(tmp_path / "gold.json", [make_doc(), doc])
    main(["evaluate", "--pred", write(tmp_path / "p.json", []), "--gold", gold, "--facts",
          write(tmp_path / "f.json", []), "--skip-bad-docs"])
    err = capsys.readouterr().err
    assert "skipped 1 bad documents" in err and "labels[0].t" in err


@pytest.mark.skipif(not SHARED.exists(), reason="needs ../shared/data")
def test_distant_command_gives_benchmark_counts(tmp_path, capsys):
    out = tmp_path / "distant.json.gz"
    main(["distant", "--docs", str(SHARED / "docred" / "test.json"),
          "--facts", str(SHARED / "docred" / "ref" / "train_annotated.fact"), "--out", str(out)])
    assert "4192 labels on 3129 entity pairs in 750 of 1000 documents" in capsys.readouterr().out
    assert out.exists()


def test_help_explains_every_command(capsys):
    for cmd in ([], ["train"], ["evaluate"], ["predict"], ["verify"], ["distant"], ["extract"], ["export"]):
        with pytest.raises(SystemExit):
            parser().parse_args([*cmd, "--help"])
        assert "usage: kddocre" in capsys.readouterr().out


def test_verbose_is_scale_verbose_on_every_ray_command():
    """--verbose asks for Ray's own logs in full; without it a run's log is quiet (cluster.py)."""
    from kddocre_ray.cli import _job_config

    for cmd in ("train", "distill", "sweep"):
        quiet = _job_config(parser().parse_args([cmd, "--config", "configs/tiny.yaml"]))
        loud = _job_config(parser().parse_args([cmd, "--config", "configs/tiny.yaml", "--verbose"]))
        assert (quiet.scale.verbose, loud.scale.verbose) == (False, True), cmd
    assert parser().parse_args(["predict", "--checkpoint", "c", "--data", "d", "--out", "o", "--ray",
                                "--verbose"]).verbose


@pytest.mark.parametrize("args, message", [
    (["pipeline.corpus=/nope/distant.json"], "input files not found: pipeline.corpus=/nope/distant.json"),
    (["soft_labels.pool_size=0"], "soft_labels.pool_size=0 must be >= 1"),
    (["distill.kd=none", "distill.teacher=/somewhere"], "distill.teacher is set but distill.kd=none"),
    (["distill.kd=l2"], "distill.kd: Invalid value 'l2', expected one of [mse, kl, none]"),
], ids=["missing-corpus", "pool-of-0", "teacher-for-na", "unknown-kd"])
def test_the_pipeline_refuses_bad_input_with_status_2_before_any_ray_start(tmp_path, capsys, args, message):
    import ray

    from conftest import REPO

    with pytest.raises(SystemExit) as e:
        main(["distill", "--config", str(REPO / "configs" / "tiny.yaml"), *args, "--output-dir", str(tmp_path)])
    assert e.value.code == 2 and message in capsys.readouterr().err
    assert not ray.is_initialized() and not (tmp_path / "stages").exists()


def test_jobs_distill_py_prints_no_traceback_on_bad_input(tmp_path):
    import subprocess
    import sys

    from conftest import REPO

    done = subprocess.run([sys.executable, "jobs/distill.py", "--config", "configs/tiny.yaml", "train.epochs=zero",
                           "--output-dir", str(tmp_path)], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert done.stderr.strip() == ("kddocre distill: command-line override: 'train.epochs=zero': train.epochs: Value "
                                   "'zero' of type 'str' could not be converted to Integer")
