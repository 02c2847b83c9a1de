output "pool_name" {
  description = "Name of the fleet's storage pool."
  value       = libvirt_pool.fleet.name
}

output "root_volume_ids" {
  description = "VM name => id of its root overlay volume."
  value       = { for name, vol in libvirt_volume.root : name => vol.id }
}

output "scratch_volume_ids" {
  description = "VM name => id of its scratch volume."
  value       = { for name, vol in libvirt_volume.scratch : name => vol.id }
}
