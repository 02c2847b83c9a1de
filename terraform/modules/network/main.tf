# Networking of the fleet. Guests use QEMU user-mode networking (10.0.2.15, gateway 10.0.2.2, as the
# pytest-vexfs image configures it) with SSH forwarded to a host port per VM, so many VMs can share
# one host without address planning. libvirt has no user-mode network object: the netdev and NIC are
# passed as <qemu:commandline> arguments, which this module renders. An optional isolated libvirt
# network is created for images that bring up a second NIC by DHCP.

terraform {
  required_providers {
    libvirt = {
      source = "dmacvicar/libvirt"
    }
  }
}

locals {
  index = { for i, name in var.vm_names : name => i }

  ssh_ports     = { for name, i in local.index : name => var.ssh_port_base + i }
  metrics_ports = var.forward_metrics ? { for name, i in local.index : name => var.metrics_port_base + i } : {}

  hostfwd = {
    for name, i in local.index : name => join(",", compact([
      "hostfwd=tcp:${var.ssh_bind_address}:${local.ssh_ports[name]}-:22",
      var.forward_metrics ? "hostfwd=tcp:${var.ssh_bind_address}:${local.metrics_ports[name]}-:9100" : "",
    ]))
  }

  # q35 needs an explicit PCI slot, or QEMU's NIC collides with the slots libvirt assigns itself.
  nic_device = (var.machine_type == "microvm" ? "virtio-net-device,netdev=vexfsnet"
  : "virtio-net-pci,netdev=vexfsnet,bus=pcie.0,addr=${var.nic_pci_slot}")

  qemu_args = {
    for name in var.vm_names : name => [
      "-netdev", "user,id=vexfsnet,${local.hostfwd[name]}",
      "-device", local.nic_device,
    ]
  }
}

resource "libvirt_network" "isolated" {
  count     = var.create_bridge_network ? 1 : 0
  name      = "${var.name}-net"
  mode      = "none"
  addresses = [var.bridge_cidr]
  autostart = true
  dhcp {
    enabled = true
  }
}
