"""bench/protocol.py's tables, on stand-in run folders (the protocol's runs take hours and never run
here): mean ± sample std and the per-seed values, worked by hand; the claims as paired
differences of one seed's rows, with their verdicts; the teacher's row read from the KD-MSE
pipeline's teacher stage; a missing seed said; and the files copied for docs/runs/ give the same
tables again."""
import importlib.util
import json
import shutil
import sys

import pytest

from conftest import REPO

spec = importlib.util.spec_from_file_location("bench_protocol", REPO / "bench" / "protocol.py")
protocol = importlib.util.module_from_spec(spec)
sys.modules[spec.name] = protocol  # its dataclass looks itself up there
spec.loader.exec_module(protocol)

KEYS = ("f1", "ign_f1", "long_tail_f1", "infer_f1", "precision", "recall", "freq_f1")
# test F1 per variant and seed (66, 42, 7); every other metric is F1 plus a fixed offset
F1 = {"atlop": (45.0, 44.0, 46.0), "afl": (46.0, 46.5, 45.5), "na": (52.0, 51.0, 53.0),
      "kd_mse": (54.0, 55.0, 53.0), "kd_kl": (54.5, 54.0, 54.0)}
TEACHER = (49.0, 48.0, 50.0)


def _metrics(f1: float) -> dict:
    return {k: f1 + i for i, k in enumerate(KEYS)}


@pytest.fixture
def runs(tmp_path):
    out = tmp_path / "runs"
    for stem, values in F1.items():
        for seed, f1 in zip(protocol.SEEDS, values):
            run = out / f"{stem}_s{seed}"
            run.mkdir(parents=True)
            (run / "metrics.json").write_text(json.dumps({"test": _metrics(f1)}))
            (run / "config.yaml").write_text(f"name: {run.name}\n")
            if stem in ("na", "kd_mse", "kd_kl"):
                teacher = out / "stages" / f"teacher-{seed}"
                teacher.mkdir(parents=True, exist_ok=True)
                (teacher / "metrics.json").write_text(json.dumps({"test": _metrics(TEACHER[protocol.SEEDS.index(seed)])}))
                (teacher / "checkpoint").mkdir(exist_ok=True)
                for finished in (teacher, run):  # a stage counts once its manifest is written
                    (finished / "manifest.json").write_text(json.dumps({"stage": finished.name}))
                stages = {"teacher": {"folder": str(teacher)}, "evaluate": {"folder": str(run)}}
                (run / "pipeline.json").write_text(json.dumps({"stages": stages}))
    entry = {"command": "kddocre train --config /x/repo/configs/atlop.yaml output_dir=/x/repo/runs/p", "commit": "abc1234", "machine": "2 cores X, native bf16",
             "started": "2026-11-30 18:32:06 UTC", "exit": 0}
    (out / "protocol.json").write_text(json.dumps({"atlop_s66": [{**entry, "wall_s": 600, "exit": -9},
                                                                 {**entry, "wall_s": 300, "commit": "def5678"}],
                                                   "afl_s66": [{**entry, "wall_s": 1230}]}))
    return out


def _row(table: str, variant: str) -> list[str]:
    [line] = [line for line in table.splitlines() if line.startswith(f"| {variant} |")]
    return [c.strip() for c in line.strip("|").split("|")]


def test_each_cell_is_mean_and_sample_std_then_each_seed(runs):
    table = protocol.main_table(runs, protocol.SEEDS)
    # ATLOP F1 45, 44, 46: mean 45, sample std 1
    assert _row(table, "ATLOP-equivalent")[:3] == ["ATLOP-equivalent", "3 of 3", "45.00 ± 1.00 (45.00 / 44.00 / 46.00)"]
    # Ign F1 is F1 + 1 here; P is F1 + 4
    assert _row(table, "ATLOP-equivalent")[3] == "46.00 ± 1.00 (46.00 / 45.00 / 47.00)"
    assert _row(table, "ATLOP-equivalent")[6] == "49.00 ± 1.00 (49.00 / 48.00 / 50.00)"
    # + AFL 46, 46.5, 45.5: std 0.5; the teacher's row comes from the KD-MSE pipeline's teacher stage
    assert _row(table, "+ AFL")[2] == "46.00 ± 0.50 (46.00 / 46.50 / 45.50)"
    assert _row(table, "teacher")[2] == "49.00 ± 1.00 (49.00 / 48.00 / 50.00)"
    assert [line.split("|")[1].strip() for line in table.splitlines() if line.startswith("| ") and "---" not in line][1:] \
        == ["ATLOP-equivalent", "+ AFL", "teacher", "NA", "KD-MSE", "KD-KL"]


def test_a_missing_seed_is_a_dash_and_the_row_says_how_many(runs):
    (runs / "kd_kl_s42" / "metrics.json").unlink()  # a run still going
    row = _row(protocol.main_table(runs, protocol.SEEDS), "KD-KL")
    assert row[1] == "2 of 3" and row[2] == "54.25 ± 0.35 (54.50 / – / 54.00)"
    # a teacher stage that wrote its scores but was stopped before its manifest has not finished
    (runs / "stages" / "teacher-7" / "manifest.json").unlink()
    assert _row(protocol.main_table(runs, protocol.SEEDS), "teacher")[1:3] == ["2 of 3", "48.50 ± 0.71 (49.00 / 48.00 / –)"]
    # a pipeline whose teacher stage is still running: pipeline.json has no folder for it yet
    (runs / "kd_mse_s42" / "pipeline.json").write_text(json.dumps({"stages": {"teacher": {"status": "running"}}}))
    assert _row(protocol.main_table(runs, protocol.SEEDS), "teacher")[1:3] == ["1 of 3", "49.00 ± – (49.00 / – / –)"]
    for seed in (42, 7):  # one seed has no spread
        (runs / f"afl_s{seed}" / "metrics.json").unlink()
    assert _row(protocol.main_table(runs, protocol.SEEDS), "+ AFL")[1:3] == ["1 of 3", "46.00 ± – (46.00 / – / –)"]


def test_claims_are_paired_per_seed_differences_with_a_verdict(runs):
    table = protocol.claims_table(runs, protocol.SEEDS, {"AFL over ATL": "+0.5 (stand-in)"})
    # AFL - ATL per seed: +1.0, +2.5, -0.5 -> mean +1.0, min -0.5, max +2.5: the seeds disagree
    assert _row(table, "AFL over ATL")[2:] == ["+1.00", "-0.50", "+2.50", "3", "+0.5 (stand-in)", "inside the noise"]
    # KD-MSE - NA: +2, +4, 0 -> not every seed above 0
    assert _row(table, "KD-MSE over NA (the teacher's share)")[2:6] == ["+2.00", "+0.00", "+4.00", "3"]
    assert _row(table, "KD-MSE over NA (the teacher's share)")[7] == "inside the noise"
    # teacher - AFL: +3, +1.5, +4.5: holds; KD-MSE - teacher: +5, +7, +3: holds
    assert _row(table, "axial attention")[2:5] == ["+3.00", "+1.50", "+4.50"]
    assert _row(table, "axial attention")[7] == "holds" and _row(table, "KD-MSE over its teacher")[7] == "holds"
    # the long tail against frequent relations: long-tail and freq are both F1 + offsets, so the gain is 0 each seed
    assert _row(table, "AFL gains more on the long tail than on frequent relations")[2:5] == ["+0.00", "+0.00", "+0.00"]
    assert _row(table, "AFL gains more on the long tail than on frequent relations")[7] == "does not hold"
    assert _row(table, "KD-MSE over KD-KL")[6] == "not at hand"


@pytest.mark.parametrize("deltas, said", [([1, 2], "holds"), ([-1, -2], "does not hold"), ([0, 0], "does not hold"),
                                          ([1, -1], "inside the noise"), ([3], "one seed: not judged")])
def test_verdict(deltas, said):
    assert protocol.verdict(deltas) == said


def test_the_copied_files_give_the_same_tables(runs, tmp_path, capsys):
    """--copy-to keeps what the tables read (no checkpoints), and --table-only on the copy prints
    the tables of the originals, exactly."""
    (runs / "kd_mse_s7" / "metrics.json").unlink()  # a pipeline still running, its teacher stage finished
    protocol.main(["--table-only", "--runs", str(runs)])
    original = capsys.readouterr().out
    dest = tmp_path / "docs_runs"
    protocol.main(["--runs", str(runs), "--copy-to", str(dest)])
    assert not list(dest.rglob("checkpoint"))
    assert (dest / "kd_mse_s42" / "stages" / "teacher-42" / "metrics.json").exists()
    shutil.rmtree(runs)  # the copy stands alone (pipeline.json still names the stage folders it came from)
    protocol.main(["--table-only", "--runs", str(dest)])
    assert capsys.readouterr().out == original
    assert "| teacher | 3 of 3 |" in original and "| KD-MSE | 2 of 3 |" in original and "| claim |" in original


def test_an_unknown_variant_is_refused_before_any_run(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        protocol.main(["--out", str(tmp_path / "p"), "--only", "KD-MSE,KD-XX"])
    assert e.value.code == 2 and "no variant KD-XX" in capsys.readouterr().err
    assert not (tmp_path / "p").exists()


def test_the_runs_table_sums_a_resumed_runs_invocations(runs):
    """A run killed and finished by a second invocation: one row, both wall times, both commits,
    the exit of the last; its command as run from the repository root."""
    table = protocol.runs_table(runs).splitlines()
    assert table[2] == ("| atlop_s66 | `kddocre train --config configs/atlop.yaml output_dir=runs/p` | 2026-11-30 18:32:06 UTC | 2 | 15.0 | "
                        "abc1234, def5678 | 2 cores X, native bf16 | 0 |")
    assert table[3].startswith("| afl_s66 |") and "| 1 | 20.5 | abc1234 |" in table[3]


def test_docs_show_what_the_committed_runs_print(capsys):
    """docs/results.md quotes `python bench/protocol.py --table-only --runs docs/runs/protocol`
    word for word: the tables there are rebuilt from the committed run files, not typed."""
    runs = REPO / "docs" / "runs" / "protocol"
    if not runs.exists():
        pytest.skip("no protocol runs committed yet")
    protocol.main(["--table-only", "--runs", str(runs)])
    printed = capsys.readouterr().out.strip()
    assert printed and printed in (REPO / "docs" / "results.md").read_text()
