terraform {
  # Validation rules that compare several variables (the resource budgets) need Terraform >= 1.9.
  required_version = ">= 1.9.0"

  required_providers {
    libvirt = {
      source  = "dmacvicar/libvirt"
      version = "0.8.3"
    }
    local = {
      source  = "hashicorp/local"
      version = "2.5.2"
    }
  }
}

provider "libvirt" {
  uri = var.libvirt_uri
}
