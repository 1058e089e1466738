"""Agents the gateway tests serve (``module:factory`` specs)."""
