"""Upgrade shim: the ``import_path`` of Serve configs rendered before the layout by layer.

RayServices (and saved ``slm-fleet serve-config`` output) from before name
``serving.app:build_app``; new ones name ``serving.dataplane.app:build_app``. This keeps the old
name working with a new image until the operator re-renders the RayService. See the README's
"Upgrade notes"; it will be removed in a later release.
"""

from serving.dataplane.app import build_app

__all__ = ["build_app"]
