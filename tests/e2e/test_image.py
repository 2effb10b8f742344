"""The built image, booted as users boot it: what the cOS disk layout and boot chain promise."""

import json

import pytest
from guest_commands import SET_GRUBENV

from toolkit.flavors import load_flavor

pytestmark = pytest.mark.vm


def test_root_is_the_active_slot_read_only(shared_machine):
    m = shared_machine
    boot = dict(line.split("=", 1) for line in m.succeed("cat /run/cos/boot").split())
    # a fresh disk boots slot 2, the one its pointer names active
    assert boot == {"slot": "active", "image": "/cOS/slots/2.img", "label": "COS_STATE"}
    root = m.succeed("findmnt -n -o SOURCE,OPTIONS /").split()
    assert root[0].startswith("/dev/loop") and root[1].startswith("ro")
    backing = m.succeed(f"losetup -n -O BACK-FILE {root[0]}").strip()
    assert backing.endswith("/cOS/slots/2.img")
    assert "Read-only file system" in m.fail("touch /usr/bin/cos-should-not-exist")


def test_os_release_names_flavor_and_version(shared_machine, vm_settings):
    flavor = load_flavor(vm_settings.flavor)
    release = shared_machine.host.file("/etc/os-release").content_string
    assert f'VARIANT_ID="{flavor.name}"' in release
    assert f'IMAGE_VERSION="{flavor.version}"' in release
    status = json.loads(shared_machine.succeed("cos status --json"))
    assert status["flavor"] == flavor.name and status["version"] == flavor.version
    assert status["booted"] == "active" and status["assessment"] == "good"
    assert status["slots"]["active"]["version"] == flavor.version


def test_partition_layout(shared_machine):
    labels = shared_machine.succeed("lsblk -n -o LABEL /dev/vda").split()
    assert labels == ["COS_GRUB", "COS_OEM", "COS_RECOVERY", "COS_STATE", "COS_PERSISTENT"]
    mounts = {
        line.split()[0]: line.split()[1]
        for line in shared_machine.succeed("findmnt -n -l -o TARGET,SOURCE").splitlines()
    }
    assert mounts["/oem"] == "/dev/vda2"
    assert mounts["/usr/local"] == "/dev/vda5"


def test_writable_paths(shared_machine):
    m = shared_machine
    for path in ("/etc", "/var", "/root", "/home", "/srv", "/opt", "/usr/local", "/oem"):
        m.succeed(f"touch {path}/.cos-write-test && rm {path}/.cos-write-test")


def test_no_password_logins(shared_machine):
    """No account that can log in has a password, not even an empty one: root and every
    user with a login shell have a locked ("!") or disabled ("*") password, and sshd takes
    keys only."""
    m = shared_machine
    shadow = dict(line.split(":")[:2] for line in m.succeed("getent shadow").splitlines())
    accounts = [line.split(":") for line in m.succeed("getent passwd").splitlines()]
    login = {
        name: pw if pw != "x" else shadow.get(name, "")  # "x": the password is in shadow
        for name, pw, *_, shell in accounts
        if shell.rsplit("/", 1)[-1] not in ("nologin", "false")
    }
    assert "root" in login, accounts
    usable = {name: pw for name, pw in login.items() if not pw.startswith(("!", "*"))}
    assert not usable, f"accounts with a usable or empty password: {usable}"
    config = m.succeed("sshd -T").splitlines()
    assert "passwordauthentication no" in config
    assert "kbdinteractiveauthentication no" in config
    assert "permitemptypasswords no" in config
    assert m.succeed("ls /etc/ssh").split().count("ssh_host_ed25519_key") == 0  # none baked in


def test_boot_and_logins_do_no_needless_work(shared_machine):
    m = shared_machine
    assert m.succeed("systemctl get-default").strip() == "multi-user.target"
    # pam_motd would have written this running /etc/update-motd.d at our SSH login
    assert m.execute("test -e /run/motd.dynamic")[0] != 0
    # GRUB's embedded config once printed one of these for each comment line
    assert "Unknown command" not in m.console_path.read_text(errors="replace")
    # Debian's comment-only /etc/modules no longer starts systemd-modules-load
    assert m.succeed("systemctl show -P ConditionResult systemd-modules-load").strip() == "no"
    # The initramfs passes loop.max_loop=1 from the kernel command line on to insmod:
    # udev and systemd process the root's loop device, not eight
    assert [d for d in m.succeed("ls /sys/block").split() if d.startswith("loop")] == ["loop0"]


def test_agents_at_once_share_the_boot_partition(shared_machine):
    """Readers and writers of grubenv at the same time (the boot assessment runs while a
    user or a test calls `cos`): each waits its turn for the mount, none fails."""
    m = shared_machine
    jobs = "; ".join(
        f'cos status --json >/dev/null & pids="$pids $!"; '
        f'{SET_GRUBENV} cos_probe={i} & pids="$pids $!"'
        for i in range(6)
    )
    m.succeed(f"pids=; {jobs}; rc=0; for p in $pids; do wait $p || rc=1; done; exit $rc")
    m.succeed(SET_GRUBENV + "cos_probe=")
    assert "cos_probe" not in json.loads(m.succeed("cos status --json"))["grubenv"]


def test_persistence_across_reboot(machine_factory):
    m = machine_factory(disk_size="4G")
    host_key = m.succeed("cat /var/lib/cos/ssh/ssh_host_ed25519_key.pub")
    machine_id = m.succeed("cat /etc/machine-id")
    for path in (
        "/etc/cos-volatile",
        "/usr/local/cos-kept",
        "/root/cos-kept",
        "/var/lib/cos/cos-kept",
        "/home/cos-kept",
        "/var/log/cos-kept",
    ):
        m.succeed(f"echo data > {path}")
    m.reboot()
    m.fail("test -e /etc/cos-volatile")
    for path in (
        "/usr/local/cos-kept",
        "/root/cos-kept",
        "/var/lib/cos/cos-kept",
        "/home/cos-kept",
        "/var/log/cos-kept",
    ):
        assert m.succeed(f"cat {path}").strip() == "data", path
    # same machine, same identity: host keys live on COS_PERSISTENT
    assert m.succeed("cat /var/lib/cos/ssh/ssh_host_ed25519_key.pub") == host_key
    assert m.succeed("cat /etc/machine-id") == machine_id  # from the SMBIOS UUID
    # the journal of the first boot is kept, and /var/log was unmounted cleanly at shutdown
    # (journald moved back to /run first instead of holding its files open)
    assert len(json.loads(m.succeed("journalctl --list-boots -o json"))) == 2
    assert "Failed unmounting var-log.mount" not in m.console_path.read_text(errors="replace")
    # COS_PERSISTENT grew to the end of the 4 GiB disk on first boot
    size = int(m.succeed("blockdev --getsize64 /dev/vda5").strip())
    assert size > 2 << 30
    # and its file system with it (df would subtract ext4's metadata, which varies)
    fields = dict(
        line.split(":", 1) for line in m.succeed("tune2fs -l /dev/vda5").splitlines() if ":" in line
    )
    fs_bytes = int(fields["Block count"]) * int(fields["Block size"])
    assert size - fs_bytes < size // 100, (size, fs_bytes)


def test_installer_iso_boots_a_live_system(installer_machine, vm_settings):
    """The installer ISO boots its own live system (packages/cos-grub/iso.cfg): the
    built slot (ext4), read-only from the CD, with volatile writable overlays, no cOS
    partition mounted, the seed's cloud-config applied and the agent working."""
    m = installer_machine
    flavor = load_flavor(vm_settings.flavor)
    # The ISO's GRUB chose its live entry (the blank disk has no GRUB of its own)
    assert "cOS: booting live" in m.console_path.read_text(errors="replace")
    cmdline = m.succeed("cat /proc/cmdline").split()
    assert {"cos.slot=live", "cos.label=COS_LIVE", "cos.image=/cOS/system.img"} <= set(cmdline)
    # The initramfs found the image's volume by label: the CD-ROM holding the ISO
    source, fstype, options = m.succeed(
        "findmnt -n -o SOURCE,FSTYPE,OPTIONS /run/cos/state"
    ).split()
    assert fstype == "iso9660" and options.split(",")[0] == "ro", (source, fstype, options)
    assert m.succeed(f"lsblk -n -d -o TYPE {source}").strip() == "rom"
    assert m.succeed(f"blkid -o value -s LABEL {source}").strip() == "COS_LIVE"
    # / is the built slot (ext4) from that CD through a loop device, read-only
    root, fstype, options = m.succeed("findmnt -n -o SOURCE,FSTYPE,OPTIONS /").split()
    assert root.startswith("/dev/loop") and fstype == "ext4", (root, fstype)
    assert options.split(",")[0] == "ro", options
    backing = m.succeed(f"losetup -n -O BACK-FILE {root}").strip()
    assert backing == "/run/cos/state/cOS/system.img", backing
    assert "Read-only file system" in m.fail("touch /usr/bin/cos-should-not-exist")
    # Writable where a running system needs it: tmpfs overlays, in RAM
    for path in ("/etc", "/var", "/root", "/home"):
        assert m.succeed(f"findmnt -n -o FSTYPE {path}").strip() == "overlay", path
        m.succeed(f"touch {path}/.cos-write-test && rm {path}/.cos-write-test")
    # A live boot mounts no cOS partition of the machine it installs to, and keeps nothing
    for path in ("/oem", "/usr/local"):
        assert m.execute(f"mountpoint -q {path}")[0] != 0, f"{path} is mounted"
    for path in flavor.persistent_paths:
        assert m.succeed(f"findmnt -n -o FSTYPE --target {path}").strip() == "overlay", path
    # The agent runs and knows where it booted from
    status = json.loads(m.succeed("cos status --json"))
    boot = status["boot"]
    assert (boot["slot"], boot["image"], boot["label"]) == ("live", "/cOS/system.img", "COS_LIVE")
    assert status["flavor"] == flavor.name and status["version"] == flavor.version
    # The live system read the same cidata seed: the harness's hostname and key (SSH works)
    assert m.succeed("hostname").strip() == m.hostname


def test_network_handed_from_initramfs_to_networkd(shared_machine):
    m = shared_machine
    assert "eth0 configured by DHCP" in m.succeed("dmesg | grep cos-init")
    m.wait_until_succeeds("networkctl status eth0 | grep -q 'State: routable (configured)'")
    assert "10.0.2.15" in m.succeed("ip -4 -o addr show eth0")


def test_ca_store_built_on_the_host_is_complete(shared_machine):
    m = shared_machine
    # every link in /etc/ssl/certs resolves inside the image, and OpenSSL finds a root by hash
    assert m.succeed("find -L /etc/ssl/certs -type l | wc -l").strip() == "0"
    bundle = int(m.succeed("grep -c 'BEGIN CERTIFICATE' /etc/ssl/certs/ca-certificates.crt"))
    links = int(m.succeed("ls /etc/ssl/certs/*.pem | wc -l"))
    assert bundle == links > 100
    m.succeed("openssl verify -CApath /etc/ssl/certs /etc/ssl/certs/ISRG_Root_X1.pem")
