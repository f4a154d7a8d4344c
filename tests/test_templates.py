"""Jinja templates: the conversion from str.format changed no token id; lm-eval's prompts as
patterns; markers come from the template, never from a record's text; truncation cuts token ids
(one pass, for every tokenizer kind, on any multibyte text) at data.truncation_side."""

from __future__ import annotations

import copy
import hashlib
import json
import signal
from contextlib import contextmanager

import pytest
from omegaconf import OmegaConf

from conftest import _train
from promptscale.config import validate
from promptscale.data.datamodule import TaskDataModule
from promptscale.data.encoding import SLOT_ID, VIRTUAL_ID, TaskEncoder, TaskTemplates
from promptscale.data.example import Example
from promptscale.errors import ConfigError
from promptscale.methods.icl.model import SEPARATOR, pick_demonstrations
from promptscale.models import load_tokenizer
from promptscale.train import compose

TINY = ["tiny-gpt2", "tiny-llama", "tiny-bert", "tiny-t5"]
TASKS = ["boolq", "cb", "copa", "multirc", "record", "rte", "wic", "wsc"]

# sha256[:16] of the encodings of every sample record (train + val, data defaults) per task, tiny
# model and pattern (None: the task's template; "icl": 4 demonstrations), recorded with the
# str.format templates before the move to Jinja: the conversion must not change one token id.
BEFORE = {
    "boolq/tiny-bert/0": "956579af10d0a364",
    "boolq/tiny-bert/1": "9634f4dbeafe125e",
    "boolq/tiny-bert/2": "9431028c26a47605",
    "boolq/tiny-bert/None": "3fb95133184f3b2c",
    "boolq/tiny-gpt2/0": "a4a9db3f5cbfb79a",
    "boolq/tiny-gpt2/1": "a9a3ab2e0761b591",
    "boolq/tiny-gpt2/2": "63a738c12b7fbc03",
    "boolq/tiny-gpt2/None": "a4a9db3f5cbfb79a",
    "boolq/tiny-gpt2/icl": "7843b098494c84b0",
    "boolq/tiny-llama/0": "a4a9db3f5cbfb79a",
    "boolq/tiny-llama/1": "a9a3ab2e0761b591",
    "boolq/tiny-llama/2": "63a738c12b7fbc03",
    "boolq/tiny-llama/None": "a4a9db3f5cbfb79a",
    "boolq/tiny-llama/icl": "7843b098494c84b0",
    "boolq/tiny-t5/0": "93f16dd5fe261160",
    "boolq/tiny-t5/1": "32479c94c4ea5155",
    "boolq/tiny-t5/2": "cb1161f8fefc2abc",
    "boolq/tiny-t5/None": "002e8ef04cc3f78a",
    "boolq/tiny-t5/icl": "b5d22568acb88c80",
    "cb/tiny-bert/0": "3b1757b8e8fb48b9",
    "cb/tiny-bert/1": "38846416234f4319",
    "cb/tiny-bert/2": "bbd25c4e992c70b9",
    "cb/tiny-bert/None": "e82d15e897a5ed22",
    "cb/tiny-gpt2/0": "4ba64a204b3bfdb5",
    "cb/tiny-gpt2/1": "63ed3e1c422caf92",
    "cb/tiny-gpt2/2": "4e0c92a6bdcd6386",
    "cb/tiny-gpt2/None": "4ba64a204b3bfdb5",
    "cb/tiny-gpt2/icl": "a9bdd5625d7a8306",
    "cb/tiny-llama/0": "4ba64a204b3bfdb5",
    "cb/tiny-llama/1": "63ed3e1c422caf92",
    "cb/tiny-llama/2": "4e0c92a6bdcd6386",
    "cb/tiny-llama/None": "4ba64a204b3bfdb5",
    "cb/tiny-llama/icl": "a9bdd5625d7a8306",
    "cb/tiny-t5/0": "fece8388b3011204",
    "cb/tiny-t5/1": "40b03d927eaa03e3",
    "cb/tiny-t5/2": "1371054cac056eca",
    "cb/tiny-t5/None": "3462288cb949273a",
    "cb/tiny-t5/icl": "ae5d5a9243fbcee7",
    "copa/tiny-bert/0": "44eaf2bd144c080b",
    "copa/tiny-bert/1": "71b4da335bec8a81",
    "copa/tiny-bert/2": "9e998bded5b210f5",
    "copa/tiny-bert/None": "04ebfd9a771a6be6",
    "copa/tiny-gpt2/0": "c6265c0558965c97",
    "copa/tiny-gpt2/1": "a35447943449fced",
    "copa/tiny-gpt2/2": "00f120788c0ec406",
    "copa/tiny-gpt2/None": "c6265c0558965c97",
    "copa/tiny-gpt2/icl": "3cf0a0a0644be781",
    "copa/tiny-llama/0": "c6265c0558965c97",
    "copa/tiny-llama/1": "a35447943449fced",
    "copa/tiny-llama/2": "00f120788c0ec406",
    "copa/tiny-llama/None": "c6265c0558965c97",
    "copa/tiny-llama/icl": "3cf0a0a0644be781",
    "copa/tiny-t5/0": "ea73daa2d4d52c62",
    "copa/tiny-t5/1": "2ea53440252c010e",
    "copa/tiny-t5/2": "9c9278ca9e515fc7",
    "copa/tiny-t5/None": "adad36d54e47a4ff",
    "copa/tiny-t5/icl": "c1c16088bdab3b04",
    "multirc/tiny-bert/0": "30d0d70d52304f8a",
    "multirc/tiny-bert/1": "5afeef1170eaf988",
    "multirc/tiny-bert/2": "995a191ec39134b3",
    "multirc/tiny-bert/None": "c20c26815b3c417a",
    "multirc/tiny-gpt2/0": "2de202cc56050ee9",
    "multirc/tiny-gpt2/1": "b27bccc0da13fae8",
    "multirc/tiny-gpt2/2": "1bcf52ed7f58ad29",
    "multirc/tiny-gpt2/None": "2de202cc56050ee9",
    "multirc/tiny-gpt2/icl": "a899a76a17204182",
    "multirc/tiny-llama/0": "2de202cc56050ee9",
    "multirc/tiny-llama/1": "b27bccc0da13fae8",
    "multirc/tiny-llama/2": "1bcf52ed7f58ad29",
    "multirc/tiny-llama/None": "2de202cc56050ee9",
    "multirc/tiny-llama/icl": "a899a76a17204182",
    "multirc/tiny-t5/0": "60e2766398dfe020",
    "multirc/tiny-t5/1": "8a05729a836d2eef",
    "multirc/tiny-t5/2": "c857f58a92704263",
    "multirc/tiny-t5/None": "3675445daa04fefc",
    "multirc/tiny-t5/icl": "660090817bea58d8",
    "record/tiny-bert/0": "2d5de7a99fd18ac6",
    "record/tiny-bert/1": "45809699ee9e4306",
    "record/tiny-bert/2": "0d77a5c06bc5e7ee",
    "record/tiny-bert/None": "2d5de7a99fd18ac6",
    "record/tiny-gpt2/0": "199324b084e9aac5",
    "record/tiny-gpt2/1": "eb329faf09d8531d",
    "record/tiny-gpt2/2": "468e14fc51f7b0b4",
    "record/tiny-gpt2/None": "199324b084e9aac5",
    "record/tiny-gpt2/icl": "b6d4a9303883a4b7",
    "record/tiny-llama/0": "199324b084e9aac5",
    "record/tiny-llama/1": "eb329faf09d8531d",
    "record/tiny-llama/2": "468e14fc51f7b0b4",
    "record/tiny-llama/None": "199324b084e9aac5",
    "record/tiny-llama/icl": "b6d4a9303883a4b7",
    "record/tiny-t5/0": "37665174bef79c84",
    "record/tiny-t5/1": "f6f561dfb219d3fc",
    "record/tiny-t5/2": "345ead25fdf09fef",
    "record/tiny-t5/None": "1e4f4233483fe49f",
    "record/tiny-t5/icl": "36f38e16d38280aa",
    "rte/tiny-bert/0": "11695a19c6628a11",
    "rte/tiny-bert/1": "0fb190c8f453bb0c",
    "rte/tiny-bert/2": "19c1b4f880730209",
    "rte/tiny-bert/None": "f65622580d1344ac",
    "rte/tiny-gpt2/0": "ee963453ecdb94c4",
    "rte/tiny-gpt2/1": "839cdb887fbd33e0",
    "rte/tiny-gpt2/2": "6a76c681b674e364",
    "rte/tiny-gpt2/None": "ee963453ecdb94c4",
    "rte/tiny-gpt2/icl": "db61c6f2193d5197",
    "rte/tiny-llama/0": "ee963453ecdb94c4",
    "rte/tiny-llama/1": "839cdb887fbd33e0",
    "rte/tiny-llama/2": "6a76c681b674e364",
    "rte/tiny-llama/None": "ee963453ecdb94c4",
    "rte/tiny-llama/icl": "db61c6f2193d5197",
    "rte/tiny-t5/0": "20971895333b00e7",
    "rte/tiny-t5/1": "1a375c861e6aaa4d",
    "rte/tiny-t5/2": "7b5fd8885290d752",
    "rte/tiny-t5/None": "abd7f2e9ffab2638",
    "rte/tiny-t5/icl": "bd7918692bfc5c3a",
    "wic/tiny-bert/0": "40e948b29d94f3cc",
    "wic/tiny-bert/1": "ce59004f8dd3026c",
    "wic/tiny-bert/2": "724ec01a66e880ff",
    "wic/tiny-bert/None": "d79b435e13c9f470",
    "wic/tiny-gpt2/0": "1268fd6cb235f18b",
    "wic/tiny-gpt2/1": "dea1766b4725d092",
    "wic/tiny-gpt2/2": "9fcda2eb5f36c99e",
    "wic/tiny-gpt2/None": "1268fd6cb235f18b",
    "wic/tiny-gpt2/icl": "59b0f8b2681879d8",
    "wic/tiny-llama/0": "1268fd6cb235f18b",
    "wic/tiny-llama/1": "dea1766b4725d092",
    "wic/tiny-llama/2": "9fcda2eb5f36c99e",
    "wic/tiny-llama/None": "1268fd6cb235f18b",
    "wic/tiny-llama/icl": "59b0f8b2681879d8",
    "wic/tiny-t5/0": "538ea78905522620",
    "wic/tiny-t5/1": "556429a93412cb31",
    "wic/tiny-t5/2": "6e1bd3cfe064253b",
    "wic/tiny-t5/None": "0d91d8f520433636",
    "wic/tiny-t5/icl": "67a2de2b581fc496",
    "wsc/tiny-bert/0": "2898b7bd77b46578",
    "wsc/tiny-bert/1": "3f5c9621864c9536",
    "wsc/tiny-bert/2": "1196a9c71a4c6afd",
    "wsc/tiny-bert/None": "986653c7122add47",
    "wsc/tiny-gpt2/0": "df5c348bdf90550a",
    "wsc/tiny-gpt2/1": "4f6ae3cd650ad6f8",
    "wsc/tiny-gpt2/2": "2c90f3cedc3c5801",
    "wsc/tiny-gpt2/None": "df5c348bdf90550a",
    "wsc/tiny-gpt2/icl": "6b791fd7335d6bef",
    "wsc/tiny-llama/0": "df5c348bdf90550a",
    "wsc/tiny-llama/1": "4f6ae3cd650ad6f8",
    "wsc/tiny-llama/2": "2c90f3cedc3c5801",
    "wsc/tiny-llama/None": "df5c348bdf90550a",
    "wsc/tiny-llama/icl": "6b791fd7335d6bef",
    "wsc/tiny-t5/0": "a4e04b819f2904e6",
    "wsc/tiny-t5/1": "340b7b2d9a91143e",
    "wsc/tiny-t5/2": "fec68ca522681ce9",
    "wsc/tiny-t5/None": "0a6a6a59d1b77195",
    "wsc/tiny-t5/icl": "6308ea28b539c607",
}


@contextmanager
def deadline(seconds: int):
    """Fail instead of hanging (the old truncation loop never ended on a cut multibyte character)."""

    def fail(*_):
        raise TimeoutError(f"did not finish within {seconds} s")

    previous = signal.signal(signal.SIGALRM, fail)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


_TOKENIZERS: dict = {}


def tokenizer(model_cfg):
    if model_cfg.name not in _TOKENIZERS:
        _TOKENIZERS[model_cfg.name] = load_tokenizer(model_cfg)
    return _TOKENIZERS[model_cfg.name]


def digest(value) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()[:16]


@pytest.mark.parametrize("model", TINY)
def test_jinja_templates_encode_exactly_as_the_str_format_ones_did(sample_data, model):
    for task in TASKS:
        base = compose([f"task={task}", f"model={model}", f"data.dir={sample_data}", "logger=none", "method=finetune"])
        for pattern in [None, 0, 1, 2]:
            cfg = copy.deepcopy(base)
            cfg.method.pattern = pattern
            validate(cfg)
            data = TaskDataModule(cfg.task, cfg.data, cfg.seed)
            data.read()
            data.attach(tokenizer(cfg.model), cfg.model.family, cfg.method.head)
            examples = [*data.train_examples, *data.eval_examples]
            rows = [
                data.encoder.encode(e, i)
                for part in (data.train_examples, data.eval_examples)
                for i, e in enumerate(part)
            ]
            assert digest(rows) == BEFORE[f"{task}/{model}/{pattern}"], (task, pattern)
            if pattern is None and cfg.model.family != "encoder":
                demos = pick_demonstrations(data.train_examples, 4, "random", 0)
                text = "".join(data.encoder.demonstration(e) + SEPARATOR for e in demos)
                assert digest(data.encoder.ids(text)) == BEFORE[f"{task}/{model}/icl"], task
            assert examples


# ---- lm-evaluation-harness's prompts -------------------------------------------------------

# one hand-made record per task and the context / continuations lm-eval builds from it
# (lm_eval/tasks/super_glue/*/default.yaml, copa/utils.py, wsc/preprocess_wsc.py; target_delimiter " ")
LM_EVAL = [
    (
        "boolq",
        {"passage": "Tea -- A drink.", "question": "is tea a drink"},
        None,
        "Tea -- A drink.\nQuestion: is tea a drink?\nAnswer:",
        [" no", " yes"],
    ),
    (
        "cb",
        {"premise": "It rained.", "hypothesis": "The ground is wet"},
        None,
        "It rained.\nQuestion: The ground is wet. True, False, or Neither?\nAnswer:",
        [" True", " False", " Neither"],
    ),
    (
        "rte",
        {"premise": "Ann won.", "hypothesis": "Ann lost."},
        None,
        "Ann won.\nQuestion: Ann lost. True or False?\nAnswer:",
        [" True", " False"],
    ),
    (
        "wic",
        {"word": "run", "word1": "runs", "sentence1": "She runs fast.", "sentence2": "A run."},
        None,
        "Sentence 1: She runs fast.\nSentence 2: A run.\nQuestion: Is the word 'runs' used in the same way in the two sentences above?\nAnswer:",
        [" no", " yes"],
    ),
    (
        "wsc",
        {
            "text": 'Tom said " hi " to Ann , but *she* did n\'t hear ( really ) .',
            "span1": "Ann",
            "span2": "she",
            "passage": 'Tom said " hi " to Ann , but she did n\'t hear ( really ) .',
            "span2_index": "9",
        },
        None,
        'Passage: Tom said"hi"to Ann, but *she* didn\'t hear (really).\nQuestion: In the passage above, does the pronoun "*she*" refer to "*Ann*"?\nAnswer:',
        [" no", " yes"],
    ),
    (  # an index off by one word: lm-eval cuts the passage where the index says (its text, not a corrected one)
        "wsc",
        {
            "text": "Some day they might want to use *it*, but not now.",
            "span1": "safe",
            "span2": "it",
            "passage": "Some day they might want to use it, but not now.",
            "span2_index": "6",
        },
        None,
        'Passage: Some day they might want to *it*e it, but not now.\nQuestion: In the passage above, does the pronoun "*it*" refer to "*safe*"?\nAnswer:',
        [" no", " yes"],
    ),
    (
        "copa",
        {"premise": "The man turned on the faucet. ", "question": "effect"},
        ["The toilet filled with water.", "Water flowed from the spout."],
        "The man turned on the faucet therefore",
        ["  the toilet filled with water.", "  water flowed from the spout."],
    ),
    (
        "copa",
        {"premise": "My body cast a shadow.", "question": "cause"},
        ["The sun was rising.", "The grass was cut."],
        "My body cast a shadow because",
        ["  the sun was rising.", "  the grass was cut."],
    ),
]


@pytest.mark.parametrize("task,fields,candidates,context,continuations", LM_EVAL)
def test_lm_eval_patterns_render_lm_evals_own_prompt(task, fields, candidates, context, continuations):
    cfg = compose([f"task={task}", "model=tiny-gpt2", "method=pet", "method.pattern=lm_eval", "logger=none"])
    validate(cfg)
    assert cfg.task.pattern_name == "lm_eval"
    templates = TaskTemplates(cfg.task)
    example = Example("0", fields, 0, candidates=candidates)
    assert templates.prompt_text(fields) == context
    assert [templates.delimiter_text(fields) + c for c in templates.candidates(cfg.task, example)] == continuations


def test_pattern_by_index_and_by_name_are_the_same():
    by_name = compose(["task=copa", "model=tiny-gpt2", "method=pet", "method.pattern=lm_eval", "logger=none"])
    by_index = compose(["task=copa", "model=tiny-gpt2", "method=pet", "method.pattern=3", "logger=none"])
    validate(by_name)
    validate(by_index)
    assert by_name.task == by_index.task
    with pytest.raises(
        ConfigError, match=r"method.pattern=nope: task copa has 4 pattern\(s\) for decoder models \(named: lm_eval\)"
    ):
        validate(compose(["task=copa", "model=tiny-gpt2", "method=pet", "method.pattern=nope", "logger=none"]))


# ---- bad templates: one line naming the task, the pattern and the field, before any model ----

BAD = [
    # (overrides, pattern template replaced or None, error)
    (["task.template='{{ premise '"], None, r"^task rte: template: Jinja syntax error: .*'\{\{ premise '"),
    (["task.template='{{ premise }} {% if %}'"], None, r"^task rte: template: Jinja syntax error"),
    (
        ["task.template='{premise} Answer:'"],
        None,
        r"^task rte: template has \{premise\}, str.format syntax; .*\{\{ premise \}\}",
    ),
    (["task.delimiter='{{ '"], None, r"^task rte: delimiter: Jinja syntax error"),
    (["task.choice='{{ choice }'"], None, r"^task rte: choice: Jinja syntax error"),
    (["task.verbalizer.entailment='{{ x'"], None, r"^task rte: verbalizer\[entailment\]: Jinja syntax error"),
    (
        ["method=pet", "method.pattern=lm_eval"],
        "{{ premise }} {{",
        r"^task rte, pattern lm_eval: template: Jinja syntax error",
    ),
    (
        ["method=pet", "method.pattern=lm_eval"],
        "{{ premise }} {{ nope }}",
        r"^task rte, pattern lm_eval: template reads field\(s\) \['nope'\]; the records of .*train\.jsonl have \['hypothesis', 'premise'\]",
    ),
    (
        ["method=pet", "method.pattern=1"],
        "{{ premise.nope() }}",
        r"^task rte, pattern 1: rendering record \S+ of .*train\.jsonl fails",
    ),
    (
        ["task.template='{{ premise }} {{ hypothesis }}'", "task.choice='{{ choice }} {{ nope }}'"],
        None,
        r"^task rte: choice reads field\(s\) \['nope'\]",
    ),
    (["task.truncate=[nope]"], None, r"^task rte: task.truncate names field\(s\) \['nope'\]"),
    (["data.truncation_side=middle"], None, r"data.truncation_side"),
]


@pytest.mark.parametrize("overrides,pattern,error", BAD)
def test_bad_template_is_one_line_before_any_model(sample_data, no_model, overrides, pattern, error):
    cfg = compose(["task=rte", "model=tiny-gpt2", f"data.dir={sample_data}", "logger=none", *overrides])
    if pattern is not None:
        patterns = cfg.task.patterns.decoder
        patterns[
            [p.get("name") for p in patterns].index(cfg.method.pattern)
            if isinstance(cfg.method.pattern, str)
            else cfg.method.pattern
        ].template = pattern
    with pytest.raises(ConfigError, match=error) as info:
        validate(cfg)
        TaskDataModule(cfg.task, cfg.data, cfg.seed).read()
    assert "\n" not in str(info.value)


# ---- data text is never markup ----------------------------------------------------------------

MARKUP = "Ann [MASK] said [P] {premise} {{ premise }} {% if x %} </s> <|endoftext|> [CLS] that it rained."


@pytest.mark.parametrize(
    "model,overrides,slots,virtual",
    [
        ("tiny-bert", ["method=pet", "method.pattern=0"], 1, 0),  # the pattern's own [MASK]
        ("tiny-gpt2", ["method=pet", "method.pattern=1"], 0, 0),
        ("tiny-t5", ["method=finetune"], 0, 0),
        ("tiny-llama", ["method=ptuning", "method.prompt_length=3"], 0, 3),
        ("tiny-bert", ["method=ptuning", "method.template='[P] {{ premise }} [P] ? [MASK] , {{ hypothesis }}'"], 1, 2),
    ],
)
def test_markers_come_from_the_template_never_from_the_record(sample_data, model, overrides, slots, virtual):
    cfg = compose(["task=rte", f"model={model}", f"data.dir={sample_data}", "logger=none", *overrides])
    validate(cfg)
    tok = tokenizer(cfg.model)
    encoder = TaskEncoder(cfg.task, tok, cfg.model.family, 256)
    example = Example("0", {"premise": MARKUP, "hypothesis": "It [MASK] rained [P]."}, 0)
    ids = encoder.encode(example, 0)["prompt_ids"]
    assert ids.count(SLOT_ID) == slots
    assert ids.count(VIRTUAL_ID) == virtual
    specials = {tok.mask_token_id, tok.cls_token_id, tok.sep_token_id, tok.eos_token_id, tok.bos_token_id} - {None}
    if (
        cfg.model.family == "encdec"
    ):  # the tiny Unigram vocabulary holds "</s>" as a plain piece (T5's marks it control)
        specials.discard(tok.eos_token_id)
    assert not specials & set(ids)  # "[MASK]", "</s>" in a record are text, not control tokens
    if cfg.model.family == "decoder" and not virtual:
        assert tok.decode(ids) == encoder.templates.prompt_text(example.fields)
        assert MARKUP in tok.decode(ids)


def test_a_record_with_markup_trains_and_evaluates(tmp_path, sample_data):
    """A premise holding "[MASK]" and "[P]" (old code: IndexError after the model loaded)."""
    data = tmp_path / "data"
    folder = data / "fewglue" / "RTE"
    folder.mkdir(parents=True)
    for split in ("train", "val"):
        lines = (sample_data / "fewglue" / "RTE" / f"{split}.jsonl").read_text().splitlines()
        records = [json.loads(line) for line in lines]
        for r in records[:3]:
            r["premise"] = MARKUP + " " + r["premise"]
        (folder / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    for model, method in [("tiny-bert", "method.pattern=0"), ("tiny-llama", "method.prompt_length=2")]:
        name = "pet" if "pattern" in method else "ptuning"
        record = _train(
            ["task=rte", f"model={model}", f"method={name}", method, "trainer.max_steps=1"], tmp_path / model, data
        )
        assert record["status"] == "finished"


# ---- truncation: token ids are cut, in one pass -----------------------------------------------

TEXTS = {
    "minus": "x − y = 3 − 1 − z",
    "emoji": "ok 🙂👍🏽 fine 🎉🇵🇹",
    "cjk": "東京は日本の首都です。漢字かな",
    "mixed": "naïve café − 東京 🙂 [MASK] {x}",
}


def text_task():
    return OmegaConf.create(
        {
            "name": "synthetic",
            "kind": "classification",
            "labels": ["False", "True"],
            "verbalizer": {"False": "No", "True": "Yes"},
            "template": "{{ passage }}\nQuestion: {{ question }}?\nAnswer:",
            "delimiter": " ",
            "choice": "{{ choice }}",
            "truncate": ["passage"],
            "pattern_name": None,
        }
    )


@pytest.mark.parametrize("side", ["right", "left"])
@pytest.mark.parametrize("text", list(TEXTS))
@pytest.mark.parametrize("model", TINY)
def test_truncation_cuts_token_ids_of_multibyte_text(model, text, side):
    cfg = compose([f"model={model}", "logger=none"])
    tok = tokenizer(cfg.model)
    passage = " ".join([TEXTS[text]] * 30)
    fields = {"passage": passage, "question": "is it so"}
    example = Example("0", fields, 1)
    probe = TaskEncoder(text_task(), tok, cfg.model.family, 10_000)
    full = probe.ids(passage)
    tail = probe.ids("\nQuestion: is it so?\nAnswer:")
    assert probe.encode(example, 0)["prompt_ids"] == probe.prompt_ids(fields)  # fits: the joint encoding
    for max_length in range(len(tail) + 12, len(tail) + 60):  # cuts at every offset inside the characters
        encoder = TaskEncoder(text_task(), tok, cfg.model.family, max_length, side)
        with deadline(20):
            row = encoder.encode(example, 0)
        prompt = row["prompt_ids"]
        slot = 0 if cfg.model.family == "encdec" else max(len(c) for c in row["cand_ids"])
        assert len(prompt) == max_length - encoder.n_special - slot  # exactly the budget: only the passage lost tokens
        assert prompt[len(prompt) - len(tail) :] == tail  # the question and the cue are whole
        kept = prompt[: len(prompt) - len(tail)]
        assert kept == (full[: len(kept)] if side == "right" else full[len(full) - len(kept) :])


def test_truncation_cuts_fields_in_order_and_never_the_answer():
    tok = tokenizer(compose(["model=tiny-gpt2", "logger=none"]).model)
    task = text_task()
    task.template = "{{ a }} | {{ b }} | {{ c }} Answer:"
    task.truncate = ["b", "a"]
    fields = {"a": "alpha " * 30, "b": "beta " * 30, "c": "gamma"}
    example = Example("0", fields, 0)
    encoder = TaskEncoder(task, tok, "decoder", 40)
    b_only = len(encoder.prompt_ids(fields)) - len(encoder.prompt_ids({**fields, "b": ""}))
    row = encoder.encode(example, 0)
    text = tok.decode(row["prompt_ids"])
    assert text.endswith("| gamma Answer:")
    assert "beta" not in text and "alpha" in text  # b went first, entirely, then a was cut
    assert b_only > 0 and len(row["prompt_ids"]) + max(map(len, row["cand_ids"])) == 40
