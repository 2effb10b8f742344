"""Boot supervision of one machine, read from its serial console: where the current boot
and the current QEMU process began in the log, the boot-phase timer, and what the harness
does about a guest that reset itself, a firmware that stalled, or a first boot killed by
the emulator's live-patching race.

Its checks only read; `supervise` is the one step that acts, through the `start_again`
callback the machine gives it (the machine owns the libvirt domain).
"""

import time
import warnings
from collections.abc import Callable

from vm import health
from vm.console import BootTimer, ConsoleLog

FIRMWARE_TIMEOUT = 15.0  # to UEFI's boot manager: 4.5-6 s under TCG on an idle 2-core host


class BootSupervisor:
    def __init__(
        self, name: str, console: ConsoleLog, scale: float, accel: str, cold_reboots: bool
    ):
        self.name = name
        self.console = console
        self.scale = scale
        self.accel = accel
        # A guest reset ends QEMU and the harness starts the domain again (vm/domain.py).
        # Only a live owner can do that: kept machines are reset by libvirt instead.
        self.cold_reboots = cold_reboots
        self.boot_offset = 0  # console offset where the current boot began
        self.instance_offset = 0  # console offset where the current QEMU process began
        self.instance_started = 0.0
        self.instance_restored = False  # the current QEMU process resumed a saved state
        # Console offset where this machine's resume began: a cold start after the guest
        # reset itself (a panic's countdown) begins a new instance but not a new restore.
        self.restore_offset: int | None = None
        self.boot_started = 0.0
        self.boot_history: list[dict[str, float]] = []
        self.firmware_restarts = 0  # power cycles after a firmware that printed nothing
        self.emulator_retries = 0  # first boots or restores repeated after the guest died
        self._timer: BootTimer | None = None
        self._timings: dict[str, float] = {}

    # ----- records ---------------------------------------------------------------------

    def new_instance(self, restored: bool = False) -> None:
        """A QEMU process is about to start for this machine (`restored`: from a saved
        state, whose firmware ran long ago and prints nothing now)."""
        self.instance_offset = self.console.size()
        self.instance_started = time.monotonic()
        self.instance_restored = restored
        if restored:
            self.restore_offset = self.instance_offset

    def begin_boot(self, reboot: bool = False) -> None:
        self.stop_timer()
        self.boot_offset = self.console.size()
        self.boot_started = time.monotonic()
        self._timings = {}
        self._timer = BootTimer(self.console, self.boot_offset, self.boot_started, gated=reboot)
        self._timer.start()

    def end_boot(self) -> None:
        """SSH answered: the boot is over; its timings join the history."""
        timings = self._timer.stop() if self._timer else {}
        self._timer = None
        timings["ssh"] = round(time.monotonic() - self.boot_started, 2)
        self._timings = timings
        self.boot_history.append(timings)

    def stop_timer(self) -> None:
        if self._timer is not None:
            self._timer.stop()
            self._timer = None

    @property
    def timings(self) -> dict[str, float]:
        """Phase -> seconds since the boot began; live while booting."""
        if self._timer is not None:
            return dict(self._timer.timings)
        return dict(self._timings)

    def tail(self, count: int = 30) -> str:
        """The last console lines of this boot, for error messages."""
        return self.console.tail(count, self.boot_offset)

    # ----- checks: they only read --------------------------------------------------------

    def guest_reset(self) -> bool:
        """Whether the current QEMU process ended because the guest reset itself."""
        return bool(health.GUEST_RESET.search(self.console.read(self.instance_offset)))

    def firmware_limit(self) -> float:
        return FIRMWARE_TIMEOUT * self.scale

    def firmware_stalled(self) -> bool:
        """Whether the current QEMU process's firmware printed nothing in time (edk2 can
        wait forever for a vCPU that missed its wake-up)."""
        if self.instance_restored:
            return False
        if time.monotonic() - self.instance_started < self.firmware_limit():
            return False
        text = self.console.read(self.instance_offset)
        return not health.FIRMWARE_BOOT_MANAGER.search(text)

    def firmware_gave_up(self) -> str | None:
        """Why the boot cannot go on when the firmware stalled again after its power cycle."""
        if self.firmware_restarts and self.firmware_stalled():
            limit = self.firmware_limit()
            return f"the firmware of {self.name} printed nothing within {limit:.0f} s, twice"
        return None

    def dead_end(self) -> str | None:
        """The console line that shows this boot cannot reach SSH, if there is one."""
        found = health.BOOT_DEAD_ENDS.search(self.console.read(self.boot_offset))
        return found.group(0).strip() if found else None

    def hit_emulator_patch_race(self) -> bool:
        """Whether a first boot under TCG died of the emulator's live-patching race (see
        vm/health.py): such a boot can be repeated exactly, from fresh disks, once. Later
        boots carry state a scenario depends on: never."""
        return (
            self.accel == "tcg"
            and not self.boot_history
            and self.emulator_retries == 0
            and bool(health.EMULATOR_PATCH_RACE.search(self.console.read(self.boot_offset)))
        )

    def restored_kernel_died(self) -> bool:
        """Whether the kernel of a guest resumed from a saved state died before it
        answered SSH. Such a restore can be repeated exactly, from fresh overlays, once:
        nothing of the test has run in it yet."""
        return (
            self.restore_offset is not None
            and not self.boot_history
            and self.emulator_retries == 0
            and bool(health.KERNEL_DIED.search(self.console.read(self.restore_offset)))
        )

    def repeatable_death(self) -> str | None:
        """Why this machine's first start died of something that was not the image's
        doing, so that it may be repeated once from fresh files; None when it may not."""
        if self.restore_offset is not None:
            if self.restored_kernel_died():
                # Seen once in many hundred restores (x86_64, TCG, two restores of one
                # state at once): a panic in the network stack right after the resume.
                return "the guest's kernel died right after it was restored"
            return None
        if self.hit_emulator_patch_race():
            return (
                "the guest kernel died in live code patching "
                "(QEMU multi-threaded TCG race, see vm/health.py)"
            )
        return None

    # ----- the one step that acts --------------------------------------------------------

    def supervise(self, running: bool, start_again: Callable[[str], None]) -> bool:
        """Act on what the checks see; returns whether the machine runs afterwards.

        A stopped machine whose guest reset itself is started again (a cold reboot). A
        running one whose firmware printed nothing in time is powered off and on once,
        with a warning: nothing has run yet, so the power cycle loses nothing a scenario
        made. A second stall is left running for `firmware_gave_up` to report.
        """
        if not running:
            if not (self.cold_reboots and self.guest_reset()):
                return False  # powered off, or stopped by someone else
            start_again("after the guest reset itself")
            return True
        if self.firmware_restarts == 0 and self.firmware_stalled():
            warnings.warn(
                f"{self.name}: the firmware printed nothing within "
                f"{self.firmware_limit():.0f} s; powering it off and on once",
                stacklevel=3,
            )
            self.firmware_restarts += 1
            start_again("after its firmware stalled")
        return True
