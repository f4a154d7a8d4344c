"""Figures a paper could use: one colour per init/method across figures, error bars only where
n > 1, the y axis named by the task's metric, one panel per task, bars grouped by prompt length."""

from __future__ import annotations

import json
from pathlib import Path

from matplotlib.colors import to_hex
from matplotlib.container import BarContainer, ErrorbarContainer

from promptscale.analysis.load import load
from promptscale.analysis.plots import Palette, init_figure, prompt_length_figure, scale_figure
from promptscale.results import config_hash


def _store(path: Path) -> Path:
    lines = []
    for model, params in (("small", 60_000_000), ("large", 700_000_000)):
        for task, metrics in (("cb", ["accuracy", "f1_macro"]), ("rte", ["accuracy"])):
            settings = [("finetune", {})] + [
                ("prompt_tuning", {"prompt_length": p, "init": i}) for p in (5, 20) for i in ("random", "class_label")
            ]
            for method, cfg in settings:
                # one seed for small random-init prompts: no error bar there
                seeds = (0,) if model == "small" and cfg.get("init") == "random" else (0, 1)
                for seed in seeds:
                    config = {"seed": seed, "task": {"name": task, "metrics": metrics},
                              "model": {"name": model, "params": params}, "method": {"name": method, **cfg}}  # fmt: skip
                    lines.append({"status": "finished", "config_hash": config_hash(config), "config": config,
                                  "task": task, "method": method, "model": model, "model_params": params,
                                  "seed": seed, "score": 0.5 + seed / 10 + len(cfg) / 20})  # fmt: skip
    path.write_text("".join(json.dumps(r) + "\n" for r in lines))
    return path


def _bars(ax) -> dict[str, list]:
    """Legend label -> the bars' colours."""
    return {c.get_label(): [to_hex(p.get_facecolor()) for p in c.patches] for c in ax.containers
            if isinstance(c, BarContainer)}  # fmt: skip


def _error_points(ax) -> int:
    return sum(len(c.lines[2][0].get_segments()) for c in ax.containers if isinstance(c, ErrorbarContainer))


def test_colours_error_bars_axes_and_panels(tmp_path):
    runs = load([_store(tmp_path / "r.jsonl")]).runs
    palette = Palette(runs)
    figures = {"scale": scale_figure(runs, palette), "length": prompt_length_figure(runs, palette),
               "init": init_figure(runs, palette)}  # fmt: skip
    for fig in figures.values():
        axes = [ax for ax in fig.axes if ax.get_visible()]
        # one panel per task and the average
        assert [ax.get_title() for ax in axes] == ["cb", "rte", "avg (cb, rte)"]
        assert [ax.get_ylabel() for ax in axes] == [
            "mean of accuracy and macro-F1 ×100", "accuracy ×100", "mean task score ×100",
        ]  # fmt: skip

    # the same init has the same colour in both bar figures; inits differ from each other
    random_color = palette.colors["prompt_tuning", "random"]
    class_color = palette.colors["prompt_tuning", "class_label"]
    assert random_color != class_color
    length_bars = _bars(figures["length"].axes[0])
    assert {c for label, cs in length_bars.items() if "init=random" in label for c in cs} == {random_color}
    assert {c for label, cs in length_bars.items() if "init=class_label" in label for c in cs} == {class_color}
    init_bars = _bars(figures["init"].axes[0])
    assert {c for label, cs in init_bars.items() if label.startswith("random") for c in cs} == {random_color}
    # scale: the fine-tuning line keeps Lester's orange
    [ft] = [line for line in figures["scale"].axes[0].get_lines() if line.get_label() == "finetune"]
    assert to_hex(ft.get_color()) == "#ff7f0e"

    # bars grouped by prompt length: the x ticks are the lengths
    assert [t.get_text() for t in figures["length"].axes[0].get_xticklabels()] == ["5", "20"]
    # cb has 2 lengths x (2 inits x 2 models) = 8 bars, of which the 2 small random ones have n = 1
    assert sum(len(cs) for cs in length_bars.values()) == 8
    assert _error_points(figures["length"].axes[0]) == 6
