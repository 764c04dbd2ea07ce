"""What the fleet records: the metrics catalog, per-request telemetry and tracing."""
