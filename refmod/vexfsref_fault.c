// SPDX-License-Identifier: GPL-2.0
/*
 * vexfsref_fault.c - on-demand kernel faults for the harness's own tests.
 *
 * Write one word to /proc/vexfsref_fault (root only, write-only):
 *   null_deref   write through a NULL pointer: "BUG: kernel NULL pointer dereference", Oops
 *   gpf          write to a non-canonical address: "general protection fault"
 *   bug          BUG(): "kernel BUG at"
 *   panic        panic(): "Kernel panic - not syncing: vexfsref: injected panic"
 *   soft_lockup  spin lockup_secs (60) seconds with preemption off: an RCU
 *                stall report at ~21 s, "watchdog: BUG: soft lockup" at ~45 s
 *                (the stall report resets the soft-lockup clock)
 *   hung_task    take a mutex twice: the writer sleeps in D state forever,
 *                "INFO: task ... blocked for more than N seconds"
 *   warn         WARN(): "WARNING: CPU: ... vexfsref_fault_warn"
 *   leak         kmalloc leak_kib KiB (4096) in 4 KiB pieces and forget them
 * Planted memory bugs, silent on a production kernel, for the harness's checkers
 * (SLUB debug, KFENCE, DEBUG_LIST on the stock kernel; KASAN, kmemleak, lockdep
 * on the debug kernel):
 *   uaf_write    write to a kmalloc object after kfree
 *   uaf_read     read a kmalloc object after kfree
 *   oob_write    write one byte past the end of a kmalloc object, then kfree it
 *   oob_read     read one byte past the end of a kmalloc object
 *   double_free  kfree the same object twice
 *   list_corrupt list_del the same entry twice
 *   lock_inversion  take lock A then B, later B then A (lockdep's ABBA report)
 *   small_leak   kmalloc 3 KiB in three pieces and forget them
 *   exit_leak    kmalloc 2 KiB kept in a static pointer that module_exit never
 *                frees: a leak only once the module is unloaded
 * Module parameter errpath_bug=1 plants an error-path bug in the vector store:
 * when the second allocation of vexfsref_vec_reserve() fails, the first one leaks.
 * Each fault runs in a function named vexfsref_fault_<word>, so a call trace
 * names it.  Module parameters fail_init and hang_on_exit fault module
 * load and unload.
 */
#include <linux/module.h>
#include <linux/parser.h>
#include <linux/proc_fs.h>
#include <linux/uaccess.h>
#include <linux/slab.h>
#include <linux/delay.h>
#include <linux/mutex.h>
#include <linux/string.h>
#include <linux/jiffies.h>
#include <linux/preempt.h>
#include <linux/list.h>

#include "vexfsref.h"

#define VEXFSREF_FAULT_PROC "vexfsref_fault"

int vexfsref_fail_init;
module_param_named(fail_init, vexfsref_fail_init, int, 0444);
MODULE_PARM_DESC(fail_init, "1: module_init fails with -ENOMEM");

int vexfsref_hang_on_exit;
module_param_named(hang_on_exit, vexfsref_hang_on_exit, int, 0644);
MODULE_PARM_DESC(hang_on_exit, "1: module_exit never returns (rmmod hangs)");

static unsigned int lockup_secs = 60;
module_param(lockup_secs, uint, 0644);
MODULE_PARM_DESC(lockup_secs, "soft_lockup fault: seconds to spin with preemption off");

static unsigned int leak_kib = 4096;
module_param(leak_kib, uint, 0644);
MODULE_PARM_DESC(leak_kib, "leak fault: KiB to allocate and forget");

int vexfsref_errpath_bug;
module_param_named(errpath_bug, vexfsref_errpath_bug, int, 0644);
MODULE_PARM_DESC(errpath_bug, "1: vexfsref_vec_reserve leaks when its second allocation fails");

unsigned int vexfsref_file_limit_kib;
module_param_named(file_limit_kib, vexfsref_file_limit_kib, uint, 0644);
MODULE_PARM_DESC(file_limit_kib, "files larger than this many KiB are refused with EFBIG, "
		 "saying so in the kernel log (default 0: no limit)");

/*
 * Silent corruption: real classes of filesystem bugs, planted for the model checker's self-tests.
 * No kernel message reveals them; only comparing what was written with what is read shows them.
 */
unsigned int vexfsref_silent;
static const char *const vx_silent_words[] = {
	"subdir_lost", "rename_undone", "zero_past_64k", "fsync_lost", "stale_truncate",
	"commit_before_data", "count_trusted",
};

/* A module parameter that is a set of words ("a,b" or "none"), kept as a bit mask: silent= and unsupported=. */
struct vx_word_mask {
	const char *const *words;
	unsigned int count;
	const char *unknown;	/* "silent: unknown mode": the message for a word not in @words */
	unsigned int *mask;
};

static int vx_word_mask_set(const char *val, const struct kernel_param *kp)
{
	const struct vx_word_mask *param = kp->arg;
	char *copy = kstrdup(val, GFP_KERNEL), *cur, *word;
	unsigned int mask = 0, i;

	if (!copy)
		return -ENOMEM;
	cur = strim(copy);
	while ((word = strsep(&cur, ",")) != NULL) {
		if (!*word || !strcmp(word, "none"))
			continue;
		for (i = 0; i < param->count; i++)
			if (!strcmp(word, param->words[i]))
				break;
		if (i == param->count) {
			pr_err("vexfsref: %s '%s'\n", param->unknown, word);
			kfree(copy);
			return -EINVAL;
		}
		mask |= 1u << i;
	}
	kfree(copy);
	*param->mask = mask;
	return 0;
}

static int vx_word_mask_get(char *buf, const struct kernel_param *kp)
{
	const struct vx_word_mask *param = kp->arg;
	int len = 0;
	unsigned int i;

	for (i = 0; i < param->count; i++)
		if (*param->mask & (1u << i))
			len += sysfs_emit_at(buf, len, "%s%s", len ? "," : "", param->words[i]);
	return len + sysfs_emit_at(buf, len, "%s\n", len ? "" : "none");
}

static const struct kernel_param_ops vx_word_mask_ops = {
	.set = vx_word_mask_set,
	.get = vx_word_mask_get,
};

static struct vx_word_mask vx_silent_param = {	/* module_param_cb takes a void * */
	vx_silent_words, ARRAY_SIZE(vx_silent_words), "silent: unknown mode", &vexfsref_silent,
};
module_param_cb(silent, &vx_word_mask_ops, &vx_silent_param, 0444);
MODULE_PARM_DESC(silent, "silent corruption modes, comma-separated: subdir_lost rename_undone "
		 "zero_past_64k fsync_lost stale_truncate commit_before_data count_trusted (default none)");

/*
 * Missing features and hidden limits, planted for the model checker's probes and limit measurements
 * (off by default): operations the module refuses with EPERM (unsupported=symlink,link,mkdir), a cap on the
 * entries of one directory (dir_entries=N, then ENOSPC), and inode numbers that unlink never gives back
 * (inode_slots=N: ENOSPC once N inodes were ever created, however many were removed).
 */
static unsigned int vx_unsupported;
static const char *const vx_unsupported_words[] = { "symlink", "link", "mkdir" };

static struct vx_word_mask vx_unsupported_param = {
	vx_unsupported_words, ARRAY_SIZE(vx_unsupported_words), "unsupported: unknown operation", &vx_unsupported,
};
module_param_cb(unsupported, &vx_word_mask_ops, &vx_unsupported_param, 0444);
MODULE_PARM_DESC(unsupported, "operations refused with EPERM, comma-separated: symlink link mkdir (default none)");

static unsigned int vx_dir_entries;
module_param_named(dir_entries, vx_dir_entries, uint, 0444);
MODULE_PARM_DESC(dir_entries, "a directory holding this many entries refuses more with ENOSPC (default 0: no cap)");

static unsigned int vx_inode_slots;
module_param_named(inode_slots, vx_inode_slots, uint, 0444);
MODULE_PARM_DESC(inode_slots, "inode numbers unlink never gives back: ENOSPC once this many inodes were ever "
		 "created (default 0: no limit)");

static unsigned int vx_dir_count(struct dentry *dir)
{
	struct dentry *child;
	unsigned int n = 0;

	spin_lock(&dir->d_lock);
#if LINUX_VERSION_CODE >= KERNEL_VERSION(6, 8, 0)
	hlist_for_each_entry(child, &dir->d_children, d_sib)
#else
	list_for_each_entry(child, &dir->d_subdirs, d_child)
#endif
		if (d_really_is_positive(child))
			n++;
	spin_unlock(&dir->d_lock);
	return n;
}

/* 0, or the error a planted mode answers to @op ("create", "mkdir", "symlink", "link") making @dentry */
int vexfsref_planted_refusal(const char *op, struct inode *dir, struct dentry *dentry)
{
	unsigned int i;

	for (i = 0; i < ARRAY_SIZE(vx_unsupported_words); i++)
		if ((vx_unsupported & (1u << i)) && !strcmp(op, vx_unsupported_words[i]))
			return -EPERM;
	if (vx_dir_entries && vx_dir_count(dentry->d_parent) >= vx_dir_entries)
		return -ENOSPC;
	if (vx_inode_slots && strcmp(op, "link") &&
	    atomic64_read(&VX_SB(dir->i_sb)->next_ino) > VEXFSREF_ROOT_INO + (u64)vx_inode_slots)
		return -ENOSPC;
	return 0;
}

static DEFINE_MUTEX(vexfsref_fault_mutex);
static struct proc_dir_entry *vexfsref_fault_entry;

static noinline void vexfsref_fault_null_deref(void)
{
	int *volatile p = NULL;

	*p = 0x5eed;
}

static noinline void vexfsref_fault_gpf(void)
{
	unsigned long *volatile p = (unsigned long *)0xdead000000000000UL;

	*p = 0x5eed;
}

static noinline void vexfsref_fault_bug(void)
{
	BUG();
}

static noinline void vexfsref_fault_panic(void)
{
	panic("vexfsref: injected panic");
}

static noinline void vexfsref_fault_soft_lockup(void)
{
	unsigned long end = jiffies + (unsigned long)lockup_secs * HZ;

	preempt_disable();
	while (time_before(jiffies, end))
		cpu_relax();
	preempt_enable();
}

static noinline void vexfsref_fault_hung_task(void)
{
	mutex_lock(&vexfsref_fault_mutex);
	mutex_lock(&vexfsref_fault_mutex);	/* self-deadlock: never returns */
	/* unreachable; keeps the second lock a call, so traces name this function */
	mutex_unlock(&vexfsref_fault_mutex);
	mutex_unlock(&vexfsref_fault_mutex);
}

static noinline void vexfsref_fault_warn(void)
{
	WARN(1, "vexfsref: injected warning\n");
}

static noinline void vexfsref_fault_leak(void)
{
	unsigned int i;

	for (i = 0; i < leak_kib / 4; i++) {
		void *p = kmalloc(4096, GFP_KERNEL);

		if (!p)
			break;
		memset(p, 0xa5, 4096);	/* forgotten on purpose */
	}
	pr_err("vexfsref: injected leak of %u KiB\n", i * 4);
}

/*
 * The planted bugs.  Sizes are fixed so each lands in kmalloc-64 (whose
 * objects the checked boot poisons, redzones and tracks); every pointer goes
 * through a volatile so the compiler cannot see through the bug.
 */
#define VEXFSREF_BUG_SIZE 40

static noinline void vexfsref_fault_uaf_write(void)
{
	char *volatile p = kmalloc(VEXFSREF_BUG_SIZE, GFP_KERNEL);

	if (!p)
		return;
	kfree(p);
	p[8] = 0x42;				/* use after free: write */
}

static noinline void vexfsref_fault_uaf_read(void)
{
	char *volatile p = kmalloc(VEXFSREF_BUG_SIZE, GFP_KERNEL);
	char c;

	if (!p)
		return;
	p[8] = 0x42;
	kfree(p);
	c = p[8];				/* use after free: read */
	pr_info("vexfsref: read %d after free\n", c);
}

static noinline void vexfsref_fault_oob_write(void)
{
	char *volatile p = kmalloc(VEXFSREF_BUG_SIZE, GFP_KERNEL);

	if (!p)
		return;
	p[VEXFSREF_BUG_SIZE] = 0x42;		/* one byte past the end */
	kfree(p);
}

static noinline void vexfsref_fault_oob_read(void)
{
	char *volatile p = kmalloc(VEXFSREF_BUG_SIZE, GFP_KERNEL);
	char c;

	if (!p)
		return;
	memset(p, 0, VEXFSREF_BUG_SIZE);
	c = p[VEXFSREF_BUG_SIZE];		/* one byte past the end */
	pr_info("vexfsref: read %d past the end\n", c);
	kfree(p);
}

static noinline void vexfsref_fault_double_free(void)
{
	char *volatile p = kmalloc(VEXFSREF_BUG_SIZE, GFP_KERNEL);

	if (!p)
		return;
	kfree(p);
	kfree(p);				/* double free */
}

struct vexfsref_bug_item {
	struct list_head node;
	int value;
};

static noinline void vexfsref_fault_list_corrupt(void)
{
	static LIST_HEAD(items);
	struct vexfsref_bug_item *it = kmalloc(sizeof(*it), GFP_KERNEL);

	if (!it)
		return;
	list_add(&it->node, &items);
	list_del(&it->node);
	list_del(&it->node);			/* deleted twice: poisoned pointers */
	kfree(it);
}

static DEFINE_MUTEX(vexfsref_bug_lock_a);
static DEFINE_MUTEX(vexfsref_bug_lock_b);

static noinline void vexfsref_fault_lock_inversion(void)
{
	mutex_lock(&vexfsref_bug_lock_a);
	mutex_lock(&vexfsref_bug_lock_b);
	mutex_unlock(&vexfsref_bug_lock_b);
	mutex_unlock(&vexfsref_bug_lock_a);

	mutex_lock(&vexfsref_bug_lock_b);
	mutex_lock(&vexfsref_bug_lock_a);	/* B then A: ABBA with the above */
	mutex_unlock(&vexfsref_bug_lock_a);
	mutex_unlock(&vexfsref_bug_lock_b);
}

static noinline void vexfsref_fault_small_leak(void)
{
	int i;

	for (i = 0; i < 3; i++) {
		void *volatile p = kmalloc(1024, GFP_KERNEL);

		if (p)
			memset(p, 0x5a, 1024);	/* forgotten on purpose */
	}
}

/*
 * A legacy option parser whose token table lacks its { Opt_err, NULL } terminator: an option it does
 * not know makes match_token() read past the table's end (KASAN: global-out-of-bounds Read in
 * match_token, a kernel helper; the report is titled by this function, the module's frame).
 */
enum { vexfsref_legacy_verbose, vexfsref_legacy_quiet };
static const match_table_t vexfsref_legacy_tokens = {
	{ vexfsref_legacy_verbose, "verbose" },
	{ vexfsref_legacy_quiet, "quiet" },
	/* the planted bug: no { Opt_err, NULL } terminator */
};

static noinline int vexfsref_parse_legacy_options(char *options)
{
	substring_t args[MAX_OPT_ARGS];
	int token = -1;
	char *p;

	while ((p = strsep(&options, ",")) != NULL)
		if (*p)
			token = match_token(p, vexfsref_legacy_tokens, args);
	return token;
}

static noinline void vexfsref_fault_parser_oob(void)
{
	char options[] = "verbose,nosuchoption";

	pr_info("vexfsref: legacy options parsed: last token %d\n", vexfsref_parse_legacy_options(options));
}

/* Referenced from the module's own data while it is loaded; never freed. */
static void *volatile vexfsref_exit_leak_object;	/* volatile: the store stays */

static noinline void vexfsref_fault_exit_leak(void)
{
	void *p = kmalloc(2048, GFP_KERNEL);

	if (p)
		memset(p, 0x5a, 2048);
	vexfsref_exit_leak_object = p;	/* forgotten by vexfsref_fault_exit() on purpose */
}

/* module_exit with hang_on_exit=1: sleep forever, rmmod never returns. */
void vexfsref_hang_forever(void)
{
	pr_err("vexfsref: hang_on_exit=1: module_exit will never return\n");
	for (;;)
		msleep(1000);
}

static const struct {
	const char *word;
	void (*fn)(void);
} vexfsref_faults[] = {
	{ "null_deref", vexfsref_fault_null_deref },
	{ "gpf", vexfsref_fault_gpf },
	{ "bug", vexfsref_fault_bug },
	{ "panic", vexfsref_fault_panic },
	{ "soft_lockup", vexfsref_fault_soft_lockup },
	{ "hung_task", vexfsref_fault_hung_task },
	{ "warn", vexfsref_fault_warn },
	{ "leak", vexfsref_fault_leak },
	{ "uaf_write", vexfsref_fault_uaf_write },
	{ "uaf_read", vexfsref_fault_uaf_read },
	{ "oob_write", vexfsref_fault_oob_write },
	{ "oob_read", vexfsref_fault_oob_read },
	{ "double_free", vexfsref_fault_double_free },
	{ "list_corrupt", vexfsref_fault_list_corrupt },
	{ "lock_inversion", vexfsref_fault_lock_inversion },
	{ "small_leak", vexfsref_fault_small_leak },
	{ "exit_leak", vexfsref_fault_exit_leak },
	{ "parser_oob", vexfsref_fault_parser_oob },
};

static ssize_t vexfsref_fault_write(struct file *file, const char __user *ubuf,
				    size_t len, loff_t *ppos)
{
	char buf[32];
	char *word;
	size_t i;

	if (len == 0 || len >= sizeof(buf))
		return -EINVAL;
	if (copy_from_user(buf, ubuf, len))
		return -EFAULT;
	buf[len] = 0;
	word = strim(buf);
	for (i = 0; i < ARRAY_SIZE(vexfsref_faults); i++) {
		if (strcmp(word, vexfsref_faults[i].word))
			continue;
		pr_err("vexfsref: injecting fault %s\n", word);
		vexfsref_faults[i].fn();
		return len;
	}
	return -EINVAL;
}

static const struct proc_ops vexfsref_fault_ops = {
	.proc_write	= vexfsref_fault_write,
	.proc_lseek	= noop_llseek,
};

int vexfsref_fault_init(void)
{
	vexfsref_fault_entry = proc_create(VEXFSREF_FAULT_PROC, 0200, NULL,
					   &vexfsref_fault_ops);
	return vexfsref_fault_entry ? 0 : -ENOMEM;
}

void vexfsref_fault_exit(void)
{
	proc_remove(vexfsref_fault_entry);
}
