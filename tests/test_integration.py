"""Real data and the real packaged model (skipped without PROMPTSCALE_DATA_DIR)."""

import json
import os
import time
from pathlib import Path

import pytest
import torch

from promptscale.models import load_backbone
from promptscale.train import compose, run

DATA = os.environ.get("PROMPTSCALE_DATA_DIR")
pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not DATA, reason="PROMPTSCALE_DATA_DIR not set"),
]


def test_smollm2_loads_offline_fast_after_first_conversion():
    cfg = compose(["model=smollm2-135m"]).model
    load_backbone(cfg)  # converts once if the cache is empty
    start = time.perf_counter()
    backbone = load_backbone(cfg)
    elapsed = time.perf_counter() - start
    assert sum(p.numel() for p in backbone.parameters()) == 134_515_008
    assert elapsed < 5, f"cached load took {elapsed:.1f}s"
    ids = backbone.tokenizer("The capital of France is", return_tensors="pt").input_ids
    with torch.no_grad():
        next_id = backbone.model(input_ids=ids).logits[0, -1].argmax().item()
    assert backbone.tokenizer.decode([next_id]).strip() == "Paris"


def test_prompt_tuning_on_smollm2_with_real_rte(tmp_path: Path):
    cfg = compose(
        [
            "model=smollm2-135m",
            "task=rte",
            "method=prompt_tuning",
            f"data.dir={DATA}",
            "data.eval_size=32",
            "data.batch_size=4",
            "data.max_length=160",
            "trainer.max_steps=4",
            "trainer.enable_progress_bar=false",
            "logger=none",
        ]
    )
    results = tmp_path / "results.jsonl"
    record = run(cfg, tmp_path, results)
    line = json.loads(results.read_text().splitlines()[0])
    assert line["config_hash"] == record["config_hash"]
    assert line["trained_params"] == 20 * 576  # prompt_length x d_model
    assert line["train_steps"] == 4
    assert 0.0 <= line["metrics"]["accuracy"] <= 1.0


# ---- the other packaged real models: a short run of every method kind that applies ----------------


def short_run(tmp_path: Path, overrides: list[str]) -> dict:
    cfg = compose(
        [
            f"data.dir={DATA}",
            "data.train_size=16",
            "data.eval_size=8",
            "data.batch_size=2",
            "data.eval_batch_size=4",
            "data.max_length=128",
            "trainer.max_steps=2",
            "trainer.enable_progress_bar=false",
            "logger=none",
            *overrides,
        ]
    )
    results = tmp_path / "results.jsonl"
    record = run(cfg, tmp_path, results)
    line = json.loads(results.read_text().splitlines()[0])
    assert line["config_hash"] == record["config_hash"]
    return line


def test_gemma3_loads_offline_with_its_grouped_heads_and_sliding_window():
    backbone = load_backbone(compose(["model=gemma3-270m"]).model)
    config = backbone.model.config
    assert type(backbone.model).__name__ == "Gemma3ForCausalLM"
    assert sum(p.numel() for p in backbone.parameters()) == compose(["model=gemma3-270m"]).model.params
    assert config.num_key_value_heads < config.num_attention_heads
    assert "sliding_attention" in config.layer_types and "full_attention" in config.layer_types
    ids = backbone.tokenizer("The capital of France is", return_tensors="pt").input_ids
    with torch.no_grad():
        out = backbone.model.generate(ids, max_new_tokens=4, do_sample=False)
    assert backbone.tokenizer.decode(out[0, ids.shape[1] :]).strip().startswith("the capital")


@pytest.mark.parametrize(
    "method,extra",
    [
        ("finetune", []),
        ("prompt_tuning", ["method.init=class_label"]),
        ("prefix_tuning", []),
        ("ptuning_v2", []),
        ("ptuning", []),
        ("lora", []),
        ("adapter", []),
        ("pet", []),
        ("icl", ["method.shots=4"]),
    ],
)
def test_gemma3_short_run_on_fewglue(tmp_path: Path, method, extra):
    line = short_run(tmp_path, ["model=gemma3-270m", "task=cb", f"method={method}", *extra])
    assert line["train_steps"] == (0 if method == "icl" else 2)
    assert 0.0 <= line["metrics"]["accuracy"] <= 1.0
    if method in ("prefix_tuning", "ptuning_v2"):  # prefixes sized for 1 key/value head, not 4
        cfg = load_backbone(compose(["model=gemma3-270m"]).model).model.config
        prefix = cfg.num_hidden_layers * 2 * cfg.num_key_value_heads * cfg.head_dim
        expected = {"ptuning_v2": 16 * prefix + cfg.hidden_size * 3 + 3, "prefix_tuning": 10 * prefix}
        assert line["kept_params"] == expected[method]  # P-Tuning v2: + a last-token head for CB's 3 labels


def test_minilm_loads_offline_as_a_bare_bert_encoder():
    cfg = compose(["model=minilm-l6"]).model
    backbone = load_backbone(cfg)
    assert type(backbone.model).__name__ == "BertModel"  # no MLM head, none invented
    assert (backbone.model.config.num_hidden_layers, backbone.hidden_size) == (6, 384)
    assert sum(p.numel() for p in backbone.parameters()) == cfg.params
    assert backbone.tokenizer.tokenize("Ann bought a red car.") == ["ann", "bought", "a", "red", "car", "."]


@pytest.mark.parametrize(
    "overrides,metric",
    [
        pytest.param(["task=rte", "method=finetune", "method.head=cls"], "accuracy", id="rte-finetune"),
        pytest.param(["task=rte", "method=ptuning_v2"], "accuracy", id="rte-ptuning_v2"),
        pytest.param(["task=rte", "method=adapter", "method.head=cls"], "accuracy", id="rte-adapter"),
        pytest.param(["task=rte", "method=lora", "method.head=cls"], "accuracy", id="rte-lora"),
        pytest.param(["task=conll03", "method=ptuning_v2"], "f1", id="conll03-ptuning_v2"),
        pytest.param(["task=conll03", "method=finetune"], "f1", id="conll03-finetune"),
        pytest.param(["task=conll03", "method=lora"], "f1", id="conll03-lora"),
    ],
)
def test_minilm_short_run_on_fewglue_and_conll(tmp_path: Path, overrides, metric):
    line = short_run(tmp_path, ["model=minilm-l6", *overrides])
    assert line["train_steps"] == 2
    assert 0.0 <= line["metrics"][metric] <= 1.0
