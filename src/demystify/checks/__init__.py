"""Data checks: object-centricity measures and great-expectations suites (imported only here)."""
