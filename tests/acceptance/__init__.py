"""Acceptance checks: the project driven only through the edges in the interfaces spec."""
