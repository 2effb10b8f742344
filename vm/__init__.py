"""cOS VM harness: boots test machines through libvirt and drives them over SSH.

One module per concern:
  accel      KVM-or-TCG probe (cached in build/vm/accel.json) and timeout scaling
  firmware   OVMF / AAVMF code + vars lookup
  images     built image paths ("image not built" errors)
  disks      qcow2 overlays and blank disks
  seed       NoCloud `cidata` ISO (user-data + meta-data)
  sshkey     the harness's ed25519 key (build/vm/ssh/)
  ports      127.0.0.1 port leases, safe across xdist workers
  domain     libvirt domain XML and the ownership tag in <metadata>
  connection libvirt connections (this host's only; "libvirtd is not running" errors)
  console    serial log reading, waits, boot-phase timing
  ssh        paramiko connect / run / SFTP
  health     the post-boot health gate
  commands   succeed, fail, waits, copies: written once against an abstract run()
  supervisor boot supervision: console offsets, timing, guest resets, firmware stalls
  machine    Machine: options, start, shutdown, reboot, power_cut, SSH
  testrun    this process's run id, atexit and signal cleanup
  cleanup    clean_orphans(): what dead runs left behind
  hostcheck  host settings that break or slow the harness (/dev/kvm, seccomp)
  artifacts  console, journal, `cos status`, domain XML of failed tests
  state      machines kept after their command (vm.up, --keep-vms)
  boot_check boot a built image once (invoke build --boot, invoke bench)
  pytest_plugin, tasks: the pytest fixtures and the `invoke vm.*` tasks
"""
