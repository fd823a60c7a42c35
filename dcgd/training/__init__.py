"""Training: the DCGD LightningModule (eq. 7) and its parts."""
