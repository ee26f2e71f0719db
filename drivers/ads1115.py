"""TI ADS1115 16-bit ADC over I2C, at register level: single-shot conversions, PGA, data rate."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Protocol

from drivers.errors import ConversionTimeout, OutputBadValue, SensorBusError

REG_CONVERSION = 0x00
REG_CONFIG = 0x01

OS_START = 0x8000  # write: start a single conversion; read: 1 = idle (conversion done)
MUX_SINGLE_0 = 0x4000  # AINx against GND: 0b100 + x in bits 14:12
MODE_SINGLE_SHOT = 0x0100
COMP_QUE_DISABLE = 0x0003

# The three transfers of a conversion, for error messages.
_STEPS = (
    "I2C write to ADS1115 {address:#x} register 1",
    "I2C read from ADS1115 {address:#x} register 1",
    "I2C read from ADS1115 {address:#x} register 0",
)

# Full-scale range in volts -> PGA bits 11:9 (the datasheet's table 8).
PGA_BITS: dict[float, int] = {
    6.144: 0b000,
    4.096: 0b001,
    2.048: 0b010,
    1.024: 0b011,
    0.512: 0b100,
    0.256: 0b101,
}
# Samples per second -> DR bits 7:5.
DATA_RATE_BITS: dict[int, int] = {8: 0, 16: 1, 32: 2, 64: 3, 128: 4, 250: 5, 475: 6, 860: 7}


class SMBusLike(Protocol):
    """The part of ``smbus2.SMBus`` this driver uses."""

    def write_i2c_block_data(self, i2c_addr: int, register: int, data: list[int]) -> None:
        """Write bytes starting at ``register``."""
        ...

    def read_i2c_block_data(self, i2c_addr: int, register: int, length: int) -> list[int]:
        """Read ``length`` bytes starting at ``register``."""
        ...


def config_word(channel: int, full_scale_v: float, data_rate_sps: int) -> int:
    """The config register value that starts one single-ended single-shot conversion."""
    return (
        OS_START
        | MUX_SINGLE_0
        | (channel << 12)
        | (PGA_BITS[full_scale_v] << 9)
        | MODE_SINGLE_SHOT
        | (DATA_RATE_BITS[data_rate_sps] << 5)
        | COMP_QUE_DISABLE
    )


def code_to_volts(code: int, full_scale_v: float) -> float:
    """Convert a signed 16-bit result to volts for the given full-scale range."""
    return code * full_scale_v / 32768.0


class ADS1115:
    """One ADS1115 at ``address`` on ``bus``; ``read_volts(channel)`` runs a single-shot conversion."""

    def __init__(
        self,
        bus: SMBusLike,
        address: int = 0x48,
        *,
        full_scale_v: float = 4.096,
        data_rate_sps: int = 860,
        sleep: Callable[[float], None] = time.sleep,
        max_polls: int = 20,
    ) -> None:
        if address not in (0x48, 0x49, 0x4A, 0x4B):
            raise OutputBadValue(f"ADS1115 address must be 0x48-0x4B, got {address:#x}")
        if full_scale_v not in PGA_BITS:
            raise OutputBadValue(
                f"ADS1115 full_scale_v must be one of {sorted(PGA_BITS)}, got {full_scale_v}"
            )
        if data_rate_sps not in DATA_RATE_BITS:
            raise OutputBadValue(
                f"ADS1115 data_rate_sps must be one of {sorted(DATA_RATE_BITS)}, got {data_rate_sps}"
            )
        self.bus = bus
        self.address = address
        self.full_scale_v = full_scale_v
        self.data_rate_sps = data_rate_sps
        self._sleep = sleep
        self._max_polls = max_polls
        self._period_s = 1.0 / data_rate_sps
        words = [config_word(ch, full_scale_v, data_rate_sps) for ch in range(4)]
        self._start_bytes = [(w >> 8, w & 0xFF) for w in words]

    def read_code(self, channel: int) -> int:
        """Run one conversion on AIN``channel`` and return the signed 16-bit result."""
        if channel not in (0, 1, 2, 3):
            raise OutputBadValue(f"ADS1115 channel must be 0-3, got {channel}")
        # One try around the whole transaction (this runs eight times per 20 Hz sample); ``step``
        # says which transfer failed.
        bus, address = self.bus, self.address
        step = 0
        try:
            bus.write_i2c_block_data(address, REG_CONFIG, list(self._start_bytes[channel]))
            self._sleep(self._period_s)  # one conversion period
            step = 1
            for _ in range(self._max_polls):
                data = bus.read_i2c_block_data(address, REG_CONFIG, 2)
                if len(data) != 2:
                    raise SensorBusError(
                        f"{_STEPS[step].format(address=address)}: expected 2 bytes, got {len(data)}"
                    )
                if data[0] & 0x80:  # OS bit set: the device is idle, the result is ready
                    break
                self._sleep(self._period_s / 4)
            else:
                raise ConversionTimeout(
                    f"ADS1115 {address:#x} AIN{channel}: no result after {self._max_polls} polls"
                )
            step = 2
            data = bus.read_i2c_block_data(address, REG_CONVERSION, 2)
        except SensorBusError:
            raise
        except OSError as exc:
            raise SensorBusError(f"{_STEPS[step].format(address=address)} failed: {exc}") from exc
        if len(data) != 2:
            raise SensorBusError(
                f"{_STEPS[step].format(address=address)}: expected 2 bytes, got {len(data)}"
            )
        code = (data[0] << 8) | data[1]
        return code - 0x10000 if code & 0x8000 else code

    def read_volts(self, channel: int) -> float:
        """Run one conversion on AIN``channel`` and return volts."""
        return code_to_volts(self.read_code(channel), self.full_scale_v)
