"""Energy meters: every source tokenwatt reads sits behind the `Meter` interface (base.py)."""
