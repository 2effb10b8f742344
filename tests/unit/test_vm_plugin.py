"""The pytest plugin's options, markers and arch parametrization, in a child pytest."""

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
