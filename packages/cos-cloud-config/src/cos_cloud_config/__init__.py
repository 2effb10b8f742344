"""cOS cloud-config: sources, stages and the actions they run."""
