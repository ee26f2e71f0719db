"""The 20 Hz safety and control loop: read every sensor, run every check, then drive the outputs."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from device.hardware import Hardware
from device.safety import Expectations, Fault, Supervisor
from drivers.clock import Clock
from modes.limits import SAMPLE_PERIOD_S
from modes.session import Session, Status
from modes.signals import Sample


@dataclass
class LoopStats:
    """Counters of the loop: passes run, and scheduled passes that came a whole period late."""

    ticks: int = 0
    overruns: int = 0


class Controller:
    """One pass per sample: sensors -> safety supervisor -> session -> outputs, heartbeat, watchdog."""

    def __init__(
        self,
        *,
        hardware: Hardware,
        session: Session,
        supervisor: Supervisor,
        clock: Clock,
        on_fault: Callable[[Fault], None] = lambda _f: None,
        on_pass: Callable[[Sample], None] = lambda _s: None,
        period_s: float = SAMPLE_PERIOD_S,
    ) -> None:
        self.hardware = hardware
        self.session = session
        self.supervisor = supervisor
        self.clock = clock
        self.on_fault = on_fault
        self.on_pass = on_pass
        self.period_s = period_s
        self.last_sample: Sample | None = None
        self.stats = LoopStats()
        # A latch forces the outputs off in the latching thread (the deadman's too); a reset frees them.
        supervisor.trip_outputs = hardware.trip
        supervisor.release_outputs = hardware.release
        if supervisor.latched is not None:  # restored after a restart
            hardware.trip()

    def tick(self) -> Sample:
        """Run one safety and control pass; returns the sample it acted on."""
        now = self.clock.now()
        sample = self.hardware.read_sample()
        snapshot = self.session.snapshot()
        expect = Expectations(
            heat_target_c=snapshot.heat_target_c if snapshot.heat_active else None,
            setpoints_mmhg=snapshot.setpoints_mmhg,
        )
        new_fault = self.supervisor.check(sample, expect)
        latched = self.supervisor.latched
        if latched is not None:
            self.hardware.trip()  # the one path to the safe state, every pass while latched
            if self.session.status is not Status.FAULT:
                self.session.enter_fault(now)
            if new_fault is not None:  # the supervisor has logged it when it latched
                self.on_fault(new_fault)
        else:
            self.hardware.apply(self.session.step(now, sample))
        self.hardware.heartbeat.toggle()  # only a pass that ran to here toggles the deadman pin
        self.last_sample = sample
        self.stats.ticks += 1
        self.on_pass(sample)
        return sample

    async def run(self, stopping: Callable[[], bool]) -> None:
        """Tick every period on the injected clock until ``stopping()`` is true."""
        next_at = self.clock.now()
        while not stopping():
            self.tick()
            next_at += self.period_s
            if self.clock.now() - next_at > self.period_s:  # a whole period late: resync, no burst
                self.stats.overruns += 1
                next_at = self.clock.now()
            await self.clock.sleep(max(0.0, next_at - self.clock.now()))
