"""Shell commands the scenarios run in a guest, shared between test modules."""

# Sets (or, with an empty value, unsets) grubenv variables through the agent's own writer.
SET_GRUBENV = (
    "python3 -c 'import sys; from cos import slots; "
    'slots.update_grubenv(**dict(a.split("=", 1) for a in sys.argv[1:]))\' '
)
