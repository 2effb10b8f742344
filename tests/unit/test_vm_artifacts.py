"""Failure artifacts are written even when the guest is dead or a command fails."""

from pathlib import Path

from vm.artifacts import collect, safe_name


class FakeMachine:
    name = "cos-test-fake"

    def __init__(self, tmp: Path, running: bool = True, broken: bool = False):
        self._console = tmp / "console.log"
        self._console.write_text("GNU GRUB\nLinux version 6.12\n")
        self.running = running
        self.broken = broken
        self.commands: list[str] = []

    @property
    def console_path(self) -> Path:
        return self._console

    def domain_xml(self) -> str:
        if self.broken:
            raise RuntimeError("libvirt went away")
        return "<domain type='qemu'/>"

    def is_running(self) -> bool:
        return self.running

    def execute(self, command: str, timeout: float | None = None) -> tuple[int, str]:
        self.commands.append(command)
        if self.broken:
            raise OSError("connection reset")
        if command.startswith("cos status"):
            return 127, "bash: cos: command not found\n"
        return 0, f"output of {command}\n"


def test_collects_console_xml_journal_and_status(tmp_path: Path) -> None:
    machine = FakeMachine(tmp_path)
    dest = tmp_path / "artifacts" / "test_x"
    written = collect(machine, dest)
    names = {p.name for p in written}
    assert names == {
        "console.log",
        "domain.xml",
        "journal.txt",
        "cos-status.txt",
        "failed-units.txt",
    }
    assert (dest / "console.log").read_text() == "GNU GRUB\nLinux version 6.12\n"
    assert (dest / "domain.xml").read_text() == "<domain type='qemu'/>"
    assert "journalctl -b --no-pager" in (dest / "journal.txt").read_text()
    status = (dest / "cos-status.txt").read_text()
    assert "command not found" in status and "exited 127" in status  # missing cos is tolerated


def test_dead_or_broken_machine_still_leaves_files(tmp_path: Path) -> None:
    dest = tmp_path / "a"
    collect(FakeMachine(tmp_path, running=False), dest)
    assert (dest / "journal.txt").read_text() == "(machine is not running)\n"
    dest = tmp_path / "b"
    machine = FakeMachine(tmp_path, broken=True)
    collect(machine, dest)
    assert "libvirt went away" in (dest / "domain.xml").read_text()
    assert "connection reset" in (dest / "cos-status.txt").read_text()


def test_safe_name() -> None:
    assert safe_name("tests/e2e/test_harness.py::test_boot[x86_64]") == (
        "tests_e2e_test_harness.py_test_boot_x86_64"
    )
    assert safe_name("::") == "test"
