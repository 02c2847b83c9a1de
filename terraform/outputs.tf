# The plugin's terraform backend (pytest_vexfs/backends/terraform.py) reads `terraform output -json`
# and relies on the shape of `vms` below; tests/plugin/test_infra_terraform.py checks the two agree.

output "vms" {
  description = "Every VM: name => {address, ssh_port, ssh_user, domain (test domain), libvirt_domain, console_path}."
  value = {
    for name, vm in local.vms : name => {
      address        = var.ssh_address
      ssh_port       = module.network.ssh_ports[name]
      ssh_user       = var.ssh_user
      domain         = vm.test_domain
      libvirt_domain = module.vm[name].libvirt_domain
      console_path   = module.vm[name].console_path
    }
  }
}

# The libvirt host this fleet lives on, in the shape of the plugin's hosts list (--vexfs-hosts FILE reads
# `terraform output -json` saved to a file): name => {uri, pool, capacity}. tests/plugin/test_hosts_list.py
# and test_infra_terraform.py check the shapes agree.
output "vm_hosts" {
  description = "The libvirt host and pool of the fleet as the plugin's hosts list: name => {uri, pool, capacity}."
  value = {
    (local.resource_prefix) = {
      uri      = var.libvirt_uri
      pool     = module.storage.pool_name
      capacity = var.max_parallel_tests
    }
  }
}

output "ssh_private_key_path" {
  description = "Private key that logs in to every VM."
  value       = var.ssh_private_key_path
}

output "environment" {
  description = "Environment this fleet belongs to."
  value       = var.environment
}

output "test_settings" {
  description = "Run settings the test runner applies to this fleet."
  value = {
    test_timeout_minutes    = var.test_timeout_minutes
    parallel_test_execution = var.parallel_test_execution
    max_parallel_tests      = var.max_parallel_tests
  }
}

output "resource_totals" {
  description = "What the fleet uses, next to its budget."
  value = merge(local.totals, {
    max_total_memory_gb = var.max_total_memory_gb
    max_total_cpus      = var.max_total_cpus
    max_total_disk_gb   = var.max_total_disk_gb
  })
}

output "prometheus_targets_file" {
  description = "Prometheus file_sd JSON of the fleet (null when monitoring is disabled)."
  value       = module.monitoring.targets_file
}
