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
