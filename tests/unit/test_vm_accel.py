"""Acceleration choice from a (fake) probe, its per-host cache, and timeout scaling."""

import json
from pathlib import Path

import pytest

from toolkit.arch import host_arch
from vm.accel import Accel, choose_accel, timeout_scale
from vm.errors import VmError

FOREIGN = "aarch64" if host_arch() == "x86_64" else "x86_64"


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("COS_VM_ACCEL", raising=False)
    monkeypatch.delenv("COS_VM_TIMEOUT_SCALE", raising=False)


def probe_says(works: bool, calls: list[str]):  # type: ignore[no-untyped-def]
    def probe(arch: str) -> tuple[bool, str]:
        calls.append(arch)
        return works, "fake probe"

    return probe


def test_kvm_when_probe_runs_a_guest(tmp_path: Path) -> None:
    calls: list[str] = []
    cache = tmp_path / "accel.json"
    accel = choose_accel(host_arch(), probe=probe_says(True, calls), cache_file=cache)
    assert accel == Accel("kvm", "fake probe")
    assert accel.domain_type == "kvm"
    assert calls == [host_arch()]
    data = json.loads(cache.read_text())
    (entry,) = data.values()
    assert entry[host_arch()]["accel"] == "kvm"


def test_tcg_when_probe_fails_and_result_is_cached(tmp_path: Path) -> None:
    calls: list[str] = []
    cache = tmp_path / "accel.json"
    first = choose_accel(host_arch(), probe=probe_says(False, calls), cache_file=cache)
    assert first.name == "tcg" and first.domain_type == "qemu"
    second = choose_accel(host_arch(), probe=probe_says(True, calls), cache_file=cache)
    assert second.name == "tcg" and "cached" in second.reason
    assert calls == [host_arch()]  # probed once per host


def test_foreign_arch_is_always_tcg(tmp_path: Path) -> None:
    calls: list[str] = []
    accel = choose_accel(FOREIGN, probe=probe_says(True, calls), cache_file=tmp_path / "a.json")
    assert accel.name == "tcg"
    assert calls == []
    assert not (tmp_path / "a.json").exists()


def test_environment_override(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []
    monkeypatch.setenv("COS_VM_ACCEL", "tcg")
    accel = choose_accel(host_arch(), probe=probe_says(True, calls), cache_file=tmp_path / "a.json")
    assert accel.name == "tcg" and calls == []
    monkeypatch.setenv("COS_VM_ACCEL", "hvf")
    with pytest.raises(VmError, match="COS_VM_ACCEL"):
        choose_accel(host_arch(), probe=probe_says(True, calls), cache_file=tmp_path / "a.json")


def test_corrupt_cache_is_probed_again(tmp_path: Path) -> None:
    cache = tmp_path / "accel.json"
    cache.write_text("{not json")
    calls: list[str] = []
    assert choose_accel(host_arch(), probe=probe_says(False, calls), cache_file=cache).name == "tcg"
    assert calls == [host_arch()]


def test_timeout_scale(monkeypatch: pytest.MonkeyPatch) -> None:
    assert timeout_scale("kvm", "x86_64", host="x86_64") == 1
    assert timeout_scale("tcg", "x86_64", host="x86_64") == 4
    assert timeout_scale("tcg", "aarch64", host="x86_64") == 8
    assert timeout_scale("tcg", "aarch64", host="aarch64") == 4
    monkeypatch.setenv("COS_VM_TIMEOUT_SCALE", "1.5")
    assert timeout_scale("tcg", "x86_64", host="x86_64") == 6
    monkeypatch.setenv("COS_VM_TIMEOUT_SCALE", "fast")
    with pytest.raises(VmError, match="COS_VM_TIMEOUT_SCALE"):
        timeout_scale("kvm", "x86_64")
