"""Length-sorted evaluation and length-bucketed training batches (promptscale.data.datamodule)."""

from __future__ import annotations

import random

import pytest

from promptscale.data.datamodule import BUCKET_BATCHES, SeededSampler, ShardSampler
from promptscale.predictions import read_predictions, resolve_stored

_RNG = random.Random(0)
LENGTHS = [_RNG.randint(5, 200) for _ in range(1000)]


def padded_positions(order: list[int], batch: int) -> int:
    """Positions a loader pads to: each batch's size times its longest example."""
    return sum(len(b) * max(LENGTHS[i] for i in b) for b in (order[s : s + batch] for s in range(0, len(order), batch)))


def test_evaluation_runs_longest_first_and_each_example_once():
    order = list(ShardSampler(len(LENGTHS), lengths=LENGTHS))
    assert sorted(order) == list(range(len(LENGTHS)))
    assert [LENGTHS[i] for i in order] == sorted(LENGTHS, reverse=True)
    # padding: sorted batches pad to ~the real length; file order to ~2x it
    real = sum(LENGTHS)
    assert padded_positions(order, 16) < 1.05 * real < padded_positions(list(range(len(LENGTHS))), 16)


@pytest.mark.parametrize("world", [2, 3])
def test_sorted_evaluation_shards_cover_the_split_once(world):
    shards = [list(ShardSampler(len(LENGTHS), rank, world, LENGTHS)) for rank in range(world)]
    seen = [i for shard in shards for i in shard]
    assert sorted(seen) == list(range(len(LENGTHS)))  # nothing repeated, nothing dropped


def test_bucketed_training_order_is_a_seeded_permutation_with_less_padding():
    batch = 8
    sampler = SeededSampler(len(LENGTHS), seed=3, buckets=(LENGTHS, batch))
    order = list(sampler)
    assert sorted(order) == list(range(len(LENGTHS)))
    assert order == list(SeededSampler(len(LENGTHS), seed=3, buckets=(LENGTHS, batch)))  # follows the seed alone
    assert order != list(SeededSampler(len(LENGTHS), seed=4, buckets=(LENGTHS, batch)))
    plain = list(SeededSampler(len(LENGTHS), seed=3))
    assert padded_positions(order, batch) < 0.8 * padded_positions(plain, batch)
    # each chunk of BUCKET_BATCHES batches holds the same samples as the plain seeded order's chunk:
    # bucketing regroups within a chunk, it does not move samples across the epoch
    chunk = batch * BUCKET_BATCHES
    for start in range(0, len(order), chunk):
        assert sorted(order[start : start + chunk]) == sorted(plain[start : start + chunk])
    # and the batches of a chunk are not simply longest first
    firsts = [max(LENGTHS[i] for i in order[s : s + batch]) for s in range(0, chunk, batch)]
    assert firsts != sorted(firsts, reverse=True)


def test_bucketed_epochs_differ_and_a_resumed_epoch_continues_the_same_order():
    sampler = SeededSampler(len(LENGTHS), seed=0, buckets=(LENGTHS, 8))
    sampler.set_epoch(1)
    epoch1 = list(sampler)
    sampler.set_epoch(0)
    assert list(sampler) != epoch1
    resumed = SeededSampler(len(LENGTHS), seed=0, resume_at=(1, 240), buckets=(LENGTHS, 8))
    resumed.set_epoch(1)
    assert list(resumed) == epoch1[240:]


def test_sorted_evaluation_keeps_predictions_in_split_order_and_equal_to_single_examples(train, tmp_path):
    """Batches of similar length give the predictions one-example batches give (no padding at all)."""
    common = ["model=tiny-gpt2", "task=cb", "method=icl", "method.shots=0", "data.eval_size=16"]
    batched = train([*common, "data.eval_batch_size=16"], tmp_path / "batched")
    single = train([*common, "data.eval_batch_size=1"], tmp_path / "single")
    rows, ones = (
        read_predictions(resolve_stored(r["predictions"]["path"], tmp_path / name / "run" / "results.jsonl"))
        for r, name in ((batched, "batched"), (single, "single"))
    )
    assert [r["id"] for r in rows] == [r["id"] for r in ones]  # the split's order, not the evaluation's
    for a, b in zip(rows, ones):
        assert a["pred"] == b["pred"]
        assert a["scores"] == pytest.approx(b["scores"], abs=1e-4)


def test_bucketed_training_runs_and_its_loss_is_recorded(train, tmp_path):
    record = train(["model=tiny-gpt2", "task=rte", "method=prompt_tuning", "data.bucket_by_length=true"], tmp_path)
    assert record["status"] == "finished" and record["train_steps"] == 2
