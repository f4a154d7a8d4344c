import json
import os
import shutil
import sys

import pytest
from omegaconf import OmegaConf

from promptscale.train import sweep_position


def test_sweep_position_counts_the_experiment_and_command_line_lists(monkeypatch):
    hydra_cfg = OmegaConf.create(
        {
            "sweeper": {"params": {"task": "cb,rte", "seed": "0,1"}},
            "job": {"num": 2},
            "overrides": {"task": ["task=rte", "seed=0", "method=lora"]},
        }
    )
    monkeypatch.setattr(
        sys, "argv", ["promptscale-train", "--multirun", "method=lora,finetune,pet", "experiment=x", "seed=0,1"]
    )
    # task 2 x seed 2 (the command line's seed list replaces the experiment's) x method 3
    assert sweep_position(hydra_cfg) == "sweep run 3 of 12: task=rte seed=0 method=lora"


def _multirun(monkeypatch, *args) -> int:
    """promptscale-train --multirun ARGS in this process; its exit status."""
    from promptscale import train

    monkeypatch.setattr(sys, "argv", ["promptscale-train", "--multirun", *args])
    try:
        train.main()
    except SystemExit as done:
        return done.code
    return 0


FAST = [
    "logger=none",
    "trainer.max_steps=1",
    "data.train_size=4",
    "data.eval_size=4",
    "trainer.enable_progress_bar=false",
]


@pytest.mark.parametrize(
    "sweep,refused",
    [
        (["method=prompt_tuning", "method.init=random,vocabb"], "method.init=vocabb"),  # a value validate() rejects
        (["method=finetune,icl", "++method_overrides.icl.shots=-1"], "method=icl"),  # an experiment-level setting
        (["method=prompt_tuning,finetune", "task=rte,conll03", "model=tiny-t5"], "task=conll03"),  # family x task
    ],
)
def test_a_bad_cell_refuses_the_whole_sweep_before_any_job(sweep, refused, sample_data, tmp_path, monkeypatch, capsys):
    status = _multirun(monkeypatch, *sweep, *FAST, f"data.dir={sample_data}", f"hydra.sweep.dir={tmp_path}")
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("promptscale: error:")]
    assert status == 2 and len(lines) == 1 and "sweep refused" in lines[0] and refused in lines[0], err[-2000:]
    assert not (tmp_path / "results.jsonl").exists() and not (tmp_path / "0").exists()


def test_a_sweep_with_failed_jobs_exits_non_zero_with_one_summary_line(sample_data, tmp_path, monkeypatch, capsys):
    data = tmp_path / "data"
    shutil.copytree(sample_data / "fewglue" / "CB", data / "fewglue" / "CB")  # no RTE: that job fails
    sweep = tmp_path / "sweep"
    status = _multirun(
        monkeypatch, "task=cb,rte", "method=finetune", *FAST, f"data.dir={data}", f"hydra.sweep.dir={sweep}"
    )
    err = capsys.readouterr().err
    assert status == 1, err[-2000:]
    assert "1 of 2 sweep runs failed (task=rte" in err.splitlines()[-1]
    assert str(sweep / "results.jsonl") in err.splitlines()[-1]
    lines = [json.loads(line) for line in (sweep / "results.jsonl").read_text().splitlines()]
    assert [r["task"] for r in lines if r["status"] == "finished"] == ["cb"]
    # the job refused for its (missing) data leaves a failed line, so the table marks its cell
    (refused,) = [r for r in lines if r["status"] == "failed"]
    assert refused["task"] == "rte" and refused["refused"] and "not found" in refused["error"]
    from promptscale.analysis.load import load
    from promptscale.analysis.table import build_tables, markdown

    results = load([sweep / "results.jsonl"])
    assert [(r.task, r.status) for r in results.failed] == [("rte", "failed")]
    assert "| failed (1) |" in markdown(build_tables(results), results)  # the rte cell
    # the data fixed and the sweep run again: the cell finishes, the refusal is history
    shutil.copytree(sample_data / "fewglue" / "RTE", data / "fewglue" / "RTE")
    assert (
        _multirun(monkeypatch, "task=cb,rte", "method=finetune", *FAST, f"data.dir={data}", f"hydra.sweep.dir={sweep}")
        == 0
    )
    results = load([sweep / "results.jsonl"])
    assert sorted(r.task for r in results.runs) == ["cb", "rte"] and not results.failed


def test_a_secret_given_to_a_sweep_is_scrubbed_and_the_sweep_runs(sample_data, tmp_path, monkeypatch, capsys):
    """The scrubbed value ("<redacted>") in the sweep's saved overrides is no override syntax: the
    sweep still counts its runs, and no file of the sweep holds the secret."""
    secret = "sk-test-0123456789abcdef"
    sweep = tmp_path / "sweep"
    before = os.environ.get("HYDRA_FULL_ERROR")
    status = _multirun(
        monkeypatch, f"+model.arch_kwargs.api_key={secret}", "seed=0,1", "task=cb", "method=finetune", *FAST,
        f"data.dir={sample_data}", f"hydra.sweep.dir={sweep}",
    )  # fmt: skip
    out = capsys.readouterr().out
    assert status == 0
    assert os.environ.get("HYDRA_FULL_ERROR") == before  # main() in-process leaves the caller's environment as it was
    assert "sweep run 2 of 2" in out
    lines = [json.loads(line) for line in (sweep / "results.jsonl").read_text().splitlines()]
    assert [r["status"] for r in lines] == ["finished", "finished"]
    leaked = [p for p in sweep.rglob("*") if p.is_file() and secret.encode() in p.read_bytes()]
    assert not leaked


def test_a_config_file_edited_while_a_sweep_runs_refuses_its_later_jobs(sample_data, tmp_path, monkeypatch, capsys):
    """Hydra composes each job of an in-process sweep from the files when it starts: an experiment
    YAML edited after the sweep's check would make later jobs other runs than the ones checked. They
    are refused (a failed line naming the file); run again, the sweep finishes them from the edit,
    and a YAML that no job loads may change meanwhile."""
    from promptscale import train

    conf = tmp_path / "conf"
    (conf / "experiment").mkdir(parents=True)
    mine = conf / "experiment" / "mine.yaml"
    mine.write_text("# @package _global_\ndefaults:\n  - base\nexperiment: mine\n")
    base = conf / "experiment" / "base.yaml"  # a config the experiment includes
    base.write_text("# @package _global_\nmethod_overrides:\n  finetune:\n    lr: 1.0e-3\n")
    real_run = train.run

    def run_then_edit(*args, **kwargs):
        record = real_run(*args, **kwargs)
        base.write_text(base.read_text().replace("1.0e-3", "2.0e-3"))  # someone edits it
        return record

    monkeypatch.setattr(train, "run", run_then_edit)
    sweep = tmp_path / "sweep"
    args = ["--config-dir", str(conf), "experiment=mine", "method=finetune", "model=tiny-llama", "seed=0,1"]
    args += [*FAST, f"data.dir={sample_data}", f"hydra.sweep.dir={sweep}"]
    status = _multirun(monkeypatch, *args)
    err = capsys.readouterr().err
    assert status == 1, err[-2000:]
    lines = [json.loads(line) for line in (sweep / "results.jsonl").read_text().splitlines()]
    assert [(r["seed"], r["status"]) for r in lines] == [(0, "finished"), (1, "failed")]
    error = lines[1]["error"]
    assert lines[1]["refused"] and "changed since the sweep started (experiment/base.yaml)" in error, error
    assert lines[0]["config"]["method"]["lr"] == 1.0e-3

    # a YAML no job loads may change meanwhile (another experiment, a run's own files under the config dir)
    other = conf / "experiment" / "other.yaml"

    def edit_another_then_run(*args, **kwargs):
        other.write_text(f"# @package _global_\nexperiment: other{len(other.read_text()) if other.exists() else ''}\n")
        return real_run(*args, **kwargs)

    monkeypatch.setattr(train, "run", edit_another_then_run)
    assert _multirun(monkeypatch, *args) == 0, capsys.readouterr().err[-2000:]
    lines = [json.loads(line) for line in (sweep / "results.jsonl").read_text().splitlines()]
    edited = [r["seed"] for r in lines if r["status"] == "finished" and r["config"]["method"]["lr"] == 2.0e-3]
    assert sorted(edited) == [0, 1]  # the whole grid at the edited setting


def test_jobs_of_other_processes_check_the_config_files_the_sweep_started_with(tmp_path, monkeypatch):
    """A job that submitit or Ray runs in another process composes its config there: it reads the
    digests the sweep kept in its dir, and only the files it loads count."""
    from promptscale import sweep
    from promptscale.errors import ConfigError

    conf = tmp_path / "conf"
    (conf / "experiment").mkdir(parents=True)
    (conf / "train.yaml").write_text("seed: 0\n")
    mine = conf / "experiment" / "mine.yaml"
    mine.write_text("# @package _global_\nseed: 1\n")
    sources = [OmegaConf.create({"schema": "file", "path": str(conf), "provider": "main"})]
    (tmp_path / "sweep").mkdir()
    (tmp_path / "sweep" / sweep.SOURCES_FILE).write_text(json.dumps(sweep.config_files(sources)))
    monkeypatch.setattr(sweep, "SOURCES", {})  # not this process's sweep
    job = OmegaConf.create(
        {
            "sweep": {"dir": str(tmp_path / "sweep")},
            "launcher": {"_target_": "hydra_plugins.hydra_submitit_launcher.submitit_launcher.SlurmLauncher"},
            "job": {"config_name": "train"},
            "runtime": {
                "choices": {"experiment": "mine", "hydra/launcher": "submitit_slurm"},
                "config_sources": sources,
            },
        }
    )
    sweep.check_sources(job)
    (conf / "experiment" / "unrelated.yaml").write_text("seed: 2\n")
    sweep.check_sources(job)
    mine.write_text("# @package _global_\nseed: 3\n")
    with pytest.raises(ConfigError, match=r"changed since the sweep started \(experiment/mine.yaml\)"):
        sweep.check_sources(job)
    # Ray's launcher composed every job in the launching process, from the files as the check saw them
    job.launcher._target_ = "hydra_plugins.hydra_ray_launcher.ray_launcher.RayLauncher"
    sweep.check_sources(job)
