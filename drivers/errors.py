"""The drivers' exception tree: one root, precise subclasses that are also built-ins."""


class DriverError(Exception):
    """Root of every error a driver raises."""


class OutputBadValue(DriverError, ValueError):
    """A setter was given a value outside its allowed range."""


class InterlockError(DriverError, RuntimeError):
    """An output was asked to turn on while something it depends on is off."""


class DeviceClosedError(DriverError, RuntimeError):
    """A closed driver was asked to do something other than stay off."""


class SensorBusError(DriverError, OSError):
    """An I2C transfer failed (the bus or the device did not answer)."""


class ConversionTimeout(SensorBusError):
    """An ADC conversion did not finish within its deadline."""


class SensorFault(DriverError, ValueError):
    """A sensor's signal is outside what a working sensor can produce."""


class SensorOpenCircuit(SensorFault):
    """The sensor reads as disconnected (open circuit)."""


class SensorShortCircuit(SensorFault):
    """The sensor reads as shorted to a supply rail."""
