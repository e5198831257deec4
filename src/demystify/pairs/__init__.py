"""Positive pairs from video: temporal sampling, label-free proposals, tracking, scoring."""
