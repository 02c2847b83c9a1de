# Inputs of the pytest-vexfs test fleet. Every environment file under environments/ sets these.
# The resource budgets are checked here, before any provider is contacted, so a plan that would
# exceed them fails at once with the numbers.

variable "environment" {
  description = "Name of the environment (dev, test, ci, staging); part of every resource name."
  type        = string
  validation {
    condition     = contains(["dev", "test", "ci", "staging"], var.environment)
    error_message = "environment must be one of dev, test, ci, staging (got \"${var.environment}\")."
  }
}

variable "name_prefix" {
  description = "Prefix of every libvirt domain, volume and pool this configuration creates."
  type        = string
  default     = "vexfs"
  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{0,30}$", var.name_prefix))
    error_message = "name_prefix must be lowercase letters, digits and '-', starting with a letter."
  }
}

variable "libvirt_uri" {
  description = "libvirt connection URI, e.g. qemu:///system or qemu+ssh://user@host/system."
  type        = string
  default     = "qemu:///system"
}

variable "vm_counts" {
  description = "Number of VMs per test domain."
  type        = map(number)
  validation {
    condition = alltrue([
      for d in keys(var.vm_counts) :
      contains(["kernel_module", "filesystem_ops", "vector_ops", "performance", "safety", "integration"], d)
    ])
    error_message = "vm_counts keys must be test domains (kernel_module, filesystem_ops, vector_ops, performance, safety, integration); got ${join(", ", keys(var.vm_counts))}."
  }
  validation {
    condition     = alltrue([for n in values(var.vm_counts) : n >= 0 && floor(n) == n])
    error_message = "vm_counts values must be whole numbers >= 0."
  }
  validation {
    condition     = sum(concat([0], values(var.vm_counts))) * var.vm_memory_mb <= var.max_total_memory_gb * 1024
    error_message = "Memory budget exceeded: ${sum(concat([0], values(var.vm_counts)))} VMs x ${var.vm_memory_mb} MiB = ${sum(concat([0], values(var.vm_counts))) * var.vm_memory_mb} MiB > max_total_memory_gb ${var.max_total_memory_gb} GiB (${var.max_total_memory_gb * 1024} MiB)."
  }
  validation {
    condition     = sum(concat([0], values(var.vm_counts))) * var.vm_cpus <= var.max_total_cpus
    error_message = "CPU budget exceeded: ${sum(concat([0], values(var.vm_counts)))} VMs x ${var.vm_cpus} vCPUs = ${sum(concat([0], values(var.vm_counts))) * var.vm_cpus} > max_total_cpus ${var.max_total_cpus}."
  }
  validation {
    condition     = sum(concat([0], values(var.vm_counts))) * (var.vm_disk_gb + var.scratch_disk_gb) <= var.max_total_disk_gb
    error_message = "Disk budget exceeded: ${sum(concat([0], values(var.vm_counts)))} VMs x (${var.vm_disk_gb} GiB root + ${var.scratch_disk_gb} GiB scratch) = ${sum(concat([0], values(var.vm_counts))) * (var.vm_disk_gb + var.scratch_disk_gb)} GiB > max_total_disk_gb ${var.max_total_disk_gb} GiB."
  }
}

variable "vm_memory_mb" {
  description = "Memory of each VM in MiB."
  type        = number
  default     = 1024
  validation {
    condition     = var.vm_memory_mb >= 256
    error_message = "vm_memory_mb must be at least 256 (got ${var.vm_memory_mb})."
  }
}

variable "vm_cpus" {
  description = "vCPUs of each VM."
  type        = number
  default     = 1
  validation {
    condition     = var.vm_cpus >= 1
    error_message = "vm_cpus must be at least 1."
  }
}

variable "vm_disk_gb" {
  description = "Space reserved per VM for its copy-on-write root overlay, in GiB (counted against the disk budget)."
  type        = number
  default     = 2
}

variable "scratch_disk_gb" {
  description = "Size of each VM's scratch disk (/dev/vdb, the filesystem under test), in GiB."
  type        = number
  default     = 1
}

variable "max_total_memory_gb" {
  description = "Budget: total memory of all VMs, GiB."
  type        = number
}

variable "max_total_cpus" {
  description = "Budget: total vCPUs of all VMs."
  type        = number
}

variable "max_total_disk_gb" {
  description = "Budget: total disk of all VMs (root overlays + scratch disks), GiB."
  type        = number
}

variable "test_timeout_minutes" {
  description = "Timeout of one domain's test run, in minutes (passed on to pytest and Ansible)."
  type        = number
  validation {
    condition     = var.test_timeout_minutes > 0 && var.test_timeout_minutes <= 1440
    error_message = "test_timeout_minutes must be in 1..1440 (got ${var.test_timeout_minutes})."
  }
}

variable "parallel_test_execution" {
  description = "Whether test domains run at the same time on their VMs."
  type        = bool
  default     = false
}

variable "max_parallel_tests" {
  description = "Upper bound of test processes running at once across the fleet."
  type        = number
  default     = 1
  validation {
    condition     = var.max_parallel_tests >= 1 && (var.parallel_test_execution || var.max_parallel_tests == 1)
    error_message = "max_parallel_tests must be >= 1, and exactly 1 when parallel_test_execution is false (got ${var.max_parallel_tests})."
  }
}

variable "domain_type" {
  description = "libvirt domain type: \"kvm\" (hardware acceleration) or \"qemu\" (TCG emulation)."
  type        = string
  default     = "qemu"
  validation {
    condition     = contains(["kvm", "qemu"], var.domain_type)
    error_message = "domain_type must be kvm or qemu."
  }
}

variable "machine_type" {
  description = "QEMU machine type of the VMs (libvirt renders q35; microvm needs a libvirt that supports it)."
  type        = string
  default     = "q35"
}

variable "kernel_path" {
  description = "Kernel booted directly (vmlinux or bzImage), as a path on the libvirt host."
  type        = string
}

variable "initrd_path" {
  description = "Initramfs that loads the virtio and ext4 drivers, as a path on the libvirt host."
  type        = string
}

variable "base_image_path" {
  description = "qcow2 root filesystem image; uploaded once into the pool and used as backing file of each VM's overlay."
  type        = string
}

variable "kernel_cmdline_extra" {
  description = "Extra kernel command line parameters (key = value; value \"\" for a bare flag)."
  type        = map(string)
  default     = {}
}

variable "storage_pool_path" {
  description = "Directory on the libvirt host for this environment's storage pool."
  type        = string
  default     = "/var/lib/libvirt/vexfs"
}

variable "console_log_dir" {
  description = "Directory on the libvirt host receiving each VM's serial console log."
  type        = string
  default     = "/var/log/libvirt/vexfs"
}

variable "ssh_address" {
  description = "Address the test runner uses to reach forwarded SSH ports (the libvirt host as the runner sees it)."
  type        = string
  default     = "127.0.0.1"
}

variable "ssh_bind_address" {
  description = "Host address QEMU binds forwarded ports to; 127.0.0.1 keeps SSH on loopback."
  type        = string
  default     = "127.0.0.1"
}

variable "ssh_port_base" {
  description = "First host port forwarded to guest SSH; VM number i gets ssh_port_base + i."
  type        = number
  default     = 22200
  validation {
    condition     = var.ssh_port_base >= 1024 && var.ssh_port_base <= 65000
    error_message = "ssh_port_base must be in 1024..65000."
  }
}

variable "ssh_user" {
  description = "User the test runner logs in as."
  type        = string
  default     = "root"
}

variable "ssh_public_key_path" {
  description = "Public key put on each guest's kernel command line (vexfs.key=...)."
  type        = string
}

variable "ssh_private_key_path" {
  description = "Matching private key, passed through to the plugin's terraform backend."
  type        = string
}

variable "enable_monitoring" {
  description = "Forward each guest's metrics port and write a Prometheus file_sd target file."
  type        = bool
  default     = false
}

variable "metrics_port_base" {
  description = "First host port forwarded to the guest metrics port (9100)."
  type        = number
  default     = 23200
}

variable "monitoring_output_dir" {
  description = "Local directory receiving the Prometheus file_sd JSON of the fleet."
  type        = string
  default     = "monitoring"
}

variable "create_bridge_network" {
  description = "Also create an isolated libvirt network (for images that configure a second NIC by DHCP)."
  type        = bool
  default     = false
}
