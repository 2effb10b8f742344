"""One test VM, driven like the NixOS test driver: its options, its life cycle (start,
shutdown, reboot, power cut) and SSH.

The harness is split by role: the command helpers (succeed, fail, waits, copies) are
written once in vm/commands.py against `run`, which a Machine provides over SSH; boot
supervision (console offsets, boot timing, guest resets, firmware stalls, the emulator's
patching race) is vm/supervisor.py. Checks such as `is_running` only report; the wait
loops call `supervise`, the one step that starts a machine again.

A machine either boots, or is restored from a saved running state (vm/savedstate.py:
`start(restore=state)`), which under TCG answers SSH in a few seconds instead of half a
minute; after that first start it is an ordinary machine (reboots and power cycles boot).

Every wait takes a timeout in KVM seconds and multiplies it by `machine.scale`
(4 under TCG, 8 for an emulated foreign arch), so tests state one number for all hosts.
"""

import contextlib
import os
import re
import shutil
import time
import uuid
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import libvirt
import paramiko

from toolkit.arch import get_arch, host_arch
from vm import disks, health, savedstate, timing
from vm import ssh as sshlib
from vm.accel import Accel, choose_accel, timeout_scale
from vm.commands import COMMAND_TIMEOUT, GuestCommands
from vm.connection import connect, default_uri
from vm.console import ConsoleLog
from vm.domain import DOMAIN_PREFIX, DiskSpec, DomainSpec, domain_xml, metadata_element, qemu_args
from vm.errors import CommandFailed, GuestUnreachable, HealthGateFailed, VmError
from vm.firmware import find_firmware
from vm.hostcheck import seccomp_problem
from vm.ports import PortLease, allocate_port
from vm.savedstate import SavedState
from vm.seed import CloudConfig, make_seed_iso
from vm.sshkey import harness_key
from vm.state import KeptMachine
from vm.steps import step
from vm.supervisor import BootSupervisor
from vm.testrun import current_run

# Base timeouts in seconds under KVM (see module docstring).
BOOT_TIMEOUT = 60.0
SHUTDOWN_TIMEOUT = 30.0


# Under TCG, 2 vCPUs run as two host threads (MTTCG). Measured to SSH on a 2-core host:
# x86_64 1 vCPU 55-62 s, 2 vCPUs 32-33 s; aarch64 1 vCPU 63-66 s, 2 vCPUs 50 s.
def default_vcpus(machines_at_once: int | None = None) -> int:
    """Two vCPUs, but never more vCPU threads than host cores across the machines that run
    at once (pytest-xdist workers): an oversubscribed TCG guest loses time to spinning
    on locks whose holder's thread is not running."""
    if machines_at_once is None:
        machines_at_once = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1") or 1)
    return max(1, min(2, (os.cpu_count() or 1) // max(1, machines_at_once)))


DEFAULT_MEMORY_MIB = 1024
BLANK_SYSTEM_DISK = "8G"


@dataclass
class MachineOptions:
    arch: str = field(default_factory=host_arch)
    image: Path | None = None  # built disk, used through an overlay; None: blank system disk
    disk_size: str | None = None  # grows the overlay; size of a blank system disk
    blank_disk: str | None = None  # size of an extra blank disk (vdb), e.g. "4G"
    iso: Path | None = None  # a CD-ROM, booted when the system disk cannot boot
    cloud_config: CloudConfig = None  # merged into the seed's user-data
    hostname: str | None = None
    memory_mib: int = DEFAULT_MEMORY_MIB
    vcpus: int = field(default_factory=default_vcpus)
    registry_port: int | None = None  # guest reaches it at 10.0.2.100:5000
    keep: bool = False  # outlives this process (vm.up, --keep-vms)
    cpu_model: str | None = None  # None: the measured default for the arch


class Machine(GuestCommands):
    def __init__(
        self,
        name: str,
        options: MachineOptions | None = None,
        *,
        uri: str | None = None,
        workdir: Path | None = None,
        accel: Accel | None = None,
    ):
        self.options = options or MachineOptions()
        self.name = name if name.startswith(DOMAIN_PREFIX) else DOMAIN_PREFIX + name
        self.arch = get_arch(self.options.arch)
        self.uri = uri or default_uri()
        self._testrun = current_run()
        self.workdir = workdir or self._testrun.ensure_dir() / self.name
        self.accel = accel or choose_accel(self.arch.name)
        self.scale = timeout_scale(self.accel.name, self.arch.name)
        self.console = ConsoleLog(self.workdir / "console.log")
        self.key = harness_key()
        self._boot = BootSupervisor(
            self.name, self.console, self.scale, self.accel.name, self._cold_reboots
        )
        self.boot_id: str | None = None
        self._port: PortLease | None = None
        self._domain: libvirt.virDomain | None = None
        self._xml: str | None = None
        self._uuid = str(uuid.uuid4())  # one identity for every start of this machine
        self._ssh: paramiko.SSHClient | None = None
        self._host: object | None = None
        self._host_client: paramiko.SSHClient | None = None
        self._prepared = False
        self._restore: SavedState | None = None  # the state this machine was restored from
        self.restores = 0
        if not self.options.keep:
            self._testrun.on_exit(id(self), self.cleanup)

    def __repr__(self) -> str:
        return f"<Machine {self.name} {self.arch.name} {self.accel.name} port={self.ssh_port}>"

    def __enter__(self):  # type: ignore[no-untyped-def]
        return self

    def __exit__(self, *_exc: object) -> None:
        self.cleanup()

    # ----- setup -------------------------------------------------------------------

    @property
    def ssh_port(self) -> int | None:
        return self._port.port if self._port else None

    @property
    def boot_timings(self) -> dict[str, float]:
        """Phase -> seconds since the domain started (or the reboot was asked): firmware,
        grub, kernel, systemd, first_target, multi_user, ssh. Live while booting."""
        return self._boot.timings

    @property
    def boot_history(self) -> list[dict[str, float]]:
        """The timings of every boot that reached SSH, first boot first."""
        return self._boot.boot_history

    @property
    def emulator_retries(self) -> int:
        """First boots repeated after the TCG patching race (vm/health.py), and restores
        repeated after the guest's kernel died."""
        return self._boot.emulator_retries

    @property
    def firmware_restarts(self) -> int:
        """Power cycles after a firmware that printed nothing."""
        return self._boot.firmware_restarts

    @property
    def console_path(self) -> Path:
        return self.console.path

    @property
    def ssh_config_path(self) -> Path:
        return self.workdir / "ssh_config"

    @property
    def hostname(self) -> str:
        """The given hostname, or one made from the domain name (RFC 1123: no '_')."""
        if self._restore is not None:
            return self._restore.hostname  # the template's, applied before the save
        if self.options.hostname:
            return self.options.hostname
        return re.sub(r"[^a-z0-9-]+", "-", self.name.lower())[:63].strip("-")

    def prepare(self) -> None:
        """Create the machine's files once: disks, seed, firmware variables."""
        if self._prepared:
            return
        opts = self.options
        firmware = find_firmware(self.arch)
        self.workdir.mkdir(parents=True, exist_ok=True)
        if self._restore is not None:
            self._prepare_from(self._restore)
            self._prepared = True
            return
        shutil.copyfile(firmware.vars_template, self.workdir / "efivars.fd")
        system = self.workdir / "disk.qcow2"
        if opts.image is not None:
            disks.create_overlay(opts.image, system, opts.disk_size)
        else:
            disks.create_blank(system, opts.disk_size or BLANK_SYSTEM_DISK)
        if opts.blank_disk:
            disks.create_blank(self.workdir / "data.qcow2", opts.blank_disk)
        make_seed_iso(
            self.workdir / "seed.iso", hostname=self.hostname, public_key=self.key.public,
            instance_id=self.name, extra=opts.cloud_config,
        )  # fmt: skip
        self._prepared = True

    def _prepare_from(self, state: SavedState) -> None:
        """The files of a restored machine: a new overlay on each disk as it was saved,
        and the firmware variables and seed the saved guest has already read."""
        for name in state.disks:
            disks.create_overlay_on_saved(state.folder / name, self.workdir / name)
        # The console of the boot the saved guest is in: this machine's boot is that one.
        for name in ("efivars.fd", "seed.iso", "console.log"):
            shutil.copyfile(state.folder / name, self.workdir / name)

    def _disks(self) -> list[DiskSpec]:
        opts = self.options
        found = [DiskSpec(self.workdir / "disk.qcow2", "qcow2", "vda", boot_order=1)]
        if opts.blank_disk:
            found.append(DiskSpec(self.workdir / "data.qcow2", "qcow2", "vdb"))
        found.append(DiskSpec(self.workdir / "seed.iso", "raw", "vdc", readonly=True))
        if opts.iso is not None:
            # Second in boot order: an empty system disk falls through to the installer,
            # an installed one boots itself, with no need to eject.
            found.append(DiskSpec(opts.iso.resolve(), "raw", "sda", "cdrom", True, boot_order=2))
        return found

    def _spec(self) -> DomainSpec:
        assert self._port is not None
        return DomainSpec(
            name=self.name, arch=self.arch, accel=self.accel.name,
            firmware=find_firmware(self.arch), nvram=self.workdir / "efivars.fd",
            console_log=self.console.path, ssh_port=self._port.port,
            owner=self._testrun.owner(self.options.keep), workdir=self.workdir,
            disks=self._disks(), registry_port=self.options.registry_port,
            memory_mib=self.options.memory_mib, vcpus=self.options.vcpus,
            cpu_model=self.options.cpu_model, cold_reboots=self._cold_reboots,
            uuid=self._uuid, smbios_uuid=self._restore.uuid if self._restore else None,
        )  # fmt: skip

    def _write_ssh_config(self) -> None:
        self.ssh_config_path.write_text(
            "Host *\n  HostName 127.0.0.1\n"
            f"  Port {self.ssh_port}\n  User root\n  IdentityFile {self.key.private}\n"
            "  IdentitiesOnly yes\n  StrictHostKeyChecking no\n"
            "  UserKnownHostsFile /dev/null\n  LogLevel ERROR\n"
        )

    # ----- lifecycle ---------------------------------------------------------------

    def start(
        self,
        wait: bool = True,
        timeout: float | None = None,
        check_health: bool = True,
        fail_fast: bool = True,
        restore: SavedState | None = None,
    ) -> None:
        """Create the domain; with `wait`, also wait for SSH and pass the health gate.

        `restore`: on the first start, resume this saved state instead of booting (the
        state must be of the same options); later starts boot as any machine does."""
        if self.is_running():
            raise VmError(f"{self.name} is already running")
        if self.options.registry_port:
            problem = seccomp_problem()
            if problem:
                raise VmError(f"cannot start {self.name} with a registry forward: {problem}")
        if restore is not None:
            if self._prepared:
                raise VmError(f"{self.name} has its own disks already: it cannot be restored")
            self._restore = restore
        while True:
            try:
                if restore is not None:
                    self._restore_from_state(restore, timeout, check_health)
                    return
                self.prepare()
                self._create_new_domain()
                self._begin_boot()
                if not wait:
                    return
                self.wait_for_ssh(timeout, check_health=check_health, fail_fast=fail_fast)
                return
            except (GuestUnreachable, HealthGateFailed) as exc:
                why = self._boot.repeatable_death()
                if why is None:
                    raise
                died = str(exc)
            # A machine's first start can be repeated exactly: same fresh disks (or
            # overlays), seed and firmware variables. Later boots carry state a scenario
            # depends on: never.
            warnings.warn(
                f"{self.name}: {why}; starting it again from fresh files. {died}", stacklevel=2
            )
            self._boot.emulator_retries += 1
            self.power_cut()
            # prepare() makes the files anew; a restore's copies the saved console back
            shutil.copyfile(self.console_path, self.workdir / "console.died.log")
            self._prepared = False

    def _create_new_domain(self) -> None:
        """Write this start's domain XML and create the domain, on a new SSH port when
        someone outside our lock files took the one we had."""
        conn = connect(self.uri)
        for attempt in range(3):
            if self._port is None:
                self._port = allocate_port()
            self._write_ssh_config()
            self._xml = domain_xml(self._spec())
            (self.workdir / "domain.xml").write_text(self._xml)
            try:
                self._create_domain(conn)
                return
            except libvirt.libvirtError as exc:
                message = exc.get_error_message() or str(exc)
                if "host forwarding" in message and attempt < 2:
                    self._port.release()
                    self._port = None
                    continue
                raise VmError(f"starting {self.name} failed: {message}") from None

    def _restore_from_state(
        self, state: SavedState, timeout: float | None, check_health: bool
    ) -> None:
        """Resume `state` as this machine: own overlays, port, name and owner tag; then set
        the guest's clock (it stopped at the save) and pass the health gate."""
        with step(f"{self.name}: restoring saved state {state.key}"):
            started = time.monotonic()
            self.prepare()
            if self._port is None:
                self._port = allocate_port()
            self._write_ssh_config()
            self._xml = domain_xml(self._spec())  # what a cold reboot starts from now on
            (self.workdir / "domain.xml").write_text(self._xml)
            spec = self._spec()
            xml = savedstate.retarget_xml(
                (state.folder / savedstate.SAVED_XML).read_text(),
                old_dir=state.folder, new_dir=self.workdir, name=self.name, uuid=self._uuid,
                metadata=metadata_element(spec.owner, self.workdir), qemu_args=qemu_args(spec),
            )  # fmt: skip
            conn = connect(self.uri)
            self._boot.new_instance(restored=True)
            self._begin_boot()
            self._boot.boot_offset = 0  # this boot began in the template (same boot_id)
            with savedstate.locked(state.key):
                savedstate.write_header_xml(state.memory, xml)
                try:
                    conn.restoreFlags(str(state.memory), None, libvirt.VIR_DOMAIN_SAVE_RUNNING)
                except libvirt.libvirtError as exc:
                    raise VmError(
                        f"restoring {self.name} from {state.memory} failed: "
                        f"{exc.get_error_message() or exc}"
                    ) from None
            self._domain = conn.lookupByName(self.name)
            resumed = round(time.monotonic() - started, 2)
            self.wait_for_ssh(timeout, check_health=False)
            # Both figures count from the ask, files included (a boot's count from its start).
            self.boot_history[-1]["ssh"] = round(time.monotonic() - started, 2)
            # The guest's wall clock stood still while the state was on disk.
            self.succeed(f"date -u -s @{time.time():.3f} >/dev/null")
            self.restores += 1
            self.boot_history[-1]["restore"] = resumed
            timing.note("restore", self, self.boot_history[-1])
            if check_health:
                self.check_health()

    def save_state(self, state: SavedState) -> SavedState:
        """Save this running machine into `state.folder` (its workdir) and stop it: the
        memory to memory.save, the domain XML libvirt wrote with it to saved.xml. The disks
        stay as they are, for restores to put overlays on."""
        if self.workdir != state.folder or self._domain is None:
            raise VmError(f"{self.name}: only a running machine in {state.folder} can be saved")
        with step(f"{self.name}: saving its running state to {state.folder}"):
            self.succeed("sync")
            self._close_ssh()  # no open connection in the saved network state
            time.sleep(0.5)  # let the guest see the connection go
            memory = state.folder / savedstate.MEMORY_FILE
            try:
                self._domain.save(str(memory))
                xml = connect(self.uri).saveImageGetXMLDesc(str(memory), 0)
            except libvirt.libvirtError as exc:
                raise VmError(
                    f"saving {self.name} to {memory} failed: {exc.get_error_message() or exc}"
                ) from None
            (state.folder / savedstate.SAVED_XML).write_text(xml)
        self._domain = None
        self._stop_timer()
        return state

    def _create_domain(self, conn: libvirt.virConnect) -> None:
        # A transient domain that dies with our libvirt connection: a crashed or killed
        # run leaves no domain behind. Kept machines must outlive us.
        flags = 0 if self.options.keep else libvirt.VIR_DOMAIN_START_AUTODESTROY
        self._boot.new_instance()
        self._domain = conn.createXML(self._xml, flags)

    def _start_same_domain_again(self, why: str) -> None:
        """A new QEMU process for this domain: same XML, disks, seed, firmware variables."""
        with contextlib.suppress(libvirt.libvirtError):
            if self._domain is not None and self._domain.isActive():
                self._domain.destroy()
        try:
            self._create_domain(connect(self.uri))
        except libvirt.libvirtError as exc:
            raise VmError(
                f"starting {self.name} again {why} failed: {exc.get_error_message() or exc}"
            ) from None

    @property
    def _cold_reboots(self) -> bool:
        return not self.options.keep  # only a live owner can start a kept machine again

    def _begin_boot(self, reboot: bool = False) -> None:
        self._close_ssh()
        self._boot.begin_boot(reboot)

    def is_running(self) -> bool:
        """Whether the machine's domain runs now. It only reports: a guest that reset
        itself is started again by `supervise`, not here."""
        if self._domain is None:
            return False
        try:
            return bool(self._domain.isActive())
        except libvirt.libvirtError:
            return False  # a transient domain that stopped is gone

    def supervise(self) -> bool:
        """The one step that acts on what the checks see, called by every wait loop:
        start the domain again after the guest reset itself (cold reboots), power-cycle
        a firmware that stalled (once). Returns whether the machine runs afterwards."""
        if self._domain is None:
            return False
        return self._boot.supervise(self.is_running(), self._start_same_domain_again)

    def wait_for_ssh(
        self,
        timeout: float | None = None,
        *,
        check_health: bool = True,
        fail_fast: bool = True,
        not_boot_id: str | None = None,
    ) -> None:
        """Wait until root can log in by key (and, with `not_boot_id`, a new boot did).

        `fail_fast` gives up as soon as the console shows a dead end (firmware found
        nothing to boot, kernel panic, emergency shell); turn it off when a scenario
        expects a failed boot to reboot by itself into a good one.
        """
        limit = self.scaled(timeout or BOOT_TIMEOUT)
        deadline = time.monotonic() + limit
        last_error = "no attempt yet"
        failure: list[str] = []
        attempts = 0

        def boot_failed() -> bool:
            if not failure:
                failure.extend(self._boot_failure(fail_fast))
            return bool(failure)

        while True:
            remaining = deadline - time.monotonic()
            if boot_failed() or remaining <= 0:
                if not failure:
                    failure.append(
                        f"{self.name} did not answer SSH on 127.0.0.1:{self.ssh_port} within "
                        f"{limit:.0f} s (last error: {last_error})"
                    )
                raise GuestUnreachable(f"{failure[0]}; last console lines:\n{self._boot.tail()}")
            # Short windows while the guest may have no address yet: QEMU's user network
            # retries an unanswered SYN with growing back-off, so a long wait on one
            # connection can sleep through the moment sshd comes up.
            attempts += 1
            window = 2.0 if attempts <= 10 else min(30.0, 2.0 * (attempts - 9))
            sock = sshlib.wait_banner(self.ssh_port or 0, min(remaining, window), boot_failed)
            if sock is None:
                last_error = "sshd did not answer"
                time.sleep(0.5)
                continue
            remaining = max(1.0, deadline - time.monotonic())
            try:
                client = sshlib.connect(
                    self.ssh_port or 0,
                    self.key.private,
                    timeout=min(remaining, self.scaled(5)),
                    sock=sock,
                )
            except (OSError, EOFError, paramiko.SSHException) as exc:
                last_error = f"{type(exc).__name__}: {exc}"
                time.sleep(1)
                continue
            try:
                boot_id = sshlib.run(
                    client,
                    "cat /proc/sys/kernel/random/boot_id",
                    timeout=max(1.0, min(30.0, remaining)),
                ).stdout.strip()
            except (OSError, EOFError, TimeoutError, paramiko.SSHException) as exc:
                client.close()
                last_error = f"{type(exc).__name__}: {exc}"
                time.sleep(1)
                continue
            if not_boot_id is not None and boot_id == not_boot_id:
                client.close()  # the old system has not gone down yet
                last_error = "still the boot before the reboot"
                time.sleep(1)
                continue
            self._ssh = client
            self.boot_id = boot_id
            break
        self._boot.end_boot()
        if not self._boot.instance_restored:
            timing.note("boot", self, self.boot_history[-1])
        if check_health:
            self.check_health()

    def _boot_failure(self, fail_fast: bool) -> list[str]:
        """Why waiting longer for this boot is pointless, if it is."""
        if not self.supervise():
            return [f"{self.name} stopped while waiting for SSH"]
        gave_up = self._boot.firmware_gave_up()
        if gave_up:
            return [gave_up]
        if fail_fast:
            dead_end = self._boot.dead_end()
            if dead_end:
                time.sleep(2)  # let the rest of the message reach the log
                return [f"{self.name} cannot boot: the console shows {dead_end!r}"]
        return []

    def check_health(self) -> None:
        """Raise HealthGateFailed when this boot's console or systemd shows a problem, or
        startup does not settle in state "running" (vm/health.py)."""
        health.check_health(self, self.console.read(self._boot.boot_offset), len(self.boot_history))

    def shutdown(self, timeout: float | None = None) -> None:
        """Power off cleanly and wait until the domain is off."""
        if not self.is_running():
            self._domain = None  # off already, or its guest reset itself: it stays off
            self._stop_timer()
            return
        try:
            sshlib.run(self.ssh, "systemctl --no-block poweroff", timeout=30)
        except (OSError, EOFError, TimeoutError, VmError, paramiko.SSHException):
            # No SSH: ask through ACPI instead.
            with contextlib.suppress(libvirt.libvirtError):
                assert self._domain is not None
                self._domain.shutdown()
        self._close_ssh()
        limit = self.scaled(timeout or SHUTDOWN_TIMEOUT)
        deadline = time.monotonic() + limit
        while self.supervise():
            if time.monotonic() > deadline:
                raise VmError(
                    f"{self.name} did not power off within {limit:.0f} s; last console lines:\n"
                    f"{self._boot.tail()}"
                )
            time.sleep(0.5)
        self._domain = None
        self._stop_timer()

    def reboot(
        self, timeout: float | None = None, check_health: bool = True, fail_fast: bool = True
    ) -> None:
        """Reboot from inside and wait for a new boot_id (as kola does)."""
        old = self.boot_id or self.succeed("cat /proc/sys/kernel/random/boot_id").strip()
        self._begin_boot(reboot=True)
        try:
            client = sshlib.connect(self.ssh_port or 0, self.key.private)
            sshlib.run(client, "systemctl --no-block reboot", timeout=30)
            client.close()
        except paramiko.AuthenticationException as exc:
            # The guest is up and refused us: the reboot was never asked for.
            raise GuestUnreachable(f"{self.name}: cannot ask for a reboot: {exc}") from None
        except (OSError, EOFError, TimeoutError, paramiko.SSHException):
            pass  # the connection may drop as the guest goes down
        self.wait_for_ssh(timeout, check_health=check_health, fail_fast=fail_fast, not_boot_id=old)

    def power_cut(self) -> None:
        """Pull the plug (virDomainDestroy): no shutdown, unsynced writes are lost."""
        if self._domain is not None:
            with contextlib.suppress(libvirt.libvirtError):
                self._domain.destroy()
        self._domain = None
        self._close_ssh()
        self._stop_timer()

    def cleanup(self, remove_files: bool = True) -> None:
        """Stop the machine and free everything it holds (idempotent)."""
        self.power_cut()
        if self._port is not None:
            self._port.release()
            self._port = None
        if remove_files and not self.options.keep:
            shutil.rmtree(self.workdir, ignore_errors=True)
        self._testrun.forget(id(self))

    def detach(self) -> None:
        """Let a running kept machine go on without this process: QEMU now holds its SSH
        port (the bind probe protects it), so the port lock is released."""
        if self._port is not None:
            self._port.release()
        self._close_ssh()
        self._stop_timer()
        self._testrun.forget(id(self))

    def _stop_timer(self) -> None:
        self._boot.stop_timer()

    # ----- SSH -----------------------------------------------------------------------

    def _close_ssh(self) -> None:
        if self._ssh is not None:
            self._ssh.close()
        self._ssh = None
        self._host = None

    @property
    def ssh(self) -> paramiko.SSHClient:
        """A connected paramiko client; reconnects after a reboot or a dropped link."""
        if sshlib.is_alive(self._ssh):
            assert self._ssh is not None
            return self._ssh
        self._close_ssh()
        if not self.supervise():
            raise GuestUnreachable(f"{self.name} is not running")
        last: Exception | None = None
        for _ in range(3):
            try:
                self._ssh = sshlib.connect(self.ssh_port or 0, self.key.private)
                return self._ssh
            except (OSError, EOFError, paramiko.SSHException) as exc:
                last = exc
                time.sleep(1)
        raise GuestUnreachable(
            f"cannot reconnect to {self.name} on 127.0.0.1:{self.ssh_port}: {last}; "
            f"last console lines:\n{self._boot.tail()}"
        )

    @property
    def host(self):  # type: ignore[no-untyped-def]  # testinfra.host.Host
        """A testinfra host sharing the machine's SSH connection."""
        client = self.ssh
        if self._host is None or self._host_client is not client:
            import testinfra.backend
            import testinfra.host

            backend = testinfra.backend.get_backend(
                f"paramiko://root@127.0.0.1:{self.ssh_port}",
                ssh_config=str(self.ssh_config_path),
                ssh_identity_file=str(self.key.private),
            )
            backend.__dict__["client"] = client  # fills its cached_property: one connection
            self._host = testinfra.host.Host(backend)
            self._host_client = client
        return self._host

    def ssh_command(self) -> list[str]:
        return ["ssh", "-F", str(self.ssh_config_path), "root@127.0.0.1"]

    # ----- commands ----------------------------------------------------------------

    def run(self, command: str, timeout: float | None = None) -> sshlib.CommandResult:
        limit = self.scaled(timeout or COMMAND_TIMEOUT)
        for attempt in range(2):
            try:
                return sshlib.run(self.ssh, command, limit)
            except TimeoutError as exc:
                raise CommandFailed(f"{self.name}: {exc}", command, -1, "", "") from None
            except (OSError, EOFError, paramiko.SSHException) as exc:
                self._close_ssh()  # a stale link (after a reboot): reconnect once
                if attempt == 1:
                    raise GuestUnreachable(
                        f"{self.name}: running {command!r} failed: {exc}; last console lines:\n"
                        f"{self._boot.tail()}"
                    ) from None
        raise AssertionError("unreachable")

    # ----- console -----------------------------------------------------------------

    def console_mark(self) -> int:
        """The console's current end, to wait only for output that comes after it."""
        return self.console.size()

    def wait_for_console(
        self, regex: str, timeout: float | None = None, since: int | None = None
    ) -> str:
        """Wait until a console line of this boot (or after `since`) matches; returns it."""
        start = self._boot.boot_offset if since is None else since
        with step(f"{self.name}: waiting for console line {regex!r}"):
            match = self.console.wait_for(
                regex, self.scaled(timeout or BOOT_TIMEOUT), start, still_running=self.supervise
            )
        text = match.string
        begin = text.rfind("\n", 0, match.start()) + 1
        end = text.find("\n", match.end())
        return text[begin : end if end >= 0 else len(text)]

    # ----- files and inspection ----------------------------------------------------

    def _upload(self, local: Path, remote: str) -> None:
        sshlib.put(self.ssh, local, remote)

    def _download(self, remote: str, local: Path) -> None:
        sshlib.get(self.ssh, remote, local)

    def kept_state(self, name: str, flavor: str) -> KeptMachine:
        """The facts `invoke vm.ssh/console/down` need about a kept machine."""
        return KeptMachine(
            name=name, domain=self.name, uri=self.uri, flavor=flavor, arch=self.arch.name,
            ssh_port=self.ssh_port or 0, workdir=str(self.workdir),
            ssh_config=str(self.ssh_config_path), key=str(self.key.private),
        )  # fmt: skip

    def domain_xml(self) -> str:
        if self.is_running():
            assert self._domain is not None
            return self._domain.XMLDesc()
        return self._xml or ""
