"""Method prefix_tuning: ``config.py`` its settings (no torch, read at every start-up), ``model.py`` its
LightningModule (documented there), ``conf/method/prefix_tuning.yaml`` its values."""
