"""One module per ``tpsim`` sub-command; each exposes ``register(subparsers)``."""
