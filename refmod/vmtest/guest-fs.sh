#!/bin/sh
# Guest-side filesystem and vector checks for vexfsref (busybox sh, as root).
# Prints "VXT PASS|FAIL name [detail]" and "VXJSON name {json}" lines.
M=/mnt/v
DEV=${VX_DEV:-/dev/vda}
pass() { echo "VXT PASS $*"; }
fail() { echo "VXT FAIL $*"; }
check() { name=$1; shift; if "$@" >/tmp/out 2>&1; then pass "$name"; else fail "$name: $(tail -c 300 /tmp/out)"; fi; }
# expect_err NAME PATTERN CMD...: CMD must fail and its stderr match PATTERN
expect_err() {
	name=$1 pat=$2; shift 2
	if "$@" >/tmp/out 2>&1; then fail "$name: succeeded"; return; fi
	if grep -q "$pat" /tmp/out; then pass "$name"; else fail "$name: $(cat /tmp/out)"; fi
}
as_user() { su -s /bin/sh vexfs -c "$1"; }
t0=$(date +%s)

check insmod insmod /lib/modules/vexfsref.ko
check mkfs mkfs.vexfsref $DEV
mkdir -p $M /mnt/x /mnt/s
check mount mount -t vexfsref $DEV $M
expect_err bad_mount_option "Invalid argument" mount -t vexfsref -o bogus=1 $DEV /mnt/x
dd if=/dev/zero of=/tmp/blank.img bs=1M count=1 2>/dev/null
LOOPB=$(losetup -f)
losetup $LOOPB /tmp/blank.img
expect_err unformatted_rejected "Invalid argument" mount -t vexfsref $LOOPB /mnt/x
losetup -d $LOOPB
grep -q "vexfsref" /proc/filesystems && pass proc_filesystems || fail proc_filesystems

# ---- regular files
dd if=/dev/urandom of=/tmp/big bs=1M count=6 2>/dev/null
check write_6MiB cp /tmp/big $M/big
[ "$(sha256sum < $M/big)" = "$(sha256sum < /tmp/big)" ] && pass read_6MiB || fail read_6MiB
printf 'hello\n' > $M/small
printf 'world\n' >> $M/small
[ "$(cat $M/small)" = "$(printf 'hello\nworld')" ] && pass append || fail append
printf 'XY' | dd of=$M/small bs=1 seek=3 conv=notrunc 2>/dev/null
[ "$(head -c 6 $M/small)" = "helXY" ] && pass seek_write || fail "seek_write: $(cat $M/small)"
printf 'Z' | dd of=$M/sparse bs=1 seek=100000 2>/dev/null
[ "$(stat -c %s $M/sparse)" = 100001 ] && [ "$(head -c 100000 $M/sparse | tr -d '\0' | wc -c)" = 0 ] \
	&& pass sparse_hole || fail sparse_hole
check truncate_down truncate -s 3 $M/small
[ "$(cat $M/small)" = "hel" ] && pass truncate_content || fail truncate_content
truncate -s 5000 $M/small
[ "$(stat -c %s $M/small)" = 5000 ] && [ "$(tail -c 4997 $M/small | tr -d '\0' | wc -c)" = 0 ] \
	&& pass truncate_up || fail truncate_up
expect_err cat_missing "No such file" cat $M/nope
expect_err write_dir "Is a directory" sh -c "echo x > $M"

# ---- directories, links
check mkdir_p mkdir -p $M/a/b/c
expect_err mkdir_exists "File exists" mkdir $M/a
echo deep > $M/a/b/c/file
expect_err rmdir_notempty "not empty" rmdir $M/a/b/c
check rename_file mv $M/a/b/c/file $M/a/moved
[ "$(cat $M/a/moved)" = deep ] && [ ! -e $M/a/b/c/file ] && pass rename_content || fail rename_content
check rename_dir mv $M/a/b $M/a/b2
check rmdir rmdir $M/a/b2/c
check hardlink ln $M/a/moved $M/a/hard
[ "$(stat -c %h $M/a/moved)" = 2 ] && pass hardlink_nlink || fail hardlink_nlink
check symlink ln -s a/moved $M/sym
[ "$(cat $M/sym)" = deep ] && [ "$(readlink $M/sym)" = a/moved ] && pass symlink_follow || fail symlink_follow
check mkfifo mkfifo $M/fifo
mkdir $M/many
(cd $M/many && seq 1 3000 | sed 's/^/entry-with-a-longish-name-/' | xargs touch)
[ "$(ls $M/many | wc -l)" = 3000 ] && pass dir_3000_entries || fail "dir_3000_entries: $(ls $M/many | wc -l)"
check unlink rm $M/many/entry-with-a-longish-name-17
[ "$(ls $M/many | wc -l)" = 2999 ] && pass unlink_count || fail unlink_count
# unlinked while open: data stays readable until close
exec 3<$M/big
rm $M/big
[ "$(sha256sum <&3)" = "$(sha256sum < /tmp/big)" ] && pass unlink_open_file || fail unlink_open_file
exec 3<&-
cp /tmp/big $M/big

# ---- permissions as uid 1000
echo secret > $M/secret && chmod 600 $M/secret
expect_err perm_read_denied "Permission denied" as_user "cat $M/secret"
expect_err perm_create_denied "Permission denied" as_user "touch $M/userfile"
mkdir $M/home && chown 1000:1000 $M/home && chmod 700 $M/home
check perm_user_dir_write as_user "echo mine > $M/home/f && cat $M/home/f"
[ "$(stat -c %u:%g $M/home/f)" = 1000:1000 ] && pass perm_owner || fail "perm_owner: $(stat -c %u:%g $M/home/f)"
expect_err perm_chown_denied "Operation not permitted" as_user "chown 0 $M/home/f"
chmod 1777 $M/a
echo rootfile > $M/a/rootfile
expect_err perm_sticky_unlink "Operation not permitted\|Permission denied" as_user "rm -f $M/a/rootfile"
chmod 4755 $M/small
[ "$(stat -c %a $M/small)" = 4755 ] && pass chmod_setuid || fail chmod_setuid

# ---- vectors
VEC=$M/vecs
: > $VEC
echo "VXJSON gen_small $(vexctl gen $M/small_vecs --count 2000 --dim 16 --seed 1)"
for metric in l2 cosine dot; do
	echo "VXJSON small_$metric $(vexctl search $M/small_vecs --k 20 --metric $metric --seed 7)"
done
printf '1 0 0\n0 1 0\n0,0,1\n' | vexctl add $M/text_vecs --dim 3 >/dev/null
echo "VXJSON text_search $(vexctl search $M/text_vecs --k 3 --metric dot --query '0.1,0.2,0.9')"
echo "VXJSON abuse $(vexctl abuse $M/small_vecs)"
s=$(date +%s)
echo "VXJSON gen_big $(vexctl gen $VEC --count 100000 --dim 128 --seed 42)"
echo "VXT INFO gen_big_seconds $(( $(date +%s) - s ))"
s=$(date +%s)
echo "VXJSON big_l2 $(vexctl search $VEC --k 10 --metric l2 --seed 9)"
echo "VXT INFO search_big_l2_seconds $(( $(date +%s) - s ))"
echo "VXJSON big_cosine $(vexctl search $VEC --k 10 --metric cosine --seed 9)"
echo "VXJSON big_dot $(vexctl search $VEC --k 10 --metric dot --seed 9)"
echo "VXJSON big_stats $(vexctl stats $VEC)"
check vec_delete vexctl delete $M/small_vecs --id 5
echo "VXJSON small_stats_after_delete $(vexctl stats $M/small_vecs)"
printf '1 2\n' | vexctl add $M/clear_me --dim 2 >/dev/null
check vec_clear vexctl clear $M/clear_me
df $M | tail -n1 | sed 's/^/VXT INFO df /'

# ---- snapshot, then remount and module reload
snapshot() {
	(cd $M && find . | sort | while read -r f; do
		if [ -L "$f" ]; then echo "$f L $(readlink "$f")"
		elif [ -f "$f" ]; then echo "$f F $(stat -c '%a %u %g %h %s' "$f") $(sha256sum < "$f" | cut -c1-16)"
		else echo "$f $(stat -c '%F %a %u %g %h' "$f")"; fi
	done)
	for f in small_vecs vecs text_vecs clear_me; do vexctl stats $M/$f; done
	vexctl search $M/small_vecs --k 5 --metric l2 --seed 7
}
snapshot > /tmp/snap1
s=$(date +%s)
check umount umount $M
echo "VXT INFO umount_seconds $(( $(date +%s) - s ))"
s=$(date +%s)
check remount mount -t vexfsref $DEV $M
echo "VXT INFO mount_seconds $(( $(date +%s) - s ))"
snapshot > /tmp/snap2
if cmp -s /tmp/snap1 /tmp/snap2; then pass remount_persistence; else fail "remount_persistence: $(diff /tmp/snap1 /tmp/snap2 | head -20)"; fi
echo "VXJSON big_l2_after_remount $(vexctl search $VEC --k 10 --metric l2 --seed 9)"
check umount2 umount $M
check rmmod rmmod vexfsref
check insmod2 insmod /lib/modules/vexfsref.ko
check mount_after_reload mount -t vexfsref $DEV $M
snapshot > /tmp/snap3
if cmp -s /tmp/snap1 /tmp/snap3; then pass reload_persistence; else fail "reload_persistence: $(diff /tmp/snap1 /tmp/snap3 | head -20)"; fi
# sync without umount is durable too: write, sync, read the image via a ro mount elsewhere later
echo after-sync > $M/synced
sync
check ro_remount mount -o remount,ro $M
expect_err ro_write "Read-only" sh -c "echo x > $M/ro"
check rw_remount mount -o remount,rw $M
check umount3 umount $M

# ---- ENOSPC on a 4 MiB loop device
dd if=/dev/zero of=/tmp/small.img bs=1M count=4 2>/dev/null
LOOP=$(losetup -f)
losetup $LOOP /tmp/small.img
mkfs.vexfsref -q $LOOP
check mount_small mount -t vexfsref $LOOP /mnt/s
expect_err enospc_write "No space left" dd if=/dev/zero of=/mnt/s/fill bs=64k count=100
sz=$(stat -c %s /mnt/s/fill)
echo "VXT INFO enospc_filled_bytes $sz"
expect_err enospc_create "No space left" sh -c 'for i in $(seq 1 2000); do mkdir /mnt/s/d$i || exit 1; done'
expect_err enospc_vectors "No space left" vexctl gen /mnt/s/v --count 100000 --dim 16 --seed 3
check enospc_umount umount /mnt/s
check enospc_remount mount -t vexfsref $LOOP /mnt/s
[ "$(stat -c %s /mnt/s/fill)" = "$sz" ] && pass enospc_persisted || fail enospc_persisted
rm -rf /mnt/s/fill /mnt/s/d*
check enospc_space_back dd if=/dev/zero of=/mnt/s/again bs=64k count=10
umount /mnt/s
losetup -d $LOOP
check rmmod_final rmmod vexfsref
echo "VXT INFO total_seconds $(( $(date +%s) - t0 ))"
dmesg | grep -i "vexfsref\|BUG\|WARNING\|Oops" | sed 's/^/VXT DMESG /'
