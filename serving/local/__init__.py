"""Running a fleet on this machine: local Ray, serve with file watch, local rollouts, local S3, demo."""
