"""Plots in the papers' styles, from the runs of :func:`promptscale.table.load`.

- :func:`scale_figure`: score against model parameters (log x), one line per method (Lester et
  al. 2021, Fig. 1); needs two or more model sizes.
- :func:`prompt_length_figure`: score against prompt length (``config.method.prompt_length``,
  log x), one line per model (cf. Lester Fig. 3a); needs two or more prompt lengths.
- :func:`init_figure`: score by prompt initialization (``config.method.init``), grouped bars per
  model size (cf. Lester Fig. 3b); needs two or more inits.

One panel per task, plus the SuperGLUE average where the data has it; a point is the mean over
seeds of the score ×100, the error bar ± the sample std. The figures are plain
``matplotlib.figure.Figure`` objects on the Agg canvas (no pyplot state): they save anywhere
and display in a notebook.
"""

from __future__ import annotations

import math
from pathlib import Path

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import FixedLocator, FuncFormatter, NullLocator

from promptscale.table import Run, aggregate, format_params, method_key, model_order, superglue_runs

# Lester et al.'s figures: model tuning orange, prompt tuning green, the rest after them
METHOD_COLORS = {
    "finetune": "#ff7f0e",
    "prompt_tuning": "#2ca02c",
    "prefix_tuning": "#1f77b4",
    "ptuning": "#9467bd",
    "ptuning_v2": "#d62728",
    "adapter": "#8c564b",
    "lora": "#e377c2",
}
EXTRA_COLORS = ("#17becf", "#bcbd22", "#7f7f7f", "#aec7e8", "#ffbb78", "#98df8a")
INIT_COLORS = {"random": "#d62728", "vocab": "#1f77b4", "class_label": "#2ca02c", "text": "#9467bd"}


def _panels(runs: list[Run]) -> list[tuple[str, list[Run]]]:
    """(title, runs) per task, then the SuperGLUE average if the data has one."""
    tasks = sorted({r.task for r in runs})
    panels = [(t, [r for r in runs if r.task == t]) for t in tasks]
    averages = superglue_runs(runs)
    if averages:
        panels.append((averages[0].task, averages))
    return panels


def _varying(runs: list[Run], series, value) -> list[Run]:
    """The runs of the series (``series(run)``) that take two or more values of ``value(run)``:
    a series with one prompt length or one init says nothing about either."""
    values: dict = {}
    for r in runs:
        values.setdefault(series(r), set()).add(value(r))
    return [r for r in runs if len(values[series(r)]) > 1]


def _figure(n: int) -> tuple[Figure, list]:
    cols = min(n, 3)
    rows = math.ceil(n / cols)
    fig = Figure(figsize=(4.2 * cols, 3.4 * rows), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(rows, cols, squeeze=False).ravel().tolist()
    for ax in axes[n:]:
        ax.set_visible(False)
    for ax in axes[:n]:
        ax.spines[["top", "right"]].set_visible(False)
        ax.grid(True, alpha=0.3, linewidth=0.6)
    return fig, axes[:n]


def _colors(labels: list[str]) -> dict[str, str]:
    colors, spare = {}, iter(EXTRA_COLORS * 10)
    used = set()
    for label in labels:
        method = label.split(" ", 1)[0]
        color = METHOD_COLORS.get(method)
        if color is None or color in used:
            color = next(spare)
        colors[label] = color
        used.add(color)
    return colors


def _shades(n: int) -> list:
    """Light to dark, one per model size (small to large), as Lester's size-coded figures."""
    from matplotlib import colormaps

    cmap = colormaps["viridis"]
    return [cmap(0.85 - 0.75 * i / max(n - 1, 1)) for i in range(n)]


def _legend(fig: Figure, axes: list) -> None:
    handles = {}
    for ax in axes:
        for h, label in zip(*ax.get_legend_handles_labels()):
            handles.setdefault(label, h)
    labels = list(handles)
    if not labels:
        return
    # as many columns as fit the figure's width (a 9 pt character is about 0.075 in wide)
    fits = int(fig.get_figwidth() / ((max(map(len, labels)) + 5) * 0.075))
    fig.legend([handles[k] for k in labels], labels, loc="outside lower center",
               ncols=max(1, min(len(labels), fits)), frameon=False, fontsize=9)  # fmt: skip


def scale_figure(runs: list[Run]) -> Figure | None:
    """Score against model parameters, one line per method variant (Lester Fig. 1)."""
    runs = [r for r in runs if r.model_params > 0]  # a log axis needs sizes
    panels = [(t, rs) for t, rs in _panels(runs) if len({r.model for r in rs}) > 1]
    if not panels:
        return None
    fig, axes = _figure(len(panels))
    params = {m: min(r.model_params for r in runs if r.model == m) for m in model_order(runs)}
    colors = _colors(sorted({r.variant() for r in runs}, key=method_key))
    for ax, (title, rs) in zip(axes, panels):
        stats = aggregate(rs, lambda r: (r.variant(), r.model))
        for variant in sorted({v for v, _ in stats}, key=method_key):
            models = sorted((m for v, m in stats if v == variant), key=lambda m: params[m])
            xs = [params[m] for m in models]
            ss = [stats[variant, m] for m in models]
            ax.errorbar(xs, [s.mean for s in ss], yerr=[s.std for s in ss], label=variant, color=colors[variant],
                        marker="o", markersize=5, linewidth=2, capsize=3)  # fmt: skip
        ax.set_xscale("log")
        shown = sorted({params[m] for m in {r.model for r in rs}})
        ax.xaxis.set_major_locator(FixedLocator(shown))
        ax.xaxis.set_minor_locator(NullLocator())
        ax.xaxis.set_major_formatter(FuncFormatter(lambda x, _: format_params(x)))
        ax.set_title(title)
        ax.set_xlabel("model parameters")
        ax.set_ylabel("score")
    _legend(fig, axes)
    return fig


def prompt_length_figure(runs: list[Run]) -> Figure | None:
    """Score against prompt length, one line per model (and method variant, if several)."""
    runs = _varying(
        [r for r in runs if isinstance(r.prompt_length, (int, float))],
        lambda r: (r.model, r.variant("prompt_length")),
        lambda r: r.prompt_length,
    )
    panels = [(t, rs) for t, rs in _panels(runs) if len({r.prompt_length for r in rs}) > 1]
    if not panels:
        return None
    fig, axes = _figure(len(panels))
    models = model_order(runs)
    shades = dict(zip(models, _shades(len(models))))
    several = len({r.variant("prompt_length") for r in runs}) > 1
    styles = dict(zip(sorted({r.variant("prompt_length") for r in runs}, key=method_key), ["-", "--", ":", "-."] * 5))
    for ax, (title, rs) in zip(axes, panels):
        stats = aggregate(rs, lambda r: (r.model, r.variant("prompt_length"), r.prompt_length))
        for model, variant in sorted({k[:2] for k in stats}, key=lambda k: (models.index(k[0]), method_key(k[1]))):
            lengths = sorted(k[2] for k in stats if k[:2] == (model, variant))
            ss = [stats[model, variant, p] for p in lengths]
            label = f"{model} · {variant}" if several else model
            ax.errorbar(lengths, [s.mean for s in ss], yerr=[s.std for s in ss], label=label, color=shades[model],
                        linestyle=styles[variant], marker="o", markersize=5, linewidth=2, capsize=3)  # fmt: skip
        ax.set_xscale("log")
        ax.xaxis.set_major_locator(FixedLocator(sorted({r.prompt_length for r in rs})))
        ax.xaxis.set_minor_locator(NullLocator())
        ax.xaxis.set_major_formatter(FuncFormatter(lambda x, _: f"{x:g}"))
        ax.set_title(title)
        ax.set_xlabel("prompt length")
        ax.set_ylabel("score")
    _legend(fig, axes)
    return fig


def init_figure(runs: list[Run]) -> Figure | None:
    """Score by prompt initialization: a group of bars per model size, one bar per init."""
    runs = _varying([r for r in runs if isinstance(r.init, str)], lambda r: r.variant("init"), lambda r: r.init)
    panels = [(t, rs) for t, rs in _panels(runs) if len({r.init for r in rs}) > 1]
    if not panels:
        return None
    fig, axes = _figure(len(panels))
    models = model_order(runs)
    params = {m: min(r.model_params for r in runs if r.model == m) for m in models}
    several = len({r.variant("init") for r in runs}) > 1
    bars = sorted({(r.init, r.variant("init")) for r in runs}, key=lambda b: (method_key(b[1]), b[0]))
    spare = iter(EXTRA_COLORS * 10)
    colors = {b: INIT_COLORS.get(b[0]) or next(spare) for b in bars}
    if len(set(colors.values())) < len(bars):  # several method variants: one colour per bar
        colors = {b: c for b, c in zip(bars, list(METHOD_COLORS.values()) + list(EXTRA_COLORS))}
    width = 0.8 / len(bars)
    for ax, (title, rs) in zip(axes, panels):
        stats = aggregate(rs, lambda r: (r.model, r.init, r.variant("init")))
        present = [m for m in models if any(k[0] == m for k in stats)]
        for i, bar in enumerate(bars):
            xs = [j + (i - (len(bars) - 1) / 2) * width for j, m in enumerate(present) if (m, *bar) in stats]
            ss = [stats[(m, *bar)] for m in present if (m, *bar) in stats]
            label = f"{bar[0]} · {bar[1]}" if several else bar[0]
            ax.bar(xs, [s.mean for s in ss], width=width * 0.95, yerr=[s.std for s in ss], capsize=3,
                   color=colors[bar], label=label, error_kw={"linewidth": 1})  # fmt: skip
        ax.set_xticks(range(len(present)))
        ax.set_xticklabels([f"{m}\n{format_params(params[m])}" if params[m] else m for m in present], fontsize=8)
        ax.grid(False, axis="x")
        ax.set_title(title)
        ax.set_ylabel("score")
    _legend(fig, axes)
    return fig


FIGURES = {"scale": scale_figure, "prompt_length": prompt_length_figure, "init": init_figure}


def draw_all(runs: list[Run], out: Path, dpi: int = 150) -> list[Path]:
    """Save ``scale.png``, ``prompt_length.png`` and ``init.png`` in ``out``, each only when the
    data varies in what it plots; return the files written."""
    out = Path(out)
    written = []
    for name, make in FIGURES.items():
        fig = make(runs)
        if fig is not None:
            out.mkdir(parents=True, exist_ok=True)
            fig.savefig(out / f"{name}.png", dpi=dpi)
            written.append(out / f"{name}.png")
    return written
