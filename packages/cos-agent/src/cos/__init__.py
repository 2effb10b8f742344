"""The cOS agent: runs on the booted system."""
