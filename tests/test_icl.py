"""In-context learning: seeded demonstrations, the cached demonstration prefix equals the naive
path, contextual calibration, and its checks."""

from collections import Counter

import pytest
import torch

from conftest import build_run
from promptscale.config import validate
from promptscale.data.datamodule import TaskDataModule
from promptscale.errors import ConfigError
from promptscale.methods.icl.model import ICL, pick_demonstrations
from promptscale.train import compose


def build(sample_data, overrides):
    _, module, data = build_run(sample_data, ["method=icl", "data.eval_size=8", *overrides])
    return module, data


def all_scores(module, data):
    with torch.no_grad():
        return torch.cat([module(batch) for batch in data.val_dataloader()])


@pytest.mark.parametrize("model", ["tiny-gpt2", "tiny-llama", "tiny-gemma3"])
@pytest.mark.parametrize("task", ["cb", "copa"])
def test_cached_demonstrations_equal_the_naive_path(sample_data, model, task):
    module, data = build(sample_data, [f"model={model}", f"task={task}", "method.shots=4"])
    module.prepare(data)
    assert module.demo_cache is not None and len(module.demo_ids) > 0
    cached = all_scores(module, data)
    module.hp.cache_demos = False
    module.prepare(data)
    assert module.demo_cache is None
    naive = all_scores(module, data)
    torch.testing.assert_close(cached, naive, rtol=0, atol=1e-5)
    assert torch.equal(cached.argmax(-1), naive.argmax(-1))


def test_demonstrations_change_the_scores_and_zero_shot_has_none(sample_data):
    module, data = build(sample_data, ["model=tiny-gpt2", "task=rte", "method.shots=0"])
    module.prepare(data)
    assert module.demo_ids == [] and module.virtual_tokens(2) is None and module.layer_prefixes(2) is None
    zero = all_scores(module, data)
    module.hp.shots = 2
    module.prepare(data)
    assert not torch.allclose(zero, all_scores(module, data))


def test_demonstration_text_is_prompt_answer_blocks(sample_data):
    module, data = build(sample_data, ["model=tiny-gpt2", "task=rte", "method.shots=2", "seed=4"])
    module.prepare(data)
    demos = pick_demonstrations(data.train_examples, 2, "random", 4)
    verbalizer = {0: "Yes", 1: "No"}
    expected = "".join(
        f"{e.fields['premise']}\nQuestion: {e.fields['hypothesis']} Yes or no?\nAnswer: {verbalizer[e.label]}\n\n"
        for e in demos
    )
    assert module.backbone.tokenizer.decode(module.demo_ids) == expected


def test_demonstration_sampling_is_seeded_and_balanced(sample_data):
    cfg = compose(["task=cb", f"data.dir={sample_data}"])
    data = TaskDataModule(cfg.task, cfg.data, 0)
    data.read()
    a = pick_demonstrations(data.train_examples, 6, "random", 1)
    assert [e.guid for e in a] == [e.guid for e in pick_demonstrations(data.train_examples, 6, "random", 1)]
    assert [e.guid for e in a] != [e.guid for e in pick_demonstrations(data.train_examples, 6, "random", 2)]
    balanced = pick_demonstrations(data.train_examples, 6, "balanced", 1)
    assert sorted(Counter(e.label for e in balanced).values()) == [2, 2, 2]
    assert len({e.guid for e in balanced}) == 6


def test_contextual_calibration_divides_by_content_free_probabilities(sample_data):
    module, data = build(sample_data, ["model=tiny-gpt2", "task=cb", "method.shots=2", "method.calibrate=true"])
    module.prepare(data)
    assert module.log_p_cf.shape == (3,)
    assert torch.isclose(module.log_p_cf.exp().sum(), torch.tensor(1.0))
    batch = next(iter(data.val_dataloader()))
    with torch.no_grad():
        calibrated = module(batch)
        raw = super(ICL, module).forward(batch)
    torch.testing.assert_close(calibrated, raw.log_softmax(-1) - module.log_p_cf)


def test_t5_reads_demonstrations_in_the_encoder(sample_data):
    module, data = build(sample_data, ["model=tiny-t5", "task=cb", "method.shots=2"])
    module.prepare(data)
    assert module.demo_cache is None
    assert module.virtual_tokens(3).shape == (3, len(module.demo_ids), module.backbone.hidden_size)
    assert all_scores(module, data).shape[1] == 3


def test_bad_settings_fail_before_a_model_loads(sample_data):
    with pytest.raises(ConfigError, match="generative LM"):
        validate(compose(["method=icl", "model=tiny-bert", f"data.dir={sample_data}"]))
    cfg = compose(["method=icl", "method.shots=40", "task=cb", f"data.dir={sample_data}"])
    data = TaskDataModule(cfg.task, cfg.data, 0)
    data.read()
    with pytest.raises(ConfigError, match="shots=40"):
        ICL.check_data(cfg, data)
    with pytest.raises(ConfigError, match="calibrate"):
        validate(compose(["method=icl", "method.calibrate=true", "task=copa", f"data.dir={sample_data}"]))
