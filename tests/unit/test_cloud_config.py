"""cos-cloud-config against a temporary root: every action, both syntaxes, ordering, `if`,
depends_on, idempotence and broken input. Real tools act on the root (useradd --root,
chpasswd --root, systemctl --root, a chroot with a shell copied in for commands)."""

import base64
import gzip
import hashlib
import os
import shutil
import subprocess
import textwrap
from pathlib import Path

import pytest
import yaml

from cos_cloud_config import nocloud, plan, runner, sources
from cos_cloud_config.context import Context, StepError

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="useradd --root and chroot need root")


def copy_with_libraries(program: str, root: Path) -> None:
    """A program (as /usr/bin/NAME) and the libraries ldd names, so a chroot into `root`
    can run it."""
    path = Path(shutil.which(program)).resolve()
    (root / "usr/bin").mkdir(parents=True, exist_ok=True)
    shutil.copy2(path, root / "usr/bin" / program)
    needed = []
    for line in subprocess.run(
        ["ldd", str(path)], capture_output=True, text=True
    ).stdout.splitlines():
        parts = [p for p in line.split() if p.startswith("/")]
        needed += [Path(p) for p in parts]
    for item in needed:
        target = root / str(item).lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(item, target)


@pytest.fixture
def root(tmp_path: Path) -> Path:
    """A root with accounts, a time zone, a shell, and the folders cloud-config reads."""
    root = tmp_path / "root"
    etc = root / "etc"
    etc.mkdir(parents=True)
    (etc / "passwd").write_text("root:x:0:0:root:/root:/bin/sh\n")
    (etc / "group").write_text("root:x:0:\nusers:x:100:\n")
    (etc / "shadow").write_text("root:*:19000:0:99999:7:::\n")
    (etc / "gshadow").write_text("root:*::\n")
    (etc / "shadow").chmod(0o640)
    shutil.copy("/etc/login.defs", etc / "login.defs")
    for folder in (
        "root",
        "oem",
        "system/oem",
        "usr/local/cloud-config",
        "usr/share/zoneinfo/Europe",
    ):
        (root / folder).mkdir(parents=True, exist_ok=True)
    shutil.copy("/usr/share/zoneinfo/Europe/Berlin", root / "usr/share/zoneinfo/Europe/Berlin")
    (root / "bin").symlink_to("usr/bin")
    for program in ("sh", "test", "pwd"):
        copy_with_libraries(program, root)
    return root


def write(root: Path, name: str, text: str) -> Path:
    path = root / name.lstrip("/")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text))
    return path


def run_stages(root: Path, *stages: str, strict: bool = False, capsys=None) -> int:
    return runner.run(
        list(stages), root, [], use_nocloud=False, dry_run=False, strict=strict, sources_root=root
    )


@pytest.fixture(autouse=True)
def records(tmp_path: Path, monkeypatch) -> Path:
    folder = tmp_path / "records"
    monkeypatch.setattr(runner, "RECORDS", folder)
    return folder


def tree_digest(root: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted(root.rglob("*")):
        if path.is_file() and not path.is_symlink():
            stat = path.stat()
            digest.update(f"{path.relative_to(root)} {stat.st_mode} {stat.st_uid}".encode())
            digest.update(path.read_bytes())
    return digest.hexdigest()


# ---------------------------------------------------------------- actions, stage syntax


def test_files_and_directories_with_encodings_modes_and_owners(root: Path):
    packed = base64.b64encode(gzip.compress(b"zipped\n")).decode()
    write(root, "oem/10.yaml", f"""
        stages:
          boot:
            - users: {{alice: {{}}}}
            - directories:
                - {{path: /srv/data, permissions: 0750, owner: alice, group: users}}
              files:
                - {{path: /etc/plain, content: "plain\\n", permissions: "0600"}}
                - {{path: /etc/b64, content: {base64.b64encode(b"b64").decode()}, encoding: b64}}
                - {{path: /etc/gz, content: "{packed}", encoding: gzip+b64}}
                - {{path: /etc/owned, content: x, owner_string: "alice:users"}}
                - {{path: /etc/by-id, content: x, owner: 0, group: 100}}
                - {{path: /etc/log, content: "line\\n", append: true}}
        """)  # fmt: skip
    assert run_stages(root, "boot") == 0
    alice = int((root / "etc/passwd").read_text().splitlines()[1].split(":")[2])
    assert (root / "etc/plain").read_text() == "plain\n"
    assert (root / "etc/plain").stat().st_mode & 0o777 == 0o600
    assert (root / "etc/b64").read_bytes() == b"b64"
    assert (root / "etc/gz").read_bytes() == b"zipped\n"
    assert (root / "etc/owned").stat().st_uid == alice
    assert (root / "etc/owned").stat().st_gid == 100
    assert (root / "etc/by-id").stat().st_gid == 100
    data = (root / "srv/data").stat()
    assert (data.st_mode & 0o777, data.st_uid, data.st_gid) == (0o750, alice, 100)
    assert run_stages(root, "boot") == 0  # append is not appended twice by a second run
    assert (root / "etc/log").read_text() == "line\n"


def test_users_with_groups_shell_home_hash_lock_keys_primary_group_and_system(root: Path):
    write(
        root,
        "oem/10.yaml",
        """
        stages:
          boot:
            - users:
                alice:
                  groups: [adm, video]
                  shell: /bin/bash
                  homedir: /srv/alice
                  passwd: "$6$salt$hash"
                  ssh_authorized_keys: [ssh-ed25519 AAAAalice alice@x]
                bob:
                  primary_group: staff
                  lock_passwd: true
                svc:
                  system: true
        """,
    )
    assert run_stages(root, "boot") == 0
    passwd = {
        line.split(":")[0]: line.split(":")
        for line in (root / "etc/passwd").read_text().splitlines()
    }
    groups = {
        line.split(":")[0]: line.split(":")
        for line in (root / "etc/group").read_text().splitlines()
    }
    shadow = {
        line.split(":")[0]: line.split(":")
        for line in (root / "etc/shadow").read_text().splitlines()
    }
    assert passwd["alice"][5:7] == ["/srv/alice", "/bin/bash"]
    assert "alice" in groups["adm"][3].split(",") and "alice" in groups["video"][3].split(",")
    assert shadow["alice"][1] == "$6$salt$hash"
    keys = root / "srv/alice/.ssh/authorized_keys"
    assert keys.read_text() == "ssh-ed25519 AAAAalice alice@x\n"
    assert keys.stat().st_mode & 0o777 == 0o600 and keys.stat().st_uid == int(passwd["alice"][2])
    assert passwd["bob"][3] == groups["staff"][2]
    assert shadow["bob"][1].startswith("!")
    assert int(passwd["svc"][2]) < 1000 and not (root / "home/svc").exists()


def test_keys_hostname_hosts_dns_environment_sysctl_modules_time(root: Path, capsys):
    write(
        root,
        "oem/10.yaml",
        """
        stages:
          boot:
            - hostname: node1.example.org
              hosts: {10.0.2.2: [gateway, gw]}
              dns: {nameservers: [10.0.2.3], search: [example.org]}
              environment: {HTTP_PROXY: "http://10.0.2.2:3128", EMPTY: ""}
              sysctl: {vm.swappiness: 10}
              modules: [br_netfilter]
              timesyncd: {NTP: 10.0.2.2}
              timezone: Europe/Berlin
              ssh_authorized_keys: {root: [ssh-ed25519 AAAAroot r@x, "github:someone"]}
            - environment_file: /etc/profile.d/proxy.sh
              environment: {NO_PROXY: localhost}
        """,
    )
    assert run_stages(root, "boot") == 0
    assert (root / "etc/hostname").read_text() == "node1.example.org\n"
    hosts = (root / "etc/hosts").read_text().splitlines()
    assert "10.0.2.2\tgateway\tgw" in hosts and "127.0.1.1\tnode1.example.org\tnode1" in hosts
    assert "nameserver 10.0.2.3" in (root / "etc/resolv.conf").read_text()
    assert "search example.org" in (root / "etc/resolv.conf").read_text()
    assert (root / "etc/environment").read_text() == "HTTP_PROXY=http://10.0.2.2:3128\nEMPTY=\n"
    assert (root / "etc/profile.d/proxy.sh").read_text() == "NO_PROXY=localhost\n"
    assert (root / "etc/sysctl.d/90-cos-cloud-config.conf").read_text() == "vm.swappiness = 10\n"
    assert (root / "etc/modules-load.d/90-cos-cloud-config.conf").read_text() == "br_netfilter\n"
    assert (
        "NTP=10.0.2.2"
        in (root / "etc/systemd/timesyncd.conf.d/90-cos-cloud-config.conf").read_text()
    )
    assert os.readlink(root / "etc/localtime") == "/usr/share/zoneinfo/Europe/Berlin"
    assert (root / "root/.ssh/authorized_keys").read_text() == "ssh-ed25519 AAAAroot r@x\n"
    out = capsys.readouterr().out
    assert "github:someone" in out and "needs the internet" in out


def test_systemctl_enables_masks_and_overrides_in_a_target_root(root: Path):
    write(
        root,
        "usr/lib/systemd/system/web.service",
        """
        [Service]
        ExecStart=/bin/true
        [Install]
        WantedBy=multi-user.target
        """,
    )
    write(root, "usr/lib/systemd/system/noisy.service", "[Service]\nExecStart=/bin/true\n")
    write(
        root,
        "oem/10.yaml",
        """
        stages:
          after-install:
            - systemctl:
                enable: [web.service]
                mask: [noisy.service]
                overrides:
                  - service: web
                    content: "[Service]\\nEnvironment=PORT=8080\\n"
        """,
    )
    assert run_stages(root, "after-install") == 0
    assert (root / "etc/systemd/system/multi-user.target.wants/web.service").is_symlink()
    assert os.readlink(root / "etc/systemd/system/noisy.service") == "/dev/null"
    override = root / "etc/systemd/system/web.service.d/override-cos.conf"
    assert override.read_text() == "[Service]\nEnvironment=PORT=8080\n"


def test_commands_run_inside_the_root_and_report_a_failure_with_status_and_output(
    root: Path, records: Path
):
    write(
        root,
        "oem/10.yaml",
        """
        stages:
          network:
            - commands:
                - echo first > /ran-first
                - [sh, -c, "echo 'no such thing' >&2; exit 3"]
                - echo third > /ran-third
        """,
    )
    assert run_stages(root, "network") == 0  # not strict: reported, not fatal
    assert (root / "ran-first").exists() and (root / "ran-third").exists()
    record = yaml.safe_load((records / "network.json").read_text())
    assert record["failed"] == 1
    assert "exit status 3" in record["errors"][0] and "no such thing" in record["errors"][0]
    assert run_stages(root, "network", strict=True) == 1


def test_layout_refuses_a_target_root_and_datasource_names_what_needs_a_network(
    root: Path, records
):
    write(
        root,
        "oem/10.yaml",
        """
        stages:
          fs:
            - layout: {device: {label: COS_PERSISTENT}, expand_partition: {size: 0}}
            - datasource: {providers: [aws, nocloud]}
        """,
    )
    run_stages(root, "fs")
    record = yaml.safe_load((records / "fs.json").read_text())
    assert any("not on a target root" in e for e in record["errors"])
    assert any("'aws'" in w and "not supported" in w for w in record["warnings"])


# ---------------------------------------------------------------- order, if, depends_on


def test_sources_in_order_steps_in_order_and_depends_on(root: Path):
    log = "echo {} >> /order"
    write(
        root, "system/oem/50.yaml", f"stages: {{boot: [{{commands: ['{log.format('system')}']}}]}}"
    )
    write(root, "oem/20.yml", f"stages: {{boot: [{{commands: ['{log.format('oem-20')}']}}]}}")
    write(
        root,
        "oem/10.yaml",
        f"""
        stages:
          boot.before:
            - commands: ["{log.format("before")}"]
          boot:
            - name: late
              depends_on: early
              commands: ["{log.format("late")}"]
            - name: early
              commands: ["{log.format("early")}"]
          boot.after:
            - commands: ["{log.format("after")}"]
        """,
    )
    write(
        root,
        "usr/local/cloud-config/1.yaml",
        f"stages: {{boot: [{{commands: ['{log.format('local')}']}}]}}",
    )
    assert run_stages(root, "boot") == 0
    assert (root / "order").read_text().split() == [
        "before",
        "system",
        "early",
        "late",
        "oem-20",
        "local",
        "after",
    ]


def test_if_false_skips_a_step_and_a_failed_dependency_skips_its_dependents(
    root: Path, records, capsys
):
    write(
        root,
        "oem/10.yaml",
        """
        stages:
          boot:
            - name: guarded
              if: test -e /nothing-here
              files: [{path: /etc/guarded, content: x}]
            - name: breaks
              commands: ["exit 1"]
            - name: needs-breaks
              depends_on: [breaks]
              files: [{path: /etc/dependent, content: x}]
            - name: circle-a
              depends_on: circle-b
              files: [{path: /etc/a, content: x}]
            - name: circle-b
              depends_on: circle-a
              files: [{path: /etc/b, content: x}]
            - depends_on: nobody
              files: [{path: /etc/orphan, content: x}]
            - name: fine
              if: test -e /etc/passwd
              files: [{path: /etc/fine, content: x}]
        """,
    )
    run_stages(root, "boot")
    assert not (root / "etc/guarded").exists() and not (root / "etc/dependent").exists()
    assert not (root / "etc/orphan").exists()
    assert (root / "etc/fine").exists()
    errors = "\n".join(yaml.safe_load((records / "boot.json").read_text())["errors"])
    assert "depends on 'breaks', which failed" in errors
    assert "forms a cycle" in errors
    assert "depends_on 'nobody': no step of this stage has that name" in errors
    assert "skipped (if: test -e /nothing-here is false)" in capsys.readouterr().out


# ---------------------------------------------------------------- idempotence


def test_running_a_stage_twice_gives_the_same_system(root: Path):
    write(
        root,
        "oem/10.yaml",
        """
        #cloud-config
        hostname: twice
        users:
          - name: alice
            groups: adm
            ssh_authorized_keys: [ssh-ed25519 AAAAa a@x]
        ssh_authorized_keys: [ssh-ed25519 AAAAr r@x]
        disable_root: true
        write_files:
          - {path: /etc/motd, content: hi, append: true}
        stages:
          boot:
            - environment: {A: "1"}
              hosts: {10.0.0.1: [one]}
        """,
    )
    assert run_stages(root, "boot") == 0
    first = tree_digest(root)
    assert run_stages(root, "boot") == 0
    assert tree_digest(root) == first
    assert [x.split(":")[0] for x in (root / "etc/passwd").read_text().splitlines()] == [
        "root",
        "alice",
    ]
    assert (root / "root/.ssh/authorized_keys").read_text().count("AAAAr") == 1


# ---------------------------------------------------------------- #cloud-config


def stage_of_each_key(root: Path, text: str) -> dict[str, list[str]]:
    loaded = sources.Loaded()
    sources.parse_user_data(textwrap.dedent(text).encode(), "user-data", loaded)
    found = {}
    for stage in ("boot.before", "boot", "network"):
        for step in plan.steps_for(stage, loaded):
            found.setdefault(step.origin.split(": ")[-1], []).append(stage)
    return found


def test_cloud_init_keys_land_in_cloud_init_s_module_order(root: Path):
    stages = stage_of_each_key(
        root,
        """
        #cloud-config
        bootcmd: [echo boot]
        write_files: [{path: /a, content: a}, {path: /b, content: b, defer: true}]
        hostname: h
        users: [default]
        runcmd: [echo run]
        """,
    )
    assert stages == {
        "bootcmd": ["boot.before"],
        "write_files": ["boot", "network"],
        "hostname": ["boot"],
        "runcmd": ["network"],
    }


def test_a_cloud_init_user_data_does_what_cloud_init_does(root: Path, capsys):
    write(
        root,
        "oem/90.yaml",
        """
        #cloud-config
        hostname: web
        fqdn: web.example.org
        manage_etc_hosts: true
        timezone: Europe/Berlin
        ntp: {servers: [10.0.2.2]}
        ssh_pwauth: false
        users:
          - default
          - name: ops
            groups: "adm, video"
            sudo: ALL=(ALL) NOPASSWD:ALL
            hashed_passwd: "$6$s$opshash"
            lock_passwd: false
            ssh_authorized_keys: [ssh-ed25519 AAAAops ops@x]
          - name: tmp
            plain_text_passwd: secret
          - name: daemon1
            system: true
            shell: /usr/sbin/nologin
        chpasswd:
          expire: false
          users:
            - {name: tmp, password: "$6$s$tmphash", type: hash}
        write_files:
          - {path: /home/ops/notes, content: mine, owner: "ops:ops", defer: true}
        runcmd:
          - cd /home/ops
          - [sh, -c, "pwd > /runcmd-cwd"]
        packages: [nginx]
        not_a_key: 1
        """,
    )
    assert run_stages(root, "boot", "network") == 0
    passwd = {
        line.split(":")[0]: line.split(":")
        for line in (root / "etc/passwd").read_text().splitlines()
    }
    shadow = {
        line.split(":")[0]: line.split(":")
        for line in (root / "etc/shadow").read_text().splitlines()
    }
    groups = {
        line.split(":")[0]: line.split(":")
        for line in (root / "etc/group").read_text().splitlines()
    }
    assert (root / "etc/hostname").read_text() == "web\n"
    assert "127.0.1.1\tweb.example.org\tweb" in (root / "etc/hosts").read_text().splitlines()
    assert "127.0.0.1\tlocalhost" in (root / "etc/hosts").read_text().splitlines()
    assert "ops ALL=(ALL) NOPASSWD:ALL" in (root / "etc/sudoers.d/90-cloud-init-users").read_text()
    assert shadow["ops"][1] == "$6$s$opshash" and "ops" in groups["video"][3]
    assert shadow["tmp"][1] == "$6$s$tmphash"  # chpasswd's hash; the clear text refused
    assert int(passwd["daemon1"][2]) < 1000
    assert (root / "home/ops/notes").stat().st_uid == int(
        passwd["ops"][2]
    )  # deferred: owner exists
    assert (root / "runcmd-cwd").read_text() == "/home/ops\n"  # one script: the cd holds
    assert (
        "PasswordAuthentication no"
        in (root / "etc/ssh/sshd_config.d/50-cloud-init.conf").read_text()
    )
    out = capsys.readouterr().out
    assert "plain_text_passwd refused" in out
    assert (
        "packages: packages come with the image" in out and "not_a_key: unknown key; ignored" in out
    )


def test_lock_passwd_is_cloud_init_s_default_and_disable_root_refuses_root_logins(root: Path):
    write(
        root,
        "oem/90.yaml",
        """
        #cloud-config
        users: [{name: locked}]
        ssh_authorized_keys: [ssh-ed25519 AAAAr r@x]
        disable_root: true
        """,
    )
    assert run_stages(root, "boot") == 0
    assert any(
        line.startswith("locked:!") for line in (root / "etc/shadow").read_text().splitlines()
    )
    keys = (root / "root/.ssh/authorized_keys").read_text()
    assert keys.startswith("no-port-forwarding") and "Please login as" in keys and "AAAAr" in keys


def test_mime_multipart_parts_add_up_and_scripts_run_at_the_network_stage(root: Path):
    text = textwrap.dedent("""\
        Content-Type: multipart/mixed; boundary="BOUNDARY"
        MIME-Version: 1.0

        --BOUNDARY
        Content-Type: text/cloud-config; charset="us-ascii"

        #cloud-config
        users: [{name: one}]
        --BOUNDARY
        Content-Type: text/cloud-config; charset="us-ascii"

        users: [{name: two}]
        hostname: second-wins
        --BOUNDARY
        Content-Type: text/x-shellscript; charset="us-ascii"

        #!/bin/sh
        echo script > /script-ran
        --BOUNDARY--
        """)
    loaded = sources.Loaded()
    sources.parse_user_data(gzip.compress(text.encode()), "user-data", loaded)
    assert [d.origin for d in loaded.documents] == [
        "user-data (part 1, text/cloud-config)", "user-data (part 2, text/cloud-config)",
        "user-data (part 3, text/x-shellscript)",
    ]  # fmt: skip
    for stage in ("boot", "network"):
        for step in plan.steps_for(stage, loaded):
            runner.run_step(
                Context(root=root, stage=stage), step, runner.Record(stage, str(root)), set()
            )
    assert {"one", "two"} <= {
        line.split(":")[0] for line in (root / "etc/passwd").read_text().splitlines()
    }
    assert (root / "script-ran").read_text() == "script\n"


def test_nocloud_is_kept_and_a_new_instance_id_replaces_the_kept_copy(root: Path, tmp_path: Path):
    volume = tmp_path / "cidata"
    volume.mkdir()
    (volume / "meta-data").write_text("instance-id: i-1\nlocal-hostname: from-meta\n")
    (volume / "user-data").write_text(
        "#cloud-config\nwrite_files: [{path: /etc/one, content: '1'}]\n"
    )
    errors: list[str] = []
    seed = nocloud.refresh(root, errors, volume=volume)
    assert seed.instance_id == "i-1" and not seed.new_instance and errors == []
    kept = seed.where
    assert (kept / "user-data").exists()
    assert nocloud.refresh(root, errors, volume=None).where == kept  # the volume is gone
    (volume / "meta-data").write_text("instance-id: i-2\n")
    (volume / "user-data").write_text("#cloud-config\nhostname: two\n")
    seed = nocloud.refresh(root, errors, volume=volume)
    assert seed.new_instance and "write_files" not in (kept / "user-data").read_text()


def test_vendor_data_applies_first_and_user_data_can_turn_it_off(tmp_path: Path):
    seed = tmp_path / "seed"
    seed.mkdir()
    (seed / "vendor-data").write_text("#cloud-config\nhostname: vendor\nruncmd: [echo vendor]\n")
    (seed / "user-data").write_text("#cloud-config\nhostname: user\n")
    loaded = sources.Loaded()
    sources.add_seed(loaded, nocloud.Seed(seed, "i-1", {}))
    steps = plan.steps_for("boot", loaded)
    assert [s.fields["hostname"] for s in steps] == ["vendor", "user"]  # the user's wins
    (seed / "user-data").write_text(
        "#cloud-config\nvendor_data: {enabled: false}\nhostname: user\n"
    )
    loaded = sources.Loaded()
    sources.add_seed(loaded, nocloud.Seed(seed, "i-1", {}))
    assert [s.fields["hostname"] for s in plan.steps_for("boot", loaded)] == ["user"]
    assert plan.steps_for("network", loaded) == []


# ---------------------------------------------------------------- broken input


def test_broken_input_is_reported_with_file_line_and_path_and_the_rest_applies(root: Path, records):
    write(root, "oem/10-broken.yaml", "stages:\n  boot:\n    - files: [{path: /x\n")
    write(
        root,
        "oem/20-types.yaml",
        """
        #cloud-config
        users:
          - name: good
          - name: bad
            groups: 5
        write_files:
          - {path: /etc/bad, content: "!!", encoding: b64}
          - {path: /etc/good, content: fine}
        stages:
          boot:
            - files: not-a-list
            - files: [{path: /etc/from-stage, content: ok, encoding: rot13}]
            - commands: ["exit 7"]
          nonsense: []
        """,
    )
    write(root, "oem/30-good.yaml", "stages: {boot: [{files: [{path: /etc/still, content: ok}]}]}")
    write(root, "oem/40-list.yaml", "- just\n- a list\n")
    assert run_stages(root, "boot") == 0
    errors = "\n".join(yaml.safe_load((records / "boot.json").read_text())["errors"])
    assert f"{root}/oem/10-broken.yaml: line 4, column 1: malformed YAML" in errors
    assert (
        f"{root}/oem/20-types.yaml: users[1].groups: expected a list or a string, got 5" in errors
    )
    assert "stages.boot[0].files: expected a list, got 'not-a-list'" in errors
    assert "unknown encoding 'rot13'" in errors
    assert "/etc/bad: content is not valid b64" in errors
    assert "exit status 7" in errors
    assert "stages.nonsense: unknown stage" in errors
    assert f"{root}/oem/40-list.yaml: expected a mapping at the top level, got list" in errors
    assert (root / "etc/still").read_text() == "ok" and (root / "etc/good").read_text() == "fine"
    assert (
        "good:" in (root / "etc/passwd").read_text()
        and "bad:" not in (root / "etc/passwd").read_text()
    )


def test_strict_mode_from_a_config_fails_the_stage(root: Path):
    write(root, "oem/10.yaml", "strict: true\nstages: {boot: [{commands: ['exit 1']}]}\n")
    assert run_stages(root, "boot") == 1


def test_validate_prints_every_problem_and_fails(tmp_path: Path, capsys):
    bad = write(
        tmp_path, "bad.yaml", "#cloud-config\nusers: [{name: x, groups: {a: 1}}]\nruncmd: echo\n"
    )
    good = write(tmp_path, "good.yaml", "#cloud-config\nruncmd: [echo hi]\n")
    assert runner.main(["validate", str(bad), str(good)]) == 1
    err = capsys.readouterr().err
    assert f"{bad}: users[0].groups: expected a list or a string" in err
    assert f"{bad}: runcmd: expected a list, got 'echo'" in err
    assert runner.main(["validate", str(good)]) == 0


def test_dry_run_changes_nothing(root: Path, capsys):
    write(
        root,
        "oem/10.yaml",
        "#cloud-config\nhostname: dry\nwrite_files: [{path: /etc/dry, content: x}]\n",
    )
    before = tree_digest(root)
    assert runner.run(["boot"], root, [], False, dry_run=True, strict=False, sources_root=root) == 0
    assert tree_digest(root) == before
    assert "would apply files" in capsys.readouterr().out


def test_cos_setup_names_a_file_or_reports_it_missing(root: Path):
    write(root, "srv/setup.yaml", "#cloud-config\nhostname: from-setup\n")
    loaded = sources.load(root, cmdline="quiet cos.setup=/srv/setup.yaml")
    assert loaded.documents[-1].data == {"hostname": "from-setup"}
    loaded = sources.load(root, cmdline="cos.setup=/srv/missing.yaml")
    assert "/srv/missing.yaml (cos.setup=): cannot read it" in loaded.errors[0]


def test_a_wrong_encoding_writes_nothing_and_names_the_file(root: Path):
    with pytest.raises(StepError, match="content is not valid b64"):
        from cos_cloud_config.actions.files import write_file

        write_file(Context(root=root), {"path": "/etc/x", "content": "!!", "encoding": "b64"})
    assert not (root / "etc/x").exists()


def test_an_install_hook_of_the_running_system_acts_on_the_target_root(root: Path, tmp_path: Path):
    live = tmp_path / "live"
    write(live, "oem/10.yaml", """
        stages:
          after-install:
            - files: [{path: /etc/installed-by-hook, content: target}]
              users: {admin: {groups: [adm]}}
        """)  # fmt: skip
    status = runner.run(["after-install"], root, [], False, False, False, sources_root=live)
    assert status == 0
    assert (root / "etc/installed-by-hook").read_text() == "target"
    assert "admin:" in (root / "etc/passwd").read_text()
    assert not (live / "etc/installed-by-hook").exists()


def test_target_root_is_the_image_as_it_boots_with_oem_and_persistent_writable(tmp_path: Path):
    from cos.stages import target_root

    tree = tmp_path / "tree"
    for folder in ("etc", "oem", "usr/local"):
        (tree / folder).mkdir(parents=True)
    (tree / "etc/os-release").write_text("ID=cos\n")
    image = tmp_path / "slot.img"
    subprocess.run(["mke2fs", "-q", "-t", "ext4", "-d", str(tree), str(image), "16M"], check=True)
    before = hashlib.sha256(image.read_bytes()).hexdigest()
    oem, persistent = tmp_path / "oem", tmp_path / "persistent"
    oem.mkdir()
    persistent.mkdir()
    with target_root(image, oem, persistent) as root:
        assert (root / "etc/os-release").read_text() == "ID=cos\n"
        (root / "etc/hook").write_text("gone at boot")
        (root / "oem/90_hook.yaml").write_text("hostname: x\n")
        (root / "usr/local/data").write_text("kept")
    assert (oem / "90_hook.yaml").exists() and (persistent / "data").read_text() == "kept"
    assert hashlib.sha256(image.read_bytes()).hexdigest() == before  # the image is untouched
    assert not root.exists()


def test_cos_setup_fetches_a_url_and_names_one_that_does_not_answer(root: Path, tmp_path: Path):
    import functools
    import http.server
    import threading

    served = tmp_path / "served"
    write(served, "setup.yaml", "#cloud-config\nhostname: from-url\n")
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(served))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_port}/setup.yaml"
        loaded = sources.load(root, cmdline=f"cos.setup={url}")
        assert loaded.documents[-1].data == {"hostname": "from-url"}
        loaded = sources.load(root, cmdline=f"cos.setup={url.replace('setup', 'missing')}")
        assert "missing.yaml (cos.setup=): cannot read it" in loaded.errors[0]
    finally:
        server.shutdown()
        server.server_close()
