// SPDX-License-Identifier: GPL-2.0
/* Tiny fault injector: write a fault word to /proc/klogfault. */
#include <linux/module.h>
#include <linux/proc_fs.h>
#include <linux/uaccess.h>
#include <linux/slab.h>
#include <linux/delay.h>
#include <linux/mutex.h>
#include <linux/jiffies.h>
#include <linux/kfence.h>
#include <linux/string.h>

static DEFINE_MUTEX(klogfault_lock);
static int *volatile klogfault_null;

static noinline void klogfault_null_deref(void) { *klogfault_null = 42; }
static noinline void klogfault_warn(void) { WARN(1, "klogfault: planted warning\n"); }
static noinline void klogfault_bug(void) { BUG(); }
static noinline void klogfault_panic(void) { panic("klogfault: planted panic"); }
static noinline void klogfault_gpf(void)
{
	volatile unsigned long *p = (unsigned long *)0xdead000000000100UL;
	*p = 1;
}
static noinline void klogfault_page_fault(void)
{
	volatile unsigned long *p = (unsigned long *)0xffffc90000ff0000UL;
	pr_info("klogfault: value %lu\n", *p);
}
static noinline void klogfault_soft_lockup(void)
{
	unsigned long end = jiffies + 60 * HZ;
	preempt_disable();
	while (time_before(jiffies, end))
		cpu_relax();
	preempt_enable();
}
static noinline void klogfault_hung_task(void)
{
	mutex_lock(&klogfault_lock);
	mutex_lock(&klogfault_lock);
}
static noinline void klogfault_atomic_sleep(void)
{
	preempt_disable();
	msleep(10);
	preempt_enable();
}
static noinline void klogfault_kfence(void)
{
	int i;
	for (i = 0; i < 200000; i++) {
		char *p = kmalloc(64, GFP_KERNEL);
		if (!p)
			return;
		if (is_kfence_address(p)) {
			kfree(p);
			pr_info("klogfault: stale byte %d\n", READ_ONCE(p[3]));
			return;
		}
		kfree(p);
		if (!(i % 1000))
			msleep(2);
	}
	pr_info("klogfault: no kfence object found\n");
}
static noinline void klogfault_noise(void)
{
	int i;
	for (i = 0; i < 10; i++)
		pr_alert("klogfault: write ino=%d off=%d len=4096\n", 1000 + i, i * 4096);
}

static ssize_t klogfault_write(struct file *f, const char __user *buf, size_t len, loff_t *off)
{
	char word[32] = {};
	if (copy_from_user(word, buf, min(len, sizeof(word) - 1)))
		return -EFAULT;
	strim(word);
	pr_info("klogfault: fault=%s\n", word);
	if (!strcmp(word, "null_deref")) klogfault_null_deref();
	else if (!strcmp(word, "warn")) klogfault_warn();
	else if (!strcmp(word, "bug")) klogfault_bug();
	else if (!strcmp(word, "panic")) klogfault_panic();
	else if (!strcmp(word, "gpf")) klogfault_gpf();
	else if (!strcmp(word, "page_fault")) klogfault_page_fault();
	else if (!strcmp(word, "soft_lockup")) klogfault_soft_lockup();
	else if (!strcmp(word, "hung_task")) klogfault_hung_task();
	else if (!strcmp(word, "atomic_sleep")) klogfault_atomic_sleep();
	else if (!strcmp(word, "kfence")) klogfault_kfence();
	else if (!strcmp(word, "noise")) klogfault_noise();
	else return -EINVAL;
	return len;
}

static const struct proc_ops klogfault_ops = { .proc_write = klogfault_write };

static int __init klogfault_init(void)
{
	return proc_create("klogfault", 0200, NULL, &klogfault_ops) ? 0 : -ENOMEM;
}
static void __exit klogfault_exit(void) { remove_proc_entry("klogfault", NULL); }
module_init(klogfault_init);
module_exit(klogfault_exit);
MODULE_LICENSE("GPL");
