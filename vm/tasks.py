"""invoke tasks for people: `invoke vm.up`, vm.ssh, vm.console, vm.down, vm.list, vm.clean.

Machines started by vm.up keep running after the command; their facts are kept in
build_dir()/vm/machines/<name>.json.
"""

import contextlib
import os
import shutil
import sys
import time
from pathlib import Path

import libvirt
from invoke import Collection, task

from toolkit.cli import guard
from toolkit.errors import CosError


@task(
    help={
        "flavor": "flavor to boot (default debian-trixie)",
        "arch": "x86_64 or aarch64 (default: the host's)",
        "name": "machine name (default dev)",
        "memory": "MiB of RAM",
        "cpus": "vCPUs",
        "disk": "extra blank disk size, e.g. 4G",
        "iso": "boot the installer ISO on a blank disk",
        "uri": "libvirt URI",
    }
)
@guard
def up(c, flavor=None, arch=None, name="dev", memory=1024, cpus=2, disk=None, iso=False, uri=None):
    """Boot a built image and leave it running; prints the ssh command and port."""
    from toolkit.arch import host_arch
    from toolkit.flavors import DEFAULT_FLAVOR
    from vm import images, state
    from vm.errors import VmError
    from vm.machine import Machine, MachineOptions

    flavor = flavor or DEFAULT_FLAVOR
    arch = arch or host_arch()
    if state.state_file(name).exists():
        raise VmError(f"machine {name!r} exists; `invoke vm.down --name {name}` first")
    options = MachineOptions(
        arch=arch,
        image=None if iso else images.built_disk(flavor, arch),
        iso=images.installer_iso(flavor, arch) if iso else None,
        disk_size="8G" if iso else None,
        blank_disk=disk,
        memory_mib=int(memory),
        vcpus=int(cpus),
        keep=True,
    )
    workdir = state.machines_dir() / name
    if workdir.exists():
        shutil.rmtree(workdir)  # files of a machine whose state was removed by hand
    machine = Machine(f"up-{name}", options, uri=uri, workdir=workdir)
    print(f"starting {machine.name} ({flavor}, {arch}, {machine.accel.name})...", flush=True)
    try:
        machine.start(wait=True)
    except BaseException:
        machine.options.keep = False  # a failed start leaves nothing behind
        machine.cleanup(remove_files=False)
        shutil.rmtree(workdir, ignore_errors=True)
        raise
    state.save(machine.kept_state(name, flavor))
    machine.detach()
    timings = ", ".join(f"{k} {v:.1f}s" for k, v in machine.boot_timings.items())
    print(f"{machine.name} is up ({timings})")
    print(f"ssh port: {machine.ssh_port}")
    print(f"ssh:      {' '.join(machine.ssh_command())}")
    print(f"console:  {machine.console_path}")


@task(help={"name": "machine name (default dev)", "command": "run this instead of a shell"})
@guard
def ssh(c, name="dev", command=None):
    """Open a shell (or run a command) on a machine started by vm.up."""
    from vm import state

    kept = state.load(name)
    if shutil.which("ssh") is None:
        raise CosError("ssh not found: install it with `apt-get install openssh-client`")
    args = [*kept.ssh_command, *([command] if command else [])]
    sys.stdout.flush()
    os.execvp(args[0], args)


@task(help={"name": "machine name (default dev)", "follow": "keep printing new output"})
@guard
def console(c, name="dev", follow=False):
    """Print the serial console log of a machine started by vm.up."""
    from vm import state

    path = Path(state.load(name).workdir) / "console.log"
    with path.open("rb") as f:
        sys.stdout.buffer.write(f.read())
        sys.stdout.flush()
        while follow:
            chunk = f.read()
            if chunk:
                sys.stdout.buffer.write(chunk)
                sys.stdout.flush()
            else:
                time.sleep(0.2)


@task(help={"name": "machine name (default dev)"})
@guard
def down(c, name="dev"):
    """Stop a machine started by vm.up and delete its files."""
    from vm import state
    from vm.connection import connect

    kept = state.load(name)
    conn = connect(kept.uri)
    with contextlib.suppress(libvirt.libvirtError):
        dom = conn.lookupByName(kept.domain)
        dom.destroy()
    workdir = Path(kept.workdir)
    if workdir.parent == state.machines_dir():
        shutil.rmtree(workdir, ignore_errors=True)
    state.forget(name)
    print(f"removed {kept.domain}")


@task(name="list", help={"uri": "libvirt URI"})
@guard
def list_(c, uri=None):
    """List harness domains (running or left over) and machines started by vm.up."""
    from vm import state
    from vm.cleanup import tagged_domains
    from vm.connection import connect

    domains = tagged_domains(connect(uri))
    kept = {m.domain: m for m in state.all_machines()}
    if not domains and not kept:
        print("no harness machines")
    for dom in domains:
        if dom.owner is None:
            who = "untagged"
        else:
            status = "orphaned" if dom.orphaned else "owner alive"
            kept_note = ", kept" if dom.owner.keep else ""
            who = f"run {dom.owner.run_id} pid {dom.owner.pid} ({status}{kept_note})"
        extra = f"  ssh port {kept[dom.name].ssh_port}" if dom.name in kept else ""
        print(f"{dom.name:32} {'running' if dom.active else 'stopped':8} {who}{extra}")
    running = {d.name for d in domains}
    for m in kept.values():
        if m.domain not in running:
            hint = f"`invoke vm.down --name {m.name}`"
            print(f"{m.domain:32} {'gone':8} state {state.state_file(m.name)} ({hint})")


@task(
    help={
        "uri": "libvirt URI",
        "all": "also machines started by vm.up / --keep-vms, and every saved state",
    }
)
@guard
def clean(c, uri=None, all=False):  # invoke derives the --all flag from the name
    """Remove machines, files and port locks that dead test runs left behind, and saved
    machine states whose image changed (with --all, every saved state)."""
    from vm import state
    from vm.cleanup import clean_orphans
    from vm.savedstate import prune

    removed = clean_orphans(uri, include_kept=all)
    removed += [f"saved state {folder}" for folder in prune(everything=all)]
    if all:
        for kept in state.all_machines():
            down.body(c, name=kept.name)
            removed.append(f"kept machine {kept.name}")
    print("\n".join(removed) if removed else "nothing to clean")


vm = Collection("vm", up, ssh, console, down, list_, clean)
collection = vm
