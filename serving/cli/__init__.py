"""The ``slm-fleet`` command; the only part of ``serving`` that talks to the Kubernetes API."""
