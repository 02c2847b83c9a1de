output "targets_file" {
  description = "Path of the Prometheus file_sd JSON, or null when disabled."
  value       = var.enabled ? local_file.prometheus_targets[0].filename : null
}

output "console_logs" {
  description = "VM name => console log path on the libvirt host."
  value       = { for name, t in var.targets : name => t.console_path }
}
