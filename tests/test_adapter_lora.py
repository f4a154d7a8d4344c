"""Houlsby adapters (method=adapter) and LoRA (method=lora) on the tiny models of every family:
identity at init, closed-form trainable counts, overfitting with a frozen backbone, merge
equivalence, trainable-only checkpoints and PEFT-loadable LoRA folders; plus one integration run
on the packaged SmolLM2-135M with real RTE."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

from promptscale.errors import ConfigError
from promptscale.methods import method_class
from promptscale.methods.adapter.model import adapter_param_count, is_norm
from promptscale.models import load_backbone
from promptscale.train import compose

D = 32  # hidden size of every tiny model
N_ADAPTED = {  # adapters under placement=houlsby / pfeiffer (2 layers; a T5 decoder layer has 3 sublayers)
    "tiny-bert": (4, 2),
    "tiny-t5": (10, 4),
    "tiny-gpt2": (4, 2),
    "tiny-llama": (4, 2),
}


def lora_closed_form(model: str, r: int) -> int:
    """r · (d_in + d_out) summed over the default target matrices of the 2-layer tiny models."""
    per = {
        "tiny-bert": 2 * (r * (D + D) + r * (D + D)),  # query, value
        "tiny-t5": 6 * (r * (D + D) + r * (D + D)),  # q, v of enc self, dec self, dec cross
        "tiny-gpt2": 2 * r * (D + 3 * D),  # fused c_attn: d -> 3d
        "tiny-llama": 2 * (r * (D + D) + r * (D + 16)),  # q_proj 32->32, v_proj 32->16 (1 kv head)
    }
    return per[model]


def build(overrides):
    cfg = compose(overrides)
    backbone = load_backbone(cfg.model)
    return cfg, method_class(cfg.method.name)(cfg, backbone)


def lm_logits(model, tokenizer, family):
    ids = tokenizer("the cat sat on the mat because it was tired", return_tensors="pt").input_ids
    kwargs = {"decoder_input_ids": ids[:, :3]} if family == "encdec" else {}
    with torch.no_grad():
        return model(input_ids=ids, **kwargs).logits


# ---- without a trainer: identity at init, closed-form counts, merge -------------------------------
@pytest.mark.parametrize("model", list(N_ADAPTED))
def test_adapter_identity_at_init_and_closed_form_count(model):
    cfg, module = build([f"model={model}", "method=adapter", "method.bottleneck=8", "method.train_layer_norms=false"])
    reference = load_backbone(cfg.model)
    reference.model.eval(), module.eval()
    family = cfg.model.family
    assert torch.equal(
        lm_logits(module.backbone.model, reference.tokenizer, family),
        lm_logits(reference.model, reference.tokenizer, family),
    )
    n_houlsby, n_pfeiffer = N_ADAPTED[model]
    assert len(module.adapters) == n_houlsby
    counts = module.parameter_counts()
    assert counts["trained_params"] == n_houlsby * adapter_param_count(D, 8) == n_houlsby * (2 * D * 8 + 8 + D)
    assert counts["total_params"] == sum(p.numel() for p in reference.parameters()) + counts["trained_params"]

    # Pfeiffer: after the feed-forward only; trainable layer norms add exactly the base model's norms
    _, pfeiffer = build([f"model={model}", "method=adapter", "method.bottleneck=8", "method.placement=pfeiffer"])
    norms = sum(
        p.numel()
        for m in pfeiffer.backbone.model.base_model.modules()
        if is_norm(m)
        for p in m.parameters(recurse=False)
    )
    assert norms > 0
    assert set(pfeiffer.adapter_points.values()) == {"ffn"}
    assert pfeiffer.parameter_counts()["trained_params"] == n_pfeiffer * adapter_param_count(D, 8) + norms


@pytest.mark.parametrize("model", list(N_ADAPTED))
def test_lora_identity_at_init_closed_form_count_and_merge(model):
    from peft.tuners.lora import LoraLayer

    cfg, module = build([f"model={model}", "method=lora", "method.r=4"])
    reference = load_backbone(cfg.model)
    reference.model.eval(), module.eval()
    family, tok = cfg.model.family, reference.tokenizer
    before = lm_logits(reference.model, tok, family)
    assert torch.equal(lm_logits(module.backbone.model, tok, family), before)  # B = 0
    assert module.parameter_counts()["trained_params"] == lora_closed_form(model, 4)

    # a trained-looking B: merged and unmerged outputs agree within 1e-5
    generator = torch.Generator().manual_seed(0)
    for layer in module.backbone.model.modules():
        if isinstance(layer, LoraLayer):
            weight = layer.lora_B["default"].weight
            weight.data = torch.randn(weight.shape, generator=generator) * 0.02  # the scale training reaches
    unmerged = lm_logits(module.backbone.model, tok, family)
    assert not torch.allclose(unmerged, before, atol=1e-4)
    # fp32 rounding only: 1e-5, plus 1e-6 relative because the random tiny T5's logits reach ~20
    # (where one fp32 ulp is 2e-6); the other tiny models differ by ~1e-7
    module.merge()
    assert module.merged
    torch.testing.assert_close(lm_logits(module.backbone.model, tok, family), unmerged, atol=1e-5, rtol=1e-6)
    module.unmerge()
    torch.testing.assert_close(lm_logits(module.backbone.model, tok, family), unmerged, atol=1e-5, rtol=1e-6)


def test_unsupported_and_bad_values_fail_before_loading():
    from promptscale.config import validate

    for method in ("adapter", "lora"):
        cfg = compose([f"method={method}", "model=tiny-t5", "task=conll03"])
        assert "sequence labeling" in method_class(method).unsupported(cfg)
        with pytest.raises(ConfigError, match=f"method={method} on task=conll03"):
            validate(cfg)
    for bad, message in [
        (["method=adapter", "method.bottleneck=0"], "method.bottleneck"),
        (["method=adapter", "method.placement=middle"], "method.placement"),
        (["method=adapter", "method.activation=swishy"], "method.activation"),
        (["method=lora", "method.r=0"], "method.r"),
        (["method=lora", "method.dropout=1.5"], "method.dropout"),
        (["method=lora", "method.target_modules=[]"], "method.target_modules"),
    ]:
        with pytest.raises(ConfigError, match=message):
            validate(compose(bad))
    with pytest.raises(ConfigError, match="target modules"):
        build(["method=lora", "model=tiny-gpt2", "method.target_modules=[no_such_proj]"])


# ---- through promptscale.train.run: overfit, frozen backbone, checkpoints ------------------------
class Recorder:
    """Callback: per-step losses, the fitted module, its datamodule and a checkpoint saved at the
    end of training (through Lightning, so on_save_checkpoint filters it)."""

    def __new__(cls, ckpt: Path):
        import lightning as L

        class _Recorder(L.Callback):
            def __init__(self):
                self.losses, self.ckpt = [], ckpt

            def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
                self.losses.append(float(outputs["loss"]))

            def on_train_end(self, trainer, pl_module):
                trainer.save_checkpoint(self.ckpt)
                self.module, self.data = pl_module, trainer.datamodule

        return _Recorder()


def first_eval_batch(data):
    return next(iter(data.val_dataloader()))


def assert_reloads_identically(rec, cfg):
    """A fresh module loaded from the trainable-only checkpoint predicts exactly like the trained one."""
    state = torch.load(rec.ckpt, map_location="cpu", weights_only=False)["state_dict"]
    trained = rec.module.eval()
    trainable = {n for n, p in trained.named_parameters() if p.requires_grad}
    assert set(state) == trainable
    fresh = method_class(cfg.method.name)(cfg, load_backbone(cfg.model)).eval()
    fresh.load_state_dict(state, strict=False)
    batch = first_eval_batch(rec.data)
    with torch.no_grad():
        torch.testing.assert_close(fresh(batch), trained(batch), atol=1e-5, rtol=0)
        assert torch.equal(fresh.predict(batch), trained.predict(batch))
    return state


def frozen_unchanged(module, cfg, skip=lambda name: False) -> list[str]:
    """Names of the frozen backbone weights that differ from a fresh load (should be none)."""
    fresh = dict(load_backbone(cfg.model).model.named_parameters())
    changed = []
    for name, p in module.backbone.model.named_parameters():
        name = name.replace(".base_layer.", ".")  # PEFT moves the adapted weight under base_layer
        if not p.requires_grad and not skip(name) and not torch.equal(p, fresh[name]):
            changed.append(name)
    return changed


FIT = ["data.train_size=8", "data.batch_size=8", "method.scheduler=constant", "trainer.max_steps=12"]


def test_lora_overfits_frozen_checkpoint_peft_and_merge(train, tmp_path):
    from peft import PeftModel

    rec = Recorder(tmp_path / "lora.ckpt")
    overrides = ["model=tiny-gpt2", "task=rte", "method=lora", "method.lr=1e-2", "method.merge=false", *FIT]
    record = train(overrides, tmp_path, callbacks=[rec])
    module = rec.module.eval()
    cfg = module.cfg

    assert rec.losses[-1] < 0.9 * rec.losses[0]  # overfits the 8 examples
    assert record["trained_params"] == lora_closed_form("tiny-gpt2", 8) == 2048
    assert record["train_steps"] == 12 and not module.merged
    assert frozen_unchanged(module, cfg) == []  # bit-identical backbone

    state = assert_reloads_identically(rec, cfg)
    assert all(".lora_A." in k or ".lora_B." in k for k in state)

    # the PEFT folder loads with PeftModel.from_pretrained onto a fresh backbone: same LM outputs
    folder = module.save_peft(tmp_path / "peft")
    assert (folder / "adapter_config.json").is_file()
    fresh = load_backbone(cfg.model)
    peft_model = PeftModel.from_pretrained(fresh.model, str(folder)).eval()
    tok = fresh.tokenizer
    assert torch.equal(lm_logits(peft_model, tok, "decoder"), lm_logits(module.backbone.model, tok, "decoder"))

    # trained B A merged into the weights: same outputs within 1e-5, and the same predictions
    batch = first_eval_batch(rec.data)
    with torch.no_grad():
        unmerged = module(batch)
        module.merge()
        torch.testing.assert_close(module(batch), unmerged, atol=1e-5, rtol=0)


def test_adapter_tagging_overfits_with_head_and_frozen_backbone(train, tmp_path):
    rec = Recorder(tmp_path / "adapter.ckpt")
    overrides = ["model=tiny-bert", "task=conll03", "method=adapter", "method.bottleneck=16", "method.lr=1e-2", *FIT]
    record = train(overrides, tmp_path, callbacks=[rec])
    module = rec.module.eval()
    cfg = module.cfg
    n_tags = len(module.task.labels)

    assert rec.losses[-1] < 0.9 * rec.losses[0]  # overfits the 8 examples
    norms = sum(
        p.numel() for m in module.backbone.model.base_model.modules() if is_norm(m) for p in m.parameters(recurse=False)
    )
    head = D * n_tags + n_tags
    assert record["trained_params"] == 4 * adapter_param_count(D, 16) + norms + head
    assert module.tag_head.weight.requires_grad
    # everything but the layer norms is bit-identical to the fresh backbone
    assert frozen_unchanged(module, cfg, skip=lambda name: "LayerNorm" in name) == []
    state = assert_reloads_identically(rec, cfg)
    assert any(k.startswith("tag_head.") for k in state) and any(k.startswith("adapters.") for k in state)
    assert 0.0 <= record["score"] <= 1.0


@pytest.mark.parametrize(
    "overrides",
    [
        ["method=lora", "model=tiny-t5", "task=cb"],  # encoder-decoder, merged after training (default)
        ["method=adapter", "model=tiny-llama", "task=rte", "method.head=cls", "method.placement=pfeiffer"],
    ],
    ids=["lora-t5", "adapter-llama-cls"],
)
def test_other_families_train(train, tmp_path, overrides):
    rec = Recorder(tmp_path / "x.ckpt")
    record = train([*overrides, "trainer.max_steps=3", "data.batch_size=4"], tmp_path, callbacks=[rec])
    module = rec.module
    assert record["train_steps"] == 3 and record["method"] == overrides[0].split("=")[1]
    assert record["score"] == record["score"]  # not NaN
    if record["method"] == "lora":
        assert module.merged and record["trained_params"] == lora_closed_form("tiny-t5", 8)
    else:
        head = D * 2 + 2  # cls_head over RTE's two labels
        norms = 5 * D  # 2 x 2 RMSNorms per layer + final norm (no bias)
        assert module.cls_head.weight.requires_grad
        assert record["trained_params"] == 2 * adapter_param_count(D, 64) + norms + head


# ---- the packaged SmolLM2-135M on real RTE -----------------------------------------------------
@pytest.mark.integration
@pytest.mark.skipif(not os.environ.get("PROMPTSCALE_DATA_DIR"), reason="PROMPTSCALE_DATA_DIR not set")
@pytest.mark.parametrize("method", ["lora", "adapter"])
def test_smollm2_real_rte(method, tmp_path):
    from promptscale.train import run

    data = os.environ["PROMPTSCALE_DATA_DIR"]
    cfg = compose(
        [
            "model=smollm2-135m",
            "task=rte",
            f"method={method}",
            f"data.dir={data}",
            "data.eval_size=16",
            "data.max_length=128",
            "data.batch_size=4",
            "trainer.max_steps=3",
            "trainer.enable_progress_bar=false",
            "logger=none",
        ]
    )
    results = tmp_path / "results.jsonl"
    record = run(cfg, tmp_path, results)
    line = json.loads(results.read_text().splitlines()[0])
    assert line["config_hash"] == record["config_hash"] and line["method"] == method
    assert line["train_steps"] == 3
    assert 0.0 <= line["metrics"]["accuracy"] <= 1.0
    d, layers, m, r = 576, 30, 64, 8
    if method == "lora":  # q_proj 576 -> 576, v_proj 576 -> 192 (3 kv heads of 64)
        assert line["trained_params"] == layers * (r * (d + d) + r * (d + 192))
    else:  # 2 adapters per layer, plus 2 RMSNorms per layer and the final norm
        assert line["trained_params"] == 2 * layers * (2 * d * m + m + d) + (2 * layers + 1) * d
