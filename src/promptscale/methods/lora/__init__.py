"""Method lora: ``config.py`` its settings (no torch, read at every start-up), ``model.py`` its
LightningModule (documented there), ``conf/method/lora.yaml`` its values."""
