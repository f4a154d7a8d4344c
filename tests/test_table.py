"""``promptscale table``: hand-written results stores -> exact cells, dedup, failures, files, plots, W&B."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from promptscale import cli
from promptscale.results import config_hash
from promptscale.table import build_tables, load, markdown, read_wandb_runs, render

PNG = b"\x89PNG\r\n\x1a\n"


def rec(model, params, method, task, seed, score=None, *, status="finished", key=None, trainable=None, checkpoint=None,
        **method_cfg) -> dict:  # fmt: skip
    config = {"experiment": "unit", "seed": seed, "task": {"name": task},
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
        "{not json",
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
    assert len(results.skipped) == 1 and results.skipped[0].endswith(":11 (not a JSON object)")
    small, large = build_tables(results.runs, "task")
    assert small.title == "small (1M parameters)" and large.title == "large (100M parameters)"
    assert small.header == ["method", "cb", "rte", "avg (cb, rte)", "trainable params", "checkpoint"]
    # finetune: cb 60, 70; rte 50, 54 (the 0.10 line was replaced); avg per seed 55, 62
    assert small.rows[0] == ["finetune", "65.0 ± 7.1 (n=2)", "52.0 ± 2.8 (n=2)", "58.5 ± 4.9 (n=2)", "1,000,000", "–"]
    # prompt tuning: rte has seed 0 only, so the average too
    assert small.rows[1] == ["prompt_tuning", "42.0 ± 2.8 (n=2)", "30.0 (n=1)", "35.0 (n=1)", "640", "2.0 KiB"]
    assert large.rows[1] == ["prompt_tuning", "78.0 ± 2.8 (n=2)", "68.0 ± 2.8 (n=2)", "73.0 ± 2.8 (n=2)", "640", "–"]

    text = markdown([small, large], results)
    assert "### small (1M parameters)" in text
    assert "| finetune | 65.0 ± 7.1 (n=2) | 52.0 ± 2.8 (n=2) | 58.5 ± 4.9 (n=2) | 1,000,000 | – |" in text
    assert "Failed: 2 failed lines ignored (1 run with no finished line)." in text
    assert "Skipped: 1 unreadable or incomplete record(s)" in text


def test_columns_model_gives_one_table_per_task_and_the_average(scale_store):
    tables = build_tables(load([scale_store]).runs, "model")
    assert [t.name for t in tables] == ["cb", "rte", "superglue_avg"]
    cb, _, avg = tables
    assert cb.header == ["method", "small", "large", "trainable params", "checkpoint"]
    assert cb.rows[0] == ["finetune", "65.0 ± 7.1 (n=2)", "85.0 ± 7.1 (n=2)", "1,000,000–100,000,000", "–"]
    assert avg.title == "avg (cb, rte)"
    assert avg.rows[1] == ["prompt_tuning", "35.0 (n=1)", "73.0 ± 2.8 (n=2)", "640", "2.0 KiB"]


def test_full_superglue_is_labelled_superglue_and_partial_seeds_are_left_out(tmp_path):
    tasks = ["boolq", "cb", "copa", "multirc", "record", "rte", "wic", "wsc"]
    records = [ft("m", SMALL, t, 0, 0.5 + i / 100) for i, t in enumerate(tasks)]
    records += [ft("m", SMALL, t, 1, 0.6) for t in tasks[:-1]]  # seed 1 lacks wsc
    (table,) = build_tables(load([write_store(tmp_path / "r.jsonl", records)]).runs)
    assert "SuperGLUE avg" in table.header
    assert table.rows[0][table.header.index("SuperGLUE avg")] == "53.5 (n=1)"  # mean of 50..57


def test_runs_differing_outside_method_settings_are_averaged_per_seed_and_noted(tmp_path):
    a = ft("m", SMALL, "cb", 0, 0.5)
    b = {**ft("m", SMALL, "cb", 0, 0.7), "config_hash": "other"}
    results = load([write_store(tmp_path / "r.jsonl", [a, b, ft("m", SMALL, "cb", 1, 0.8)])])
    (table,) = build_tables(results.runs)
    assert table.rows[0][1] == "70.0 ± 14.1 (n=2)"  # seeds: (50 + 70) / 2 = 60 and 80
    assert results.merged == 2 and "Note: 2 runs share" in markdown([table], results)


def test_varying_method_settings_make_rows(tmp_path):
    records = [pt("m", SMALL, "cb", 0, 0.5 + p / 1000, prompt_length=p) for p in (100, 5, 20)]
    (table,) = build_tables(load([write_store(tmp_path / "r.jsonl", records)]).runs)
    assert [r[0] for r in table.rows] == [f"prompt_tuning (prompt_length={p})" for p in (5, 20, 100)]
    assert [r[-2] for r in table.rows] == ["160", "640", "3,200"]


def test_files_are_written(scale_store, tmp_path):
    out = tmp_path / "out"
    text = render([scale_store], out)
    assert (out / "table.md").read_text() == text
    with (out / "small.csv").open() as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["method", "cb", "rte", "avg (cb, rte)", "trainable params", "checkpoint"]
    assert rows[1] == ["finetune", "65.0 ± 7.1 (n=2)", "52.0 ± 2.8 (n=2)", "58.5 ± 4.9 (n=2)", "1,000,000", "–"]
    tex = (out / "small.tex").read_text()
    assert r"\begin{tabular}{lrrrrr}" in tex and r"\toprule" in tex and r"\bottomrule" in tex
    assert r"prompt\_tuning & 42.0 $\pm$ 2.8 (n=2) & 30.0 (n=1) & 35.0 (n=1) & 640 & 2.0 KiB \\" in tex
    with (out / "cells.csv").open() as f:
        cells = list(csv.DictReader(f))
    assert {"table": "small", "row": "finetune", "column": "cb", "mean": "65.0000", "std": "7.0711", "n": "2"} in cells
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
    assert "give results files" in capsys.readouterr().err


def _wandb_files_run(folder: Path, config: dict, summary: dict) -> None:
    files = folder / "files"
    files.mkdir(parents=True)
    import yaml

    wrapped = {"wandb_version": 1, "_wandb": {"value": {"cli_version": "0.x"}}}
    wrapped |= {k: {"desc": None, "value": v} for k, v in config.items()}
    (files / "config.yaml").write_text(yaml.safe_dump(wrapped))
    (files / "wandb-summary.json").write_text(json.dumps(summary))


def test_wandb_summary_and_config_files_are_read(tmp_path, scale_store):
    record = pt("xl", 3 * LARGE, "cb", 0, 0.9)
    config = record["config"]
    _wandb_files_run(tmp_path / "wandb" / "offline-run-1-a", config,
                     {"score": 0.9, "eval/accuracy": 0.9, "trainable_params": 640, "total_params": 10})  # fmt: skip
    _wandb_files_run(tmp_path / "wandb" / "offline-run-2-b", config | {"seed": 1}, {"_runtime": 3})  # no score yet
    _wandb_files_run(tmp_path / "wandb" / "run-3-c", {"experiments": ["unit"]}, {"table/x": {}})  # not a training run
    [(_, finished), (_, incomplete)] = read_wandb_runs(tmp_path / "wandb")
    assert finished["status"] == "finished" and finished["config_hash"] == record["config_hash"]
    assert finished["metrics"] == {"accuracy": 0.9} and finished["model_params"] == 3 * LARGE
    assert incomplete["status"] == "incomplete"

    results = load([scale_store], [tmp_path / "wandb"])
    assert len(results.runs) == 16 and any("offline-run-2-b" in s for s in results.skipped)
    tables = build_tables(results.runs)
    assert tables[-1].title == "xl (300M parameters)" and tables[-1].rows[0][1] == "90.0 (n=1)"


def test_wandb_offline_log_is_read_and_the_table_is_logged(tmp_path, monkeypatch, scale_store):
    """A real offline run (the ``.wandb`` log, no summary files) is read back; ``--wandb-log``
    logs the tables into a new offline run grouped by experiment."""
    import wandb

    from promptscale.table import _read_wandb_log, _wandb_log_records

    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.chdir(tmp_path)
    record = pt("xl", 3 * LARGE, "cb", 0, 0.9)
    run = wandb.init(project="unit", dir=str(tmp_path / "train"), config=record["config"])
    run.log({"eval/accuracy": 0.9})
    run.log({"score": 0.9, "trainable_params": 640, "total_params": 3 * LARGE + 640})
    run.finish()
    [(_, read)] = read_wandb_runs(tmp_path / "train")
    assert read["status"] == "finished" and read["config_hash"] == record["config_hash"] and read["score"] == 0.9

    out = tmp_path / "out"
    cli.main(["table", str(scale_store), "--wandb", str(tmp_path / "train"), "--out", str(out), "--no-plots",
              "--wandb-log", "--project", "unit"])  # fmt: skip
    [log] = (out / "wandb").glob("offline-run-*/run-*.wandb")
    config, summary = _read_wandb_log(log)
    assert {"table/small", "table/large", "table/xl", "cells"} <= set(summary)
    assert summary["table/small"]["_type"] == "table-file" and summary["table/small"]["nrows"] == 2
    from wandb.proto import wandb_internal_pb2 as pb

    runs = [
        pb.Record.FromString(raw).run for raw in _wandb_log_records(log) if pb.Record.FromString(raw).HasField("run")
    ]
    assert runs[0].run_group == "unit" and runs[0].job_type == "table"
    assert read_wandb_runs(out / "wandb") == []  # the table run is no training run
