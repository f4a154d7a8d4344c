"""The package as a user installs it: a wheel (not the editable checkout) runs from another directory with
the configs it ships, a task YAML from a folder outside the package joins them, and the venv matches the lock."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest
from packaging.utils import canonicalize_name

REPO = Path(__file__).resolve().parents[1]
FAST = [
    "logger=none",
    "trainer.enable_progress_bar=false",
    "trainer.max_steps=2",
    "data.train_size=8",
    "data.eval_size=8",
]


@pytest.fixture(scope="module")
def wheel_site(tmp_path_factory) -> Path:
    """The wheel built from this checkout, unpacked into a folder of its own (its dependencies come from the venv)."""
    tmp = tmp_path_factory.mktemp("wheel")
    build = [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation", "-w", str(tmp)]
    subprocess.run([*build, str(REPO)], check=True, capture_output=True)
    (wheel,) = tmp.glob("promptscale-*.whl")
    site = tmp / "site"
    install = [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--target", str(site), str(wheel)]
    subprocess.run(install, check=True, capture_output=True)
    return site


def _run_from(cwd: Path, site: Path, args: list[str]) -> subprocess.CompletedProcess:
    # the wheel's copy first on the path: the checkout's editable install must not be the one imported
    env = {**os.environ, "PYTHONPATH": str(site), "WANDB_MODE": "disabled"}
    code = "import sys, promptscale.train as t; print('from', t.__file__, file=sys.stderr); t.main()"
    return subprocess.run([sys.executable, "-c", code, *args], cwd=cwd, env=env, capture_output=True, text=True)


def test_the_wheel_ships_its_configs_and_runs_from_another_directory(wheel_site, sample_data, tmp_path):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    out = tmp_path / "run"
    args = ["task=cb", "model=tiny-gpt2", "method=prompt_tuning", f"data.dir={sample_data}", f"hydra.run.dir={out}"]
    done = _run_from(elsewhere, wheel_site, [*args, *FAST])
    assert done.returncode == 0, done.stderr[-2000:]
    assert f"from {wheel_site}" in done.stderr
    (line,) = (out / "results.jsonl").read_text().splitlines()
    assert json.loads(line)["status"] == "finished"


def test_a_task_yaml_from_an_outside_folder_runs(wheel_site, sample_data, tmp_path):
    """README "Your own task, model or method": a CoNLL-format task added with one YAML, package untouched."""
    mine = tmp_path / "my_conf"
    (mine / "task").mkdir(parents=True)
    (mine / "task" / "my_ner.yaml").write_text(
        "defaults:\n  - task_schema\n"
        "name: my_ner\nkind: tagging\nreader: conll\nfolder: conll2003\n"
        "files: {train: train.txt, valid: valid.txt}\neval_split: valid\nlabels: []\n"
        "metrics: [entity_f1]\nreader_options: {tag_column: -1}\n"
    )
    out = tmp_path / "run"
    args = ["--config-dir", str(mine), "task=my_ner", "model=tiny-bert", "method=finetune"]
    done = _run_from(tmp_path, wheel_site, [*args, f"data.dir={sample_data}", f"hydra.run.dir={out}", *FAST])
    assert done.returncode == 0, done.stderr[-2000:]
    record = json.loads((out / "results.jsonl").read_text().splitlines()[-1])
    assert (record["task"], record["status"]) == ("my_ner", "finished")
    assert "f1" in record["metrics"]


def _locked() -> dict[str, str]:
    pins = {}
    for lock in ("requirements.lock", "models.lock"):
        for line in (REPO / lock).read_text().splitlines():
            if line and not line[0].isspace() and not line.startswith("#") and "==" in line:
                name, version = line.split(" ")[0].split("==")
                pins[canonicalize_name(name)] = version
    return pins


@pytest.mark.skipif(os.environ.get("PROMPTSCALE_LOCKED") != "1", reason="only in a venv built by `make install`")
def test_the_venv_is_exactly_the_lock():
    """`pip freeze` equals the lock: every locked package at its version, nothing else but torch and us."""
    locked = _locked()
    installed = {
        canonicalize_name(d.metadata["Name"]): d.version
        for d in metadata.distributions()
        if canonicalize_name(d.metadata["Name"]) not in ("promptscale", "torch", "pip")
    }
    assert installed == locked
