"""Model construction: presets with random weights, local checkpoints, hub ids, precisions."""
