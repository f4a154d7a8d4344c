"""``promptscale table``: hand-written results stores -> exact cells, dedup, failures, files, plots, W&B."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from promptscale import cli
from promptscale.analysis.load import load
from promptscale.analysis.table import build_tables, markdown, render
from promptscale.results import config_hash

PNG = b"\x89PNG\r\n\x1a\n"


def rec(model, params, method, task, seed, score=None, *, status="finished", key=None, trainable=None, checkpoint=None,
        **method_cfg) -> dict:  # fmt: skip
    config = {"experiment": "unit", "seed": seed, "task": {"name": task, "metrics": ["accuracy"]},
              "model": {"name": model, "params": params}, "method": {"name": method, **method_cfg}}  # fmt: skip
    record = {"status": status, "config_hash": key or config_hash(config), "config": config,
              "task": task, "method": method, "model": model, "seed": seed}  # fmt: skip
    if status == "finished":
        record.update(model_params=params, score=score, metrics={"accuracy": score}, trainable_params=trainable)
    if checkpoint is not None:
        record["checkpoint_bytes"] = checkpoint
    return record


def write_store(path: Path, records: list) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in records))
    return path


def ft(model, params, task, seed, score, **kw):
    return rec(model, params, "finetune", task, seed, score, trainable=params, **kw)


def pt(model, params, task, seed, score, prompt_length=20, init="random", **kw):
    return rec(model, params, "prompt_tuning", task, seed, score, trainable=prompt_length * 32,
               prompt_length=prompt_length, init=init, **kw)  # fmt: skip


SMALL, LARGE = 1_000_000, 100_000_000


def scale_records() -> list:
    dup = ft("small", SMALL, "cb", 0, 0.10)  # an earlier finished line of the same config: replaced
    return [
        dup,
        ft("small", SMALL, "cb", 0, 0.60),
        ft("small", SMALL, "cb", 1, 0.70),
        ft("small", SMALL, "rte", 0, 0.50),
        ft("small", SMALL, "rte", 1, 0.54),
        {**dup, "status": "failed", "error": "re-run crashed"},  # failed after finishing: ignored
        pt("small", SMALL, "cb", 0, 0.40, checkpoint=2048),
        pt("small", SMALL, "cb", 1, 0.44, checkpoint=2048),
        pt("small", SMALL, "rte", 0, 0.30, checkpoint=2048),  # seed 1 of rte is missing
        rec("small", SMALL, "prompt_tuning", "rte", 1, status="failed", prompt_length=20, init="random"),
        {"status": "finished", "config_hash": "x"},  # incomplete: skipped and named
        ft("large", LARGE, "cb", 0, 0.80),
        ft("large", LARGE, "cb", 1, 0.90),
        ft("large", LARGE, "rte", 0, 0.70),
        ft("large", LARGE, "rte", 1, 0.74),
        pt("large", LARGE, "cb", 0, 0.76),
        pt("large", LARGE, "cb", 1, 0.80),
        pt("large", LARGE, "rte", 0, 0.66),
        pt("large", LARGE, "rte", 1, 0.70),
    ]


@pytest.fixture
def scale_store(tmp_path) -> Path:
    return write_store(tmp_path / "results.jsonl", scale_records())


def test_cells_are_mean_std_n_over_seeds_with_the_superglue_average(scale_store):
    results = load([scale_store])
    assert len(results.runs) == 15
    assert results.failed_lines == 2 and results.failed_runs == 1
    assert len(results.skipped) == 1 and results.skipped[0].endswith(":11 (missing or bad 'score')")
    small, large = build_tables(results, "task")
    assert small.title == "small (1M parameters)" and large.title == "large (100M parameters)"
    assert small.header == ["method", "cb", "rte", "avg (cb, rte)", "trainable params", "checkpoint", "steps"]
    # finetune: cb 60, 70; rte 50, 54 (the 0.10 line was replaced); avg per seed 55, 62
    assert small.rows[0] == [
        "finetune",
        "65.0 ± 7.1 (n=2)",
        "52.0 ± 2.8 (n=2)",
        "58.5 ± 4.9 (n=2)",
        "1,000,000",
        "–",
        "–",
    ]
    # prompt tuning: rte has seed 0 only, so the average too
    # the failed seed 1 of rte is marked in its cell
    assert small.rows[1] == [
        "prompt_tuning", "42.0 ± 2.8 (n=2)", "30.0 (n=1) +1 failed", "35.0 (n=1)", "640", "2.0 KiB", "–"
    ]  # fmt: skip
    assert large.rows[1] == [
        "prompt_tuning",
        "78.0 ± 2.8 (n=2)",
        "68.0 ± 2.8 (n=2)",
        "73.0 ± 2.8 (n=2)",
        "640",
        "–",
        "–",
    ]

    text = markdown([small, large], results)
    assert "### small (1M parameters)" in text
    assert "| finetune | 65.0 ± 7.1 (n=2) | 52.0 ± 2.8 (n=2) | 58.5 ± 4.9 (n=2) | 1,000,000 | – |" in text
    assert "Failed: 2 failed lines (1 run with no finished line, marked in their cells)." in text
    assert "Skipped: 1 unreadable or incomplete record(s)" in text


def test_columns_model_gives_one_table_per_task_and_the_average(scale_store):
    tables = build_tables(load([scale_store]), "model")
    assert [t.name for t in tables] == ["cb", "rte", "superglue_avg"]
    cb, _, avg = tables
    assert cb.header == ["method", "small", "large", "trainable params", "checkpoint", "steps"]
    assert cb.rows[0] == ["finetune", "65.0 ± 7.1 (n=2)", "85.0 ± 7.1 (n=2)", "1,000,000–100,000,000", "–", "–"]
    assert avg.title == "avg (cb, rte)"
    assert avg.rows[1] == ["prompt_tuning", "35.0 (n=1)", "73.0 ± 2.8 (n=2)", "640", "2.0 KiB", "–"]


def test_full_superglue_is_labelled_superglue_and_partial_seeds_are_left_out(tmp_path):
    tasks = ["boolq", "cb", "copa", "multirc", "record", "rte", "wic", "wsc"]
    records = [ft("m", SMALL, t, 0, 0.5 + i / 100) for i, t in enumerate(tasks)]
    records += [ft("m", SMALL, t, 1, 0.6) for t in tasks[:-1]]  # seed 1 lacks wsc
    (table,) = build_tables(load([write_store(tmp_path / "r.jsonl", records)]))
    assert "SuperGLUE avg" in table.header
    assert table.rows[0][table.header.index("SuperGLUE avg")] == "53.5 (n=1)"  # mean of 50..57


def test_runs_differing_outside_method_settings_are_averaged_per_seed_and_noted(tmp_path):
    a = ft("m", SMALL, "cb", 0, 0.5)
    b = {**ft("m", SMALL, "cb", 0, 0.7), "config_hash": "other"}
    results = load([write_store(tmp_path / "r.jsonl", [a, b, ft("m", SMALL, "cb", 1, 0.8)])])
    (table,) = build_tables(results)
    assert table.rows[0][1] == "70.0 ± 14.1 (n=2)"  # seeds: (50 + 70) / 2 = 60 and 80
    assert results.merged == 2 and "Note: 2 runs share" in markdown([table], results)


def test_the_footer_names_library_versions_and_counts_them_when_runs_mix_them(tmp_path):
    old = {"torch": "2.13.0", "transformers": "5.24.0"}
    new = {"torch": "2.13.0", "transformers": "5.25.0"}
    same = [{**ft("m", SMALL, "cb", s, 0.5), "libraries": new} for s in range(3)]
    results = load([write_store(tmp_path / "same.jsonl", same)])
    assert "Libraries: torch 2.13.0; transformers 5.25.0." in markdown(build_tables(results), results)

    mixed = same[:2] + [{**ft("m", SMALL, "cb", 2, 0.5), "libraries": old}, ft("m", SMALL, "cb", 3, 0.5)]
    results = load([write_store(tmp_path / "mixed.jsonl", mixed)])
    assert (
        "Libraries (mixed versions): torch 2.13.0 (3 runs), not recorded (1 run); "
        "transformers 5.25.0 (2 runs), 5.24.0 (1 run), not recorded (1 run)."
    ) in markdown(build_tables(results), results)

    unrecorded = load([write_store(tmp_path / "old.jsonl", [ft("m", SMALL, "cb", 0, 0.5)])])
    assert "Libraries" not in markdown(build_tables(unrecorded), unrecorded)


def test_two_tasks_of_one_name_reading_different_data_never_share_a_cell(tmp_path):
    """Two user task YAMLs both named ``mine`` (a WikiANN-like and a CoNLL-2000-like folder): two
    columns named by folder, no average of the two datasets; the same folder keeps one column."""

    def mine(folder, seed, score, data_dir="/data"):
        record = ft("m", SMALL, "mine", seed, score)
        record["config"]["task"].update(folder=folder, files={"train": "train.txt"}, reader="conll")
        record["config"]["data"] = {"dir": data_dir, "fingerprint": f"examples read from {data_dir}"}
        record["config_hash"] = config_hash(record["config"])
        return record

    store = write_store(tmp_path / "r.jsonl", [mine("wikiann", 0, 0.0), mine("conll2000", 0, 0.214),
                                               mine("conll2000", 1, 0.3)])  # fmt: skip
    results = load([store])
    assert sorted({r.task for r in results.runs}) == ["mine [conll2000]", "mine [wikiann]"]
    (table,) = build_tables(results)
    assert "mine [wikiann]" in table.header and "mine [conll2000]" in table.header
    assert results.merged == 0
    # the same folder and files read by another reader: other data, numbered; a moved data dir: the same
    other = [mine("x", 0, 0.1, "/a"), {**mine("x", 0, 0.2, "/b"), "config_hash": "h2"}, mine("x", 1, 0.3, "/c")]
    other[1]["config"]["task"]["reader"] = "conll_columns"
    assert sorted({r.task for r in load([write_store(tmp_path / "o.jsonl", other)]).runs}) == [
        "mine [data 1]",
        "mine [data 2]",
    ]


def test_varying_method_settings_make_rows(tmp_path):
    records = [pt("m", SMALL, "cb", 0, 0.5 + p / 1000, prompt_length=p) for p in (100, 5, 20)]
    (table,) = build_tables(load([write_store(tmp_path / "r.jsonl", records)]))
    assert [r[0] for r in table.rows] == [f"prompt_tuning (prompt_length={p})" for p in (5, 20, 100)]
    assert [r[-3] for r in table.rows] == ["160", "640", "3,200"]


def test_prompts_from_files_are_rows_by_their_contents_not_their_paths(tmp_path):
    def transfer(seed, path, digest):
        record = pt("m", SMALL, "cb", seed, 0.5 + seed / 100, init="file", init_file=path)
        record["config"]["file_digests"] = {"method.init_file": digest}
        record["config_hash"] = config_hash(record["config"])
        return record

    records = [transfer(0, "/a/p.safetensors", "1" * 16), transfer(1, "/b/p.safetensors", "1" * 16),
               transfer(0, "/a/p.safetensors", "2" * 16)]  # fmt: skip
    (table,) = build_tables(load([write_store(tmp_path / "r.jsonl", records)]))
    assert [r[0] for r in table.rows] == [
        f"prompt_tuning (init_file=sha256:{'1' * 16})",
        f"prompt_tuning (init_file=sha256:{'2' * 16})",
    ]


def test_files_are_written(scale_store, tmp_path):
    out = tmp_path / "out"
    text = render([scale_store], out)
    assert (out / "table.md").read_text() == text
    with (out / "small.csv").open() as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["method", "cb", "rte", "avg (cb, rte)", "trainable params", "checkpoint", "steps"]
    assert rows[1] == ["finetune", "65.0 ± 7.1 (n=2)", "52.0 ± 2.8 (n=2)", "58.5 ± 4.9 (n=2)", "1,000,000", "–", "–"]
    tex = (out / "small.tex").read_text()
    assert r"\begin{tabular}{lrrrrrr}" in tex and r"\toprule" in tex and r"\bottomrule" in tex
    assert r"prompt\_tuning & 42.0 $\pm$ 2.8 (n=2) & 30.0 (n=1) +1 failed & 35.0 (n=1) & 640 & 2.0 KiB & -- \\" in tex
    with (out / "cells.csv").open() as f:
        cells = list(csv.DictReader(f))
    assert {"table": "small", "row": "finetune", "column": "cb", "kind": "method", "metric": "accuracy", "split": "val",
            "mean": "65.0000", "std": "7.0711", "n": "2", "failed": "0", "delta": "", "p_value": ""} in cells  # fmt: skip
    # one seed: std empty, not 0; the failed seed counted
    [one] = [c for c in cells if (c["table"], c["row"], c["column"]) == ("small", "prompt_tuning", "rte")]
    assert (one["mean"], one["std"], one["n"], one["failed"]) == ("30.0000", "", "1", "1")
    assert (out / "large.csv").is_file() and (out / "large.tex").is_file()


def _pngs(out: Path) -> dict[str, int]:
    found = {}
    for p in sorted(out.glob("*.png")):
        assert p.read_bytes()[:8] == PNG
        found[p.stem] = p.stat().st_size
    assert all(size > 1000 for size in found.values())
    return found


def test_plots_only_for_what_the_data_varies(scale_store, tmp_path):
    render([scale_store], tmp_path / "scale")
    assert set(_pngs(tmp_path / "scale")) == {"scale"}  # one prompt length, one init

    lengths = [pt(m, n, t, s, 0.5 + p / 400 + s / 100 + n / 1e9, prompt_length=p)
               for m, n in (("small", SMALL), ("large", LARGE)) for t in ("cb", "rte")
               for p in (1, 5, 20, 100) for s in (0, 1)]  # fmt: skip
    render([write_store(tmp_path / "lengths.jsonl", lengths)], tmp_path / "lengths")
    assert set(_pngs(tmp_path / "lengths")) == {"scale", "prompt_length"}

    inits = [pt("small", SMALL, "rte", s, 0.5 + i / 10 + s / 100, init=init)
             for i, init in enumerate(("random", "vocab", "class_label")) for s in (0, 1, 2)]  # fmt: skip
    render([write_store(tmp_path / "inits.jsonl", inits)], tmp_path / "inits")
    assert set(_pngs(tmp_path / "inits")) == {"init"}

    render([write_store(tmp_path / "flat.jsonl", [ft("m", SMALL, "cb", 0, 0.5)])], tmp_path / "flat")
    assert _pngs(tmp_path / "flat") == {}


def test_cli_prints_and_writes(scale_store, tmp_path, capsys):
    cli.main(["table", str(scale_store), "--out", str(tmp_path / "out"), "--columns", "model", "--no-plots"])
    captured = capsys.readouterr()
    assert captured.out.startswith("### cb\n")
    assert "| finetune | 65.0 ± 7.1 (n=2) | 85.0 ± 7.1 (n=2) |" in captured.out
    assert "no plots (--no-plots)" in captured.err
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        "cb.csv", "cb.tex", "cells.csv", "rte.csv", "rte.tex", "superglue_avg.csv", "superglue_avg.tex", "table.md",
    ]  # fmt: skip


def test_cli_errors_name_the_missing_file(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["table", str(tmp_path / "nope.jsonl")])
    assert exit_info.value.code == 2
    assert f"not found: {tmp_path / 'nope.jsonl'}" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli.main(["table"])
    assert "the following arguments are required: results" in capsys.readouterr().err


def test_table_is_logged_to_wandb(tmp_path, monkeypatch, scale_store):
    """``--wandb-log`` logs each table and the long-form cells into a new run of job type
    ``table``, grouped by the runs' experiment."""
    import wandb

    seen = {}

    class FakeRun:
        dir = str(tmp_path / "wandb" / "offline-run-x" / "files")

        def log(self, data):
            seen["data"] = data

        def finish(self):
            seen["finished"] = True

    monkeypatch.setattr(wandb, "init", lambda **kw: seen.update(init=kw) or FakeRun())
    cli.main(["table", str(scale_store), "--out", str(tmp_path / "out"), "--no-plots", "--wandb-log",
              "--project", "unit"])  # fmt: skip
    assert seen["init"]["group"] == "unit" and seen["init"]["job_type"] == "table" and seen["finished"]
    assert set(seen["data"]) == {"table/small", "table/large", "cells"}
    assert seen["data"]["table/small"].columns[-1] == "steps" and len(seen["data"]["table/small"].data) == 2
    assert seen["data"]["cells"].columns[-1] == "p_value"


def test_lines_the_reader_skips_are_counted_in_the_footer(tmp_path, capsys):
    """The store's reader skips a bad line with a warning naming file:line; the table names it."""
    store = write_store(tmp_path / "r.jsonl", [ft("m", SMALL, "cb", 0, 0.5), "not json"])
    results = load([store])
    assert len(results.runs) == 1
    assert results.skipped == [f"{store}:2 (not a JSON object)"]
    assert f"{store}:2: skipped" in capsys.readouterr().err
    assert "Skipped: 1 unreadable or incomplete record(s)" in markdown(build_tables(results), results)


def test_a_torn_line_gives_no_traceback(tmp_path, capsys):
    """With any reader: the line is skipped and named, or the command stops with one line naming the file."""
    store = write_store(tmp_path / "r.jsonl", [ft("m", SMALL, "cb", 0, 0.5), '{"status": "fini'])
    try:
        cli.main(["table", str(store), "--bootstrap", "0"])
    except SystemExit as exit_info:
        assert exit_info.code == 2
        err = capsys.readouterr().err
        assert err.startswith("promptscale: error: ") and str(store) in err and err.count("\n") == 1
    else:
        out = capsys.readouterr().out
        assert "| finetune | 50.0 (n=1) |" in out and "Skipped: 1" in out


def test_a_store_without_predictions_tabulates_without_torch(scale_store):
    """Scoring predictions needs torch (metrics.py); a store without predictions must not pay for it."""
    import subprocess
    import sys

    code = (f"import sys; from promptscale.analysis.table import render; render([{str(scale_store)!r}], plots=False); "
            "print('torch' in sys.modules)")  # fmt: skip
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "False"
