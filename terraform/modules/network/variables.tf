variable "name" {
  description = "Prefix of the resources this module creates."
  type        = string
}

variable "vm_names" {
  description = "Names of the VMs, in a stable order (port i goes to VM i)."
  type        = list(string)
}

variable "ssh_bind_address" {
  description = "Host address forwarded ports are bound to."
  type        = string
}

variable "ssh_port_base" {
  description = "Host port forwarded to the first VM's SSH."
  type        = number
}

variable "forward_metrics" {
  description = "Also forward guest port 9100 (metrics)."
  type        = bool
  default     = false
}

variable "metrics_port_base" {
  description = "Host port forwarded to the first VM's metrics port."
  type        = number
  default     = 23200
}

variable "machine_type" {
  description = "QEMU machine type; decides the NIC device model (PCI on q35, MMIO on microvm)."
  type        = string
}

variable "nic_pci_slot" {
  description = "PCI slot of the user-mode NIC on q35, clear of the slots libvirt assigns itself."
  type        = string
  default     = "0x10"
}

variable "create_bridge_network" {
  description = "Create an isolated libvirt network as well."
  type        = bool
  default     = false
}

variable "bridge_cidr" {
  description = "Address range of the optional isolated network."
  type        = string
  default     = "192.168.232.0/24"
}
