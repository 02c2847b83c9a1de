# Staging libvirt host reached over SSH: redundant VMs per domain, KVM, six domains at a time.
environment = "staging"
libvirt_uri = "qemu+ssh://vexfs@staging-libvirt.example.internal/system"
domain_type = "kvm"

vm_counts = {
  kernel_module  = 2
  filesystem_ops = 2
  vector_ops     = 2
  performance    = 1
  safety         = 2
  integration    = 2
}

vm_memory_mb    = 4096
vm_cpus         = 2
vm_disk_gb      = 4
scratch_disk_gb = 2

max_total_memory_gb = 64
max_total_cpus      = 32
max_total_disk_gb   = 100

test_timeout_minutes    = 120
parallel_test_execution = true
max_parallel_tests      = 6

kernel_path     = "/var/lib/vexfs/images/6.12/vmlinux"
initrd_path     = "/var/lib/vexfs/images/6.12/initrd.cpio"
base_image_path = "/var/lib/vexfs/images/6.12/rootfs.qcow2"

ssh_public_key_path  = "~/.ssh/vexfs_ed25519.pub"
ssh_private_key_path = "~/.ssh/vexfs_ed25519"
ssh_port_base        = 22500
ssh_address          = "staging-libvirt.example.internal"
ssh_bind_address     = "0.0.0.0"
enable_monitoring    = true
