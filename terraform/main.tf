# pytest-vexfs test fleet: VMs per test domain on one libvirt host, reachable over forwarded SSH.

locals {
  test_domains    = ["kernel_module", "filesystem_ops", "vector_ops", "performance", "safety", "integration"]
  resource_prefix = "${var.name_prefix}-${var.environment}"

  # One entry per VM, ordered by domain then index, so that ports stay stable when counts change
  # in other domains only at the end of the list.
  vm_list = flatten([
    for d in local.test_domains : [
      for i in range(lookup(var.vm_counts, d, 0)) : {
        name        = "${local.resource_prefix}-${replace(d, "_", "-")}-${i}"
        test_domain = d
      }
    ]
  ])
  vm_names = [for vm in local.vm_list : vm.name]
  vms      = { for vm in local.vm_list : vm.name => vm }

  public_key_fields = split(" ", trimspace(file(pathexpand(var.ssh_public_key_path))))
  # The guest init reads the key from the command line with its space replaced by ':'.
  cmdline_key = "${local.public_key_fields[0]}:${local.public_key_fields[1]}"

  totals = {
    vms       = length(local.vm_list)
    memory_mb = length(local.vm_list) * var.vm_memory_mb
    cpus      = length(local.vm_list) * var.vm_cpus
    disk_gb   = length(local.vm_list) * (var.vm_disk_gb + var.scratch_disk_gb)
  }
}

module "network" {
  source = "./modules/network"

  name                  = local.resource_prefix
  vm_names              = local.vm_names
  ssh_bind_address      = var.ssh_bind_address
  ssh_port_base         = var.ssh_port_base
  forward_metrics       = var.enable_monitoring
  metrics_port_base     = var.metrics_port_base
  machine_type          = var.machine_type
  create_bridge_network = var.create_bridge_network
}

module "storage" {
  source = "./modules/storage"

  name            = local.resource_prefix
  pool_path       = "${var.storage_pool_path}/${local.resource_prefix}"
  base_image_path = var.base_image_path
  vm_names        = local.vm_names
  scratch_disk_gb = var.scratch_disk_gb
}

module "vm" {
  source   = "./modules/qemu-microvm"
  for_each = local.vms

  name              = each.key
  domain_type       = var.domain_type
  machine_type      = var.machine_type
  memory_mb         = var.vm_memory_mb
  vcpus             = var.vm_cpus
  kernel_path       = var.kernel_path
  initrd_path       = var.initrd_path
  root_volume_id    = module.storage.root_volume_ids[each.key]
  scratch_volume_id = module.storage.scratch_volume_ids[each.key]
  console_path      = "${var.console_log_dir}/${each.key}.log"
  qemu_args         = module.network.qemu_args[each.key]
  kernel_cmdline = merge({
    "root"         = "/dev/vda"
    "rw"           = ""
    "console"      = "ttyS0"
    "panic"        = "-1"
    "loglevel"     = "7"
    "vexfs.host"   = each.key
    "vexfs.key"    = local.cmdline_key
    "vexfs.domain" = each.value.test_domain
  }, var.kernel_cmdline_extra)
}

module "monitoring" {
  source = "./modules/monitoring"

  enabled     = var.enable_monitoring
  environment = var.environment
  output_dir  = var.monitoring_output_dir
  targets = {
    for name, vm in local.vms : name => {
      address      = var.ssh_address
      metrics_port = lookup(module.network.metrics_ports, name, 0)
      test_domain  = vm.test_domain
      console_path = module.vm[name].console_path
    }
  }
}
