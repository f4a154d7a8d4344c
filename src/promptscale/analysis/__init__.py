"""``promptscale table``: results stores -> tables, paired significance, ensembles and figures.

- :mod:`.load`: the runs of results stores (finished, failed, evaluation-only), and the helpers
  the tables and figures share (statistics over seeds, orders, labels).
- :mod:`.predictions`: per-example predictions files, scored with :mod:`promptscale.metrics`;
  the majority-class baseline and seed ensembles.
- :mod:`.significance`: the paired bootstrap over examples.
- :mod:`.table`: tables (Markdown, CSV, LaTeX) and the ``promptscale table`` command.
- :mod:`.plots`: the figures.
"""
