"""The step actions, one module per concern; table.py lists them."""
