"""Bad input fails fast with one clear line, writes no results and loads no model.

Most cases run ``promptscale.train.run`` in-process (the message comes from our code); Hydra's
own checks (misspelt key, wrong type, unknown group option) are composed in-process and a few
cases go through the real ``promptscale-train`` CLI for the exit code and the printed line.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from hydra.errors import HydraException

from conftest import FAST, TRAIN_CLI
from promptscale.errors import ConfigError, DataError, PromptscaleError


@pytest.fixture
def data_copy(sample_data, tmp_path) -> Path:
    """A private copy of the samples (RTE and CoNLL-2003), safe to break."""
    root = tmp_path / "data"
    shutil.copytree(sample_data / "fewglue" / "RTE", root / "fewglue" / "RTE")
    shutil.copytree(sample_data / "conll2003", root / "conll2003")
    return root


def rewrite_line(path: Path, lineno: int, text: str) -> None:
    lines = path.read_text().splitlines(keepends=True)
    lines[lineno - 1] = text + "\n"
    path.write_text("".join(lines))


def fails(overrides, data_dir, tmp_path, error=PromptscaleError, match=None) -> str:
    """Run in-process; expect ``error`` with a one-line message, and no results file."""
    from promptscale.train import compose, run

    cfg = compose([*FAST, f"data.dir={data_dir}", *overrides])
    results = tmp_path / "out" / "results.jsonl"
    with pytest.raises(error, match=match) as info:
        run(cfg, tmp_path / "out", results)
    message = str(info.value)
    assert message and "\n" not in message, f"not one line: {message!r}"
    assert not results.exists()
    return message


# ---- values checked by our code -----------------------------------------------------------

CONFIG_CASES = [
    (["method.prompt_length=0"], r"method\.prompt_length must be >= 1, got 0"),
    (["data.batch_size=0"], r"data\.batch_size must be >= 1, got 0"),
    (["data.eval_size=0"], r"data\.eval_size must be >= 1 or null, got 0"),
    (["method.lr=0"], r"method\.lr must be > 0"),
    (["method.optimizer=lion"], r"method\.optimizer='lion' is not one of"),
    (["method.name=nope"], r"method='nope' is not one of"),
    (["task.kind=ranking"], r"task\.kind='ranking' is not one of"),
    (["model.family=rnn"], r"model\.family='rnn' is not one of"),
    (
        ["~task.verbalizer.not_entailment"],
        r"task rte: every label needs a verbalizer word, missing \['not_entailment'\]",
    ),
    (["data.eval_split=test"], r"task rte: unknown split 'test'"),
    (["data.train_size=1000"], r"data\.train_size=1000 is larger than the split \(32 records\)"),
    (["data.eval_size=49"], r"data\.eval_size=49 is larger than the split \(48 records\)"),
]


@pytest.mark.parametrize("overrides,match", CONFIG_CASES, ids=[c[0][0] for c in CONFIG_CASES])
def test_bad_values(sample_data, tmp_path, no_model, overrides, match):
    fails(overrides, sample_data, tmp_path, ConfigError, match)


@pytest.mark.parametrize("method", ["finetune", "prompt_tuning"])
def test_unsupported_combination_says_why(sample_data, tmp_path, no_model, method):
    message = fails([f"method={method}", "task=conll03", "model=tiny-t5"], sample_data, tmp_path, ConfigError)
    assert "tiny-t5" in message and "conll03" in message
    assert re.search(r"sequence labeling", message) and re.search(r"encoder", message), message


def test_cls_head_on_t5_says_why(sample_data, tmp_path, no_model):
    message = fails(["method.head=cls", "model=tiny-t5"], sample_data, tmp_path, ConfigError, r"method\.head=cls")
    assert "tiny-t5" in message


# ---- data checked before any model ---------------------------------------------------------


def test_malformed_jsonl_names_file_and_line(data_copy, tmp_path, no_model):
    path = data_copy / "fewglue" / "RTE" / "train.jsonl"
    rewrite_line(path, 3, '{"premise": "A cut-off line", "hypothesis": ')
    fails([], data_copy, tmp_path, DataError, rf"^{re.escape(str(path))}:3: malformed JSON")


def test_label_outside_the_set_names_file_and_line(data_copy, tmp_path, no_model):
    path = data_copy / "fewglue" / "RTE" / "val.jsonl"
    rewrite_line(
        path, 5, '{"premise": "Alice sold a lamp.", "hypothesis": "Alice sold it.", "label": "maybe", "idx": 4}'
    )
    fails([], data_copy, tmp_path, DataError, rf"^{re.escape(str(path))}:5: label 'maybe' is not one of")


def test_tag_outside_the_set_names_file_and_line(data_copy, tmp_path, no_model):
    path = data_copy / "conll2003" / "train.txt"
    lineno = next(
        i for i, line in enumerate(path.read_text().splitlines(), 1) if line.split() and line.split()[0] != "-DOCSTART-"
    )
    rewrite_line(path, lineno, "Zorblat NNP B-NP B-ALIEN")
    fails(
        ["task=conll03", "model=tiny-bert"],
        data_copy,
        tmp_path,
        DataError,
        rf"^{re.escape(str(path))}:{lineno}: tag 'B-ALIEN'",
    )


def test_missing_split_file_names_the_path(data_copy, tmp_path, no_model):
    path = data_copy / "fewglue" / "RTE" / "val.jsonl"
    path.unlink()
    fails([], data_copy, tmp_path, DataError, rf"^{re.escape(str(path))}: split file not found")


def test_missing_data_dir_names_the_path(tmp_path, no_model):
    missing = tmp_path / "nowhere"
    fails([], missing, tmp_path, DataError, re.escape(str(missing / "fewglue" / "RTE" / "train.jsonl")))


# ---- Hydra's checks: the key is named ------------------------------------------------------

HYDRA_CASES = [
    (["method.prompt_lenght=5"], r"method\.prompt_lenght"),
    (["method.prompt_length=abc"], r"method\.prompt_length=abc"),
    (["seed=x"], r"seed=x"),
    (["data.batch_size=many"], r"data\.batch_size=many"),
    (["task=nope"], r"task/nope"),
    (["method=nope"], r"method/nope"),
    (["model=nope"], r"model/nope"),
]


@pytest.mark.parametrize("overrides,match", HYDRA_CASES, ids=[c[0][0] for c in HYDRA_CASES])
def test_hydra_rejects_names_the_key(overrides, match):
    from promptscale.train import compose

    with pytest.raises(HydraException, match=match):
        compose(overrides)


# ---- the real CLI: exit code and what it prints ----------------------------------------------


def cli(args, tmp_path, data_dir=None):
    """``promptscale-train`` in a fresh cwd, with an empty model cache (to see that nothing loaded)."""
    cache = tmp_path / "fresh-cache"
    env = dict(os.environ, PROMPTSCALE_CACHE=str(cache))
    argv = [TRAIN_CLI, *args, "logger=none", "trainer.enable_progress_bar=false", f"hydra.run.dir={tmp_path / 'run'}"]
    if data_dir is not None:
        argv.append(f"data.dir={data_dir}")
    proc = subprocess.run(argv, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr, proc.stderr
    assert not list(tmp_path.rglob("results.jsonl"))
    assert not (cache / "tokenizers").exists() and not (cache / "models").exists(), "a model was loaded"
    return proc


@pytest.mark.parametrize(
    "arg,key",
    [("method.prompt_lenght=5", "method.prompt_lenght"), ("seed=x", "seed"), ("task=nope", "task/nope")],
)
def test_cli_hydra_errors(tmp_path, sample_data, arg, key):
    proc = cli([arg], tmp_path, sample_data)
    assert proc.returncode == 1
    first = proc.stderr.strip().splitlines()[0]
    assert key in first, proc.stderr


def test_cli_bad_value_one_line(tmp_path, sample_data):
    proc = cli(["method.prompt_length=0"], tmp_path, sample_data)
    assert proc.returncode == 2
    assert proc.stderr.strip() == "promptscale: error: method.prompt_length must be >= 1, got 0"


def test_cli_bad_data_one_line(tmp_path, data_copy):
    path = data_copy / "fewglue" / "RTE" / "train.jsonl"
    rewrite_line(path, 7, "not json at all")
    proc = cli([], tmp_path, data_copy)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith(f"promptscale: error: {path}:7: malformed JSON")


@pytest.mark.parametrize("args", [["--help"], ["method=lora", "method.rr=4"], ["task=nope"]])
def test_help_and_hydra_errors_import_neither_torch_nor_lightning(tmp_path, args):
    """``--help`` and what Hydra refuses are answered from the config schemas alone: a method's
    settings live apart from its module (``methods/<name>/config.py``), so registering them imports
    neither torch nor lightning (seconds of imports that only a run needs)."""
    import sys

    code = (
        f"import sys; sys.argv = ['promptscale-train', *{args!r}]\n"
        "from promptscale.train import main\n"
        "try:\n    main()\nexcept SystemExit as done:\n    code = done.code\n"
        "print(code, [m for m in ('torch', 'lightning', 'transformers') if m in sys.modules])"
    )
    env = dict(os.environ, WANDB_MODE="disabled")
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120
    )
    assert proc.stdout.strip().splitlines()[-1] == f"{0 if args == ['--help'] else 1} []", proc.stdout + proc.stderr
