"""Backbone loading."""

import json

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


def test_a_model_folder_is_its_contents(train, sample_data, tmp_path, monkeypatch):
    """A model read from a local folder is identified by the folder's contents, not its path: a
    checkpoint re-trained into the same folder is another run (a sweep re-run does not skip it as
    finished), the same checkpoint copied elsewhere the same run; the table keeps the two
    checkpoints apart; a sweep's kept backbone is not reused once the folder changed; a run's trained weights are not
    evaluated on another checkpoint under its path."""
    import shutil

    import promptscale.models as models
    from promptscale.analysis.load import load
    from promptscale.errors import ConfigError
    from promptscale.evaluate import evaluate

    monkeypatch.setattr(models, "_KEPT", {})
    folder = tmp_path / "checkpoint"
    backbone = models.load_backbone(compose(["model=tiny-llama"]).model)
    backbone.model.save_pretrained(folder)
    backbone.tokenizer.save_pretrained(folder)
    overrides = ["method=lora", "model=tiny-llama", "model.source=hub"]
    kept = models.load_backbone(compose([*overrides, f"model.path={folder}"]).model, keep=True)

    first = train([*overrides, f"model.path={folder}"], tmp_path / "store")
    (folder / "README.md").write_text("notes")  # what transformers does not read is not the model
    (folder / "checkpoint-1").mkdir()
    (folder / "checkpoint-1" / "optimizer.pt").write_bytes(b"state")
    again = train([*overrides, f"model.path={folder}"], tmp_path / "store")
    assert again["config_hash"] == first["config_hash"] and again["finished_at"] == first["finished_at"]  # skipped
    with torch.no_grad():
        backbone.model.get_input_embeddings().weight.add_(1.0)
    backbone.model.save_pretrained(folder)  # re-trained in place
    other = train([*overrides, f"model.path={folder}"], tmp_path / "store")
    assert other["config_hash"] != first["config_hash"]
    assert other["config"]["file_digests"]["model.path"] != first["config"]["file_digests"]["model.path"]
    moved = tmp_path / "elsewhere"
    shutil.copytree(folder, moved)
    same = train([*overrides, f"model.path={moved}"], tmp_path / "store")
    assert same["config_hash"] == other["config_hash"] and same["finished_at"] == other["finished_at"]

    models_in_table = sorted(run.model for run in load([tmp_path / "store" / "run" / "results.jsonl"]).runs)
    assert len(models_in_table) == 2 and models_in_table[0] != models_in_table[1]
    assert all(name.startswith("tiny-llama [sha256:") for name in models_in_table)
    # a line without a digest (stored before digests, an evaluation's) does not make a second model
    undigested = {
        **first,
        "config_hash": "0" * 12,
        "config": {k: v for k, v in first["config"].items() if k != "file_digests"},
    }
    mixed = tmp_path / "mixed.jsonl"
    mixed.write_text(json.dumps(first) + "\n" + json.dumps(undigested) + "\n")
    assert [run.model for run in load([mixed]).runs] == ["tiny-llama", "tiny-llama"]

    # a run evaluates on the checkpoint it trained on, and refuses one re-trained under it since
    weights = tmp_path / "store" / "run" / f"weights-{other['config_hash']}.safetensors"
    assert evaluate(weights, [f"data.dir={sample_data}"])["score"] == pytest.approx(other["score"])
    with torch.no_grad():
        backbone.model.get_input_embeddings().weight.add_(1.0)
    backbone.model.save_pretrained(folder)
    with pytest.raises(ConfigError, match=r"model.path=.*: holds other weights than the run trained on"):
        evaluate(weights, [f"data.dir={sample_data}"])

    reloaded = models.load_backbone(compose([*overrides, f"model.path={folder}"]).model, keep=True)
    embeddings = reloaded.model.get_input_embeddings().weight
    assert torch.equal(embeddings, backbone.model.get_input_embeddings().weight)
    assert not torch.equal(embeddings, kept.model.get_input_embeddings().weight)
    shutil.rmtree(folder)  # gone: not taken for a hub id of that name
    with pytest.raises(ConfigError, match=r"model.path=.*: no such folder here, and the run trained on a model folder"):
        evaluate(weights, [f"data.dir={sample_data}"])
