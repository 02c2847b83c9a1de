variable "enabled" {
  description = "Write the target file."
  type        = bool
}

variable "environment" {
  description = "Environment label."
  type        = string
}

variable "output_dir" {
  description = "Local directory of the target file."
  type        = string
}

variable "targets" {
  description = "VM name => {address, metrics_port, test_domain, console_path}."
  type = map(object({
    address      = string
    metrics_port = number
    test_domain  = string
    console_path = string
  }))
}
