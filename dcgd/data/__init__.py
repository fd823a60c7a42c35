"""Data engine: masks, removal pairs, image sources and the LightningDataModule."""
