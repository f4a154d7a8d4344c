"""Method cot: ``config.py`` its settings (no torch, read at every start-up), ``model.py`` its
LightningModule (documented there), ``conf/method/cot.yaml`` its values."""
