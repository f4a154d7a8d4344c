"""Shared fixtures: sample data written once per session, a private cache, W&B offline,
and ``train`` (compose + ``promptscale.train.run`` in-process)."""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

import pytest

# Before anything imports wandb or promptscale.models: never touch the network or the user cache.
_SESSION_DIR = Path(tempfile.mkdtemp(prefix="promptscale-tests-"))
os.environ["WANDB_MODE"] = "offline"
os.environ["WANDB_SILENT"] = "true"
os.environ["WANDB_CONFIG_DIR"] = str(_SESSION_DIR / "wandb-config")
os.environ["WANDB_CACHE_DIR"] = str(_SESSION_DIR / "wandb-cache")
# PROMPTSCALE_TEST_CACHE: a cache kept between sessions (converted packaged models, tokenized data)
os.environ["PROMPTSCALE_CACHE"] = os.environ.get("PROMPTSCALE_TEST_CACHE") or str(_SESSION_DIR / "cache")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# The tiny models gain nothing from intra-op threads, and on a busy 2-core machine OpenMP's
# spinning threads make each run 10x slower; subprocesses (the CLI tests) inherit this too.
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")

import torch  # noqa: E402  (after OMP_NUM_THREADS)

torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))

VENV_BIN = Path(sys.executable).parent
TRAIN_CLI = str(VENV_BIN / "promptscale-train")

# fast defaults for every in-process run: no progress bar, no logger, few steps, tiny data
FAST = [
    "logger=none",
    "trainer.enable_progress_bar=false",
    "trainer.max_steps=2",
    "data.train_size=8",
    "data.eval_size=8",
]


@pytest.fixture(scope="session")
def sample_data() -> Path:
    """FewGLUE (root/fewglue/<Task>) and CoNLL-2003 (root/conll2003) samples, written once."""
    from promptscale.data.samples import write_samples

    return write_samples(_SESSION_DIR / "data")


def build_run(data_dir: Path, overrides, eval_mode: bool = True):
    """What ``promptscale.train.run`` builds before training, without the Trainer: the validated
    config, the method's module on its backbone (in eval mode unless asked otherwise) and the data
    module (read, checked, attached, tokenized). Returns (cfg, module, data)."""
    from promptscale.config import validate
    from promptscale.data.datamodule import TaskDataModule
    from promptscale.methods import method_class
    from promptscale.models import load_backbone
    from promptscale.train import compose

    cfg = compose([f"data.dir={data_dir}", *overrides])
    validate(cfg)
    data = TaskDataModule(cfg.task, cfg.data, cfg.seed)
    data.read()
    method_class(cfg.method.name).check_data(cfg, data)
    backbone = load_backbone(cfg.model)
    module = method_class(cfg.method.name)(cfg, backbone)
    if eval_mode:
        module.eval()
    data.attach(backbone.tokenizer, cfg.model.family, cfg.method.head)
    data.setup()
    return cfg, module, data


def _train(overrides, tmp_path: Path, data_dir: Path, callbacks=()) -> dict:
    """Compose the config ``promptscale-train`` would use with ``overrides`` (after the FAST
    defaults, so they win) and run it in-process; ``callbacks`` are added to the fit Trainer."""
    from promptscale import train as train_mod

    cfg = train_mod.compose([*FAST, f"data.dir={data_dir}", *overrides])
    out_dir = Path(tmp_path) / "run"
    out_dir.mkdir(parents=True, exist_ok=True)
    return train_mod.run(cfg, out_dir, out_dir / "results.jsonl", callbacks=callbacks)


@pytest.fixture
def no_model(monkeypatch):
    """Fail the test if anything loads a tokenizer or a model (bad input must fail before)."""
    import promptscale.models as models

    def forbidden(*args, **kwargs):
        pytest.fail("a model or tokenizer was loaded for bad input")

    for name in ("load_model", "load_tokenizer", "load_backbone"):
        monkeypatch.setattr(models, name, forbidden)


@pytest.fixture
def train(sample_data):
    """``train(overrides, tmp_path, callbacks=()) -> record``: one in-process run on the samples."""

    def run(overrides, tmp_path, callbacks=()):
        return _train(overrides, tmp_path, sample_data, callbacks)

    return run


def pytest_sessionfinish(session, exitstatus):
    import shutil

    shutil.rmtree(_SESSION_DIR, ignore_errors=True)
