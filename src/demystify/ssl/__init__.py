"""Contrastive pretraining: MoCo v2, its data, the training loop, checkpoints, distribution."""
