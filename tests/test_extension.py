"""Adding a method or a family is registering it (README, Architecture): a toy of each, defined
here the way the README's steps say, runs through the same validation, support matrix, training
step and prediction as the shipped ones, and nothing else in promptscale needs to change.

- The toy method is norm tuning (only the backbone's normalization weights train): its settings
  dataclass and its LightningModule (here in one test module; a shipped method splits them into
  ``methods/<name>/config.py`` and ``model.py``), its YAML in the ``method`` group, one line in ``METHODS``.
- The toy family is a decoder read without a reusable key/value cache (as for an architecture whose
  cache cannot be extended): one ``Family`` object and a tiny model YAML that names it.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import pytest
import torch
import yaml
from hydra.core.config_store import ConfigStore

from promptscale.config import MethodConfig, register_configs
from promptscale.methods.base import AdaptationModule


@dataclass
class NormTuningConfig(MethodConfig):
    name: str = "norm_tuning"
    lr: float = 1e-2
    # also train the normalization layers' biases, where they have them
    biases: bool = True


class NormTuning(AdaptationModule):
    """Only the normalization layers train (and the task head, where the task has one)."""

    schema = NormTuningConfig

    @classmethod
    def unsupported(cls, cfg) -> str | None:
        if cfg.model.family == "encdec":  # a reason of its own, to see it reach the matrix
            return "norm tuning is not offered for encoder-decoders here"
        return super().unsupported(cfg)

    def setup_method(self) -> None:
        self.backbone.requires_grad_(False)
        for module in self.backbone.modules():
            if type(module).__name__.endswith(("LayerNorm", "RMSNorm")):
                for name, param in module.named_parameters(recurse=False):
                    param.requires_grad_(name == "weight" or self.hp.biases)


METHOD_YAML = """
defaults:
  - norm_tuning_schema
name: norm_tuning
lr: 1.0e-2
biases: true
"""

MODEL_YAML = """
defaults:
  - model_schema
name: tiny-nocache
family: decoder_nocache
source: tiny
arch: LlamaConfig
tokenizer: bpe
arch_kwargs: {hidden_size: 32, intermediate_size: 64, num_hidden_layers: 2, num_attention_heads: 2,
              num_key_value_heads: 1, max_position_embeddings: 512}
"""


@pytest.fixture
def registered(monkeypatch):
    """The toy method and family registered as the README says; unregistered afterwards."""
    from promptscale import families, methods

    monkeypatch.setitem(methods.METHODS, "norm_tuning", (f"{__name__}:NormTuningConfig", f"{__name__}:NormTuning"))
    toy = dataclasses.replace(families.DECODER, name="decoder_nocache", cached_context=False, tiny_model="tiny-nocache")
    monkeypatch.setitem(families.FAMILIES, toy.name, toy)
    register_configs()  # stores norm_tuning_schema beside the others
    store = ConfigStore.instance()
    # a YAML in conf/method/ and conf/model/; the ConfigStore is the same config group to Hydra
    store.store(group="method", name="norm_tuning", node=yaml.safe_load(METHOD_YAML))
    store.store(group="model", name="tiny-nocache", node=yaml.safe_load(MODEL_YAML))
    yield toy
    for group, name in (("method", "norm_tuning"), ("model", "tiny-nocache"), ("method", "norm_tuning_schema")):
        store.repo[group].pop(f"{name}.yaml", None)


def test_a_registered_method_and_family_enter_the_support_matrix(registered):
    from promptscale.support import support_matrix

    cells = {cell[:3]: cell[3] for cell in support_matrix()}
    assert cells[("norm_tuning", "decoder", "classification")] is None
    assert cells[("norm_tuning", "encdec", "choice")] == "norm tuning is not offered for encoder-decoders here"
    # the new family gets a column, and the shipped methods' reasons follow from its attributes
    assert cells[("finetune", "decoder_nocache", "tagging")] is None
    assert cells[("norm_tuning", "decoder_nocache", "classification")] is None
    shipped = {k: v for k, v in cells.items() if k[1] == "decoder" and k[0] != "norm_tuning"}
    assert all(cells[(m, "decoder_nocache", kind)] == why for (m, _, kind), why in shipped.items())


def test_a_registered_method_validates_its_settings(registered, sample_data):
    from promptscale.config import validate
    from promptscale.errors import ConfigError
    from promptscale.train import compose

    cfg = compose(["method=norm_tuning", "model=tiny-llama", "task=rte", f"data.dir={sample_data}"])
    validate(cfg)
    assert (cfg.method.lr, cfg.method.biases) == (1e-2, True)
    cfg = compose(["model=tiny-llama", "task=rte", "method=norm_tuning", "+method.bias=false"])
    with pytest.raises(ConfigError, match=r"unknown config key\(s\) method.bias"):
        validate(cfg)
    cfg = compose(["model=tiny-llama", "task=rte", "+method_overrides.norm_tuning.biases=false", "method=norm_tuning"])
    validate(cfg)
    assert cfg.method.biases is False


@pytest.mark.parametrize(
    "method,model,task", [("norm_tuning", "tiny-llama", "rte"), ("norm_tuning", "tiny-nocache", "conll03"),
                          ("icl", "tiny-nocache", "copa"), ("prefix_tuning", "tiny-nocache", "rte")]
)  # fmt: skip
def test_registered_method_and_family_train_and_predict(registered, train, tmp_path, method, model, task):
    import lightning as L

    class Watch(L.Callback):
        def on_train_start(self, trainer, module):
            self.before = {n: p.detach().clone() for n, p in module.named_parameters()}
            self.trainable = {n for n, p in module.named_parameters() if p.requires_grad}

        def on_train_end(self, trainer, module):
            after = dict(module.named_parameters())
            self.changed = {n for n, p in self.before.items() if not torch.equal(after[n].detach(), p)}

    watch = Watch()
    overrides = [f"method={method}", f"model={model}", f"task={task}", "trainer.max_steps=1", "data.eval_size=4"]
    if method == "icl":
        overrides += ["method.shots=2"]  # the family has no reusable cache: demonstrations ride in every row
    record = train(overrides, tmp_path, [watch])
    assert record["status"] == "finished", record.get("error")
    assert record["predictions"]["n"] == 4
    if method == "norm_tuning":
        assert watch.trainable and watch.changed == watch.trainable
        assert all("norm" in name or "head" in name for name in watch.trainable)
        assert record["trained_params"] == sum(watch.before[n].numel() for n in watch.trainable)
