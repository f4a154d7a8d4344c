"""Method prompt_tuning: ``config.py`` its settings (no torch, read at every start-up), ``model.py`` its
LightningModule (documented there), ``conf/method/prompt_tuning.yaml`` its values."""
