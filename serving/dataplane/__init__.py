"""What runs inside Ray Serve: the application, the router, dispatch, the base-model deployment.

Ray Serve LLM's private API is used in ``ray_serve_llm`` only.
"""
