"""The ModelFleet API: the fleet spec and status as pydantic models, their validation, header names.

Pure: pydantic and the standard library (and YAML for reading fleet documents); no I/O beyond
reading a fleet file. Every other layer builds on it.
"""
