"""Energy meters: every source tokenwatt reads sits behind the `Meter` interface."""

from tokenwatt.energy.meters.base import Channel, Meter, MeterError, MeterUnavailable

__all__ = ["Channel", "Meter", "MeterError", "MeterUnavailable"]
