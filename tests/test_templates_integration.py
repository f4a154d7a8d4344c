"""Truncation on the real FewGLUE records that made the old fitting loop spin forever (a byte-level
BPE token cut inside "−" decoded to "�", which re-encoded to the same length)."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

from conftest import _train
from promptscale.config import validate
from promptscale.data.datamodule import TaskDataModule
from promptscale.models import load_tokenizer
from promptscale.train import compose

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not os.environ.get("PROMPTSCALE_DATA_DIR"), reason="PROMPTSCALE_DATA_DIR is not set"),
]


def _timeout(*_):
    raise TimeoutError("encoding did not finish")


@pytest.mark.parametrize("side", ["right", "left"])
@pytest.mark.parametrize(
    "task,split,field", [("boolq", "val", "passage"), ("rte", "dev32", "premise"), ("record", "dev32", "passage")]
)
def test_every_record_encodes_within_max_length(task, split, field, side):
    cfg = compose(
        [f"task={task}", "model=tiny-gpt2", f"data.eval_split={split}", f"data.truncation_side={side}", "logger=none"]
    )
    validate(cfg)
    data = TaskDataModule(cfg.task, cfg.data, cfg.seed)
    data.read()
    data.attach(load_tokenizer(cfg.model), cfg.model.family, cfg.method.head)
    encoder, cut = data.encoder, 0
    previous = signal.signal(signal.SIGALRM, _timeout)
    signal.alarm(300)
    try:
        for i, example in enumerate(data.eval_examples):
            row = encoder.encode(example, i)
            prompt = row["prompt_ids"]
            assert len(prompt) + max(map(len, row["cand_ids"])) <= cfg.data.max_length, example.guid
            if len(prompt) < len(encoder.prompt_ids(example.fields)):
                cut += 1  # the long field lost tokens; what follows it (question, cue) is whole
                tail = encoder.ids(encoder.templates.prompt_text({**example.fields, field: ""}).rstrip())
                assert prompt[len(prompt) - len(tail) :] == tail, example.guid
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
    assert cut > 0


def test_record_trains_on_its_default_split(tmp_path):
    """ReCoRD's default eval split (dev32) held 2 records that hung the old code."""
    record = _train(
        ["task=record", "model=tiny-gpt2", "trainer.max_steps=1", "data.train_size=4", "data.eval_size=null"],
        tmp_path,
        Path(os.environ["PROMPTSCALE_DATA_DIR"]),
    )
    assert record["status"] == "finished"
