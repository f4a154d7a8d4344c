"""Method finetune: ``config.py`` its settings (no torch, read at every start-up), ``model.py`` its
LightningModule (documented there), ``conf/method/finetune.yaml`` its values."""
