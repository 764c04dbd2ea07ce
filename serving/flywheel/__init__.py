"""The offline LLM-to-SLM flywheel: captured records -> clusters -> dataset -> specialist -> canary."""
