// SPDX-License-Identifier: GPL-2.0
/*
 * vexfsref_inode.c - inode, directory and file operations.
 *
 * The tree lives in the dcache and page cache like ramfs: every positive
 * dentry holds one extra reference ("pin") so it stays in memory; file data
 * sits in page-cache pages kept dirty so reclaim never drops them.  The
 * whole tree is written to the device by vexfsref_save() (vexfsref_super.c).
 *
 * Space accounting: sbi->used is an upper bound of the serialised image.
 * Each inode owes vexfsref_charge_for() bytes; growth that would push used
 * past sbi->capacity fails with ENOSPC, so a save always fits the device.
 */
#include <linux/pagemap.h>
#include <linux/highmem.h>
#include <linux/mm.h>
#include <linux/slab.h>
#include <linux/namei.h>
#include <linux/uio.h>
#include <linux/mount.h>
#include <linux/sizes.h>

#include "vexfsref.h"

u64 vexfsref_charge_for(struct inode *inode, u64 size, u64 vbytes)
{
	u64 links = S_ISDIR(inode->i_mode) ? 1 : max_t(u64, inode->i_nlink, 1);

	return sizeof(struct vexfsref_dinode) + links * VX_NAME_CHARGE +
	       VEXFSREF_ALIGN8(size) + vbytes;
}

/*
 * Recompute what @inode owes.  @size and @vbytes replace the charged file size
 * and vector bytes unless negative.  With @check, growth beyond the capacity
 * fails with -ENOSPC and nothing changes.
 */
int vexfsref_charge(struct inode *inode, s64 size, s64 vbytes, bool check)
{
	struct vexfsref_sb_info *sbi = VX_SB(inode->i_sb);
	struct vexfsref_inode_info *vi = VX_I(inode);
	u64 new_size, new_vbytes, total;

	spin_lock(&sbi->charge_lock);
	new_size = size >= 0 ? size : vi->c_size;
	new_vbytes = vbytes >= 0 ? vbytes : vi->c_vbytes;
	total = vexfsref_charge_for(inode, new_size, new_vbytes);
	if (check && total > vi->charged &&
	    sbi->used - vi->charged + total > sbi->capacity) {
		spin_unlock(&sbi->charge_lock);
		return -ENOSPC;
	}
	sbi->used = sbi->used - vi->charged + total;
	vi->charged = total;
	vi->c_size = new_size;
	vi->c_vbytes = new_vbytes;
	spin_unlock(&sbi->charge_lock);
	return 0;
}

void vexfsref_uncharge(struct inode *inode)
{
	struct vexfsref_sb_info *sbi = VX_SB(inode->i_sb);
	struct vexfsref_inode_info *vi = VX_I(inode);

	spin_lock(&sbi->charge_lock);
	sbi->used -= vi->charged;
	vi->charged = 0;
	spin_unlock(&sbi->charge_lock);
}

int vexfsref_space_check(struct super_block *sb, u64 extra)
{
	struct vexfsref_sb_info *sbi = VX_SB(sb);
	int err = 0;

	spin_lock(&sbi->charge_lock);
	if (sbi->used + extra > sbi->capacity)
		err = -ENOSPC;
	spin_unlock(&sbi->charge_lock);
	return err;
}

static inline void vx_changed(struct super_block *sb)
{
	atomic64_inc(&VX_SB(sb)->changes);
}

struct inode *vexfsref_new_inode(struct super_block *sb, const struct inode *dir,
				 umode_t mode, dev_t dev)
{
	struct vexfsref_sb_info *sbi = VX_SB(sb);
	struct inode *inode = new_inode(sb);
	struct timespec64 now;

	if (!inode)
		return NULL;
	inode->i_ino = atomic64_inc_return(&sbi->next_ino) - 1;
	inode_init_owner(VX_NOP_IDMAP, inode, dir, mode);
	inode->i_mapping->a_ops = &vexfsref_aops;
	mapping_set_gfp_mask(inode->i_mapping, GFP_HIGHUSER);
	mapping_set_unevictable(inode->i_mapping);
	now = current_time(inode);
	vx_set_atime(inode, now);
	vx_set_mtime(inode, now);
	vx_set_ctime(inode, now);
	switch (mode & S_IFMT) {
	case S_IFREG:
		inode->i_op = &vexfsref_file_iops;
		inode->i_fop = &vexfsref_file_fops;
		break;
	case S_IFDIR:
		inode->i_op = &vexfsref_dir_iops;
		inode->i_fop = &simple_dir_operations;
		inc_nlink(inode);	/* "." */
		break;
	case S_IFLNK:
		inode->i_op = &vexfsref_symlink_iops;
		inode_nohighmem(inode);
		break;
	default:
		init_special_inode(inode, mode, dev);
		break;
	}
	atomic64_inc(&sbi->ninodes);
	return inode;
}

static void vx_dir_touch(struct inode *dir)
{
	struct timespec64 now = current_time(dir);

	vx_set_mtime(dir, now);
	vx_set_ctime(dir, now);
}

static int vx_mknod(VX_IDMAP_T *idmap, struct inode *dir, struct dentry *dentry,
		    umode_t mode, dev_t dev)
{
	struct super_block *sb = dir->i_sb;
	struct vexfsref_sb_info *sbi = VX_SB(sb);
	struct inode *inode;
	int err;

	mutex_lock(&sbi->ns_lock);
	err = vexfsref_planted_refusal(S_ISDIR(mode) ? "mkdir" : "create", dir, dentry);
	if (!err)
		err = vexfsref_space_check(sb, sizeof(struct vexfsref_dinode) + VX_NAME_CHARGE);
	if (err)
		goto out;
	inode = vexfsref_new_inode(sb, dir, mode, dev);
	if (!inode) {
		err = -ENOSPC;
		goto out;
	}
	vexfsref_charge(inode, 0, 0, false);
	d_instantiate(dentry, inode);
	dget(dentry);		/* pin: the dcache is the directory */
	if (S_ISDIR(mode))
		inc_nlink(dir);
	vx_dir_touch(dir);
	vx_changed(sb);
out:
	mutex_unlock(&sbi->ns_lock);
	return err;
}

static int vx_create(VX_IDMAP_T *idmap, struct inode *dir, struct dentry *dentry,
		     umode_t mode, bool excl)
{
	return vx_mknod(idmap, dir, dentry, mode | S_IFREG, 0);
}

static int vx_mkdir(VX_IDMAP_T *idmap, struct inode *dir, struct dentry *dentry,
		    umode_t mode)
{
	return vx_mknod(idmap, dir, dentry, mode | S_IFDIR, 0);
}

static int vx_symlink(VX_IDMAP_T *idmap, struct inode *dir, struct dentry *dentry,
		      const char *symname)
{
	struct super_block *sb = dir->i_sb;
	struct vexfsref_sb_info *sbi = VX_SB(sb);
	size_t len = strlen(symname) + 1;
	struct inode *inode;
	int err;

	if (len > PAGE_SIZE)
		return -ENAMETOOLONG;
	mutex_lock(&sbi->ns_lock);
	err = vexfsref_planted_refusal("symlink", dir, dentry);
	if (!err)
		err = vexfsref_space_check(sb, sizeof(struct vexfsref_dinode) + VX_NAME_CHARGE +
					   VEXFSREF_ALIGN8(len));
	if (err)
		goto out;
	inode = vexfsref_new_inode(sb, dir, S_IFLNK | 0777, 0);
	if (!inode) {
		err = -ENOSPC;
		goto out;
	}
	vexfsref_charge(inode, 0, 0, false);
	err = page_symlink(inode, symname, len);
	if (err) {
		iput(inode);
		goto out;
	}
	d_instantiate(dentry, inode);
	dget(dentry);
	vx_dir_touch(dir);
	vx_changed(sb);
out:
	mutex_unlock(&sbi->ns_lock);
	return err;
}

static int vx_link(struct dentry *old_dentry, struct inode *dir, struct dentry *dentry)
{
	struct super_block *sb = dir->i_sb;
	struct vexfsref_sb_info *sbi = VX_SB(sb);
	int err;

	mutex_lock(&sbi->ns_lock);
	err = vexfsref_planted_refusal("link", dir, dentry);
	if (!err)
		err = vexfsref_space_check(sb, VX_NAME_CHARGE);
	if (!err)
		err = simple_link(old_dentry, dir, dentry);
	if (!err) {
		vexfsref_charge(d_inode(old_dentry), -1, -1, false);
		vx_changed(sb);
	}
	mutex_unlock(&sbi->ns_lock);
	return err;
}

static int vx_unlink(struct inode *dir, struct dentry *dentry)
{
	struct vexfsref_sb_info *sbi = VX_SB(dir->i_sb);
	struct inode *inode = d_inode(dentry);
	int err;

	mutex_lock(&sbi->ns_lock);
	err = simple_unlink(dir, dentry);
	vexfsref_charge(inode, -1, -1, false);
	vx_changed(dir->i_sb);
	mutex_unlock(&sbi->ns_lock);
	return err;
}

static int vx_rmdir(struct inode *dir, struct dentry *dentry)
{
	struct vexfsref_sb_info *sbi = VX_SB(dir->i_sb);
	int err;

	mutex_lock(&sbi->ns_lock);
	err = simple_rmdir(dir, dentry);
	if (!err)
		vx_changed(dir->i_sb);
	mutex_unlock(&sbi->ns_lock);
	return err;
}

static int vx_rename(VX_IDMAP_T *idmap, struct inode *old_dir, struct dentry *old_dentry,
		     struct inode *new_dir, struct dentry *new_dentry, unsigned int flags)
{
	struct vexfsref_sb_info *sbi = VX_SB(old_dir->i_sb);
	struct inode *victim = d_inode(new_dentry);
	int err;

	if (flags & ~(RENAME_NOREPLACE | RENAME_EXCHANGE))
		return -EINVAL;
	mutex_lock(&sbi->ns_lock);
	if (victim)
		ihold(victim);
	if (vx_silent(VX_SILENT_RENAME_UNDONE) && old_dir != new_dir && !(flags & RENAME_EXCHANGE) &&
	    !S_ISDIR(d_inode(old_dentry)->i_mode) && !VX_I(d_inode(old_dentry))->stale_len) {
		struct vexfsref_inode_info *vi = VX_I(d_inode(old_dentry));

		vi->stale_parent = old_dir->i_ino;
		vi->stale_len = min_t(u32, old_dentry->d_name.len, VEXFSREF_NAME_MAX);
		memcpy(vi->stale_name, old_dentry->d_name.name, vi->stale_len);
	}
	err = simple_rename(idmap, old_dir, old_dentry, new_dir, new_dentry, flags);
	if (!err)
		vx_changed(old_dir->i_sb);
	mutex_unlock(&sbi->ns_lock);
	if (victim) {
		vexfsref_charge(victim, -1, -1, false);
		iput(victim);
	}
	return err;
}

/*
 * The file_limit_kib parameter: a module with a small largest file, as some are, that explains each
 * refusal in the kernel log (the errno alone says little).
 */
static int vx_file_limit(struct inode *inode, loff_t size)
{
	u64 limit = (u64)READ_ONCE(vexfsref_file_limit_kib) << 10;

	if (!limit || size <= limit)
		return 0;
	pr_warn_ratelimited("vexfsref: %s: file size limit of %llu bytes reached, write refused\n",
			    inode->i_sb->s_id, limit);
	return -EFBIG;
}

static int vx_setattr(VX_IDMAP_T *idmap, struct dentry *dentry, struct iattr *attr)
{
	struct inode *inode = d_inode(dentry);
	int err;

	err = setattr_prepare(idmap, dentry, attr);
	if (err)
		return err;
	if ((attr->ia_valid & ATTR_SIZE) && attr->ia_size != i_size_read(inode)) {
		loff_t old = i_size_read(inode);

		if (!S_ISREG(inode->i_mode))
			return -EINVAL;
		if (attr->ia_size > old) {
			err = vx_file_limit(inode, attr->ia_size);
			if (err)
				return err;
			err = vexfsref_charge(inode, attr->ia_size, -1, true);
			if (err)
				return err;
		}
		if (vx_silent(VX_SILENT_STALE_TRUNCATE) && attr->ia_size < old)
			i_size_write(inode, attr->ia_size);	/* planted bug: cut bytes stay cached */
		else
			truncate_setsize(inode, attr->ia_size);
		vexfsref_charge(inode, attr->ia_size, -1, false);
	}
	setattr_copy(idmap, inode, attr);
	mark_inode_dirty(inode);
	vx_changed(inode->i_sb);
	return 0;
}

static int vx_mmap(struct file *file, struct vm_area_struct *vma)
{
	/* Stores through a shared mapping leave no trace we could watch, so
	 * from now on every sync saves, changed or not. */
	if ((vma->vm_flags & (VM_SHARED | VM_MAYWRITE)) == (VM_SHARED | VM_MAYWRITE))
		VX_SB(file_inode(file)->i_sb)->mmap_written = true;
	return generic_file_mmap(file, vma);
}

static int vx_fsync(struct file *file, loff_t start, loff_t end, int datasync)
{
	if (vx_silent(VX_SILENT_FSYNC_LOST))
		return 0;	/* planted bug: success without making anything durable */
	return vexfsref_save(file_inode(file)->i_sb);
}

/* ---- address space: ramfs-like, pages stay dirty and unevictable ---- */
static int vx_read_folio(struct file *file, struct folio *folio)
{
	/* only holes reach here: real data never leaves the page cache */
	folio_zero_range(folio, 0, folio_size(folio));
	flush_dcache_folio(folio);
	folio_mark_uptodate(folio);
	folio_unlock(folio);
	return 0;
}

#if LINUX_VERSION_CODE >= KERNEL_VERSION(6, 12, 0)
#define VX_WB_PAGE_T struct folio **
#define VX_WE_PAGE_T struct folio *
#define vx_we_folio(p) (p)
#else
#define VX_WB_PAGE_T struct page **
#define VX_WE_PAGE_T struct page *
#define vx_we_folio(p) page_folio(p)
#endif

static int vx_write_begin(struct file *file, struct address_space *mapping, loff_t pos,
			  unsigned int len, VX_WB_PAGE_T pagep, void **fsdata)
{
	struct inode *inode = mapping->host;
	loff_t size = i_size_read(inode);
	int err;

	if (pos + len > size) {
		err = vx_file_limit(inode, pos + len);
		if (err)
			return err;
		err = vexfsref_charge(inode, pos + len, -1, true);
		if (err)
			return err;
	}
	err = simple_write_begin(file, mapping, pos, len, pagep, fsdata);
	if (err && pos + len > size)
		vexfsref_charge(inode, i_size_read(inode), -1, false);
	return err;
}

static int vx_write_end(struct file *file, struct address_space *mapping, loff_t pos,
			unsigned int len, unsigned int copied, VX_WE_PAGE_T page, void *fsdata)
{
	struct folio *folio = vx_we_folio(page);
	struct inode *inode = mapping->host;
	loff_t last = pos + copied;

	if (!folio_test_uptodate(folio)) {
		if (copied < len) {
			size_t from = offset_in_folio(folio, pos);

			folio_zero_range(folio, from + copied, len - copied);
		}
		folio_mark_uptodate(folio);
	}
	if (vx_silent(VX_SILENT_ZERO_PAST_64K) && last > SZ_64K) {
		/* planted bug: the bytes past 64 KiB are accepted but zeros are kept */
		loff_t from = max_t(loff_t, pos, SZ_64K);

		folio_zero_range(folio, offset_in_folio(folio, from), last - from);
	}
	if (last > inode->i_size)
		i_size_write(inode, last);
	folio_mark_dirty(folio);
	folio_unlock(folio);
	folio_put(folio);
	vexfsref_charge(inode, i_size_read(inode), -1, false);
	vx_changed(inode->i_sb);
	return copied;
}

const struct address_space_operations vexfsref_aops = {
	.read_folio	= vx_read_folio,
	.write_begin	= vx_write_begin,
	.write_end	= vx_write_end,
	.dirty_folio	= noop_dirty_folio,
};

const struct file_operations vexfsref_file_fops = {
	.read_iter	= generic_file_read_iter,
	.write_iter	= generic_file_write_iter,
	.mmap		= vx_mmap,
	.fsync		= vx_fsync,
#if LINUX_VERSION_CODE >= KERNEL_VERSION(6, 5, 0)
	.splice_read	= filemap_splice_read,
#else
	.splice_read	= generic_file_splice_read,
#endif
	.splice_write	= iter_file_splice_write,
	.llseek		= generic_file_llseek,
	.unlocked_ioctl	= vexfsref_ioctl,
	.compat_ioctl	= compat_ptr_ioctl,
};

const struct inode_operations vexfsref_file_iops = {
	.setattr	= vx_setattr,
	.getattr	= simple_getattr,
};

const struct inode_operations vexfsref_symlink_iops = {
	.get_link	= page_get_link,
	.setattr	= vx_setattr,
};

const struct inode_operations vexfsref_dir_iops = {
	.create		= vx_create,
	.lookup		= simple_lookup,
	.link		= vx_link,
	.unlink		= vx_unlink,
	.symlink	= vx_symlink,
	.mkdir		= vx_mkdir,
	.rmdir		= vx_rmdir,
	.mknod		= vx_mknod,
	.rename		= vx_rename,
	.setattr	= vx_setattr,
};
