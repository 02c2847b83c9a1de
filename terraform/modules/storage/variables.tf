variable "name" {
  description = "Prefix of the pool and volumes."
  type        = string
}

variable "pool_path" {
  description = "Directory of the pool on the libvirt host."
  type        = string
}

variable "base_image_path" {
  description = "qcow2 root filesystem image uploaded as the backing volume."
  type        = string
}

variable "vm_names" {
  description = "VMs that get a root overlay and a scratch disk."
  type        = list(string)
}

variable "scratch_disk_gb" {
  description = "Size of each scratch disk, GiB."
  type        = number
}
