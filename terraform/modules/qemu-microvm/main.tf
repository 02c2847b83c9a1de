# One test VM as a libvirt domain, rendered like the plugin's qemu backend renders it: direct kernel
# boot (kernel, initrd, command line), virtio root overlay and scratch disk, serial console to a file,
# user-mode NIC with SSH forwarded on the host (added through <qemu:commandline> by an XSLT, since the
# provider has no attribute for QEMU pass-through arguments).

terraform {
  required_providers {
    libvirt = {
      source = "dmacvicar/libvirt"
    }
  }
}

resource "libvirt_domain" "vm" {
  name    = var.name
  type    = var.domain_type
  machine = var.machine_type
  memory  = var.memory_mb
  vcpu    = var.vcpus
  running = true

  kernel = var.kernel_path
  initrd = var.initrd_path
  # The provider takes the command line as a list of maps; the key "_" is a bare word.
  cmdline = [for k, v in var.kernel_cmdline : v == "" ? { "_" = k } : { (k) = v }]

  disk {
    volume_id = var.root_volume_id
  }

  disk {
    volume_id = var.scratch_volume_id
  }

  console {
    type        = "file"
    source_path = var.console_path
    target_type = "serial"
    target_port = "0"
  }

  xml {
    xslt = templatefile("${path.module}/qemu-commandline.xsl.tftpl", { args = var.qemu_args })
  }
}
