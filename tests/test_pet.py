"""PET patterns and verbalizers, and the four training strategies."""

import pytest
import torch

from promptscale.config import validate
from promptscale.data.datamodule import TaskDataModule
from promptscale.data.encoding import SLOT_ID, compile_template
from promptscale.errors import ConfigError
from promptscale.methods import method_class
from promptscale.models import load_backbone
from promptscale.train import compose

SUPERGLUE = ["boolq", "cb", "copa", "multirc", "record", "rte", "wic", "wsc"]
FAMILY_MODEL = {"encoder": "tiny-bert", "decoder": "tiny-gpt2", "encdec": "tiny-t5"}


def setup(sample_data, overrides):
    cfg = compose([f"data.dir={sample_data}", "data.eval_size=4", *overrides])
    validate(cfg)
    backbone = load_backbone(cfg.model)
    module = method_class(cfg.method.name)(cfg, backbone).eval()
    data = TaskDataModule(cfg.task, cfg.data, cfg.seed)
    data.read()
    data.attach(backbone.tokenizer, cfg.model.family, cfg.method.head)
    data.setup()
    return cfg, module, data


@pytest.mark.parametrize("task", SUPERGLUE)
@pytest.mark.parametrize("family", list(FAMILY_MODEL))
def test_every_task_has_three_patterns_per_family_that_fill(sample_data, task, family):
    cfg = compose([f"task={task}", f"model={FAMILY_MODEL[family]}", "method=pet", f"data.dir={sample_data}"])
    patterns = cfg.task.patterns[family]
    assert len(patterns) >= 3
    data = TaskDataModule(cfg.task, cfg.data, 0)
    example = data.read_split("train")[0]
    for i, pattern in enumerate(patterns):
        text = compile_template(pattern.template, f"{task} {i}").render(example.fields)
        assert "{" not in text.replace(example.fields.get("passage", ""), "")
        assert ("[MASK]" in pattern.template) <= (family == "encoder")


def test_decoder_pattern_prompt_is_exactly_the_filled_template(sample_data):
    cfg, module, data = setup(sample_data, ["method=pet", "method.pattern=1", "model=tiny-gpt2", "task=rte"])
    example = data.eval_examples[0]
    ids = data.encoder.encode(example, 0)["prompt_ids"]
    f = example.fields
    expected = f'{f["premise"]}\nDoes this mean that "{f["hypothesis"]}" is true? Yes or no?\nAnswer:'
    assert module.backbone.tokenizer.decode(ids) == expected


def test_t5_pattern_is_the_encoder_input(sample_data):
    cfg, module, data = setup(sample_data, ["method=pet", "method.pattern=0", "model=tiny-t5", "task=rte"])
    batch = next(iter(data.val_dataloader()))
    example = data.eval_examples[batch["idx"][0]]  # evaluation runs longest first
    text = module.backbone.tokenizer.decode(batch["input_ids"][0], skip_special_tokens=True)
    assert text == f"rte premise: {example.fields['premise']} hypothesis: {example.fields['hypothesis']}"


def test_cloze_pattern_puts_the_masks_inside_and_scores_them_by_hand(sample_data):
    overrides = [
        "method=pet",
        "method.pattern=0",
        "model=tiny-bert",
        "task=rte",
        "task.verbalizer.entailment=yes indeed",
    ]
    cfg, module, data = setup(sample_data, overrides)
    example = data.eval_examples[0]
    encoded = data.encoder.encode(example, 0)
    assert SLOT_ID in encoded["prompt_ids"]
    tok = module.backbone.tokenizer
    before, after = (
        encoded["prompt_ids"][: encoded["prompt_ids"].index(SLOT_ID)],
        encoded["prompt_ids"][encoded["prompt_ids"].index(SLOT_ID) + 1 :],
    )
    assert tok.decode(before) == tok.decode(data.encoder.ids(f'"{example.fields["hypothesis"]}" ?'))
    batch = data.collator(data.eval_examples)([encoded])
    with torch.no_grad():
        scores = module(batch)[0]
        for c, cand in enumerate(encoded["cand_ids"]):
            ids = [tok.cls_token_id, *before, *[tok.mask_token_id] * len(cand), *after, tok.sep_token_id]
            logp = module.backbone.model(input_ids=torch.tensor([ids])).logits[0].log_softmax(-1)
            start = 1 + len(before)
            hand = sum(logp[start + t, token] for t, token in enumerate(cand))
            assert torch.isclose(scores[c], hand, atol=1e-5)
    assert len(encoded["cand_ids"][0]) > 1  # "yes indeed": multi-token, sum of its log-probs


def test_pattern_verbalizer_and_range_errors(sample_data):
    with pytest.raises(ConfigError, match=r"has 4 pattern\(s\) for decoder models \(named: lm_eval\)"):
        validate(compose(["method=pet", "method.pattern=7", "model=tiny-gpt2", f"data.dir={sample_data}"]))
    with pytest.raises(ConfigError, match="masked LMs"):
        validate(
            compose(
                [
                    "method=finetune",
                    "model=tiny-gpt2",
                    'task.template="{{ premise }} [MASK]"',
                    f"data.dir={sample_data}",
                ]
            )
        )
    with pytest.raises(ConfigError, match="needs method.pattern"):
        validate(compose(["method=pet", "method.pattern=null", f"data.dir={sample_data}"]))


@pytest.mark.parametrize(
    "strategy,backbone_trains,extra",
    [
        ("tuning_free", False, False),
        ("fixed_lm_prompt", False, True),
        ("fixed_prompt_lm", True, False),
        ("prompt_lm", True, True),
    ],
)
def test_training_strategies(sample_data, strategy, backbone_trains, extra):
    cfg, module, _ = setup(sample_data, [f"strategy={strategy}", "model=tiny-gpt2", "task=cb"])
    trains = {name.split(".")[0] for name, p in module.named_parameters() if p.requires_grad}
    assert ("backbone" in trains) == backbone_trains
    assert ("prompt" in trains) == extra
    if strategy in ("tuning_free", "fixed_prompt_lm", "prompt_lm"):
        assert cfg.task.template == cfg.task.patterns.decoder[0].template
