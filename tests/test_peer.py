"""Parity with EleutherAI's lm-evaluation-harness, example by example (opt-in: ``make test-peer``).

lm-eval and promptscale score SmolLM2-135M zero-shot (PET with tune_lm=false: rank classification,
sum of the continuation's log-probs, no BOS) on the FewGLUE val files under $PROMPTSCALE_DATA_DIR,
promptscale with the ``lm_eval`` patterns, lm-eval with its own super_glue task configs (included
as they ship, pointed at the local files by a task YAML written into tmp). Every example must get
the same prediction. PROMPTSCALE_PEER_LIMIT=N compares the first N examples of each task.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
import torch

pytestmark = [
    pytest.mark.peer,
    pytest.mark.integration,
    pytest.mark.skipif(not os.environ.get("PROMPTSCALE_PEER"), reason="opt-in: make test-peer (PROMPTSCALE_PEER=1)"),
    pytest.mark.skipif(not os.environ.get("PROMPTSCALE_DATA_DIR"), reason="PROMPTSCALE_DATA_DIR is not set"),
]

LIMIT = int(os.environ.get("PROMPTSCALE_PEER_LIMIT") or 0) or None


@pytest.fixture(scope="module")
def lm_eval_scores(tmp_path_factory):
    """{task: [[log-likelihood per choice] per document]} from lm-eval, all six tasks in one run."""
    from lm_eval import simple_evaluate
    from lm_eval.tasks import TaskManager

    from promptscale.models import packaged_dir
    from promptscale.peer import TASKS, write_lm_eval_tasks

    folder = tmp_path_factory.mktemp("lm_eval_tasks")
    names = write_lm_eval_tasks(folder, Path(os.environ["PROMPTSCALE_DATA_DIR"]))
    start = time.perf_counter()
    out = simple_evaluate(
        model="hf",
        model_args=f"pretrained={packaged_dir('smollm2-135m')},dtype=float32",
        tasks=names,
        num_fewshot=0,
        limit=LIMIT,
        batch_size=8,
        device="cpu",
        log_samples=True,
        task_manager=TaskManager(include_path=str(folder)),
    )
    print(f"\nlm-eval: {time.perf_counter() - start:.0f} s")
    scores = {}
    for task in TASKS:
        samples = sorted(out["samples"][f"promptscale_{task}"], key=lambda s: s["doc_id"])
        scores[task] = [[float(resp[0]) for resp in s["filtered_resps"]] for s in samples]
    return scores


@pytest.fixture(scope="module")
def backbone():
    from promptscale.models import load_backbone
    from promptscale.train import compose

    return load_backbone(compose(["model=smollm2-135m", "logger=none"]).model)


def promptscale_scores(task: str, backbone) -> list[list[float]]:
    from promptscale.config import validate
    from promptscale.data.datamodule import TaskDataModule
    from promptscale.methods import method_class
    from promptscale.train import compose

    cfg = compose(
        [
            f"task={task}",
            "model=smollm2-135m",
            "method=pet",
            "method.pattern=lm_eval",
            "method.tune_lm=false",
            "data.eval_split=val",
            "data.max_length=4096",  # lm-eval truncates nothing
            "data.eval_batch_size=8",
            "logger=none",
        ]
    )
    validate(cfg)
    module = method_class("pet")(cfg, backbone).eval()
    data = TaskDataModule(cfg.task, cfg.data, cfg.seed)
    data.read()
    data.eval_examples = data.eval_examples[:LIMIT]
    data.attach(backbone.tokenizer, cfg.model.family, cfg.method.head)
    data.setup()
    for i, e in enumerate(data.eval_examples):
        assert len(data.eval_set[i]["prompt_ids"]) == len(data.encoder.prompt_ids(e.fields)), "truncated"
    scores = [None] * len(data.eval_examples)
    with torch.no_grad():
        for batch in data.val_dataloader():  # longest first: each row goes back to its example's place
            for i, row in zip(batch["idx"].tolist(), module(batch).tolist()):
                scores[i] = row
    return scores


@pytest.mark.parametrize("task", ["boolq", "cb", "copa", "rte", "wic", "wsc"])  # promptscale.peer.TASKS
def test_zero_shot_predictions_match_lm_eval(task, lm_eval_scores, backbone):
    start = time.perf_counter()
    ours = promptscale_scores(task, backbone)
    theirs = lm_eval_scores[task]
    assert len(ours) == len(theirs)
    same = sum(
        max(range(len(a)), key=a.__getitem__) == max(range(len(b)), key=b.__getitem__) for a, b in zip(ours, theirs)
    )
    gap = max(abs(x - y) for a, b in zip(ours, theirs) for x, y in zip(a, b))
    print(
        f"\n{task}: {same}/{len(ours)} identical predictions, max log-prob gap {gap:.2e}, promptscale {time.perf_counter() - start:.0f} s"
    )
    assert same == len(ours)
    assert gap < 1e-3


def test_bench_measures_cpu_time_against_lm_eval(tmp_path):
    """``make bench``'s comparison, on 8 RTE examples: both sides run and score the same examples alike."""
    import sys
    from types import SimpleNamespace

    from benchmarks import runs

    args = SimpleNamespace(lm_eval_python=sys.executable, threads=1, lm_eval_limit=8, lm_eval_rounds=1)
    result = runs.bench_lm_eval(args, Path(os.environ["PROMPTSCALE_DATA_DIR"]), tmp_path)
    (round_,) = result["rounds"]
    assert round_["examples"] == 8 and round_["lm_eval"]["cpu_s"] > 0 and round_["promptscale"]["cpu_s"] > 0
    assert result["lm_eval_accuracy"] == pytest.approx(round_["accuracy"], abs=1e-4)
