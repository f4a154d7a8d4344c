"""Method ptuning_v2: ``config.py`` its settings (no torch, read at every start-up), ``model.py`` its
LightningModule (documented there), ``conf/method/ptuning_v2.yaml`` its values."""
