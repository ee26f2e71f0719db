"""A register-level fake ADS1115 on a fake SMBus: the real driver talks to it byte for byte."""

from __future__ import annotations

import errno
from collections.abc import Callable
from dataclasses import dataclass, field

from drivers.ads1115 import REG_CONFIG, REG_CONVERSION

# Full-scale volts by PGA bits (datasheet table 8); 0b110 and 0b111 also mean 0.256 V.
FSR_BY_BITS = {0: 6.144, 1: 4.096, 2: 2.048, 3: 1.024, 4: 0.512, 5: 0.256, 6: 0.256, 7: 0.256}
# MUX bits 14:12 -> (positive input, negative input or None for GND).
MUX_INPUTS: dict[int, tuple[int, int | None]] = {
    0: (0, 1), 1: (0, 3), 2: (1, 3), 3: (2, 3), 4: (0, None), 5: (1, None), 6: (2, None), 7: (3, None)
}
POWER_ON_CONFIG = 0x8583  # the datasheet's reset value


@dataclass
class FakeADS1115:
    """One ADS1115's registers; ``volts(channel)`` supplies the analog input at conversion time."""

    volts: Callable[[int], float]
    busy_polls: int = 1  # config reads that still show "converting" after a start
    config: int = POWER_ON_CONFIG
    conversion: int = 0
    pointer: int = REG_CONVERSION
    _polls_left: int = 0
    conversions: int = 0

    def write(self, register: int, data: list[int]) -> None:
        """Handle a register write (the pointer byte plus data bytes)."""
        if register not in (0, 1, 2, 3):
            raise OSError(errno.EIO, f"ADS1115 has no register {register}")
        self.pointer = register
        if not data:
            return
        if len(data) != 2:
            raise OSError(errno.EIO, f"ADS1115 register writes take 2 bytes, got {len(data)}")
        word = (data[0] << 8) | data[1]
        if register != REG_CONFIG:
            return  # threshold registers: stored by a real chip, unused here
        single_shot = bool(word & 0x0100)
        self.config = word & 0x7FFF  # OS reads back as 0 while converting
        if word & 0x8000 or not single_shot:
            self._convert()
            self._polls_left = self.busy_polls if single_shot else 0
        if not single_shot:
            self.config |= 0x8000

    def read(self, register: int, length: int) -> list[int]:
        """Handle a register read of ``length`` bytes."""
        self.pointer = register
        if register == REG_CONFIG:
            if self._polls_left > 0:
                self._polls_left -= 1
                word = self.config & 0x7FFF
            else:
                self.config |= 0x8000
                word = self.config
        elif register == REG_CONVERSION:
            if not self.config & 0x0100:
                self._convert()  # continuous mode: always a fresh result
            word = self.conversion & 0xFFFF
        else:
            word = 0x8000 if register == 2 else 0x7FFF
        if length == 2:
            return [word >> 8, word & 0xFF]
        return [word >> 8, word & 0xFF][:length] + [0] * max(0, length - 2)

    def _convert(self) -> None:
        positive, negative = MUX_INPUTS[(self.config >> 12) & 0x7]
        fsr = FSR_BY_BITS[(self.config >> 9) & 0x7]
        volts = self.volts(positive) - (self.volts(negative) if negative is not None else 0.0)
        code = round(volts / fsr * 32768.0)
        self.conversion = max(-32768, min(32767, code))
        self.conversions += 1


@dataclass(frozen=True, slots=True)
class Transfer:
    """One recorded bus transfer: ``kind`` is "write" or "read"; ``data`` what was written or read."""

    kind: str
    address: int
    register: int
    data: tuple[int, ...]


@dataclass
class FakeSMBus:
    """The methods of ``smbus2.SMBus`` the firmware uses, routed to fake devices by address."""

    devices: dict[int, FakeADS1115] = field(default_factory=dict)
    dead: bool = False  # the bus itself fails: every transfer raises OSError
    transfers: int = 0
    closed: bool = False
    traffic: list[Transfer] | None = None  # set to [] to record every transfer (tests)

    def _device(self, address: int) -> FakeADS1115:
        self.transfers += 1
        if self.dead or self.closed:
            raise OSError(errno.EREMOTEIO, "Remote I/O error")
        try:
            return self.devices[address]
        except KeyError:
            raise OSError(errno.EREMOTEIO, f"no device answers at {address:#x}") from None

    def write_i2c_block_data(self, i2c_addr: int, register: int, data: list[int]) -> None:
        """Write ``data`` to ``register`` of the device at ``i2c_addr``."""
        self._device(i2c_addr).write(register, data if type(data) is list else list(data))
        if self.traffic is not None:
            self.traffic.append(Transfer("write", i2c_addr, register, tuple(data)))

    def read_i2c_block_data(self, i2c_addr: int, register: int, length: int) -> list[int]:
        """Read ``length`` bytes from ``register`` of the device at ``i2c_addr``."""
        data = self._device(i2c_addr).read(register, length)
        if self.traffic is not None:
            self.traffic.append(Transfer("read", i2c_addr, register, tuple(data)))
        return data

    def write_byte(self, i2c_addr: int, value: int) -> None:
        """Set the register pointer of the device at ``i2c_addr``."""
        self._device(i2c_addr).write(value, [])

    def close(self) -> None:
        """Close the bus."""
        self.closed = True
