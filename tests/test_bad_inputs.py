"""The bad-input suite (issue 8): every case fails with one clear line, a non-zero exit, nothing
in the results store and no model loaded.

The table runs in-process: Hydra's own checks (unknown group option, misspelt key, wrong type)
through ``promptscale.train.compose``, ours through ``promptscale.train.run``, which is what the
CLI calls. A few cases go through the real ``promptscale-train`` for the exit code and the line.
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
from promptscale.errors import ConfigError, DataError


def rte(root: Path) -> Path:
    return root / "fewglue" / "RTE" / "train.jsonl"


def conll(root: Path) -> Path:
    return root / "conll2003" / "train.txt"


def set_line(path: Path, lineno: int, text: str) -> None:
    lines = path.read_text().splitlines()
    lines[lineno - 1] = text
    path.write_text("\n".join(lines) + "\n")


RTE_LINE = '{"premise": "A man sleeps.", "hypothesis": "A man is awake.", "label": "%s", "idx": 99}'

# (id, overrides, how to break the data or None, error, message regex)
CASES = [
    # unknown names (Hydra: the group option is not there)
    ("unknown-task", ["task=nope"], None, HydraException, r"Could not find 'task/nope'.*Available options in 'task': boolq"),
    ("unknown-method", ["method=nope"], None, HydraException, r"Could not find 'method/nope'"),
    ("unknown-model", ["model=nope"], None, HydraException, r"Could not find 'model/nope'"),
    ("unknown-logger", ["logger=nope"], None, HydraException, r"Could not find 'logger/nope'"),
    # misspelt keys and wrong types (Hydra, checked against the dataclasses)
    ("misspelt-key", ["data.trian_size=8"], None, HydraException, r"Could not override 'data\.trian_size'.*trian_size"),
    ("misspelt-method-key", ["method.prompt_lenght=5"], None, HydraException, r"prompt_lenght"),
    ("wrong-type-int", ["data.batch_size=abc"], None, HydraException, r"data\.batch_size=abc.*could not be converted to Integer"),
    ("wrong-type-seed", ["seed=1.5"], None, HydraException, r"seed=1\.5.*Integer"),
    ("wrong-type-float", ["method.lr=fast"], None, HydraException, r"method\.lr=fast.*Float"),
    ("wrong-type-bool", ["skip_finished=maybe"], None, HydraException, r"skip_finished=maybe.*not a valid bool"),
    ("bad-override-syntax", ["data.batch_size=[1"], None, HydraException, r"no viable alternative"),
    # unknown values of our own choices
    ("unknown-init", ["method.init=nope"], None, ConfigError, r"method\.init='nope' is not one of random"),
    ("unknown-optimizer", ["method.optimizer=nope"], None, ConfigError, r"method\.optimizer='nope' is not one of adamw"),
    ("unknown-scheduler", ["method.scheduler=nope"], None, ConfigError, r"method\.scheduler='nope'"),
    ("unknown-head", ["method.head=nope"], None, ConfigError, r"method\.head='nope'"),
    ("unknown-score", ["method.score=nope"], None, ConfigError, r"method\.score='nope'"),
    ("unknown-logger-kind", ["logger.kind=nope"], None, ConfigError, r"logger\.kind='nope'"),
    ("unknown-family", ["model.family=nope"], None, ConfigError, r"model\.family='nope' is not one of encoder"),
    ("unknown-source", ["model.source=nope"], None, ConfigError, r"model\.source='nope'"),
    ("unknown-task-kind", ["task.kind=nope"], None, ConfigError, r"task\.kind='nope'"),
    ("unknown-reader", ["task.reader=nope"], None, ConfigError, r"task\.reader='nope' is not one of boolq"),
    ("unknown-eval-split", ["data.eval_split=nope"], None, ConfigError, r"unknown split 'nope', have train, dev32, val"),
    # zero or negative sizes and lengths
    ("zero-batch", ["data.batch_size=0"], None, ConfigError, r"data\.batch_size must be >= 1, got 0"),
    ("zero-eval-batch", ["data.eval_batch_size=0"], None, ConfigError, r"data\.eval_batch_size must be >= 1"),
    ("negative-max-length", ["data.max_length=-5"], None, ConfigError, r"data\.max_length must be >= 1, got -5"),
    ("zero-train-size", ["data.train_size=0"], None, ConfigError, r"data\.train_size must be >= 1 or null, got 0"),
    ("negative-eval-size", ["data.eval_size=-1"], None, ConfigError, r"data\.eval_size must be >= 1 or null"),
    ("zero-prompt-length", ["method.prompt_length=0"], None, ConfigError, r"method\.prompt_length must be >= 1, got 0"),
    ("negative-prompt-length", ["method.prompt_length=-3"], None, ConfigError, r"prompt_length must be >= 1, got -3"),
    ("zero-lr", ["method.lr=0"], None, ConfigError, r"method\.lr must be > 0, got 0"),
    ("negative-checkpoint-every", ["checkpoint_every_n_steps=-1"], None, ConfigError, r"checkpoint_every_n_steps must be >= 0"),
    ("zero-init-vocab-top", ["method.init_vocab_top=0"], None, ConfigError, r"init_vocab_top must be >= 1"),
    # sizes larger than the split
    ("train-size-too-large", ["data.train_size=100000"], None, ConfigError, r"data\.train_size=100000 is larger than the split \(\d+ records\)"),
    ("eval-size-too-large", ["data.eval_size=100000"], None, ConfigError, r"data\.eval_size=100000 is larger than the split"),
    # unsupported method x family x task, and settings that need something missing
    ("tagging-on-encdec", ["task=conll03", "model=tiny-t5"], None, ConfigError, r"method=prompt_tuning on task=conll03 \(tagging\) with model=tiny-t5 \(encdec\)"),
    ("cls-head-on-choice", ["task=copa", "method.head=cls"], None, ConfigError, r"method\.head=cls needs a classification task"),
    ("text-init-without-text", ["method.init=text"], None, ConfigError, r"method\.init=text needs method\.init_text"),
    ("label-without-verbalizer", ["task.labels=[entailment,not_entailment,maybe]"], None, ConfigError, r"every label needs a verbalizer word, missing \['maybe'\]"),
    ("template-field-not-in-data", ["task.template='{{ premise }} {{ nope }}'"], None, ConfigError, r"task rte: template reads field\(s\) \['nope'\]; the records of .*train\.jsonl have"),
    ("no-data-dir-no-hub", ["task=conll", "data.dir=null"], None, ConfigError, r"set data\.dir"),
    # missing or empty splits
    ("missing-split-file", [], lambda root: rte(root).unlink(), DataError, r"RTE/train\.jsonl: split file not found \(task rte, split train\)"),
    ("empty-split", [], lambda root: rte(root).write_text("\n"), DataError, r"RTE/train\.jsonl: split train has no records"),
    ("missing-eval-split", [], lambda root: (root / "fewglue/RTE/val.jsonl").unlink(), DataError, r"val\.jsonl: split file not found"),
    # malformed jsonl (file and line named)
    ("malformed-json", [], lambda root: set_line(rte(root), 3, '{"premise": "x", '), DataError, r"RTE/train\.jsonl:3: malformed JSON"),
    ("json-not-an-object", [], lambda root: set_line(rte(root), 2, "[1, 2]"), DataError, r"train\.jsonl:2: expected a JSON object, got list"),
    ("json-missing-key", [], lambda root: set_line(rte(root), 4, '{"premise": "x", "label": "entailment"}'), DataError, r"train\.jsonl:4: missing key 'hypothesis'"),
    ("json-wrong-type", [], lambda root: set_line(rte(root), 5, '{"premise": 3, "hypothesis": "y"}'), DataError, r"train\.jsonl:5: key 'premise' should be a string, got int"),
    ("label-outside-set", [], lambda root: set_line(rte(root), 6, RTE_LINE % "maybe"), DataError, r"train\.jsonl:6: label 'maybe' is not one of \['entailment', 'not_entailment'\]"),
    # malformed CoNLL (file and line named)
    ("conll-one-column", ["task=conll03"], lambda root: set_line(conll(root), 3, "Stonebridge"), DataError, r"conll2003/train\.txt:3: 1 column\(s\)"),
    ("conll-tag-outside-set", ["task=conll03"], lambda root: set_line(conll(root), 4, "Media NNP I-NP B-FOO"), DataError, r"train\.txt:4: tag 'B-FOO' is not one of"),
]  # fmt: skip


@pytest.fixture
def data_copy(sample_data, tmp_path) -> Path:
    """A private copy of the RTE, COPA and CoNLL-2003 samples, safe to break."""
    root = tmp_path / "data"
    for part in ("fewglue/RTE", "fewglue/COPA", "conll2003"):
        shutil.copytree(sample_data / part, root / part)
    return root


def test_the_suite_is_big_enough():
    assert len(CASES) >= 25 and len({case[0] for case in CASES}) == len(CASES)


@pytest.mark.parametrize("overrides,breaks,error,match", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input(overrides, breaks, error, match, data_copy, tmp_path, no_model):
    from promptscale.train import compose, error_line, run

    if breaks:
        breaks(data_copy)
    out_dir = tmp_path / "out"
    results = out_dir / "results.jsonl"
    with pytest.raises(error) as info:
        cfg = compose([*FAST, f"data.dir={data_copy}", *overrides])
        run(cfg, out_dir, results)
    # what the CLI prints: our errors as they are, Hydra's through error_line
    line = error_line(info.value) if isinstance(info.value, HydraException) else str(info.value)
    assert line and "\n" not in line, f"not one line: {line!r}"
    assert re.search(match, line), f"{match!r} not in {line!r}"
    assert not results.exists() and not out_dir.exists()


# ---- through the real CLI: a non-zero exit and exactly one line on stderr ------------------------

# Hydra's errors exit 1 (as Hydra does), ours 2
CLI_CASES = [
    (["data.trian_size=8"], None, 1, r"Could not override 'data\.trian_size'"),
    (["task=nope"], None, 1, r"Could not find 'task/nope'"),
    (["task=conll03", "model=tiny-t5"], None, 2, r"with model=tiny-t5 \(encdec\)"),
    ([], lambda root: set_line(rte(root), 3, "{oops"), 2, r"RTE/train\.jsonl:3: malformed JSON"),
]


@pytest.mark.parametrize(
    "overrides,breaks,status,match", CLI_CASES, ids=["misspelt-key", "unknown-task", "unsupported", "malformed-json"]
)
def test_bad_input_through_the_cli(overrides, breaks, status, match, data_copy, tmp_path):

    if breaks:
        breaks(data_copy)
    run_dir = tmp_path / "run"
    proc = subprocess.run(
        [TRAIN_CLI, *FAST, f"data.dir={data_copy}", *overrides, f"hydra.run.dir={run_dir}"],
        cwd=tmp_path, env=os.environ.copy(), capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == status, proc.stderr[-3000:]
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("promptscale: error: "), proc.stderr[-3000:]
    assert re.search(match, lines[0]), lines[0]
    assert not (run_dir / "results.jsonl").exists()
    assert not list(run_dir.rglob("*.ckpt"))
