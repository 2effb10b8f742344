"""The pytest plugin's options, markers and arch parametrization, in a child pytest."""

import json

import pytest

from toolkit.arch import host_arch

pytest_plugins = ["pytester"]


def test_options_and_defaults(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        def test_settings(vm_settings, vm_arch):
            assert vm_settings.flavor == "debian-bookworm"
            assert vm_settings.uri == "test:///default"
            assert vm_settings.keep is True
            assert str(vm_settings.artifacts_dir).endswith("arts")
            assert vm_arch == vm_settings.arches[0]
        """
    )
    result = pytester.runpytest_inprocess(
        "--flavor=debian-bookworm", "--libvirt-uri=test:///default", "--keep-vms",
        "--artifacts-dir=arts", "-p", "no:cacheprovider",
    )  # fmt: skip
    result.assert_outcomes(passed=1)


def test_default_arch_is_the_host(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        f"""
        def test_arch(vm_arch):
            assert vm_arch == {host_arch()!r}
        """
    )
    pytester.runpytest_inprocess("-p", "no:cacheprovider").assert_outcomes(passed=1)


def test_arch_all_parametrizes(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        seen = []
        def test_arch(vm_arch):
            seen.append(vm_arch)
        def test_last():
            assert sorted(seen) == ["aarch64", "x86_64"]
        """
    )
    result = pytester.runpytest_inprocess("--arch=all", "-p", "no:cacheprovider", "-v")
    result.assert_outcomes(passed=3)
    assert "test_arch[aarch64] PASSED" in result.stdout.str()
    assert "test_arch[x86_64] PASSED" in result.stdout.str()


def test_bad_arch_is_a_usage_error(pytester: pytest.Pytester) -> None:
    pytester.makepyfile("def test_x(): pass")
    result = pytester.runpytest_inprocess("--arch=riscv64", "-p", "no:cacheprovider")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*unknown arch 'riscv64'*"])


def test_machine_tests_get_the_vm_marker(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        def test_uses_machine(machine): pass
        def test_plain(): pass
        """
    )
    result = pytester.runpytest_inprocess("-m", "not vm", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=1, deselected=1)


def test_a_libvirt_uri_of_another_host_is_a_usage_error(pytester: pytest.Pytester) -> None:
    pytester.makepyfile("def test_x(): pass")
    uri = "qemu+ssh://root@192.0.2.10/system"
    result = pytester.runpytest_inprocess(f"--libvirt-uri={uri}", "-p", "no:cacheprovider")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([f"*libvirt URI '{uri}' names the host '192.0.2.10'*"])


def test_machine_marker_declares_needs(pytester: pytest.Pytester) -> None:
    """Arches a test runs on skip it elsewhere, saying why; other needs reach the machine
    fixtures; a name the marker does not know is a usage error naming the test."""
    other = "aarch64" if host_arch() == "x86_64" else "x86_64"
    pytester.makepyfile(
        f"""
        import pytest
        from vm.pytest_plugin import machine_needs

        @pytest.mark.machine(arches=[{other!r}])
        def test_other_arch_only():
            pass

        @pytest.mark.machine(boot=True, memory_mib=2048, health_gate=False)
        def test_needs(request):
            assert machine_needs(request.node) == {{
                "boot": True, "memory_mib": 2048, "health_gate": False
            }}
        """
    )
    result = pytester.runpytest_inprocess("-p", "no:cacheprovider", "-rs")
    result.assert_outcomes(passed=1, skipped=1)
    result.stdout.fnmatch_lines([f"*needs {other}; this run is {host_arch()}*"])

    pytester.makepyfile(
        """
        import pytest

        @pytest.mark.machine(memory=2048)
        def test_typo():
            pass
        """
    )
    result = pytester.runpytest_inprocess("-p", "no:cacheprovider")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*test_typo*does not know memory (known: arches, blank_disk*"])


def test_timing_summary_and_failure_kinds(pytester: pytest.Pytester) -> None:
    """Each test's machine events reach the summary (printed, and as JSON); a failure says
    whether the system (an assertion) or the harness (a VmError) broke."""
    pytester.makepyfile(
        """
        from types import SimpleNamespace
        from vm import timing
        from vm.errors import CommandFailed, GuestUnreachable

        M = SimpleNamespace(name="cos-test-m1", arch=SimpleNamespace(name="x86_64"))

        def test_boots():
            timing.note("boot", M, {"firmware": 4.5, "grub": 5.0, "kernel": 7.0, "ssh": 25.0})
            timing.note("restore", M, {"restore": 1.2, "ssh": 3.0})

        def test_system_broke():
            raise CommandFailed("false failed", "false", 1, "", "")

        def test_harness_broke():
            raise GuestUnreachable("no SSH")
        """
    )
    # In a child process: its machine events must not join this session's.
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "--timing-json=t.json")
    result.assert_outcomes(passed=1, failed=2)
    result.stdout.fnmatch_lines([
        "*machine timing*",
        "*1     1  passed   test_timing_summary_and_failure_kinds.py::test_boots",
        "*cos-test-m1: boot: firmware 4.5, grub 5.0, kernel 7.0, ssh 25.0",
        "*cos-test-m1: restored in 1.2 s, ssh 3.0 s",
        "total x86_64: 3 tests in * s; 1 boots (25.0 s to SSH), 1 restores (3.0 s to SSH)*",
    ])  # fmt: skip
    summary = json.loads((pytester.path / "t.json").read_text())
    rows = {r["test"].split("::")[1]: r for r in summary["tests"]}
    assert (rows["test_boots"]["boots"], rows["test_boots"]["restores"]) == (1, 1)
    assert rows["test_system_broke"]["failure_kind"] == "scenario"
    assert rows["test_harness_broke"]["failure_kind"] == "harness"
    assert summary["totals"]["x86_64"]["tests"] == 3
