"""Packaged real models (one table, models.PACKAGED), the MLM-head capability, and Gemma 3's
traits (grouped key/value heads, sliding-window layers) under prefixes, the ICL cache and adapters,
on a tiny random Gemma 3."""

import pytest
import torch

from conftest import build_run
from promptscale.config import validate
from promptscale.errors import ConfigError
from promptscale.methods import METHODS, method_class
from promptscale.models import PACKAGED, load_backbone
from promptscale.train import compose


def build(sample_data, overrides):
    _, module, data = build_run(sample_data, ["data.eval_size=8", *overrides])
    return module, data


def test_every_packaged_model_has_a_config_and_the_configs_name_one():
    for name in PACKAGED:
        model = compose([f"model={name}"]).model
        assert (model.source, model.path) == ("packaged", name)


def test_an_unknown_packaged_model_is_refused_before_loading(no_model):
    with pytest.raises(ConfigError, match=r"model\.path='nope' is not one of smollm2-135m"):
        validate(compose(["model=smollm2-135m", "model.path=nope"]))


# every method x task the MiniLM encoder (no MLM head) is asked to run: those that read verbalizers
# through the MLM head are refused with that reason, before any model loads
HEAD_CASES = [
    (["method=finetune", "method.head=cls", "task=rte"], None),
    (["method=ptuning_v2", "task=rte"], None),
    (["method=ptuning_v2", "task=conll03"], None),
    (["method=adapter", "method.head=cls", "task=cb"], None),
    (["method=lora", "method.head=cls", "task=cb"], None),
    (["method=finetune", "task=conll03"], None),
    (["method=finetune", "task=rte"], "no MLM head"),
    (["method=pet", "task=rte"], "no MLM head"),
    (["method=prompt_tuning", "task=cb"], "no MLM head"),
    (["method=ptuning", "task=cb"], "no MLM head"),
    (["method=prefix_tuning", "task=cb"], "no MLM head"),
    (["method=adapter", "task=cb"], "no MLM head"),
    (["method=lora", "task=rte"], "no MLM head"),
    (["method=ptuning_v2", "method.head=lm", "task=rte"], "no MLM head"),
]


@pytest.mark.parametrize("overrides,reason", HEAD_CASES)
def test_an_encoder_without_mlm_head_serves_head_methods_and_refuses_cloze_ones(no_model, overrides, reason):
    cfg = compose(["model=minilm-l6", *overrides])
    if reason is None:
        validate(cfg)
    else:
        with pytest.raises(ConfigError, match=f"model=minilm-l6 .*{reason}"):
            validate(cfg)


def test_mlm_head_false_loads_the_bare_encoder_and_trains_a_cls_head(train, tmp_path):
    """The capability, on a tiny BERT: no random MLM head is built, the [CLS] head reads it."""
    record = train(
        ["model=tiny-bert", "model.mlm_head=false", "method=finetune", "method.head=cls", "task=rte"], tmp_path
    )
    backbone = load_backbone(compose(["model=tiny-bert", "model.mlm_head=false"]).model)
    assert type(backbone.model).__name__ == "BertModel"
    assert record["total_params"] == sum(p.numel() for p in backbone.model.parameters()) + 32 * 2 + 2
    assert "accuracy" in record["metrics"]


def test_the_matrix_of_every_method_agrees_for_the_encoder_without_mlm_head(no_model):
    for method in METHODS:
        for task in ("rte", "copa", "conll03"):
            cfg = compose([f"method={method}", "model=minilm-l6", f"task={task}"])
            reason = method_class(method).unsupported(cfg)
            if reason is None and task != "conll03":
                assert cfg.method.head == "cls", f"{method} on {task} would need the MLM head"


# ---- Gemma 3: grouped key/value heads and a sliding-window layer (window 8) ----------------------


@pytest.mark.parametrize("task", ["cb", "copa"])
def test_gemma3_cached_demonstrations_equal_the_naive_path_beyond_the_window(sample_data, task):
    module, data = build(sample_data, ["method=icl", "model=tiny-gemma3", f"task={task}", "method.shots=4"])
    module.prepare(data)
    assert len(module.demo_ids) > 4 * module.backbone.model.config.sliding_window
    with torch.no_grad():
        cached = torch.cat([module(batch) for batch in data.val_dataloader()])
        module.hp.cache_demos = False
        module.prepare(data)
        naive = torch.cat([module(batch) for batch in data.val_dataloader()])
    torch.testing.assert_close(cached, naive, rtol=0, atol=1e-5)


@pytest.mark.parametrize("method", ["prefix_tuning", "ptuning_v2"])
def test_gemma3_prefixes_have_grouped_heads_and_act_in_every_layer(sample_data, method):
    module, data = build(
        sample_data,
        [f"method={method}", "model=tiny-gemma3", "task=cb", "method.prompt_length=3", "method.reparam_hidden=0"],
    )
    layers, kv_heads, head_dim = module.backbone.kv_shape()
    assert (layers, kv_heads, head_dim) == (2, 1, 16)  # 1 key/value head for 2 query heads
    assert module.deep_prompt.table().shape == (layers, 2, kv_heads, 3, head_dim)
    batch = next(iter(data.val_dataloader()))
    with torch.no_grad():
        base = module(batch)
        table = module.deep_prompt.prefix.view(3, layers, -1)
        for k in range(layers):  # the sliding-window layer (0) and the global one (1)
            saved = table[:, k].clone()
            table[:, k] += 1.0
            assert not torch.allclose(module(batch), base), f"layer {k}'s prefix has no effect"
            table[:, k] = saved


@pytest.mark.parametrize(
    "method,extra",
    [
        ("prefix_tuning", []),
        ("ptuning_v2", []),
        ("adapter", ["method.lr=1e-2"]),
        ("lora", ["method.lr=1e-2"]),
        ("icl", ["method.shots=2"]),
    ],
)
def test_gemma3_runs_each_method(train, tmp_path, method, extra):
    record = train([f"method={method}", "model=tiny-gemma3", "task=rte", *extra], tmp_path)
    assert 0.0 <= record["metrics"]["accuracy"] <= 1.0
