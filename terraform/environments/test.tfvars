# Shared test host: one VM per domain with more memory, three domains at a time.
environment = "test"
libvirt_uri = "qemu:///system"
domain_type = "kvm"

vm_counts = {
  kernel_module  = 1
  filesystem_ops = 1
  vector_ops     = 1
  performance    = 1
  safety         = 1
  integration    = 1
}

vm_memory_mb    = 2048
vm_cpus         = 2
vm_disk_gb      = 3
scratch_disk_gb = 2

max_total_memory_gb = 16
max_total_cpus      = 16
max_total_disk_gb   = 40

test_timeout_minutes    = 60
parallel_test_execution = true
max_parallel_tests      = 3

kernel_path     = "/var/lib/vexfs/images/6.12/vmlinux"
initrd_path     = "/var/lib/vexfs/images/6.12/initrd.cpio"
base_image_path = "/var/lib/vexfs/images/6.12/rootfs.qcow2"

ssh_public_key_path  = "~/.ssh/vexfs_ed25519.pub"
ssh_private_key_path = "~/.ssh/vexfs_ed25519"
ssh_port_base        = 22300
