# Monitoring of the fleet: a Prometheus file_sd target file listing each VM's forwarded metrics port,
# labelled with its test domain (the same label the plugin's metrics use), and the console logs to
# collect. The monitoring.yml Ansible play installs the exporter in the guests.

terraform {
  required_providers {
    local = {
      source = "hashicorp/local"
    }
  }
}

locals {
  file_sd = [
    for name, t in var.targets : {
      targets = ["${t.address}:${t.metrics_port}"]
      labels = {
        vm          = name
        test_domain = t.test_domain
        environment = var.environment
      }
    } if t.metrics_port > 0
  ]
}

resource "local_file" "prometheus_targets" {
  count           = var.enabled ? 1 : 0
  filename        = "${var.output_dir}/vexfs-${var.environment}-targets.json"
  content         = jsonencode(local.file_sd)
  file_permission = "0644"
}
