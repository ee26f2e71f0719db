"""The safety envelope's hard caps (DESIGN.md section 3): a config may tighten these, never loosen."""

from __future__ import annotations

from typing import Final, Literal

Zone = Literal["foot", "ankle", "calf"]
ZONES: Final[tuple[Zone, ...]] = ("foot", "ankle", "calf")  # inflation order: toward the heart

SAMPLE_HZ: Final = 20.0  # every sensor, every check
SAMPLE_PERIOD_S: Final = 1.0 / SAMPLE_HZ

# Temperatures
TRIP_TEMP_C: Final = 45.0
HEAT_TARGET_MIN_C: Final = 35.0
HEAT_TARGET_MAX_C: Final = 42.0
HEAT_TARGET_DEFAULT_C: Final = 40.0
OVER_TARGET_MARGIN_C: Final = 2.0
OVER_TARGET_S: Final = 10.0
RUNAWAY_RISE_C: Final = 0.5
RUNAWAY_WINDOW_S: Final = 10.0
NOT_HEATING_GAIN_C: Final = 1.0
NOT_HEATING_WINDOW_S: Final = 60.0
SENSOR_MIN_C: Final = -10.0
SENSOR_MAX_C: Final = 80.0
SENSOR_BAD_SAMPLES: Final = 3
SENSOR_STALE_S: Final = 1.0
SENSOR_MAX_RATE_C_PER_S: Final = 5.0
SENSOR_DISAGREE_C: Final = 3.0
SENSOR_DISAGREE_S: Final = 5.0

# Pressures (mmHg)
PRESSURE_TRIP_MMHG: Final[dict[Zone, float]] = {"foot": 135.0, "ankle": 95.0, "calf": 75.0}
PRESSURE_CAP_MMHG: Final[dict[Zone, float]] = {"foot": 120.0, "ankle": 80.0, "calf": 60.0}
NOT_RISING_S: Final = 2.0
NOT_RISING_MIN_RISE_MMHG: Final = 5.0
SETPOINT_REACH_S: Final = 10.0
VENTED_MMHG: Final = 10.0
VENT_DEADLINE_S: Final = 3.0
PUMP_MAX_ON_S: Final = 10.0
# Compression devices bound how long a limb stays squeezed (perfusion): no zone stays connected
# (pressed) longer than this in one go; programs hold far shorter (MAX_HOLD_S plus the rise).
COMPRESSION_MAX_S: Final = 60.0
# A program's own compression of a zone (its ramp, its hold and the next zone's ramp while it hands
# its air on) must fit in this, leaving the airbag controller's grace before COMPRESSION_MAX_S.
PROGRAM_COMPRESSION_MAX_S: Final = 40.0

# Motors
STALL_CURRENT_A: Final = 2.0
STALL_S: Final = 0.5
# A stalled DC motor draws about its stall current times the PWM duty, so at low duty it stays under
# STALL_CURRENT_A: current per unit of duty above this also counts as a stall (running motors draw
# well under half of it). Checked only at duties of at least STALL_MIN_DUTY.
STALL_AMPS_PER_DUTY: Final = 5.0
STALL_MIN_DUTY: Final = 0.1

# Sensor bus, control loop
BUS_ERRORS_MAX: Final = 3
LOOP_STALE_S: Final = 0.5

# Session
TIMER_DEFAULT_MIN: Final = 15
TIMER_MIN_MIN: Final = 5
TIMER_MAX_MIN: Final = 30
INTENSITY_MIN: Final = 1
INTENSITY_MAX: Final = 5
