"""What tokenwatt knows by name: precisions and model presets. Facts only, nothing heavy.

The config validation, the CLI help, the models, the floor and the fidelity code all read
these tables, so each fact is written once.
"""
