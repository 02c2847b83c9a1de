output "libvirt_domain" {
  description = "Name of the libvirt domain."
  value       = libvirt_domain.vm.name
}

output "id" {
  description = "libvirt UUID of the domain."
  value       = libvirt_domain.vm.id
}

output "console_path" {
  description = "Serial console log on the libvirt host."
  value       = var.console_path
}
