"""The bad-input suite (issue 8): every case fails with one clear line, a non-zero exit, nothing
in the results store and no model loaded.

The table runs in-process: Hydra's own checks (unknown group option, misspelt key, wrong type)
through ``promptscale.train.compose``, ours through ``promptscale.train.run``, which is what the
CLI calls. A few cases go through the real ``promptscale-train`` for the exit code and the line.
"""

from __future__ import annotations

import json
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


def write_bytes_line(path: Path, lineno: int, data: bytes) -> None:
    lines = path.read_bytes().splitlines()
    lines[lineno - 1] = data
    path.write_bytes(b"\n".join(lines) + b"\n")


def strip_labels(path: Path) -> None:
    lines = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    path.write_text("".join(json.dumps({k: v for k, v in r.items() if k != "label"}) + "\n" for r in lines))


# the generic CoNLL task pointed at the CoNLL-2003 sample's folder
CONLL = ["task=conll", "task.name=mine", "task.folder=conll2003"]

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
    ("no-data-dir-no-hub", ["task=conll", "task.name=mine", "data.dir=null"], None, ConfigError, r"set data\.dir"),
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
    # ---- issue 13 --------------------------------------------------------------------------------
    # item 9: bytes that are not UTF-8 (jsonl and CoNLL): file and line
    ("jsonl-not-utf8", [], lambda root: write_bytes_line(rte(root), 3, b'{"premise": "caf\xe9", "hypothesis": "x", "label": "entailment"}'), DataError, r"RTE/train\.jsonl:3: not UTF-8 text \(byte 0xe9 at column 17\)"),
    ("conll-not-utf8", ["task=conll03"], lambda root: write_bytes_line(conll(root), 5, b"hir\xffed VBD B-VP O"), DataError, r"conll2003/train\.txt:5: not UTF-8 text \(byte 0xff"),
    # item 11: a token with a space shifts the columns; a missing tag column is no tag
    ("conll-token-with-space", ["task=conll03"], lambda root: set_line(conll(root), 4, "New York NNP I-NP I-ORG"), DataError, r"train\.txt:4: 5 columns where the lines before have 4 .*separate columns with tabs"),
    ("conll-missing-tag-column", CONLL, lambda root: set_line(conll(root), 4, "Media NNP I-NP"), DataError, r"train\.txt:4: 3 columns where the lines before have 4"),
    ("conll-missing-column-in-eval", CONLL, lambda root: set_line(root / "conll2003/valid.txt", 5, "Media NNP I-NP"), DataError, r"valid\.txt:5: 3 columns"),
    # item 23: a column that is not an IOB tag scheme (POS tags, the tokens), with a short message
    ("conll-pos-column", [*CONLL, "task.reader_options.tag_column=1"], None, DataError, r"train\.txt:3: column 1 holds 'NNP', not a tag of the IOB scheme .*tag_column"),
    ("conll-token-column", ["task=conll03", "task.reader_options.tag_column=0"], None, DataError, r"train\.txt:3: column 0 holds 'Stonebridge', not a tag of the IOB scheme"),
    ("conll-tag-without-type", ["task=conll03"], lambda root: set_line(conll(root), 4, "Media NNP I-NP B-"), DataError, r"train\.txt:4: column -1 holds 'B-'"),
    # item 22: reader options against the reader's signature and types
    ("reader-option-misspelt", [*CONLL, "+task.reader_options.tag_col=1"], None, ConfigError, r"task\.reader_options\.tag_col: reader conll has no such option \(its options: tag_column\)"),
    ("reader-option-wrong-type", [*CONLL, "task.reader_options.tag_column='-1'"], None, ConfigError, r"task\.reader_options\.tag_column='-1' should be int, got str"),
    ("reader-option-on-jsonl-reader", ["+task.reader_options.tag_column=1"], None, ConfigError, r"task\.reader_options\.tag_column: reader rte has no such option \(its options: none\)"),
    # item 25: the generic CoNLL task must be given its dataset's own name
    ("conll-without-name", ["task=conll", "task.folder=conll2003"], None, ConfigError, r"task\.name: no value set"),
    # item 14: values checked before any model loads
    ("negative-seed", ["seed=-1"], None, ConfigError, r"seed must be in 0\.\.4294967295 \(numpy's range\), got -1"),
    ("seed-too-large", ["seed=4294967296"], None, ConfigError, r"seed must be in 0\.\.4294967295"),
    ("unknown-dtype", ["model.dtype=nope"], None, ConfigError, r"model\.dtype='nope' is not a torch dtype"),
    ("dtype-not-a-dtype", ["model.dtype=nn"], None, ConfigError, r"model\.dtype='nn' is not a torch dtype"),
    ("unknown-precision", ["trainer.precision=bogus"], None, ConfigError, r"trainer\.precision=.bogus. is not one of 64, 32, 16, transformer-engine, .*bf16-mixed, 32-true, 64-true, bf16$"),
    ("unknown-accelerator", ["trainer.accelerator=bogus"], None, ConfigError, r"trainer\.accelerator='bogus' is not one of auto, gpu, cpu"),
    ("unknown-strategy", ["trainer.strategy=nope"], None, ConfigError, r"trainer\.strategy='nope' is not one of auto, ddp, .*, \.\.\. \d+ more$"),
    ("unknown-truncate-field", ["task.truncate=[nope]"], None, ConfigError, r"task rte: task\.truncate names field\(s\) \['nope'\]; the records of .*train\.jsonl have \['hypothesis', 'premise'\]"),
    ("negative-num-workers", ["data.num_workers=-1"], None, ConfigError, r"data\.num_workers must be >= 0, got -1"),
    ("unknown-logger-mode", ["logger.mode=bogus"], None, ConfigError, r"logger\.mode='bogus' is not one of online, offline, disabled"),
    ("eval-split-without-labels", [], lambda root: strip_labels(root / "fewglue/RTE/val.jsonl"), DataError, r"RTE/val\.jsonl: 8 of 8 records have no label .*split val needs labels to be scored"),
    ("train-split-without-labels", [], lambda root: strip_labels(rte(root)), DataError, r"RTE/train\.jsonl: 8 of 8 records have no label .*split train needs labels to be trained on"),
    ("choice-eval-split-without-labels", ["task=copa"], lambda root: strip_labels(root / "fewglue/COPA/val.jsonl"), DataError, r"COPA/val\.jsonl: 8 of 8 records have no label"),
    # item 15: keys no schema has, added with + (Hydra's own hint for an unknown key)
    ("plus-misspelt-method-key", ["+method.prompt_lenght=5"], None, ConfigError, r"unknown config key\(s\) method\.prompt_lenght"),
    ("plus-key-of-another-method", ["method=lora", "+method.prompt_length=5"], None, ConfigError, r"unknown config key\(s\) method\.prompt_length"),
    ("plus-data-key", ["+data.trian_size=8"], None, ConfigError, r"unknown config key\(s\) data\.trian_size"),
    ("plus-top-level-key", ["+sed=3"], None, ConfigError, r"unknown config key\(s\) sed"),
    ("plus-nested-key", ["+task.hub.revison=main"], None, ConfigError, r"unknown config key\(s\) task\.hub\.revison"),
    ("plus-model-trainer-logger-keys", ["+model.dtpye=float16", "+trainer.max_step=3", "+logger.projet=x"], None, ConfigError, r"unknown config key\(s\) model\.dtpye, trainer\.max_step, logger\.projet"),
    # item 12: positions (from the model's config, no weights) and the answer slot
    ("prompt-longer-than-positions", ["method.prompt_length=600"], None, ConfigError, r"data\.max_length=256 \+ 600 \(method\.prompt_length\) = 856 positions, more than the 512 of model tiny-gpt2"),
    ("prefix-longer-than-positions", ["method=prefix_tuning", "method.prompt_length=300"], None, ConfigError, r"= 556 positions, more than the 512"),
    ("input-longer-than-positions", ["method=finetune", "data.max_length=600", "model=tiny-bert"], None, ConfigError, r"data\.max_length=600 = 600 positions, more than the 512 of model tiny-bert"),
    ("cot-generation-past-positions", ["method=cot", "method.max_new_tokens=400"], None, ConfigError, r"data\.max_length=256 \+ 400 \(method\.max_new_tokens\) \+ 8 \(method\.answer_tokens\) = 664 positions"),
    ("max-length-leaves-no-answer", ["data.max_length=1"], None, ConfigError, r"data\.max_length=1 leaves no room for a prompt token and an answer token \(decoder models need >= 3\)"),
    ("max-length-leaves-no-answer-encoder", ["data.max_length=3", "model=tiny-bert", "method=finetune"], None, ConfigError, r"encoder models need >= 4"),
    ("max-length-leaves-no-choice", ["task=copa", "data.max_length=1"], None, ConfigError, r"data\.max_length=1 leaves no room"),
    # issue 15 item 6
    ("eval-limit-zero", ["data.eval_limit=0"], None, ConfigError, r"data\.eval_limit must be >= 1 or null, got 0"),
]  # fmt: skip


@pytest.fixture
def data_copy(sample_data, tmp_path) -> Path:
    """A private copy of the RTE, COPA and CoNLL-2003 samples, safe to break."""
    root = tmp_path / "data"
    for part in ("fewglue/RTE", "fewglue/COPA", "conll2003"):
        shutil.copytree(sample_data / part, root / part)
    return root


def test_the_suite_is_big_enough():
    assert len(CASES) >= 85 and len({case[0] for case in CASES}) == len(CASES)


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
    (["+method.prompt_lenght=5"], None, 2, r"unknown config key\(s\) method\.prompt_lenght"),
    ([], lambda root: write_bytes_line(rte(root), 2, b"\xff\xfe{}"), 2, r"RTE/train\.jsonl:2: not UTF-8 text"),
]
CLI_IDS = ["misspelt-key", "unknown-task", "unsupported", "malformed-json", "plus-misspelt-key", "not-utf8"]


@pytest.mark.parametrize("overrides,breaks,status,match", CLI_CASES, ids=CLI_IDS)
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


# ---- checks that count tokens: the tokenizer may load, the model never ----------------------------

TOKEN_CASES = [
    # issue 13 item 12: ICL demonstrations that cannot fit the model's positions
    ("icl-shots-past-positions", ["method=icl", "method.shots=32", "data.max_length=64", "data.train_size=null"], r"data\.max_length=64 \+ \d+ \(demonstrations\) = \d+ positions, more than the 512 of model tiny-gpt2; lower data\.max_length or method\.shots"),
    # verbalizers the answer slot cuts to the same tokens cannot be told apart
    ("verbalizers-cut-alike", ["data.max_length=3", "task.verbalizer.entailment='yes it is'", "task.verbalizer.not_entailment='yes it is not'"], r"data\.max_length=3: the answer slot keeps 1 token\(s\) of each verbalizer, too few to tell"),
]  # fmt: skip


@pytest.mark.parametrize("overrides,match", [c[1:] for c in TOKEN_CASES], ids=[c[0] for c in TOKEN_CASES])
def test_bad_input_counted_in_tokens(overrides, match, data_copy, tmp_path, monkeypatch):
    import promptscale.models as models
    from promptscale.train import compose, run

    def forbidden(*args, **kwargs):
        pytest.fail("a model was loaded for bad input")

    monkeypatch.setattr(models, "load_model", forbidden)
    monkeypatch.setattr(models, "load_backbone", forbidden)
    results = tmp_path / "out" / "results.jsonl"
    with pytest.raises(ConfigError, match=match) as info:
        run(compose([*FAST, f"data.dir={data_copy}", *overrides]), tmp_path / "out", results)
    assert "\n" not in str(info.value) and not results.exists()


def test_accepted_values_still_run_past_the_checks(data_copy):
    """The new checks refuse only what cannot run: the values next to each refused one pass."""
    from promptscale.config import validate
    from promptscale.train import compose

    for overrides in (
        ["seed=4294967295"],
        ["seed=0"],
        ["model.dtype=bfloat16"],
        ["trainer.precision=16"],
        ["trainer.precision=bf16-mixed"],
        ["logger.mode=disabled"],
        ["data.num_workers=0"],
        ["+model.arch_kwargs.initializer_range=0.2"],
        ["method=ptuning", "method.prompt_length=600"],  # [P]s sit inside data.max_length
        ["model=tiny-t5", "method.prompt_length=600"],  # relative positions: no limit
        ["strategy=prompt_lm"],
        ["experiment=cpu_scale"],
        ["experiment=ptv2"],
        ["experiment=prompt_init"],
        ["task=conll", "task.name=mine"],
    ):
        validate(compose([*FAST, f"data.dir={data_copy}", *overrides]))


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="this machine has CUDA")
def test_an_accelerator_this_machine_lacks(sample_data, no_model):
    from promptscale.config import validate
    from promptscale.train import compose

    for accelerator in ("cuda", "gpu"):
        with pytest.raises(ConfigError, match=rf"trainer\.accelerator={accelerator}: not available on this machine"):
            validate(compose([f"data.dir={sample_data}", f"trainer.accelerator={accelerator}"]))
