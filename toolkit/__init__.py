"""Host-side build logic of the cOS toolkit: packages, apt repository, rootfs, OCI, disk, ISO."""
