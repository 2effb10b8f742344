"""The invoke collection people use."""

from vm.tasks import collection, vm


def test_collection() -> None:
    assert vm is collection
    assert vm.name == "vm"
    assert set(vm.task_names) == {"up", "ssh", "console", "down", "list", "clean"}
