"""The in-guest code (agent, cloud-config runner) on the host, against real tools where
they exist: the agent's grubenv writer must produce what grub-editenv reads."""

import subprocess

import pytest

# the guest packages' sources are on pytest's pythonpath (pyproject.toml)
from cos import grubenv
from cos_cloud_config import nocloud, plan, sources


def editenv(path, *args):
    return subprocess.run(
        ["grub-editenv", str(path), *args], capture_output=True, text=True, check=True
    ).stdout


def test_grubenv_round_trip_with_grub_editenv(tmp_path):
    env = tmp_path / "grubenv"
    editenv(env, "create")
    editenv(env, "set", "saved_entry=passive", "cos_tentative=yes")
    assert grubenv.read(env) == {"saved_entry": "passive", "cos_tentative": "yes"}
    grubenv.update(env, cos_tentative="", next_entry="recovery")
    assert env.stat().st_size == 1024
    listed = dict(line.split("=", 1) for line in editenv(env, "list").split())
    assert listed == {"saved_entry": "passive", "next_entry": "recovery"}


def test_grubenv_rejects_other_files(tmp_path):
    path = tmp_path / "grubenv"
    path.write_text("not an env")
    with pytest.raises(grubenv.GrubEnvError, match="not a GRUB environment block"):
        grubenv.read(path)


def load(text, origin="user-data"):
    loaded = sources.Loaded()
    sources.parse_user_data(text.encode(), origin, loaded)
    return loaded


def test_cloud_config_keys_map_to_stages():
    loaded = load(
        "#cloud-config\nhostname: box\nssh_authorized_keys: [ssh-ed25519 AAA k]\n"
        "runcmd: [echo hi]\nbootcmd: [echo early]\n"
    )
    boot = plan.steps_for("boot", loaded)
    assert boot[0].fields["hostname"] == "box"
    assert boot[1].fields["ssh_authorized_keys"] == {"root": ["ssh-ed25519 AAA k"]}
    assert plan.steps_for("network", loaded)[0].fields["commands"] == ["echo hi"]
    assert plan.steps_for("boot.before", loaded)[0].fields["commands"] == ["echo early"]


def test_stage_syntax_and_meta_data_hostname(tmp_path):
    loaded = load("stages:\n  boot:\n    - name: one\n      commands: [true]\n")
    loaded.seed = nocloud.Seed(tmp_path, "i-1", {"local-hostname": "from-meta"})
    steps = plan.steps_for("boot", loaded)
    assert (steps[0].origin, steps[0].fields) == (
        "NoCloud meta-data local-hostname",
        {"hostname": "from-meta"},
    )
    assert steps[1].name == "one"


def test_broken_yaml_names_file_line_and_column():
    loaded = load("stages:\n  boot:\n    - name: [unclosed\n", origin="/oem/90.yaml")
    assert loaded.errors and loaded.errors[0].startswith("/oem/90.yaml: line 4, column 1:")
    assert "malformed YAML" in loaded.errors[0]


def test_unknown_stage_and_key_are_reported_and_rest_runs():
    loaded = load("stages:\n  bogus: []\n  boot:\n    - name: ok\n      colour: red\n")
    steps = plan.steps_for("boot", loaded)
    assert steps and steps[0].name == "ok" and not steps[0].problems
    errors, _ = plan.document_problems(loaded.documents[0])
    assert any("stages.bogus: unknown stage" in e for e in errors)
    assert any("colour: unknown key; ignored" in w for w in steps[0].warnings)


def test_cidata_volume_found_in_real_blkid_output(tmp_path):
    from cos_cloud_config.nocloud import cidata_in
    from vm.seed import make_seed_iso

    seed = make_seed_iso(
        tmp_path / "seed.iso", hostname="h", public_key="ssh-ed25519 AAAA k", instance_id="i-1"
    )
    other = tmp_path / "other.img"
    subprocess.run(
        ["mkfs.vfat", "-C", "-n", "DATA", str(other), "1024"], check=True, capture_output=True
    )
    listing = subprocess.run(
        ["blkid", "-o", "export", str(other), str(seed)], capture_output=True, text=True, check=True
    ).stdout
    assert cidata_in(listing) == str(seed)
    assert cidata_in(listing.replace("LABEL=cidata", "LABEL=CIDATA")) == str(seed)
    assert cidata_in(listing.replace("LABEL=cidata", "LABEL=other")) is None
