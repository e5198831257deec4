"""Evaluation of frozen backbones: invariance scores, classification and segmentation probes."""
