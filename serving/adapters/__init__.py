"""Adapter versions: their metadata checks (pure) and the S3 store they are pushed to and read from."""
