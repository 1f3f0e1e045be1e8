"""Agentwatch hook internals: stdlib only, Python >= 3.9, cheap to import (see agentwatch_hook.py)."""
