variable "name" {
  description = "libvirt domain name."
  type        = string
}

variable "domain_type" {
  description = "\"kvm\" or \"qemu\" (TCG)."
  type        = string
}

variable "machine_type" {
  description = "QEMU machine type (q35, or microvm where libvirt supports it)."
  type        = string
}

variable "memory_mb" {
  description = "Memory, MiB."
  type        = number
}

variable "vcpus" {
  description = "vCPUs."
  type        = number
}

variable "kernel_path" {
  description = "Kernel on the libvirt host."
  type        = string
}

variable "initrd_path" {
  description = "Initramfs on the libvirt host."
  type        = string
}

variable "kernel_cmdline" {
  description = "Kernel command line as key => value (\"\" for a bare flag)."
  type        = map(string)
}

variable "root_volume_id" {
  description = "Root overlay volume (/dev/vda)."
  type        = string
}

variable "scratch_volume_id" {
  description = "Scratch volume (/dev/vdb)."
  type        = string
}

variable "console_path" {
  description = "File on the libvirt host receiving the serial console."
  type        = string
}

variable "qemu_args" {
  description = "Extra QEMU arguments (the user-mode NIC)."
  type        = list(string)
}
