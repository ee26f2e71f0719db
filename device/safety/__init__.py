"""The safety supervisor and its hazard families (one module each); see docs/safety.md."""

from device.safety.faults import NOTHING_EXPECTED, Expectations, Fault, FaultCode, Trip
from device.safety.supervisor import RELAY_FAULTS, Supervisor

__all__ = ["NOTHING_EXPECTED", "RELAY_FAULTS", "Expectations", "Fault", "FaultCode", "Supervisor", "Trip"]
