# Developer workstation: one small VM per domain, domains one after another.
environment = "dev"
libvirt_uri = "qemu:///system"
domain_type = "qemu"

vm_counts = {
  kernel_module  = 1
  filesystem_ops = 1
  vector_ops     = 1
  performance    = 1
  safety         = 1
  integration    = 1
}

vm_memory_mb    = 1024
vm_cpus         = 1
vm_disk_gb      = 2
scratch_disk_gb = 1

max_total_memory_gb = 8
max_total_cpus      = 8
max_total_disk_gb   = 24

test_timeout_minutes    = 30
parallel_test_execution = false
max_parallel_tests      = 1

kernel_path     = "/var/lib/vexfs/images/6.12/vmlinux"
initrd_path     = "/var/lib/vexfs/images/6.12/initrd.cpio"
base_image_path = "/var/lib/vexfs/images/6.12/rootfs.qcow2"

ssh_public_key_path  = "~/.ssh/vexfs_ed25519.pub"
ssh_private_key_path = "~/.ssh/vexfs_ed25519"
ssh_port_base        = 22200
