"""cloud-config as users bring it, on a booted machine: cloud-init's documented keys
(its examples, adapted to a machine without internet), the stage syntax at every boot
stage, and broken input that must neither stop the boot nor the other steps."""

import base64
import gzip
import json

import pytest

pytestmark = pytest.mark.vm

# A SHA-512 crypt hash of "cos" (openssl passwd -6 -salt cossalt cos): never clear text.
HASH = "$6$cossalt$H6YKYYb45R6F2VmHR6COgLF8O.nMa4sQ9hz5oiqUmt9fFOFal79bOaqs" + (
    "AVvDlZ79vYsRy1rpkKue3Rz8cxGmZ/"
)
PUBLIC_KEY = (
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIMcOSDocAdmCfF6mhNiiaOoqDsS4tYp6TOS7Htp/Nbb6 ops@example"
)
MARK = "echo {} >> /run/stage-order"

# Taken from cloud-init's module documentation (examples of write_files, users, runcmd,
# bootcmd, ntp, timezone, set_hostname/update_etc_hosts, set_passwords), offline.
CLOUD_INIT_EXAMPLES = {
    "bootcmd": [MARK.format("bootcmd"), ["sh", "-c", "echo $INSTANCE_ID > /run/bootcmd-instance"]],
    "hostname": "conformance",
    "fqdn": "conformance.example.org",
    "manage_etc_hosts": True,
    "timezone": "Europe/Berlin",
    "ntp": {"enabled": True, "servers": ["10.0.2.2"], "pools": ["0.pool.example.org"]},
    "ssh_pwauth": False,
    "users": [
        "default",
        {
            "name": "ops",
            "gecos": "Operations",
            "groups": "adm, systemd-journal",
            "shell": "/bin/bash",
            "sudo": "ALL=(ALL) NOPASSWD:ALL",
            "lock_passwd": False,
            "hashed_passwd": HASH,
            "ssh_authorized_keys": [PUBLIC_KEY],
        },
        {"name": "svc", "system": True, "shell": "/usr/sbin/nologin"},
        {"name": "plain", "plain_text_passwd": "clear-text"},
    ],
    "chpasswd": {"expire": False, "users": [{"name": "plain", "password": HASH, "type": "hash"}]},
    "write_files": [
        {"path": "/etc/conformance/plain.txt", "content": "plain text\n", "permissions": "0640"},
        {
            "path": "/etc/conformance/b64.bin",
            "encoding": "b64",
            "content": base64.b64encode(b"\x00binary\xff").decode(),
        },
        {
            "path": "/etc/conformance/gz.txt",
            "encoding": "gz+b64",
            "content": base64.b64encode(gzip.compress(b"compressed\n")).decode(),
        },
        {
            "path": "/etc/conformance/plain.txt",
            "content": "appended\n",
            "append": True,
            "permissions": "0640",  # cloud-init sets 0644 on an entry that names none
        },
        {"path": "/home/ops/notes.txt", "content": "deferred\n", "owner": "ops:ops", "defer": True},
    ],
    "runcmd": [
        MARK.format("runcmd"),
        "cd /home/ops",
        ["sh", "-c", "pwd > /run/runcmd-cwd; ip -4 -o addr show eth0 > /run/runcmd-address"],
        "false",  # a broken line: reported, and the lines after it still run
        "touch /run/runcmd-after-false",
    ],
    "packages": ["nginx"],  # warned about by name, never fatal
    "not_a_cloud_init_key": True,
}

STAGE_SYNTAX = {
    "stages": {
        "rootfs": [
            {
                "name": "a sysctl file systemd-sysctl will read",
                "commands": [MARK.format("rootfs")],
                "files": [
                    {
                        "path": "/etc/sysctl.d/50-cos-test.conf",
                        "content": "kernel.domainname = from-rootfs\n",
                    }
                ],
            }
        ],
        "initramfs": [{"commands": [MARK.format("initramfs")]}],
        "boot": [
            {
                "name": "marker",
                "commands": [MARK.format("boot")],
                "environment": {"COS_TEST": "yes"},
                "hosts": {"10.0.2.2": ["gateway"]},
                "modules": ["dummy"],
                "sysctl": {"vm.swappiness": 13},
                "directories": [{"path": "/srv/www", "permissions": 0o750, "owner": "nobody"}],
            },
            {
                "name": "web unit",
                "depends_on": "marker",
                "files": [
                    {
                        "path": "/etc/systemd/system/cos-test-web.service",
                        "content": "[Service]\nExecStart=/bin/sleep infinity\n"
                        "[Install]\nWantedBy=multi-user.target\n",
                    }
                ],
                "systemctl": {
                    "enable": ["cos-test-web.service"],
                    "mask": ["cos-test-masked.service"],
                },
            },
            {
                "name": "guarded",
                "if": "test -e /nonexistent",
                "files": [{"path": "/etc/guarded", "content": "x"}],
            },
            {"name": "fails", "commands": ["echo broken on purpose >&2; exit 3"]},
            {
                "name": "after failure",
                "depends_on": "fails",
                "files": [{"path": "/etc/never", "content": "x"}],
            },
        ],
        "fs": [{"commands": [MARK.format("fs")]}],
        "network": [{"commands": [MARK.format("network")]}],
    }
}


def test_cloud_init_examples_and_every_stage_apply_and_broken_steps_do_not_degrade(
    machine_factory,
):
    m = machine_factory(cloud_config={**CLOUD_INIT_EXAMPLES, **STAGE_SYNTAX})
    # The health gate passed with a failing runcmd line and a failing step: reported, not fatal.
    assert m.succeed("systemctl is-system-running").strip() == "running"
    m.wait_until_succeeds("grep -q runcmd /run/stage-order", timeout=60)
    order = m.succeed("cat /run/stage-order").split()
    # rootfs and initramfs steps of the NoCloud data run from the boot after it is kept
    # (the slow reboot scenario checks them): at this first boot Python is not started early.
    assert order == ["bootcmd", "boot", "fs", "network", "runcmd"]
    # ... and never later: a unit start during the boot must not run them after the fact.
    m.fail("journalctl -b -o cat -u cos-setup-rootfs.service | grep -q 'cos-cloud-config rootfs'")
    assert m.succeed("cat /run/bootcmd-instance").strip()  # INSTANCE_ID, as cloud-init sets it

    # hostname, fqdn, manage_etc_hosts, timezone, ntp, ssh_pwauth
    assert m.succeed("hostname").strip() == "conformance"
    hosts = m.succeed("cat /etc/hosts").splitlines()
    assert "127.0.1.1\tconformance.example.org\tconformance" in hosts
    assert "127.0.0.1\tlocalhost" in hosts
    assert m.succeed("date +%Z").strip() in ("CET", "CEST")
    ntp = m.succeed("cat /etc/systemd/timesyncd.conf.d/90-cos-cloud-config.conf")
    assert "NTP=10.0.2.2 0.pool.example.org" in ntp
    assert "passwordauthentication no" in m.succeed("sshd -T").splitlines()

    # users: groups as a string, sudo, shell, hash, keys, system user; clear text refused
    assert {"adm", "systemd-journal"} <= set(m.succeed("id -nG ops").split())
    assert m.succeed("getent passwd ops").strip().endswith(":Operations:/home/ops:/bin/bash")
    assert m.succeed("getent shadow ops").split(":")[1] == HASH
    assert m.succeed("getent shadow plain").split(":")[1] == HASH  # from chpasswd
    assert "ops ALL=(ALL) NOPASSWD:ALL" in m.succeed("cat /etc/sudoers.d/90-cloud-init-users")
    assert m.succeed("cat /home/ops/.ssh/authorized_keys").strip() == PUBLIC_KEY
    assert int(m.succeed("id -u svc")) < 1000

    # write_files: encodings, permissions, append, defer (after the user exists)
    assert m.succeed("cat /etc/conformance/plain.txt") == "plain text\nappended\n"
    assert m.succeed("stat -c %a /etc/conformance/plain.txt").strip() == "640"
    binary = m.succeed("od -An -tx1 /etc/conformance/b64.bin").split()
    assert binary == ["00", "62", "69", "6e", "61", "72", "79", "ff"]
    assert m.succeed("cat /etc/conformance/gz.txt") == "compressed\n"
    assert m.succeed("stat -c %U /home/ops/notes.txt").strip() == "ops"

    # runcmd: one script after the network is up; a failing line does not stop the rest
    assert m.succeed("cat /run/runcmd-cwd").strip() == "/home/ops"
    assert "inet 10.0.2.15/" in m.succeed("cat /run/runcmd-address")  # configured by then
    m.succeed("test -e /run/runcmd-after-false")

    # stage syntax actions, if and depends_on
    assert "COS_TEST=yes" in m.succeed("cat /etc/environment")
    assert "10.0.2.2\tgateway" in m.succeed("cat /etc/hosts")
    m.succeed("test -d /sys/module/dummy")
    assert m.succeed("sysctl -n vm.swappiness").strip() == "13"
    assert m.succeed("stat -c '%a %U' /srv/www").strip() == "750 nobody"
    m.wait_until_succeeds("systemctl is-active cos-test-web.service", timeout=30)
    assert m.succeed("systemctl is-enabled cos-test-masked.service || true").strip() == "masked"
    m.fail("test -e /etc/guarded")
    m.fail("test -e /etc/never")

    # what went wrong is in the journal and in cos status, by name
    status = json.loads(m.succeed("cos status --json"))["cloud_config"]
    boot_errors = "\n".join(status["boot"]["errors"])
    assert (
        "stages.boot[3] 'fails': commands: [0] echo broken on purpose >&2; exit 3: exit status 3"
        in boot_errors
    )
    assert "broken on purpose" in boot_errors
    assert "depends on 'fails', which failed" in boot_errors
    warnings = "\n".join(status["boot"]["warnings"])
    assert "packages: packages come with the image" in warnings
    assert "not_a_cloud_init_key: unknown key; ignored" in warnings
    assert "plain_text_passwd refused" in warnings
    journal = m.succeed("journalctl -b -u cos-setup-boot.service --no-pager -o cat")
    assert "'fails'" in journal and "applied" in journal

    # running a stage again changes nothing (no second user, line or key)
    files = "/etc/passwd /etc/group /etc/shadow /etc/hosts /etc/environment"
    files += " /home/ops/.ssh/authorized_keys"
    before = m.succeed(f"md5sum {files}")
    m.succeed("cos run-stage boot")
    assert m.succeed(f"md5sum {files}") == before
    assert "would apply" in m.succeed("cos run-stage boot --dry-run")


@pytest.mark.slow
def test_after_a_reboot_config_applies_again_and_a_broken_oem_file_is_only_reported(
    machine_factory,
):
    early = {k: v for k, v in STAGE_SYNTAX["stages"].items() if k in ("rootfs", "initramfs")}
    m = machine_factory(
        cloud_config={
            "write_files": [{"path": "/etc/from-user-data", "content": "again\n"}],
            "runcmd": ["echo boot >> /usr/local/runcmd-boots"],
            "bootcmd": [MARK.format("bootcmd")],
            "stages": early,
        }
    )
    m.succeed("echo by-hand > /etc/changed-by-hand && echo mine > /usr/local/kept")
    m.succeed("printf 'stages:\\n  boot:\\n    - files: [{path: /etc/x\\n' > /oem/99-broken.yaml")
    m.succeed(
        "printf 'stages:\\n  fs:\\n    - files: [{path: /etc/from-oem, content: oem}]\\n'"
        " > /oem/50-extra.yaml"
    )
    report = m.fail("cos cloud-config validate /oem/99-broken.yaml /oem/50-extra.yaml 2>&1")
    assert "/oem/99-broken.yaml: line 4, column 1: malformed YAML" in report
    m.succeed("test -s /oem/nocloud/user-data")  # the seed is kept on COS_OEM
    m.reboot()
    assert m.succeed("systemctl is-system-running").strip() == "running"
    # The kept NoCloud data has rootfs and initramfs steps: they ran before sysinit.target,
    # and systemd-sysctl read the file the rootfs step wrote.
    assert m.succeed("cat /run/stage-order").split() == ["rootfs", "initramfs", "bootcmd"]
    assert m.succeed("sysctl -n kernel.domainname").strip() == "from-rootfs"
    # what the configs say applies again; what was changed by hand in / is gone
    assert m.succeed("cat /etc/from-user-data") == "again\n"
    assert m.succeed("cat /etc/from-oem") == "oem"
    m.fail("test -e /etc/changed-by-hand")
    assert m.succeed("cat /usr/local/kept") == "mine\n"
    m.wait_until_succeeds("test $(wc -l < /usr/local/runcmd-boots) -eq 2", timeout=60)
    errors = json.loads(m.succeed("cos status --json"))["cloud_config"]["boot"]["errors"]
    assert any("/oem/99-broken.yaml: line 4, column 1: malformed YAML" in e for e in errors)
    assert "99-broken.yaml" in m.succeed("cos status")
