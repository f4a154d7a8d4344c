# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.6
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # promptscale: results analysis
#
# Reads one or more results stores and shows the tables and plots of `promptscale table`
# (with predictions files: the majority-class, zero-shot and ensemble rows and the p-values).
#
# - `PROMPTSCALE_RESULTS`: the stores, separated by `:` (e.g.
#   `multirun/method_scale/results.jsonl`); relative paths are taken from the working directory,
#   then from the repository root.
# - Unset: `experiments/cpu_scale/results.jsonl`, the latest measured `make sweep` (one model, so
#   the tables show and the plots that need model sizes, prompt lengths or inits are skipped).
#
# Paired with `analysis.ipynb` by jupytext: edit either, then `jupytext --sync notebooks/analysis.py`.

# %%
# %matplotlib inline
import os
from pathlib import Path

from IPython.display import Markdown, display

from promptscale.analysis import load, plots, table


def find(path: str) -> Path:
    """``path`` as given, else from the repository root (the notebook runs in ``notebooks/``)."""
    for candidate in (Path(path), Path("..") / path, Path("notebooks") / path):
        if candidate.exists():
            return candidate
    raise FileNotFoundError(f"results store not found: {path}")


spec = os.environ.get("PROMPTSCALE_RESULTS") or "experiments/cpu_scale/results.jsonl"
paths = [find(p) for p in spec.split(os.pathsep) if p]
results = load.load(paths)
print(f"{len(results.runs)} finished runs from {', '.join(map(str, paths))}")
print(results.footer() or "no failed or skipped lines")

# %% [markdown]
# ## Tables
#
# Rows are methods (with the method settings that vary among their runs), cells the score ×100
# as mean ± std over seeds (n); each table's caption says the metric, split and sizes of each
# column. One table per model:

# %%
display(Markdown(table.markdown(table.build_tables(results, columns="task"), results)))

# %% [markdown]
# The same, one table per task with model sizes as columns:

# %%
display(Markdown(table.markdown(table.build_tables(results, columns="model"), results)))

# %% [markdown]
# ## Score against model size
#
# Lester et al. 2021, Fig. 1: one line per method; mean over seeds, ± std where n > 1. Every
# figure uses one palette: an init or method has the same colour in each.

# %%
palette = plots.Palette(results.runs)
figure = plots.scale_figure(results.runs, palette)
display(figure) if figure is not None else print("only one model size in these results")

# %% [markdown]
# ## Score against prompt length
#
# Bars grouped by prompt length, one per init/method (hatched by model size).

# %%
figure = plots.prompt_length_figure(results.runs, palette)
display(figure) if figure is not None else print("only one prompt length per model in these results")

# %% [markdown]
# ## Score by prompt initialization
#
# Cf. Lester et al. 2021, Fig. 3b: one bar per init, grouped by model size.

# %%
figure = plots.init_figure(results.runs, palette)
display(figure) if figure is not None else print("only one prompt init per method in these results")
