"""The summarize stages: every model's evaluation results as one table and figure (evaluations),
every variant's training curves overlaid (curves)."""
