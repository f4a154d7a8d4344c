"""A plain run prints our own lines, the progress bar and real problems only: no library notices."""

from __future__ import annotations

import os
import subprocess
import warnings

import pytest

from conftest import TRAIN_CLI
from promptscale.quiet import KNOWN_NOTICES, silence_known_notices

NOTICES = ("anonymous setting", "srun", "LeafSpec", "deprecated", "FutureWarning", "DeprecationWarning")


@pytest.mark.parametrize("model,method", [("tiny-gpt2", "prefix_tuning"), ("tiny-t5", "prompt_tuning")])
def test_a_plain_run_with_wandb_prints_no_library_notices(sample_data, tmp_path, model, method):
    env = {**os.environ, "WANDB_MODE": "offline"}
    env.pop("PYTHONWARNINGS", None)
    args = [f"task=cb model={model} method={method} logger=wandb trainer.max_steps=2"]
    args += ["trainer.enable_progress_bar=false", "data.train_size=8", "data.eval_size=8"]
    args += [f"data.dir={sample_data}", f"hydra.run.dir={tmp_path / 'run'}"]
    done = subprocess.run(
        [TRAIN_CLI, *" ".join(args).split()], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-3000:]
    output = done.stdout + done.stderr
    assert not [word for word in NOTICES if word in output], output[-3000:]
    assert "promptscale: " in done.stdout  # our own line is still there


def test_only_the_listed_notices_are_silenced():
    """The filters name their messages: an unrelated warning of the same category still shows."""
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        silence_known_notices()
        warnings.warn(
            "The `srun` command is available on your system but is not used. HINT: …", UserWarning, stacklevel=1
        )
        warnings.warn("something real went wrong", UserWarning, stacklevel=1)
    assert [str(w.message) for w in seen] == ["something real went wrong"]
    assert all(why for _, why in KNOWN_NOTICES)
