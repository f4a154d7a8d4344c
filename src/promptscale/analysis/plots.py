"""Figures in the papers' styles, from the runs of :func:`promptscale.analysis.load.load`.

- :func:`scale_figure`: score against model parameters (log x), one line per method (Lester et
  al. 2021, Fig. 1); needs two or more model sizes.
- :func:`prompt_length_figure`: bars grouped by prompt length (``config.method.prompt_length``),
  one bar per init/method (and model); needs two or more prompt lengths.
- :func:`init_figure`: score by prompt initialization (``config.method.init``), bars grouped
  by model size (cf. Lester Fig. 3b); needs two or more inits.

One panel per task (and the SuperGLUE average where the data has it), its y axis named by the
task's metric. A point or bar is the mean over seeds of the score ×100; an error bar (± sample
std) only where n > 1. Each init/method keeps one colour in every figure (:func:`palette`). The
figures are plain ``matplotlib.figure.Figure`` objects on the Agg canvas (no pyplot state): they
save anywhere and display in a notebook.
"""

from __future__ import annotations

import math
from pathlib import Path

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import FixedLocator, FuncFormatter, NullLocator

from promptscale.analysis.load import (
    Run,
    aggregate,
    format_params,
    method_key,
    metric_label,
    model_order,
    superglue_runs,
)

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
INIT_COLORS = {"random": "#d62728", "vocab": "#1f77b4", "class_label": "#2ca02c", "text": "#9467bd"}
EXTRA_COLORS = ("#17becf", "#bcbd22", "#7f7f7f", "#aec7e8", "#ffbb78", "#98df8a", "#c5b0d5", "#c49c94")
HATCHES = ("", "//", "..", "xx", "\\\\", "oo")
LINESTYLES = ("-", "--", ":", "-.")


class Palette:
    """One colour per init/method for every figure drawn from the same runs: a method's colour
    (Lester's: fine-tuning orange, prompt tuning green), or, where a method's runs differ in
    ``init``, one colour per (method, init): the init's own colour, for the first method to claim it."""

    def __init__(self, runs: list[Run]) -> None:
        inits: dict[str, set] = {}
        for r in runs:
            inits.setdefault(r.method, set()).add(r.init)
        self._split = {m for m, values in inits.items() if len(values) > 1}
        keys = sorted({self.key(r) for r in runs}, key=lambda k: (method_key(k[0]), str(k[1])))
        one_method = len({k[0] for k in keys}) == 1
        self.colors: dict[tuple, str] = {}
        spare = iter(EXTRA_COLORS * 10)
        for method, init in keys:
            wanted = INIT_COLORS.get(init) if init else METHOD_COLORS.get(method)
            if wanted is None or wanted in self.colors.values():
                wanted = next(c for c in spare if c not in self.colors.values())
            self.colors[method, init] = wanted
        self._one_method = one_method

    def key(self, run: Run) -> tuple:
        return (run.method, run.init if run.method in self._split else None)

    def color(self, run: Run) -> str:
        return self.colors[self.key(run)]

    def label(self, run: Run) -> str:
        method, init = self.key(run)
        if init is None:
            return method
        return f"init={init}" if self._one_method else f"{method} init={init}"


def _panels(runs: list[Run]) -> list[tuple[str, list[Run]]]:
    """(title, runs) per task, then the SuperGLUE average if the data has one."""
    runs = [r for r in runs if r.kind == "train"]
    tasks = sorted({(r.task, r.split) for r in runs})
    several = {t for t, _ in tasks if sum(p[0] == t for p in tasks) > 1}
    panels = [(f"{t} ({s})" if t in several else t, [r for r in runs if (r.task, r.split) == (t, s)]) for t, s in tasks]
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
    fig = Figure(figsize=(4.2 * cols, 3.4 * rows + 0.5), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(rows, cols, squeeze=False).ravel().tolist()
    for ax in axes[n:]:
        ax.set_visible(False)
    for ax in axes[:n]:
        ax.spines[["top", "right"]].set_visible(False)
        ax.grid(True, alpha=0.3, linewidth=0.6)
    return fig, axes[:n]


def _ylabel(ax, runs: list[Run]) -> None:
    ax.set_ylabel(f"{metric_label(runs)} ×100")


def _errorbars(ax, xs, stats, color) -> None:
    """± sample std where n > 1; nothing for a single seed (no spread is known)."""
    shown = [(x, s) for x, s in zip(xs, stats) if s.n > 1]
    if shown:
        ax.errorbar([x for x, _ in shown], [s.mean for _, s in shown], yerr=[s.std for _, s in shown], fmt="none",
                    ecolor="#333333" if color is None else color, elinewidth=1.2, capsize=3)  # fmt: skip


def _legend(fig: Figure, axes: list, note: str) -> None:
    handles = {}
    for ax in axes:
        for h, label in zip(*ax.get_legend_handles_labels()):
            handles.setdefault(label, h)
    labels = list(handles)
    if labels:
        # as many columns as fit the figure's width (a 9 pt character is about 0.075 in wide)
        fits = int(fig.get_figwidth() / ((max(map(len, labels)) + 5) * 0.075))
        fig.legend([handles[k] for k in labels], labels, loc="outside lower center",
                   ncols=max(1, min(len(labels), fits)), frameon=False, fontsize=9)  # fmt: skip
    fig.suptitle(note, fontsize=8, color="#555555")


NOTE = "mean over seeds; error bars ± sample std where n > 1"


def scale_figure(runs: list[Run], palette: Palette | None = None) -> Figure | None:
    """Score against model parameters, one line per method variant (Lester Fig. 1)."""
    runs = [r for r in runs if r.model_params > 0]  # a log axis needs sizes
    panels = [(t, rs) for t, rs in _panels(runs) if len({r.model for r in rs}) > 1]
    if not panels:
        return None
    palette = palette or Palette(runs)
    fig, axes = _figure(len(panels))
    params = {m: min(r.model_params for r in runs if r.model == m) for m in model_order(runs)}
    variants = sorted({r.variant() for r in runs}, key=method_key)
    first = {v: next(r for r in runs if r.variant() == v) for v in variants}
    # variants that share a colour (other settings differ) get different line styles
    style = {}
    for v in variants:
        same = [u for u in variants if palette.key(first[u]) == palette.key(first[v])]
        style[v] = LINESTYLES[same.index(v) % len(LINESTYLES)]
    for ax, (title, rs) in zip(axes, panels):
        stats = aggregate(rs, lambda r: (r.variant(), r.model))
        for variant in sorted({v for v, _ in stats}, key=method_key):
            models = sorted((m for v, m in stats if v == variant), key=lambda m: params[m])
            xs = [params[m] for m in models]
            ss = [stats[variant, m] for m in models]
            color = palette.color(first[variant])
            ax.plot(xs, [s.mean for s in ss], label=variant, color=color, linestyle=style[variant],
                    marker="o", markersize=5, linewidth=2)  # fmt: skip
            _errorbars(ax, xs, ss, color)
        ax.set_xscale("log")
        shown = sorted({params[m] for m in {r.model for r in rs}})
        ax.xaxis.set_major_locator(FixedLocator(shown))
        ax.xaxis.set_minor_locator(NullLocator())
        ax.xaxis.set_major_formatter(FuncFormatter(lambda x, _: format_params(x)))
        ax.set_title(title)
        ax.set_xlabel("model parameters")
        _ylabel(ax, rs)
    _legend(fig, axes, NOTE)
    return fig


def _bars(ax, groups: list, bars: list, stats: dict, color, hatch, label) -> None:
    """``groups`` on the x axis, ``bars`` side by side in each; ``stats[group, bar]``."""
    width = 0.8 / len(bars)
    for i, bar in enumerate(bars):
        present = [(j, g) for j, g in enumerate(groups) if (g, bar) in stats]
        if not present:
            continue
        xs = [j + (i - (len(bars) - 1) / 2) * width for j, _ in present]
        ss = [stats[g, bar] for _, g in present]
        ax.bar(xs, [s.mean for s in ss], width=width * 0.95, color=color(bar), hatch=hatch(bar),
               edgecolor="white", linewidth=0.5, label=label(bar))  # fmt: skip
        _errorbars(ax, xs, ss, None)
    ax.set_xticks(range(len(groups)))
    ax.grid(False, axis="x")


def prompt_length_figure(runs: list[Run], palette: Palette | None = None) -> Figure | None:
    """Bars grouped by prompt length: one bar per init/method (and model, hatched, if several)."""
    runs = _varying(
        [r for r in runs if isinstance(r.prompt_length, (int, float))],
        lambda r: (r.model, r.variant("prompt_length")),
        lambda r: r.prompt_length,
    )
    panels = [(t, rs) for t, rs in _panels(runs) if len({r.prompt_length for r in rs}) > 1]
    if not panels:
        return None
    palette = palette or Palette(runs)
    fig, axes = _figure(len(panels))
    models = model_order(runs)
    several_models = len(models) > 1
    bars = sorted({(r.variant("prompt_length"), r.model) for r in runs},
                  key=lambda b: (method_key(b[0]), models.index(b[1])))  # fmt: skip
    first = {b: next(r for r in runs if (r.variant("prompt_length"), r.model) == b) for b in bars}

    def label(bar):
        return f"{bar[0]} · {bar[1]}" if several_models else bar[0]

    for ax, (title, rs) in zip(axes, panels):
        stats = aggregate(rs, lambda r: (r.prompt_length, (r.variant("prompt_length"), r.model)))
        lengths = sorted({r.prompt_length for r in rs})
        _bars(ax, lengths, bars, stats, lambda b: palette.color(first[b]),
              lambda b: HATCHES[models.index(b[1]) % len(HATCHES)], label)  # fmt: skip
        ax.set_xticklabels([f"{p:g}" for p in lengths])
        ax.set_xlabel("prompt length (tokens)")
        ax.set_title(title)
        _ylabel(ax, rs)
    _legend(fig, axes, NOTE)
    return fig


def init_figure(runs: list[Run], palette: Palette | None = None) -> Figure | None:
    """Score by prompt initialization: a group of bars per model size, one bar per init/method."""
    runs = _varying([r for r in runs if isinstance(r.init, str)], lambda r: r.variant("init"), lambda r: r.init)
    panels = [(t, rs) for t, rs in _panels(runs) if len({r.init for r in rs}) > 1]
    if not panels:
        return None
    palette = palette or Palette(runs)
    fig, axes = _figure(len(panels))
    models = model_order(runs)
    params = {m: min(r.model_params for r in runs if r.model == m) for m in models}
    several = len({r.variant("init") for r in runs}) > 1
    bars = sorted({(r.init, r.variant("init")) for r in runs}, key=lambda b: (method_key(b[1]), b[0]))
    first = {b: next(r for r in runs if (r.init, r.variant("init")) == b) for b in bars}
    same = {b: [c for c in bars if palette.key(first[c]) == palette.key(first[b])] for b in bars}

    def label(bar):
        return f"{bar[0]} · {bar[1]}" if several else bar[0]

    for ax, (title, rs) in zip(axes, panels):
        stats = aggregate(rs, lambda r: (r.model, (r.init, r.variant("init"))))
        present = [m for m in models if any(k[0] == m for k in stats)]
        _bars(ax, present, bars, stats, lambda b: palette.color(first[b]),
              lambda b: HATCHES[same[b].index(b) % len(HATCHES)], label)  # fmt: skip
        ax.set_xticklabels([f"{m}\n{format_params(params[m])}" if params[m] else m for m in present], fontsize=8)
        ax.set_title(title)
        _ylabel(ax, rs)
    _legend(fig, axes, NOTE)
    return fig


FIGURES = {"scale": scale_figure, "prompt_length": prompt_length_figure, "init": init_figure}


def draw_all(runs: list[Run], out: Path, dpi: int = 150) -> list[Path]:
    """Save ``scale.png``, ``prompt_length.png`` and ``init.png`` in ``out``, each only when the
    data varies in what it plots, with one palette for all; return the files written."""
    out = Path(out)
    palette = Palette(runs)
    written = []
    for name, make in FIGURES.items():
        fig = make(runs, palette)
        if fig is not None:
            out.mkdir(parents=True, exist_ok=True)
            fig.savefig(out / f"{name}.png", dpi=dpi)
            written.append(out / f"{name}.png")
    return written
