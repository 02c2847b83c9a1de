// SPDX-License-Identifier: GPL-2.0
/* A small module of an old test tree: says hello, and oopses on request (echo 1 > /proc/oldhello_oops). */
#include <linux/module.h>
#include <linux/proc_fs.h>
#include <linux/uaccess.h>

static int greeting = 1;
module_param(greeting, int, 0444);

static noinline void oldhello_crash(void)
{
	int *volatile nowhere = NULL;

	*nowhere = 42;
}

static ssize_t oldhello_oops_write(struct file *file, const char __user *buf, size_t len, loff_t *pos)
{
	pr_err("oldhello: crashing on request\n");
	oldhello_crash();
	return len;
}

static const struct proc_ops oldhello_oops_ops = {
	.proc_write = oldhello_oops_write,
};

static int __init oldhello_init(void)
{
	if (!proc_create("oldhello_oops", 0200, NULL, &oldhello_oops_ops))
		return -ENOMEM;
	pr_info("oldhello: hello (greeting=%d)\n", greeting);
	return 0;
}

static void __exit oldhello_exit(void)
{
	remove_proc_entry("oldhello_oops", NULL);
	pr_info("oldhello: goodbye\n");
}

module_init(oldhello_init);
module_exit(oldhello_exit);
MODULE_LICENSE("GPL");
MODULE_DESCRIPTION("old test tree module");
