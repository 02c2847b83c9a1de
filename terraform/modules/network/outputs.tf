output "ssh_ports" {
  description = "VM name => host port forwarded to its SSH server."
  value       = local.ssh_ports
}

output "metrics_ports" {
  description = "VM name => host port forwarded to its metrics port (empty when not forwarded)."
  value       = local.metrics_ports
}

output "qemu_args" {
  description = "VM name => extra QEMU arguments creating its user-mode NIC."
  value       = local.qemu_args
}

output "network_id" {
  description = "Id of the optional isolated libvirt network, or null."
  value       = var.create_bridge_network ? libvirt_network.isolated[0].id : null
}
