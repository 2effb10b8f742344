"""The guest command helpers, on a guest whose commands answer from a script."""

from pathlib import Path

import pytest
from fake_guest import FakeGuest

from vm.errors import (
    CommandFailed,
    GuestUnreachable,
    ScenarioFailed,
    UnitFailed,
    VmError,
    WaitTimedOut,
    failure_kind,
)


def test_succeed_fail_execute() -> None:
    guest = FakeGuest(lambda c: (0, "yes\n") if c == "true" else (3, "out\n", "err\n"))
    assert guest.succeed("true") == "yes\n"
    assert guest.execute("false") == (3, "out\n")
    assert guest.fail("false") == "out\nerr\n"
    with pytest.raises(CommandFailed) as err:
        guest.succeed("false")
    assert (err.value.rc, err.value.stdout, err.value.stderr) == (3, "out\n", "err\n")
    assert "cos-test-fake: command 'false' failed with exit code 3" in str(err.value)
    with pytest.raises(CommandFailed, match="expected to fail"):
        guest.fail("true")


def test_systemctl() -> None:
    guest = FakeGuest(lambda c: (3, "inactive\n"))
    assert guest.systemctl("is-active ssh.service") == (3, "inactive\n")
    assert guest.commands == ["systemctl is-active ssh.service"]


def test_wait_until_succeeds_retries_and_reports_the_last_try() -> None:
    tries = iter([(1, "no\n"), (1, "no\n"), (0, "done\n")])
    guest = FakeGuest(lambda c: next(tries))
    assert guest.wait_until_succeeds("probe", interval=0) == "done\n"
    assert len(guest.commands) == 3
    with pytest.raises(CommandFailed, match=r"did not succeed within 0 s; last try: exit code 1"):
        FakeGuest(lambda c: (1, "no\n")).wait_until_succeeds("false", timeout=0.2, interval=0.05)


def test_wait_until_succeeds_supervises_an_unreachable_guest() -> None:
    def unreachable_then_up(command: str) -> tuple[int, str]:
        if len(guest.commands) < 3:
            raise GuestUnreachable("rebooting")
        return 0, "up\n"

    guest = FakeGuest(unreachable_then_up)
    assert guest.wait_until_succeeds("true", interval=0) == "up\n"
    assert guest.supervised == 2  # once per unreachable try: that is where a reset guest restarts

    def unreachable(command: str) -> tuple[int, str]:
        raise GuestUnreachable("gone")

    stopped = FakeGuest(unreachable, running=False)
    with pytest.raises(GuestUnreachable, match="gone"):
        stopped.wait_until_succeeds("true", timeout=600, interval=0)
    assert len(stopped.commands) == 1  # stopped for good: no waiting out the timeout


def unit_state(active: str) -> FakeGuest:
    def answer(command: str) -> tuple[int, str]:
        if command.startswith("systemctl show"):
            return 0, f"ActiveState={active}\nSubState=x\nLoadState=loaded\n"
        return 3, "× broken.service\nlog line\n"

    return FakeGuest(answer)


def test_wait_for_unit() -> None:
    unit_state("active").wait_for_unit("ssh.service")
    with pytest.raises(UnitFailed, match=r"unit broken.service failed:\n× broken.service"):
        unit_state("failed").wait_for_unit("broken.service", timeout=600)
    with pytest.raises(WaitTimedOut, match="not active within 0 s .*activating"):
        unit_state("activating").wait_for_unit("slow.service", timeout=0.1)


def test_wait_until_fails_retries_until_the_command_fails() -> None:
    tries = iter([(0, "up\n"), (0, "up\n"), (1, "", "gone\n")])
    guest = FakeGuest(lambda c: next(tries))
    assert guest.wait_until_fails("probe", interval=0) == "gone\n"
    assert len(guest.commands) == 3
    with pytest.raises(
        CommandFailed, match=r"'true' did not fail within 0 s; last try: exit code 0"
    ):
        FakeGuest(lambda c: (0, "")).wait_until_fails("true", timeout=0.2, interval=0.05)


def test_wait_for_file_and_open_port() -> None:
    seen = iter([(1, ""), (0, "")])
    guest = FakeGuest(lambda c: next(seen))
    guest.wait_for_file("/run/my file")
    assert guest.commands == ["test -e '/run/my file'"] * 2
    listening = FakeGuest(lambda c: (0, ""))
    listening.wait_for_open_port(8080)
    assert "sport = :8080" in listening.commands[0]
    with pytest.raises(WaitTimedOut, match="file /run/never did not appear within 0 s"):
        FakeGuest(lambda c: (1, "")).wait_for_file("/run/never", timeout=0.1)
    with pytest.raises(WaitTimedOut, match="nothing listens on TCP port 22 within 0 s"):
        FakeGuest(lambda c: (1, "")).wait_for_open_port(22, timeout=0.1)


def test_scenario_failures_are_assertions_and_harness_errors_are_not() -> None:
    failures = [
        CommandFailed("x", "false", 1, "", ""),
        UnitFailed("x"),
        WaitTimedOut("x"),
    ]
    for failure in failures:
        assert isinstance(failure, AssertionError) and isinstance(failure, ScenarioFailed)
        assert not isinstance(failure, VmError)
        assert failure_kind(failure) == "scenario"
    assert failure_kind(GuestUnreachable("no SSH")) == "harness"
    assert failure_kind(AssertionError("assert in a test")) == "scenario"


def test_waits_are_logged_as_nested_steps(caplog: pytest.LogCaptureFixture) -> None:
    guest = FakeGuest(lambda c: (0, "ActiveState=active\n"))
    caplog.set_level("INFO", logger="cos.vm")
    with guest.nested("upgrading"):
        guest.wait_for_unit("ssh.service")
    lines = [r.getMessage() for r in caplog.records]
    assert lines[0] == "cos-test-fake: upgrading"
    assert lines[1] == "  cos-test-fake: waiting for unit ssh.service"
    assert lines[2].startswith("  cos-test-fake: waiting for unit ssh.service: done in ")
    assert lines[3].startswith("cos-test-fake: upgrading: done in ")
    with pytest.raises(WaitTimedOut), guest.nested("never"):
        FakeGuest(lambda c: (1, "")).wait_for_file("/x", timeout=0.1)
    assert caplog.records[-1].getMessage().startswith("cos-test-fake: never: failed after ")


def test_copy_to_and_from_take_str_or_path(tmp_path: Path) -> None:
    guest = FakeGuest(lambda c: (0, ""))
    (tmp_path / "a").write_bytes(b"alpha")
    guest.copy_to(str(tmp_path / "a"), "/tmp/a")
    guest.copy_from("/tmp/a", tmp_path / "b")
    assert (tmp_path / "b").read_bytes() == b"alpha"
