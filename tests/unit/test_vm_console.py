"""Console log reading, waiting and boot-phase timing, on a file written as QEMU would."""

import threading
import time
from pathlib import Path

import pytest

from vm.console import BootTimer, ConsoleLog, clean
from vm.errors import VmError, WaitTimedOut


def test_clean_strips_terminal_control() -> None:
    raw = "\x1b[2J\x1b[01;01HBdsDxe: loading\r\n\x1b[1m\x1b[33mShell> \x1b[0m"
    assert clean(raw) == "BdsDxe: loading\nShell> "


def test_read_from_offset_and_tail(tmp_path: Path) -> None:
    log = ConsoleLog(tmp_path / "console.log")
    assert log.size() == 0 and log.read() == "" and log.tail() == "(console is empty)"
    log.path.write_bytes(b"one\r\ntwo\n\xffthree\n")
    assert log.lines() == ["one", "two", "\ufffdthree"]
    assert log.read(since=5) == "two\n\ufffdthree\n"
    assert log.tail(2) == "two\n\ufffdthree"
    assert log.search(r"t(w)o").group(1) == "w"  # type: ignore[union-attr]
    assert log.search("one", since=5) is None


def write_later(path: Path, chunks: list[tuple[float, str]]) -> threading.Thread:
    def run() -> None:
        for delay, text in chunks:
            time.sleep(delay)
            with path.open("a") as f:
                f.write(text)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def test_wait_for_sees_new_output(tmp_path: Path) -> None:
    log = ConsoleLog(tmp_path / "console.log")
    log.path.write_text("old boot: login:\n")
    mark = log.size()
    write_later(log.path, [(0.3, "Linux version 6.12\n"), (0.3, "host login: \n")])
    match = log.wait_for(r"login:", timeout=5, since=mark)
    assert match.group(0) == "login:" and "Linux version" in match.string


def test_wait_for_times_out_with_tail(tmp_path: Path) -> None:
    log = ConsoleLog(tmp_path / "console.log")
    log.path.write_text("".join(f"line {i}\n" for i in range(50)))
    start = time.monotonic()
    with pytest.raises(WaitTimedOut) as err:  # a scenario failure, not the harness's
        log.wait_for("never", timeout=0.5)
    assert time.monotonic() - start < 3
    assert "line 49" in str(err.value) and "line 19" not in str(err.value)  # the last 30


def test_wait_for_stops_when_machine_stops(tmp_path: Path) -> None:
    log = ConsoleLog(tmp_path / "console.log")
    with pytest.raises(VmError, match="machine stopped"):
        log.wait_for("never", timeout=60, still_running=lambda: False)


def test_boot_timer_records_phases_in_order(tmp_path: Path) -> None:
    log = ConsoleLog(tmp_path / "console.log")
    # The end of a previous boot, as on a reboot: its "Reached target" must not count.
    log.path.write_text("[  OK  ] Reached target System Shutdown.\nreboot: Restarting system\n")
    timer = BootTimer(log, since=0, started=time.monotonic(), gated=True)
    timer.start()
    writer = write_later(log.path, [
        (0.3, "BdsDxe: loading Boot0001\n"),
        (0.3, "\x1b[1;1H  GNU GRUB  version 2.12\n"),
        (0.3, "[    0.000000] Linux version 6.12.0-amd64\n"),
        (0.3, "Welcome to Debian GNU/Linux 13 (trixie)!\n"),
        (0.3, "[  OK  ] Reached target sysinit.target - System Initialization.\n"),
        (0.3, "[  OK  ] Reached target multi-user.target - Multi-User System.\n"),
    ])  # fmt: skip
    writer.join()
    timings = timer.stop()
    phases = ["firmware", "grub", "kernel", "systemd", "first_target", "multi_user"]
    assert sorted(timings, key=timings.get) == phases  # type: ignore[arg-type]
    assert timings["firmware"] >= 0.2
    assert timings["first_target"] > timings["systemd"]  # not the shutdown's target


def test_boot_timer_ignores_grub_welcome_as_systemd(tmp_path: Path) -> None:
    log = ConsoleLog(tmp_path / "console.log")
    log.path.write_text("Welcome to GRUB!\nLinux version 6.1\n")
    timer = BootTimer(log, since=0, started=time.monotonic())
    timer.poll()
    assert set(timer.timings) == {"grub", "kernel"}


def test_boot_timer_with_quiet_kernel_and_hidden_menu(tmp_path: Path) -> None:
    log = ConsoleLog(tmp_path / "console.log")
    log.path.write_text(
        "BdsDxe: starting Boot0001\ncOS: booting active\nWelcome to cOS 0.1.0!\n"
        "[  OK  ] Reached target paths.target - Path Units.\n"
    )
    timer = BootTimer(log, since=0, started=time.monotonic())
    timer.poll()
    assert set(timer.timings) == {"firmware", "grub", "systemd", "first_target"}


def test_gated_timer_waits_for_the_new_boot(tmp_path: Path) -> None:
    log = ConsoleLog(tmp_path / "console.log")
    log.path.write_text("[  OK  ] Reached target shutdown.target - System Shutdown.\n")
    timer = BootTimer(log, since=0, started=time.monotonic(), gated=True)
    timer.poll()
    assert timer.timings == {}
