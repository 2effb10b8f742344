"""Boot once, restore many: the saved state a machine of given options is restored from,
made on first need by booting a template machine of those options and saving it.

One maker per state: the state's lock is held while the template boots, so xdist workers
that need the same state wait for it and then restore from it. A state is made again only
when what it was made from changed (vm/savedstate.py: the key).
"""

import contextlib
import dataclasses
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from toolkit.arch import get_arch
from vm import savedstate, timing
from vm.accel import Accel
from vm.firmware import find_firmware
from vm.machine import Machine, MachineOptions
from vm.savedstate import SavedState, file_identity
from vm.sshkey import harness_key


def restorable(options: MachineOptions) -> bool:
    """Whether a machine of these options can start from a saved state: one that boots a
    built disk (an installer ISO's live system is booted; kept machines are booted)."""
    return options.image is not None and options.iso is None and not options.keep


def state_inputs(options: MachineOptions, accel: str) -> dict[str, Any]:
    """Everything a booted machine of `options` depends on. The registry forward is not:
    each restore gets its own."""
    assert options.image is not None
    arch = get_arch(options.arch)
    firmware = find_firmware(arch)
    return {
        "arch": arch.name,
        "accel": accel,
        "image": file_identity(options.image),
        "disk_size": options.disk_size,
        "blank_disk": options.blank_disk,
        "cloud_config": options.cloud_config,
        "hostname": options.hostname,
        "memory_mib": options.memory_mib,
        "vcpus": options.vcpus,
        "cpu_model": options.cpu_model,
        "firmware": file_identity(firmware.code),
        "vars_template": file_identity(firmware.vars_template),
        "emulator": file_identity(Path(f"/usr/bin/qemu-system-{arch.qemu_system}")),
        "ssh_key": harness_key().public,
    }


def saved_state(
    options: MachineOptions,
    *,
    uri: str,
    accel: Accel,
    on_failure: Callable[[Machine], None] | None = None,
) -> SavedState:
    """The finished saved state for `options`, made now if there is none (or a stale one).
    When the template fails to boot, `on_failure(template)` runs before it is removed (to
    keep its console and journal as the test's artifacts)."""
    inputs = state_inputs(options, accel.name)
    key = savedstate.state_key(inputs)
    with savedstate.locked(key) as folder:
        state = savedstate.load(folder)
        if state is not None and state.fresh():
            return state
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        template_options = dataclasses.replace(options, registry_port=None, keep=False)
        template = Machine(
            f"state-{key[:8]}", template_options, uri=uri, workdir=folder, accel=accel
        )
        started = time.monotonic()
        try:
            template.start()
            disks = ("disk.qcow2",) + (("data.qcow2",) if options.blank_disk else ())
            state = SavedState(
                folder=folder, inputs=inputs, name=template.name, uuid=template._uuid,
                hostname=template.hostname, disks=disks, made_in=0.0,
            )  # fmt: skip
            template.save_state(state)
            state = dataclasses.replace(state, made_in=round(time.monotonic() - started, 2))
            savedstate.record(state)
        except BaseException as exc:
            exc.add_note(
                f"(while booting {template.name}, the template of saved state {key} that "
                "the test's machine was to be restored from)"
            )
            if on_failure is not None:
                with contextlib.suppress(Exception):
                    on_failure(template)
            template.cleanup(remove_files=False)
            shutil.rmtree(folder, ignore_errors=True)
            raise
        template.cleanup(remove_files=False)
        timing.note("save", template, {"made_in": state.made_in})
        return state
