"""Canary rollouts, driven: one tick reads metrics and probes, asks the pure engine, reports."""
