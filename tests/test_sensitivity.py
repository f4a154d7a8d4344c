import json

from promptscale.sensitivity import render_sensitivity, sensitivity_rows


def line(pattern, score, seed=0, status="finished", model="m", config_hash=None):
    return {
        "status": status,
        "config_hash": config_hash or f"{model}-{seed}-{pattern}",
        "config": {"method": {"pattern": pattern}},
        "model": model,
        "method": "icl",
        "task": "rte",
        "seed": seed,
        "score": score,
    }


def test_stats_across_patterns_by_hand(tmp_path):
    records = [line(0, 0.50), line(1, 0.60), line(2, 0.70), line(3, 0.9, status="failed"), line(None, 0.99)]
    # the same config re-run: the last finished line counts
    records.append(line(0, 0.55, config_hash="m-0-0"))
    rows = sensitivity_rows(records)
    # patterns 55, 60, 70: mean 61.67, sample std 7.64, min 55, max 70
    assert rows[1] == ["m", "icl", "rte", "0", "3", "61.7", "7.6", "55.0", "70.0"]
    path = tmp_path / "r.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    assert "| m | icl | rte | 0 | 3 | 61.7 |" in render_sensitivity([path])


def test_one_pattern_has_no_std_and_eval_lines_are_left_out():
    records = [line(0, 0.5, model="one"), {**line(1, 0.9, model="one"), "kind": "eval", "config_hash": "e"}]
    assert sensitivity_rows(records)[1] == ["one", "icl", "rte", "0", "1", "50.0", "–", "50.0", "50.0"]
