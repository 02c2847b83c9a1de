// SPDX-License-Identifier: GPL-2.0
/*
 * vexfsref_vec.c - vector ioctls (ABI: vexfs_ref_ioctl.h).
 *
 * Each regular file owns one vector set: parallel arrays of ids and raw
 * binary32 values (kvmalloc'ed, grown by doubling).  Search is an exact
 * brute-force scan done in chunks between kernel_fpu_begin()/end(), with a
 * cond_resched() between chunks so 100,000 x 128 never stalls the CPU.
 * This file never does float arithmetic itself; vexfsref_fpu.c does.
 */
#include <linux/fs.h>
#include <linux/mount.h>
#include <linux/slab.h>
#include <linux/mm.h>
#include <linux/uaccess.h>
#include <linux/sched.h>
#include <asm/fpu/api.h>

#include "vexfsref.h"

/* Vectors scanned per FPU section: bounded work with preemption off. */
#define VX_CHUNK_VALUES	(128u * 1024u)

void vexfsref_vec_free(struct vexfsref_inode_info *vi)
{
	kvfree(vi->vids);
	kvfree(vi->vdata);
	vi->vids = NULL;
	vi->vdata = NULL;
	vi->vcount = 0;
	vi->vcap = 0;
	vi->vdim = 0;
}

/* Make room for @want vectors of @dim values.  Caller holds vlock. */
int vexfsref_vec_reserve(struct vexfsref_inode_info *vi, u64 want, u32 dim)
{
	u64 cap;
	u64 *ids;
	u32 *data;

	if (want <= vi->vcap)
		return 0;
	cap = max3(want, vi->vcap * 2, (u64)64);
	cap = min_t(u64, cap, max_t(u64, want, VEXFS_REF_MAX_VECTORS));
	ids = kvmalloc_array(cap, sizeof(*ids), GFP_KERNEL);
	data = kvmalloc_array(cap * dim, sizeof(*data), GFP_KERNEL);
	if (!ids || !data) {
		if (!(vexfsref_errpath_bug && ids))	/* planted: leaks ids */
			kvfree(ids);
		kvfree(data);
		return -ENOMEM;
	}
	if (vi->vcount) {
		memcpy(ids, vi->vids, vi->vcount * sizeof(*ids));
		memcpy(data, vi->vdata, vi->vcount * vi->vdim * sizeof(*data));
	}
	kvfree(vi->vids);
	kvfree(vi->vdata);
	vi->vids = ids;
	vi->vdata = data;
	vi->vcap = cap;
	return 0;
}

/* Non-finite floats would make the ordering meaningless: refuse them. */
static bool vx_all_finite(const u32 *v, u64 n)
{
	u64 i;

	for (i = 0; i < n; i++)
		if ((v[i] & 0x7f800000u) == 0x7f800000u)
			return false;
	return true;
}

static void vx_touch(struct inode *inode)
{
	struct timespec64 now = current_time(inode);

	vx_set_mtime(inode, now);
	vx_set_ctime(inode, now);
	mark_inode_dirty(inode);
	atomic64_inc(&VX_SB(inode->i_sb)->changes);
}

static long vx_add(struct file *file, void __user *argp)
{
	struct inode *inode = file_inode(file);
	struct vexfsref_inode_info *vi = VX_I(inode);
	struct vexfs_ref_add req;
	u64 total, nvals;
	long err;

	if (!(file->f_mode & FMODE_WRITE))
		return -EBADF;
	if (copy_from_user(&req, argp, sizeof(req)))
		return -EFAULT;
	if (!req.dim || !req.count)
		return -EINVAL;
	if (req.dim > VEXFS_REF_MAX_DIM || req.count > VEXFS_REF_MAX_BATCH ||
	    (u64)req.count * req.dim * sizeof(u32) > VEXFS_REF_MAX_BATCH_BYTES)
		return -E2BIG;
	if (!req.ids || !req.data)
		return -EFAULT;
	err = mnt_want_write_file(file);
	if (err)
		return err;

	mutex_lock(&vi->vlock);
	if (vi->vdim && vi->vdim != req.dim) {
		err = -EINVAL;
		goto out;
	}
	total = vi->vcount + req.count;
	if (total > VEXFS_REF_MAX_VECTORS) {
		err = -E2BIG;
		goto out;
	}
	err = vexfsref_charge(inode, -1, vexfsref_vec_bytes(total, req.dim), true);
	if (err)
		goto out;
	err = vexfsref_vec_reserve(vi, total, req.dim);
	if (err)
		goto uncharge;
	nvals = (u64)req.count * req.dim;
	if (copy_from_user(vi->vids + vi->vcount, u64_to_user_ptr(req.ids),
			   req.count * sizeof(u64)) ||
	    copy_from_user(vi->vdata + vi->vcount * req.dim, u64_to_user_ptr(req.data),
			   nvals * sizeof(u32))) {
		err = -EFAULT;
		goto uncharge;
	}
	if (!vx_all_finite(vi->vdata + vi->vcount * req.dim, nvals)) {
		err = -EINVAL;
		goto uncharge;
	}
	vi->vcount = total;
	vi->vdim = req.dim;
	vx_touch(inode);
	mutex_unlock(&vi->vlock);
	mnt_drop_write_file(file);
	return 0;

uncharge:
	if (!vi->vcount)
		vexfsref_vec_free(vi);	/* capacity was sized for req.dim */
	vexfsref_charge(inode, -1, vexfsref_vec_bytes(vi->vcount, vi->vdim), false);
out:
	mutex_unlock(&vi->vlock);
	mnt_drop_write_file(file);
	return err;
}

static long vx_search(struct file *file, void __user *argp)
{
	struct vexfsref_inode_info *vi = VX_I(file_inode(file));
	struct vexfs_ref_result *res = NULL;
	struct vexfs_ref_search req;
	struct vx_topk tk = {};
	u32 *query = NULL;
	u64 first, chunk;
	long err = 0;
	u32 i;

	if (!(file->f_mode & FMODE_READ))
		return -EBADF;
	if (copy_from_user(&req, argp, sizeof(req)))
		return -EFAULT;
	if (!req.dim || !req.k || req.metric > VEXFS_REF_METRIC_DOT)
		return -EINVAL;
	if (req.dim > VEXFS_REF_MAX_DIM || req.k > VEXFS_REF_MAX_K)
		return -E2BIG;
	if (!req.query || !req.results)
		return -EFAULT;
	query = kmalloc_array(req.dim, sizeof(u32), GFP_KERNEL);
	if (!query)
		return -ENOMEM;
	if (copy_from_user(query, u64_to_user_ptr(req.query), req.dim * sizeof(u32))) {
		err = -EFAULT;
		goto out_free;
	}
	if (!vx_all_finite(query, req.dim)) {
		err = -EINVAL;
		goto out_free;
	}

	mutex_lock(&vi->vlock);
	if (vi->vcount && vi->vdim != req.dim) {
		err = -EINVAL;
		goto out_unlock;
	}
	tk.k = min_t(u64, req.k, vi->vcount);
	if (tk.k) {
		tk.idx = kvmalloc_array(tk.k, sizeof(u64), GFP_KERNEL);
		tk.key = kvmalloc_array(tk.k, sizeof(u64), GFP_KERNEL);
		tk.score = kvmalloc_array(tk.k, sizeof(u64), GFP_KERNEL);
		res = kvmalloc_array(tk.k, sizeof(*res), GFP_KERNEL);
		if (!tk.idx || !tk.key || !tk.score || !res) {
			err = -ENOMEM;
			goto out_unlock;
		}
	}
	chunk = max_t(u64, 1, VX_CHUNK_VALUES / req.dim);
	for (first = 0; first < vi->vcount; first += chunk) {
		u64 n = min(chunk, vi->vcount - first);

		kernel_fpu_begin();
		vexfsref_fpu_scan(vi->vdata, first, n, req.dim, query, req.metric, &tk);
		kernel_fpu_end();
		cond_resched();
		if (fatal_signal_pending(current)) {
			err = -EINTR;
			goto out_unlock;
		}
	}
	if (tk.k) {
		kernel_fpu_begin();
		vexfsref_fpu_finish(&tk);
		kernel_fpu_end();
	}
	for (i = 0; i < tk.n; i++) {
		res[i].id = vi->vids[tk.idx[i]];
		res[i].score = tk.score[i];
	}
	mutex_unlock(&vi->vlock);

	req.found = tk.n;
	if (tk.n && copy_to_user(u64_to_user_ptr(req.results), res, tk.n * sizeof(*res)))
		err = -EFAULT;
	else if (copy_to_user(argp, &req, sizeof(req)))
		err = -EFAULT;
	goto out_free;

out_unlock:
	mutex_unlock(&vi->vlock);
out_free:
	kvfree(tk.idx);
	kvfree(tk.key);
	kvfree(tk.score);
	kvfree(res);
	kfree(query);
	return err;
}

static long vx_stats(struct file *file, void __user *argp)
{
	struct vexfsref_inode_info *vi = VX_I(file_inode(file));
	struct vexfs_ref_stats st = {};

	mutex_lock(&vi->vlock);
	st.count = vi->vcount;
	st.dim = vi->vdim;
	st.bytes = vi->vcount * (sizeof(u64) + (u64)vi->vdim * sizeof(u32));
	mutex_unlock(&vi->vlock);
	return copy_to_user(argp, &st, sizeof(st)) ? -EFAULT : 0;
}

static long vx_clear(struct file *file)
{
	struct inode *inode = file_inode(file);
	struct vexfsref_inode_info *vi = VX_I(inode);
	long err;

	if (!(file->f_mode & FMODE_WRITE))
		return -EBADF;
	err = mnt_want_write_file(file);
	if (err)
		return err;
	mutex_lock(&vi->vlock);
	vexfsref_vec_free(vi);
	vexfsref_charge(inode, -1, 0, false);
	vx_touch(inode);
	mutex_unlock(&vi->vlock);
	mnt_drop_write_file(file);
	return 0;
}

static long vx_delete(struct file *file, void __user *argp)
{
	struct inode *inode = file_inode(file);
	struct vexfsref_inode_info *vi = VX_I(inode);
	struct vexfs_ref_delete req;
	u64 i, kept = 0;
	long err;

	if (!(file->f_mode & FMODE_WRITE))
		return -EBADF;
	if (copy_from_user(&req, argp, sizeof(req)))
		return -EFAULT;
	err = mnt_want_write_file(file);
	if (err)
		return err;
	mutex_lock(&vi->vlock);
	for (i = 0; i < vi->vcount; i++) {
		if (vi->vids[i] == req.id)
			continue;
		if (kept != i) {
			vi->vids[kept] = vi->vids[i];
			memcpy(vi->vdata + kept * vi->vdim, vi->vdata + i * vi->vdim,
			       vi->vdim * sizeof(u32));
		}
		kept++;
	}
	req.deleted = vi->vcount - kept;
	vi->vcount = kept;
	if (req.deleted) {
		vexfsref_charge(inode, -1, vexfsref_vec_bytes(kept, vi->vdim), false);
		vx_touch(inode);
	}
	mutex_unlock(&vi->vlock);
	mnt_drop_write_file(file);
	if (!req.deleted)
		return -ENOENT;
	return copy_to_user(argp, &req, sizeof(req)) ? -EFAULT : 0;
}

long vexfsref_ioctl(struct file *file, unsigned int cmd, unsigned long arg)
{
	void __user *argp = (void __user *)arg;

	if (!S_ISREG(file_inode(file)->i_mode))
		return -ENOTTY;
	switch (cmd) {
	case VEXFS_REF_IOC_ADD:
		return vx_add(file, argp);
	case VEXFS_REF_IOC_SEARCH:
		return vx_search(file, argp);
	case VEXFS_REF_IOC_STATS:
		return vx_stats(file, argp);
	case VEXFS_REF_IOC_CLEAR:
		return vx_clear(file);
	case VEXFS_REF_IOC_DELETE:
		return vx_delete(file, argp);
	}
	return -ENOTTY;
}
