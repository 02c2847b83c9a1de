#!/bin/sh
# Guest-side fault-injection checks for vexfsref.  The kernel messages are
# judged on the host from the console log; this script only triggers.
# Order matters: after an oops (TAINT_DIE) the kernel stops reporting hung tasks.
F=/proc/vexfsref_fault
P=/sys/module/vexfsref/parameters
step() { echo "VXT STEP $*"; }
dmesg -n 8
echo 10 > /proc/sys/kernel/hung_task_timeout_secs

step fail_init
if insmod /lib/modules/vexfsref.ko fail_init=1 2>/tmp/err; then echo "VXT FAIL fail_init loaded"; rmmod vexfsref;
else echo "VXT INFO fail_init insmod: $(cat /tmp/err)"; fi
grep -q vexfsref /proc/modules && echo "VXT FAIL fail_init left module" || echo "VXT PASS fail_init not loaded"
insmod /lib/modules/vexfsref.ko && echo "VXT PASS insmod"
ls -l $F | sed 's/^/VXT INFO /'
ls $P | tr '\n' ' ' | sed 's/^/VXT INFO params /'; echo

step bad_word
echo nonsense > $F 2>/tmp/err; echo "VXT INFO bad_word: $(cat /tmp/err)"

step warn
echo warn > $F

step leak
before=$(sed -n 's/^SUnreclaim: *\([0-9]*\).*/\1/p' /proc/meminfo)
echo leak > $F
after=$(sed -n 's/^SUnreclaim: *\([0-9]*\).*/\1/p' /proc/meminfo)
echo "VXT INFO leak SUnreclaim_kB before=$before after=$after"

step soft_lockup
s=$(date +%s)
echo soft_lockup > $F
echo "VXT INFO soft_lockup returned after $(( $(date +%s) - s )) s"

step hung_task
sh -c "echo hung_task > $F" &
hpid=$!
sleep 30
echo "VXT INFO hung_task writer state $(sed -n 's/^State:\t//p' /proc/$hpid/status)"

step hang_on_exit
echo 1 > $P/hang_on_exit
rmmod vexfsref &
pid=$!
sleep 8
if kill -0 $pid 2>/dev/null; then echo "VXT PASS hang_on_exit rmmod still running after 8 s (state $(sed -n 's/^State:\t//p' /proc/$pid/status))";
else echo "VXT FAIL hang_on_exit rmmod returned"; fi

step null_deref
sh -c "echo null_deref > $F"; echo "VXT INFO null_deref writer exit status $?"
step gpf
sh -c "echo gpf > $F"; echo "VXT INFO gpf writer exit status $?"
step bug
sh -c "echo bug > $F"; echo "VXT INFO bug writer exit status $?"

step panic
echo panic > $F
echo "VXT FAIL panic returned"
