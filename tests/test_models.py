"""Backbone loading."""

import pytest
import torch

from promptscale.train import compose


def test_kept_backbone_is_copied_not_reloaded(monkeypatch):
    import promptscale.models as models

    cfg = compose(["model=tiny-gpt2"]).model
    first = models.load_backbone(cfg, keep=True)
    monkeypatch.setattr(models, "load_model", lambda *a, **k: pytest.fail("reloaded from disk"))
    second = models.load_backbone(cfg)
    assert second.model is not first.model
    for (name, a), b in zip(first.model.state_dict().items(), second.model.state_dict().values()):
        assert torch.equal(a, b), name
    with torch.no_grad():
        next(second.model.parameters()).add_(1.0)  # a job's changes never reach the kept copy
    third = models.load_backbone(cfg)
    assert torch.equal(next(third.model.parameters()), next(first.model.parameters()))
    models._KEPT.clear()
