"""The experiment's report: the paper's tables for this run, and a computed verdict per claim."""
