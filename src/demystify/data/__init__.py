"""Readers for public data-set layouts (GOT-10k, TrackingNet, ...) and the MoCo v2 augmentations."""
