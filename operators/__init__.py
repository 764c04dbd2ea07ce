"""The ModelFleet operator (kopf): reconciles ModelFleet resources into KubeRay RayServices.

It renders the Serve config with ``serving.render.serve_config`` from the same ``serving.api`` models.
"""
