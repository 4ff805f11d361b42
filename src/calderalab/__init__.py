"""calderalab: reasoning-aware LLM weight compression (CALDERA, layer sensitivity, Goodhart Gap evaluation)."""

__version__ = "0.1.0"
