#!/bin/busybox sh
/bin/busybox mkdir -p /sbin /usr/bin /usr/sbin
/bin/busybox --install -s
mount -t proc proc /proc
mount -t devtmpfs dev /dev
mount -t sysfs sys /sys
fault=$(sed -n 's/.*klogfault=\([a-z_]*\).*/\1/p' /proc/cmdline)
insmod /klogfault.ko
node="tests/fs/test_faults.py::test_fault[$fault-4k]"
echo "userspace: running $fault"
echo "<5>vexfs-test-begin: $node" > /dev/kmsg
echo noise > /proc/klogfault
if [ "$fault" = hung_task ]; then
    echo 5 > /proc/sys/kernel/hung_task_timeout_secs
    (echo hung_task > /proc/klogfault) &
    sleep 16
else
    sh -c "echo $fault > /proc/klogfault"
    echo "userspace: fault write returned $?"
fi
echo noise > /proc/klogfault
echo "<5>vexfs-test-end: $node" > /dev/kmsg
echo "userspace: done"
sleep 1
poweroff -f
