# Disks of the fleet: one directory pool per environment, the base image uploaded into it once, and
# per VM a copy-on-write qcow2 overlay on that base (the root disk, /dev/vda) plus an empty scratch
# disk (/dev/vdb) for the filesystem under test. Destroying the fleet removes only these volumes.

terraform {
  required_providers {
    libvirt = {
      source = "dmacvicar/libvirt"
    }
  }
}

resource "libvirt_pool" "fleet" {
  name = "${var.name}-pool"
  type = "dir"
  target {
    path = var.pool_path
  }
}

resource "libvirt_volume" "base" {
  name   = "${var.name}-base.qcow2"
  pool   = libvirt_pool.fleet.name
  source = var.base_image_path
  format = "qcow2"
}

resource "libvirt_volume" "root" {
  for_each       = toset(var.vm_names)
  name           = "${each.key}-root.qcow2"
  pool           = libvirt_pool.fleet.name
  base_volume_id = libvirt_volume.base.id
  format         = "qcow2"
}

resource "libvirt_volume" "scratch" {
  for_each = toset(var.vm_names)
  name     = "${each.key}-scratch.qcow2"
  pool     = libvirt_pool.fleet.name
  format   = "qcow2"
  size     = var.scratch_disk_gb * 1024 * 1024 * 1024
}
