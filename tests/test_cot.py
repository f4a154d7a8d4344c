"""Chain-of-thought: the prompts it builds, answer extraction onto the label set, unanswerable
outputs counted as wrong, real greedy generation."""

import lightning as L
import pytest

from conftest import build_run
from promptscale.config import validate
from promptscale.errors import ConfigError
from promptscale.methods.cot.model import extract_answer
from promptscale.train import compose

DEMO = '[{fields: {premise: "Ann moved to Lima.", hypothesis: "Ann lives in Lima."}, rationale: "She moved there.", answer: "Yes"}]'


def build(sample_data, overrides):
    _, module, data = build_run(
        sample_data, ["method=cot", "model=tiny-gpt2", "task=rte", "data.eval_size=4", *overrides]
    )
    return module, data


@pytest.mark.parametrize(
    "text,expected",
    [
        ("Yes, the passage says so.", 0),
        ("the answer is no.", 1),
        ("No. Yes would be wrong.", 1),  # the first option named wins
        ("Yesterday it rained.", None),  # whole words only
        ("I cannot tell.", None),
    ],
)
def test_extract_answer(text, expected):
    assert extract_answer(text, ["Yes", "No"]) == expected


def test_zero_shot_prompts_and_unanswerable_counted_wrong(sample_data, tmp_path, monkeypatch):
    module, data = build(sample_data, [])
    prompts = []
    replies = iter(["It follows.", " Yes.", "Hard to say.", " maybe", "Clearly.", " no", "Hmm.", " yes"])

    def fake_generate(ids, max_new_tokens):
        prompts.append(module.backbone.tokenizer.decode(ids))
        return next(replies)

    monkeypatch.setattr(module, "generate", fake_generate)
    trainer = L.Trainer(logger=False, enable_progress_bar=False, default_root_dir=tmp_path)
    metrics = trainer.validate(module, datamodule=data, verbose=False)[0]
    order = list(data.val_dataloader().sampler)  # evaluation runs longest first
    first = data.eval_examples[order[0]]
    assert prompts[0].endswith(f"{first.fields['hypothesis']} Yes or no?\nAnswer: Let's think step by step.")
    assert prompts[1].endswith("Let's think step by step.It follows.\nTherefore, the answer is")
    assert metrics["eval/unanswered"] == 1.0
    gold = [data.eval_examples[i].label for i in order]
    answers = [0, None, 1, 0]  # in evaluation order
    expected = sum(a == g for a, g in zip(answers, gold)) / 4
    assert metrics["eval/accuracy"] == pytest.approx(expected)
    # the predictions file's records, in the split's order, carry what was generated
    from promptscale.predictions import prediction_records

    lines = prediction_records(data.task, data.eval_examples, module.collected)
    assert [line["id"] for line in lines] == [e.guid for e in data.eval_examples]
    chosen = [answers[order.index(i)] for i in range(len(order))]
    assert [line["answered"] for line in lines] == [a is not None for a in chosen]
    by_order = {i: n for n, i in enumerate(order)}  # the replies went out in evaluation order
    assert [line["rationale"] for line in lines] == [
        ["It follows.", "Hard to say.", "Clearly.", "Hmm."][by_order[i]] for i in range(len(order))
    ]


def test_few_shot_demonstrations_come_first(sample_data):
    module, data = build(sample_data, [f"method.demonstrations={DEMO}", "method.shots=1"])
    assert (
        module.demo_text
        == "Ann moved to Lima.\nQuestion: Ann lives in Lima. Yes or no?\nAnswer: She moved there. So the answer is Yes.\n\n"
    )


def test_real_greedy_generation_runs(sample_data):
    module, data = build(sample_data, ["method.max_new_tokens=3", "method.answer_tokens=2"])
    choice, record = module.answer(data, data.eval_examples[0])
    assert isinstance(record["rationale"], str) and choice in (0, 1, None)


def test_bad_settings(sample_data):
    with pytest.raises(ConfigError, match="only 0"):
        validate(compose(["method=cot", "method.shots=2", f"data.dir={sample_data}"]))
    with pytest.raises(ConfigError, match="lacks"):
        validate(compose(["method=cot", "method.demonstrations=[{fields: {}}]", f"data.dir={sample_data}"]))
    with pytest.raises(ConfigError, match="generates text"):
        validate(compose(["method=cot", "model=tiny-bert", f"data.dir={sample_data}"]))
