import random

import pytest
import torch
from seqeval.metrics import f1_score, precision_score, recall_score
from seqeval.metrics.sequence_labeling import get_entities

from promptscale.errors import ConfigError
from promptscale.metrics import (
    Accuracy,
    EntityF1,
    MacroF1,
    MultiRCScores,
    ReCoRDScores,
    build_metrics,
    conll_chunks,
    normalize_answer,
    task_score,
)

T = torch.tensor


def floats(result):
    return {k: float(v) for k, v in result.items()}


def test_accuracy_hand_computed():
    m = Accuracy()
    m.update(T([0, 1, 2, 1]), T([0, 2, 2, 1]))
    # 3 of 4 equal
    assert floats(m.compute()) == pytest.approx({"accuracy": 0.75})


def test_accuracy_needs_no_num_classes():
    # candidate indices from examples with different numbers of candidates: 7 and 12 right, 3 wrong
    m = Accuracy()
    m.update(T([7, 3, 12]), T([7, 0, 12]))
    assert floats(m.compute()) == pytest.approx({"accuracy": 2 / 3})


def test_accuracy_rejects_shape_mismatch():
    with pytest.raises(ValueError):
        Accuracy().update(T([0, 1]), T([0, 1, 1]))


def test_macro_f1_hand_computed():
    m = MacroF1(3)
    m.update(T([0, 0, 1, 2, 2, 1]), T([0, 1, 1, 2, 0, 1]))
    # class 0: tp 1, fp 1, fn 1 -> 2/4 = 0.5
    # class 1: tp 2, fp 0, fn 1 -> 4/5 = 0.8
    # class 2: tp 1, fp 1, fn 0 -> 2/3
    # macro = (0.5 + 0.8 + 2/3) / 3
    assert floats(m.compute()) == pytest.approx({"f1_macro": (0.5 + 0.8 + 2 / 3) / 3})


def test_macro_f1_skips_class_absent_from_preds_and_target():
    # as sklearn's f1_score(average="macro"): class 2 never occurs, so the mean is over classes 0, 1
    # class 0: tp 1, fp 1, fn 0 -> 2/3; class 1: tp 0, fp 0, fn 1 -> 0
    m = MacroF1(3)
    m.update(T([0, 0]), T([0, 1]))
    assert floats(m.compute()) == pytest.approx({"f1_macro": 1 / 3})


# questions 10, 11, 12; options of 10 and 11 come in both batches
MULTIRC_BATCHES = [
    (T([1, 0, 0]), T([1, 0, 0]), T([10, 10, 11])),
    (T([1, 1, 1]), T([1, 0, 1]), T([10, 11, 12])),
]


def test_multirc_question_split_across_updates():
    m = MultiRCScores()
    for preds, target, groups in MULTIRC_BATCHES:
        m.update(preds, target, groups)
    # q10: options (1,1) (0,0) (1,1) all right; q11: (0,0) right, (1,0) wrong; q12: (1,1) right
    # em = 2/3 (q11 is right in the first batch alone, wrong once its second option arrives)
    # options: predicted positive 4, gold positive 3, tp 3 -> f1a = 2*3 / (4+3) = 6/7
    assert floats(m.compute()) == pytest.approx({"em": 2 / 3, "f1a": 6 / 7})


def test_multirc_no_positive_predictions():
    # one question, options all wrong; no predicted positives -> f1a 0
    m = MultiRCScores()
    m.update(T([0, 0]), T([1, 1]), T([0, 0]))
    assert floats(m.compute()) == pytest.approx({"em": 0.0, "f1a": 0.0})


@pytest.mark.parametrize(
    ("text", "normalized"),
    [
        ("The Eiffel Tower", "eiffel tower"),
        ("An apple, a day!", "apple day"),
        ("  U.S.   Navy ", "us navy"),
        ("Jean-Paul", "jeanpaul"),
        ("theater Anthem", "theater anthem"),  # articles only as whole words
        ("THE", ""),
    ],
)
def test_record_normalization(text, normalized):
    assert normalize_answer(text) == normalized


def test_record_hand_computed():
    m = ReCoRDScores()
    m.update(
        ["the Eiffel Tower", "Paris, France", "Barack Obama", "London"],
        [["Eiffel Tower"], ["France", "Paris"], ["Obama", "Barack Obama."], ["New York"]],
    )
    # 1: article and case differ only -> em 1, f1 1
    # 2: [paris france] vs [france]: p 1/2, r 1 -> f1 2/3 (same vs [paris]); em 0
    # 3: second gold normalizes to "barack obama" -> em 1, f1 1 (max over gold; first gold gives 2/3)
    # 4: no overlap -> 0, 0
    # f1 = (1 + 2/3 + 1 + 0) / 4 = 2/3; em = 2/4
    assert floats(m.compute()) == pytest.approx({"f1": 2 / 3, "em": 0.5})


def test_record_token_counts_and_empty_answers():
    m = ReCoRDScores()
    m.update(["new new york", "the"], [["New York"], ["a"]])
    # 1: common tokens min(2,1) new + 1 york = 2; p 2/3, r 1 -> f1 0.8; em 0
    # 2: both normalize to "": em 1, f1 0 (ReCoRD's script: no common token -> 0)
    # f1 = 0.8 / 2 = 0.4; em = 1/2
    assert floats(m.compute()) == pytest.approx({"f1": 0.4, "em": 0.5})


def test_entity_f1_hand_computed():
    gold = [["B-PER", "I-PER", "O", "B-LOC", "I-LOC", "O", "B-ORG"], ["B-MISC", "I-MISC", "I-MISC"]]
    pred = [["B-PER", "I-PER", "O", "B-LOC", "O", "O", "I-ORG"], ["B-MISC", "I-PER", "I-MISC"]]
    # sentence 1: gold PER(0,1) LOC(3,4) ORG(6,6); pred PER(0,1) LOC(3,3) ORG(6,6) (I- after O starts one)
    #   tp 2 (PER, ORG; LOC's end differs)
    # sentence 2: gold MISC(0,2); pred MISC(0,0) PER(1,1) MISC(2,2) (type switch splits) -> tp 0
    # tp 2, n_pred 6, n_gold 4: p = 1/3, r = 1/2, f1 = 2*2 / (6+4) = 0.4
    m = EntityF1()
    m.update(pred, gold)
    assert floats(m.compute()) == pytest.approx({"precision": 1 / 3, "recall": 0.5, "f1": 0.4})


def test_entity_f1_nothing_predicted_is_zero():
    m = EntityF1()
    m.update([["O", "O"]], [["B-PER", "O"]])
    assert floats(m.compute()) == {"precision": 0.0, "recall": 0.0, "f1": 0.0}


def test_entity_f1_rejects_length_mismatch():
    with pytest.raises(ValueError):
        EntityF1().update([["O"]], [["O", "B-PER"]])


TAGS = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC", "B-ORG", "I-ORG"]


def random_tagging(seed, sentences=30):
    """Gold and predicted tags, IOB1-style I- starts and type switches included; pred copies gold 60%."""
    rng = random.Random(seed)
    gold, pred = [], []
    for _ in range(sentences):
        g = rng.choices(TAGS, weights=[4, 2, 2, 2, 2, 1, 1], k=rng.randint(1, 12))
        gold.append(g)
        pred.append([t if rng.random() < 0.6 else rng.choice(TAGS) for t in g])
    return pred, gold


@pytest.mark.parametrize("seed", range(8))
def test_entity_f1_matches_seqeval(seed):
    pred, gold = random_tagging(seed)
    m = EntityF1()
    m.update(pred, gold)
    expected = {
        "precision": precision_score(gold, pred),
        "recall": recall_score(gold, pred),
        "f1": f1_score(gold, pred),
    }
    assert floats(m.compute()) == pytest.approx(expected)


@pytest.mark.parametrize("seed", range(8))
def test_chunks_match_seqeval(seed):
    pred, gold = random_tagging(seed)
    for tags in pred + gold:
        assert conll_chunks(tags) == set(get_entities(tags))


def batches_of(n_batches, *columns):
    """Split parallel columns (tensors or lists) into n_batches consecutive pieces."""
    size = -(-len(columns[0]) // n_batches)
    return [tuple(c[i : i + size] for c in columns) for i in range(0, len(columns[0]), size)]


def _cases():
    gen = torch.Generator().manual_seed(0)
    preds, target = torch.randint(0, 3, (50,), generator=gen), torch.randint(0, 3, (50,), generator=gen)
    groups = torch.arange(50) // 4
    tag_pred, tag_gold = random_tagging(0)
    texts = ["the cat", "a dog", "Mr. Smith", "Paris", "new york city", "x"]
    answers = [["cat"], ["dogs", "dog"], ["Smith"], ["London"], ["New York"], ["y", "X!"]]
    return [
        (Accuracy, (preds, target)),
        (lambda: MacroF1(3), (preds, target)),
        (MultiRCScores, (preds.clamp(max=1), target.clamp(max=1), groups)),
        (ReCoRDScores, (texts, answers)),
        (EntityF1, (tag_pred, tag_gold)),
    ]


CASE_IDS = ["accuracy", "f1_macro", "multirc", "record", "entity_f1"]


@pytest.mark.parametrize(("make", "args"), _cases(), ids=CASE_IDS)
def test_accumulation_equals_single_update(make, args):
    whole = make()
    whole.update(*args)
    pieces = make()
    for batch in batches_of(3, *args):
        pieces.update(*batch)
    assert floats(pieces.compute()) == pytest.approx(floats(whole.compute()))


@pytest.mark.parametrize(("make", "args"), _cases(), ids=CASE_IDS)
def test_forward_returns_batch_value_and_accumulates(make, args):
    whole = make()
    whole.update(*args)
    stepped = make()
    first, *rest = batches_of(2, *args)
    alone = make()
    alone.update(*first)
    assert floats(stepped(*first)) == pytest.approx(floats(alone.compute()))
    for batch in rest:
        stepped(*batch)
    assert floats(stepped.compute()) == pytest.approx(floats(whole.compute()))
    stepped.reset()
    stepped.update(*args)
    assert floats(stepped.compute()) == pytest.approx(floats(whole.compute()))


def test_build_metrics_cb_collection():
    metrics = build_metrics(["accuracy", "f1_macro"], num_labels=3)
    metrics.update(T([0, 0, 1, 2, 2, 1]), T([0, 1, 1, 2, 0, 1]))
    values = floats(metrics.compute())
    # accuracy 4/6; f1_macro as in test_macro_f1_hand_computed
    f1 = (0.5 + 0.8 + 2 / 3) / 3
    assert values == pytest.approx({"accuracy": 4 / 6, "f1_macro": f1})
    assert task_score(values) == pytest.approx((4 / 6 + f1) / 2)


@pytest.mark.parametrize(
    ("names", "args", "keys"),
    [
        (["multirc"], MULTIRC_BATCHES[0], {"em", "f1a"}),
        (["record"], (["a b"], [["b"]]), {"f1", "em"}),
        (["entity_f1"], ([["B-PER"]], [["B-PER"]]), {"precision", "recall", "f1"}),
    ],
)
def test_build_metrics_keys(names, args, keys):
    metrics = build_metrics(names, num_labels=None)
    metrics.update(*args)
    assert set(metrics.compute()) == keys


def test_build_metrics_errors():
    with pytest.raises(ConfigError):
        build_metrics(["bleu"], num_labels=2)
    with pytest.raises(ConfigError):
        build_metrics(["f1_macro"], num_labels=None)


@pytest.mark.parametrize(
    ("values", "score"),
    [
        ({"accuracy": 0.8, "f1_macro": 0.6}, 0.7),  # CB: (0.8 + 0.6) / 2
        ({"em": 0.3, "f1a": 0.7}, 0.5),  # MultiRC: (0.3 + 0.7) / 2
        ({"f1": 0.8, "em": 0.7}, 0.75),  # ReCoRD: (0.8 + 0.7) / 2
        ({"accuracy": 0.6}, 0.6),  # RTE
        ({"precision": 0.5, "recall": 1.0, "f1": 0.9}, 0.9),  # CoNLL: f1 alone
        ({"accuracy": T(0.25)}, 0.25),  # tensors from compute()
    ],
    ids=["cb", "multirc", "record", "rte", "conll", "tensor"],
)
def test_task_score(values, score):
    result = task_score(values)
    assert type(result) is float
    assert result == pytest.approx(score)


def test_task_score_needs_a_primary_metric():
    with pytest.raises(ValueError):
        task_score({"precision": 0.5})
