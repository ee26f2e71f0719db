"""The ADS1115 driver against the register-level fake on the fake SMBus: bytes, bits and scaling."""

from __future__ import annotations

import errno

import pytest

from drivers.ads1115 import ADS1115, REG_CONFIG, REG_CONVERSION
from drivers.errors import ConversionTimeout, SensorBusError
from drivers.sim.fake_bus import FakeADS1115, FakeSMBus, Transfer

ADDRESS = 0x48
PGA_RANGES = (6.144, 4.096, 2.048, 1.024, 0.512, 0.256)


class Rig:
    """A fake bus with one fake ADS1115 whose inputs are set by the test, and the driver over it."""

    def __init__(self, *, busy_polls: int = 1, full_scale_v: float = 4.096, data_rate_sps: int = 860,
                 max_polls: int = 20) -> None:
        self.inputs = {0: 0.0, 1: 0.0, 2: 0.0, 3: 0.0}
        self.chip = FakeADS1115(volts=self.inputs.__getitem__, busy_polls=busy_polls)
        self.bus = FakeSMBus(devices={ADDRESS: self.chip}, traffic=[])
        self.sleeps: list[float] = []
        self.adc = ADS1115(self.bus, ADDRESS, full_scale_v=full_scale_v, data_rate_sps=data_rate_sps,
                           sleep=self.sleeps.append, max_polls=max_polls)

    @property
    def traffic(self) -> list[Transfer]:
        """Every transfer so far."""
        assert self.bus.traffic is not None
        return self.bus.traffic

    def config_written(self) -> int:
        """The config word of the last write to the config register."""
        writes = [t for t in self.traffic if t.kind == "write" and t.register == REG_CONFIG]
        msb, lsb = writes[-1].data
        return (msb << 8) | lsb


def test_ads1115_register_traffic_of_one_conversion() -> None:
    rig = Rig(busy_polls=2)
    rig.inputs[2] = 1.0
    code = rig.adc.read_code(2)
    # OS=1 start | MUX=110 AIN2 vs GND | PGA=001 4.096 V | MODE=1 single shot | DR=111 860 SPS
    # | COMP_MODE=0 | COMP_POL=0 | COMP_LAT=0 | COMP_QUE=11 comparator off
    word = 0b1_110_001_1_111_0_0_0_11
    assert word == 0xE3E3
    busy = (word & 0x7FFF) >> 8
    assert rig.traffic == [
        Transfer("write", ADDRESS, REG_CONFIG, (0xE3, 0xE3)),
        Transfer("read", ADDRESS, REG_CONFIG, (busy, 0xE3)),  # OS=0: still converting
        Transfer("read", ADDRESS, REG_CONFIG, (busy, 0xE3)),
        Transfer("read", ADDRESS, REG_CONFIG, (0xE3, 0xE3)),  # OS=1: done
        Transfer("read", ADDRESS, REG_CONVERSION, (0x1F, 0x40)),  # 1.0 V / 4.096 V * 32768 = 8000
    ]
    assert code == 8000
    assert rig.sleeps[0] == pytest.approx(1 / 860)  # one conversion period before the first poll


@pytest.mark.parametrize("channel", [0, 1, 2, 3])
def test_ads1115_mux_selects_the_single_ended_input(channel: int) -> None:
    rig = Rig()
    rig.inputs[channel] = 0.5
    assert rig.adc.read_volts(channel) == pytest.approx(0.5, abs=4.096 / 32768)
    word = rig.config_written()
    assert (word >> 12) & 0b111 == 0b100 | channel  # AINx against GND
    assert word & 0x8000  # OS: start a conversion
    assert word & 0x0100  # MODE: single shot


@pytest.mark.parametrize(
    ("full_scale_v", "pga_bits"),
    [(6.144, 0b000), (4.096, 0b001), (2.048, 0b010), (1.024, 0b011), (0.512, 0b100), (0.256, 0b101)],
)
def test_ads1115_pga_bits(full_scale_v: float, pga_bits: int) -> None:
    rig = Rig(full_scale_v=full_scale_v)
    rig.adc.read_code(0)
    assert (rig.config_written() >> 9) & 0b111 == pga_bits


@pytest.mark.parametrize(
    ("sps", "dr_bits"),
    [(8, 0), (16, 1), (32, 2), (64, 3), (128, 4), (250, 5), (475, 6), (860, 7)],
)
def test_ads1115_data_rate_bits_and_wait(sps: int, dr_bits: int) -> None:
    rig = Rig(data_rate_sps=sps, busy_polls=0)
    rig.adc.read_code(1)
    word = rig.config_written()
    assert (word >> 5) & 0b111 == dr_bits
    assert word & 0b11 == 0b11  # comparator disabled
    assert word & 0b11100 == 0  # comparator mode, polarity, latch at their defaults
    assert rig.sleeps == [pytest.approx(1 / sps)]


def test_ads1115_polls_until_conversion_ready() -> None:
    rig = Rig(busy_polls=5)
    rig.inputs[0] = 2.0
    assert rig.adc.read_volts(0) == pytest.approx(2.0, abs=4.096 / 32768)
    config_reads = [t for t in rig.traffic if t.kind == "read" and t.register == REG_CONFIG]
    assert len(config_reads) == 6
    assert [bool(t.data[0] & 0x80) for t in config_reads] == [False] * 5 + [True]
    assert len(rig.sleeps) == 6  # the conversion period, then one short wait per busy poll
    assert all(s < 1 / 860 for s in rig.sleeps[1:])


def test_ads1115_conversion_that_never_finishes_times_out() -> None:
    rig = Rig(busy_polls=10_000, max_polls=20)
    with pytest.raises(ConversionTimeout, match=r"0x48 AIN3: no result after 20 polls") as info:
        rig.adc.read_code(3)
    assert isinstance(info.value, SensorBusError) and isinstance(info.value, OSError)
    config_reads = [t for t in rig.traffic if t.kind == "read" and t.register == REG_CONFIG]
    assert len(config_reads) == 20
    assert not any(t.register == REG_CONVERSION for t in rig.traffic)  # a stale result is never read


@pytest.mark.parametrize("full_scale_v", PGA_RANGES)
@pytest.mark.parametrize("share", [0.9, 0.5, 0.123, 0.0, -0.3, -0.75])
def test_ads1115_scaling_for_every_pga_setting(full_scale_v: float, share: float) -> None:
    rig = Rig(full_scale_v=full_scale_v)
    volts = share * full_scale_v
    rig.inputs[1] = volts
    lsb = full_scale_v / 32768
    assert rig.adc.read_volts(1) == pytest.approx(volts, abs=lsb)
    assert rig.adc.read_code(1) == pytest.approx(share * 32768, abs=1)


def test_ads1115_negative_input_reads_a_negative_code() -> None:
    rig = Rig(full_scale_v=2.048)
    rig.inputs[0] = -0.25  # AIN0 below ground (within the chip's -0.3 V input range)
    assert rig.adc.read_code(0) == -4000
    conversion = [t for t in rig.traffic if t.register == REG_CONVERSION][-1]
    assert conversion.data == (0xF0, 0x60)  # two's complement of -4000
    assert rig.adc.read_volts(0) == pytest.approx(-0.25)


def test_fake_ads1115_differential_result_is_signed() -> None:
    rig = Rig()
    rig.inputs[0], rig.inputs[1] = 0.5, 1.5  # AIN0 - AIN1 = -1.0 V
    word = 0b1_000_001_1_111_00011  # MUX=000: AIN0 against AIN1
    rig.bus.write_i2c_block_data(ADDRESS, REG_CONFIG, [word >> 8, word & 0xFF])
    msb, lsb = rig.bus.read_i2c_block_data(ADDRESS, REG_CONVERSION, 2)
    raw = (msb << 8) | lsb
    assert raw == 0x10000 - 8000
    assert raw - 0x10000 == -8000


@pytest.mark.parametrize("full_scale_v", PGA_RANGES)
def test_ads1115_saturates_at_full_scale(full_scale_v: float) -> None:
    rig = Rig(full_scale_v=full_scale_v)
    rig.inputs[2] = full_scale_v * 1.5
    assert rig.adc.read_code(2) == 32767
    assert rig.adc.read_volts(2) == pytest.approx(full_scale_v * 32767 / 32768)
    rig.inputs[2] = -full_scale_v * 1.5
    assert rig.adc.read_code(2) == -32768
    assert rig.adc.read_volts(2) == pytest.approx(-full_scale_v)


@pytest.mark.parametrize("channel", [-1, 4, 7])
def test_ads1115_bad_channel_is_refused(channel: int) -> None:
    rig = Rig()
    with pytest.raises(ValueError, match=f"channel must be 0-3, got {channel}"):
        rig.adc.read_code(channel)
    assert rig.traffic == []


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"address": 0x47}, "address must be 0x48-0x4B, got 0x47"),
        ({"address": 0x4C}, "address must be 0x48-0x4B, got 0x4c"),
        ({"full_scale_v": 3.3}, "full_scale_v must be one of"),
        ({"full_scale_v": 5.0}, "full_scale_v must be one of"),
        ({"data_rate_sps": 100}, "data_rate_sps must be one of"),
        ({"data_rate_sps": 0}, "data_rate_sps must be one of"),
    ],
)
def test_ads1115_bad_settings_are_refused(kwargs: dict[str, float], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        ADS1115(FakeSMBus(), **kwargs)  # type: ignore[arg-type]


def test_ads1115_dead_bus_raises_sensor_bus_error() -> None:
    rig = Rig()
    rig.bus.dead = True
    with pytest.raises(SensorBusError, match="I2C write to ADS1115 0x48") as info:
        rig.adc.read_volts(0)
    assert isinstance(info.value, OSError)
    assert isinstance(info.value.__cause__, OSError)
    assert info.value.__cause__.errno == errno.EREMOTEIO


def test_ads1115_missing_device_raises_sensor_bus_error() -> None:
    bus = FakeSMBus()
    adc = ADS1115(bus, 0x4A, sleep=lambda _s: None)
    with pytest.raises(OSError, match="0x4a") as info:
        adc.read_code(0)
    assert isinstance(info.value, SensorBusError)


def test_ads1115_bus_failing_mid_conversion_raises_sensor_bus_error() -> None:
    rig = Rig(busy_polls=3)

    def die(_seconds: float) -> None:
        rig.bus.dead = True  # the bus fails while the driver waits for the result

    rig.adc = ADS1115(rig.bus, ADDRESS, sleep=die)
    with pytest.raises(SensorBusError, match="I2C read from ADS1115 0x48 register 1"):
        rig.adc.read_code(0)
