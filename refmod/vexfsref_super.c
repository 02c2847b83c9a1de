// SPDX-License-Identifier: GPL-2.0
/*
 * vexfsref - reference filesystem for pytest-vexfs.
 *
 * A small, correct test target that imitates VexFS: files, directories,
 * hard links, symlinks, plus per-file vector sets searched by ioctl.
 *
 * Design (deliberately simple):
 *  - While mounted the tree lives in memory on top of the dcache and page
 *    cache, like ramfs (vexfsref_inode.c).  Vector sets hang off the inode.
 *  - The whole tree is serialised to the block device by vexfsref_save() on
 *    sync_fs(wait), fsync, remount read-only and unmount, and read back by
 *    vexfsref_load() at mount.  Format: vexfsref_format.h (a superblock in
 *    block 0 and a CRC-checked stream of inode records from its
 *    payload_block).  A save writes the new payload where it does not
 *    overwrite the old one (after it, or from block 1 when it fits before
 *    it), flushes, then writes the superblock naming it with a flush and FUA:
 *    a crash at any point leaves the old or the new image, whole.  Only when
 *    the device has no room for two copies is the image rewritten in place.
 *  - ENOSPC: the serialised size is bounded by a running charge; growth
 *    beyond capacity = min(device - 4 KiB, half of RAM) fails.  The RAM cap
 *    exists because the contents are held in memory, as tmpfs's default.
 *
 * Fault injection for harness self-tests: vexfsref_fault.c.
 */
#include <linux/module.h>
#include <linux/init.h>
#include <linux/slab.h>
#include <linux/blkdev.h>
#include <linux/buffer_head.h>
#include <linux/pagemap.h>
#include <linux/highmem.h>
#include <linux/statfs.h>
#include <linux/seq_file.h>
#include <linux/fs_context.h>
#include <linux/fs_parser.h>
#include <linux/crc32.h>
#include <linux/xarray.h>
#include <linux/mm.h>
#include <linux/dcache.h>
#include <linux/backing-dev.h>

#include "vexfsref.h"

static bool verbose;
module_param(verbose, bool, 0644);
MODULE_PARM_DESC(verbose, "log every mount and save (default off: the module is quiet)");

static struct kmem_cache *vexfsref_inode_cachep;

/* ---------------------------------------------------------------- inodes */

static struct inode *vx_alloc_inode(struct super_block *sb)
{
	struct vexfsref_inode_info *vi;

	vi = alloc_inode_sb(sb, vexfsref_inode_cachep, GFP_KERNEL);
	if (!vi)
		return NULL;
	vi->charged = 0;
	vi->c_size = 0;
	vi->c_vbytes = 0;
	mutex_init(&vi->vlock);
	vi->vdim = 0;
	vi->vcount = 0;
	vi->vcap = 0;
	vi->vids = NULL;
	vi->vdata = NULL;
	vi->stale_parent = 0;
	vi->stale_len = 0;
	return &vi->vfs_inode;
}

static void vx_free_inode(struct inode *inode)
{
	kmem_cache_free(vexfsref_inode_cachep, VX_I(inode));
}

static void vx_evict_inode(struct inode *inode)
{
	truncate_inode_pages_final(&inode->i_data);
	clear_inode(inode);
	vexfsref_uncharge(inode);
	vexfsref_vec_free(VX_I(inode));
	atomic64_dec(&VX_SB(inode->i_sb)->ninodes);
}

static void vx_init_once(void *p)
{
	struct vexfsref_inode_info *vi = p;

	inode_init_once(&vi->vfs_inode);
}

/* Collect a referenced snapshot of the superblock's live inodes. */
static struct inode **vx_grab_inodes(struct super_block *sb, size_t *countp)
{
	struct inode **arr, *inode;
	size_t n = 0, cap = 16;

	spin_lock(&sb->s_inode_list_lock);
	list_for_each_entry(inode, &sb->s_inodes, i_sb_list)
		cap++;
	spin_unlock(&sb->s_inode_list_lock);

	arr = kvmalloc_array(cap, sizeof(*arr), GFP_KERNEL);
	if (!arr)
		return NULL;
	spin_lock(&sb->s_inode_list_lock);
	list_for_each_entry(inode, &sb->s_inodes, i_sb_list) {
		if (n == cap)
			break;
		if (igrab(inode))
			arr[n++] = inode;
	}
	spin_unlock(&sb->s_inode_list_lock);
	*countp = n;
	return arr;
}

static void vx_put_inodes(struct inode **arr, size_t n)
{
	size_t i;

	for (i = 0; i < n; i++)
		iput(arr[i]);
	kvfree(arr);
}

/* ------------------------------------------------------------ image write */

struct vx_writer {
	struct super_block *sb;
	struct buffer_head *bh;
	sector_t blk;		/* block the next buffer goes to */
	sector_t limit;		/* first block past the device */
	unsigned int off;
	unsigned int since_sync;
	u64 total;
	u32 crc;
	int err;
};

static void vx_w_flush(struct vx_writer *w)
{
	if (!w->bh)
		return;
	mark_buffer_dirty(w->bh);
	brelse(w->bh);
	w->bh = NULL;
	w->blk++;
	/* keep dirty block-device pages bounded while writing a big image */
	if (++w->since_sync >= 4096) {
		w->since_sync = 0;
		if (!w->err)
			w->err = sync_blockdev(w->sb->s_bdev);
	}
}

/* Append @len bytes from @p (zeros when @p is NULL) to the image. */
static void vx_w_bytes(struct vx_writer *w, const void *p, size_t len)
{
	while (len && !w->err) {
		size_t n;

		if (!w->bh) {
			if (w->blk >= w->limit) {
				w->err = -ENOSPC;
				return;
			}
			w->bh = sb_getblk(w->sb, w->blk);
			if (!w->bh) {
				w->err = -EIO;
				return;
			}
			lock_buffer(w->bh);
			memset(w->bh->b_data, 0, VEXFSREF_BLOCK_SIZE);
			set_buffer_uptodate(w->bh);
			unlock_buffer(w->bh);
			w->off = 0;
		}
		n = min_t(size_t, len, VEXFSREF_BLOCK_SIZE - w->off);
		if (p) {
			memcpy(w->bh->b_data + w->off, p, n);
			p += n;
		}
		w->crc = crc32_le(w->crc, w->bh->b_data + w->off, n);
		w->off += n;
		w->total += n;
		len -= n;
		if (w->off == VEXFSREF_BLOCK_SIZE)
			vx_w_flush(w);
	}
}

static void vx_w_pad8(struct vx_writer *w)
{
	if (w->total & 7)
		vx_w_bytes(w, NULL, 8 - (w->total & 7));
}

/* Write the first @size bytes of @inode's page cache. */
static void vx_w_mapping(struct vx_writer *w, struct inode *inode, u64 size)
{
	pgoff_t idx;

	for (idx = 0; (u64)idx << PAGE_SHIFT < size && !w->err; idx++) {
		size_t n = min_t(u64, PAGE_SIZE, size - ((u64)idx << PAGE_SHIFT));
		struct page *page = find_get_page(inode->i_mapping, idx);

		if (page && PageUptodate(page)) {
			void *kaddr = kmap_local_page(page);

			vx_w_bytes(w, kaddr, n);
			kunmap_local(kaddr);
		} else {
			vx_w_bytes(w, NULL, n);	/* hole */
		}
		if (page)
			put_page(page);
		cond_resched();
	}
}

struct vx_name {
	u64 parent;
	u32 len;
	char name[VEXFSREF_NAME_MAX + 1];
};

/* Names of @inode (hashed, non-root dentries).  Caller holds ns_lock. */
static int vx_collect_names(struct inode *inode, struct vx_name **namesp, u32 *np)
{
	size_t cap = S_ISDIR(inode->i_mode) ? 1 : max_t(size_t, inode->i_nlink, 1);
	struct vx_name *names;
	struct dentry *d;
	u32 n = 0;

	names = kvmalloc_array(cap, sizeof(*names), GFP_KERNEL);
	if (!names)
		return -ENOMEM;
	spin_lock(&inode->i_lock);
	hlist_for_each_entry(d, &inode->i_dentry, d_u.d_alias) {
		if (n == cap)
			break;
		spin_lock(&d->d_lock);
		if (!d_unhashed(d) && !IS_ROOT(d) && d->d_parent->d_inode) {
			struct vexfsref_inode_info *vi = VX_I(inode);

			names[n].parent = d->d_parent->d_inode->i_ino;
			names[n].len = min_t(u32, d->d_name.len, VEXFSREF_NAME_MAX);
			memcpy(names[n].name, d->d_name.name, names[n].len);
			if (vx_silent(VX_SILENT_RENAME_UNDONE) && vi->stale_len && n == 0) {
				/* planted bug: the name before the cross-directory rename is saved */
				names[n].parent = vi->stale_parent;
				names[n].len = vi->stale_len;
				memcpy(names[n].name, vi->stale_name, vi->stale_len);
			}
			n++;
		}
		spin_unlock(&d->d_lock);
	}
	spin_unlock(&inode->i_lock);
	*namesp = names;
	*np = n;
	return 0;
}

static void vx_w_inode(struct vx_writer *w, struct inode *inode)
{
	struct vexfsref_inode_info *vi = VX_I(inode);
	struct vexfsref_dinode di = {};
	struct timespec64 at = vx_get_atime(inode), mt = vx_get_mtime(inode),
			  ct = vx_get_ctime(inode);
	struct vx_name *names;
	u64 size = 0;
	u32 nnames, i;

	if (vx_collect_names(inode, &names, &nnames)) {
		w->err = -ENOMEM;
		return;
	}
	if (S_ISREG(inode->i_mode) || S_ISLNK(inode->i_mode))
		size = i_size_read(inode);

	mutex_lock(&vi->vlock);
	di.ino = cpu_to_le64(inode->i_ino);
	di.mode = cpu_to_le32(inode->i_mode);
	di.uid = cpu_to_le32(from_kuid(&init_user_ns, inode->i_uid));
	di.gid = cpu_to_le32(from_kgid(&init_user_ns, inode->i_gid));
	di.rdev = cpu_to_le32(new_encode_dev(inode->i_rdev));
	di.size = cpu_to_le64(size);
	di.atime_sec = cpu_to_le64(at.tv_sec);
	di.mtime_sec = cpu_to_le64(mt.tv_sec);
	di.ctime_sec = cpu_to_le64(ct.tv_sec);
	di.atime_nsec = cpu_to_le32(at.tv_nsec);
	di.mtime_nsec = cpu_to_le32(mt.tv_nsec);
	di.ctime_nsec = cpu_to_le32(ct.tv_nsec);
	di.nnames = cpu_to_le32(nnames);
	di.vec_dim = cpu_to_le32(vi->vdim);
	di.vec_count = cpu_to_le64(vi->vcount);
	vx_w_bytes(w, &di, sizeof(di));
	for (i = 0; i < nnames; i++) {
		struct vexfsref_dname dn = {
			.parent = cpu_to_le64(names[i].parent),
			.len = cpu_to_le32(names[i].len),
		};

		vx_w_bytes(w, &dn, sizeof(dn));
		vx_w_bytes(w, names[i].name, names[i].len);
		vx_w_pad8(w);
	}
	kvfree(names);
	if (size) {
		vx_w_mapping(w, inode, size);
		vx_w_pad8(w);
	}
	if (vi->vcount) {
		/* x86 is little-endian: ids and floats are stored as in memory */
		vx_w_bytes(w, vi->vids, vi->vcount * sizeof(u64));
		vx_w_bytes(w, vi->vdata, vi->vcount * vi->vdim * sizeof(u32));
		vx_w_pad8(w);
	}
	mutex_unlock(&vi->vlock);
}

/*
 * Where the next payload goes: after the current one, or from block 1 when it
 * fits before it, so that the current image stays whole until the superblock
 * names the new one.  @limit is the first block it must not reach.  Without
 * room for two copies, block 1 (in place: a crash during the save loses it).
 */
static sector_t vx_next_payload(struct vexfsref_sb_info *sbi, sector_t dev_blocks, sector_t *limit)
{
	sector_t need = DIV_ROUND_UP(sbi->used, VEXFSREF_BLOCK_SIZE) + 1;
	sector_t after = sbi->payload_block + sbi->payload_blocks;

	if (after + need <= dev_blocks) {
		*limit = dev_blocks;
		return after;
	}
	if (1 + need <= sbi->payload_block) {
		*limit = sbi->payload_block;
		return 1;
	}
	*limit = dev_blocks;
	return 1;
}

/*
 * Serialise the whole tree to the device.  Cheap when nothing changed since
 * the last save.  Runs under ns_lock, so the namespace is frozen meanwhile.
 * Order: payload, flush, superblock (preflush + FUA).  silent=commit_before_data
 * plants the classic reordering bug: the superblock is written before the
 * payload it describes, with no flush between.
 */
int vexfsref_save(struct super_block *sb)
{
	struct vexfsref_sb_info *sbi = VX_SB(sb);
	struct vexfsref_dsuper ds = {};
	struct vx_writer w = {};
	struct buffer_head *bh;
	struct inode **inodes;
	size_t n = 0, i, written = 0;
	bool commit_first = vx_silent(VX_SILENT_COMMIT_BEFORE_DATA);
	sector_t start;
	u64 changes;
	int err;

	if (!sbi || !sbi->loaded || sbi->final_saved || sb_rdonly(sb))
		return 0;
	mutex_lock(&sbi->ns_lock);
	changes = atomic64_read(&sbi->changes);
	if (changes == sbi->saved_changes && !sbi->mmap_written) {
		mutex_unlock(&sbi->ns_lock);
		return 0;
	}
	inodes = vx_grab_inodes(sb, &n);
	if (!inodes) {
		mutex_unlock(&sbi->ns_lock);
		return -ENOMEM;
	}

	w.sb = sb;
	w.blk = vx_next_payload(sbi, bdev_nr_bytes(sb->s_bdev) >> 12, &w.limit);
	start = w.blk;
	w.crc = ~0u;
	for (i = 0; i < n && !w.err; i++) {
		struct inode *inode = inodes[i];

		if (!inode->i_nlink)
			continue;	/* unlinked, still open: gone after remount */
		vx_w_inode(&w, inode);
		written++;
	}
	vx_w_flush(&w);
	err = w.err;
	if (!err && !commit_first)
		err = sync_blockdev(sb->s_bdev);
	if (!err && !commit_first)
		err = blkdev_issue_flush(sb->s_bdev);
	if (err) {
		pr_err("vexfsref: %s: save failed (%d); image on disk is invalid\n",
		       sb->s_id, err);
		goto out;
	}

	bh = sb_bread(sb, 0);
	if (!bh) {
		err = -EIO;
		goto out;
	}
	sbi->generation++;
	ds.magic = cpu_to_le64(VEXFSREF_MAGIC);
	ds.version = cpu_to_le32(VEXFSREF_VERSION);
	ds.block_size = cpu_to_le32(VEXFSREF_BLOCK_SIZE);
	ds.device_bytes = cpu_to_le64(bdev_nr_bytes(sb->s_bdev));
	ds.payload_bytes = cpu_to_le64(w.total);
	ds.inode_count = cpu_to_le64(written);
	ds.next_ino = cpu_to_le64(atomic64_read(&sbi->next_ino));
	ds.generation = cpu_to_le64(sbi->generation);
	ds.payload_crc = cpu_to_le32(w.crc);
	ds.payload_block = cpu_to_le64(start);
	ds.super_crc = 0;
	ds.super_crc = cpu_to_le32(crc32_le(~0u, (void *)&ds, sizeof(ds)));
	lock_buffer(bh);
	memset(bh->b_data, 0, VEXFSREF_BLOCK_SIZE);
	memcpy(bh->b_data, &ds, sizeof(ds));
	unlock_buffer(bh);
	mark_buffer_dirty(bh);
	if (commit_first) {
		/* planted bug: the superblock reaches the disk before the payload it names */
		err = sync_dirty_buffer(bh);
		err = err ?: sync_blockdev(sb->s_bdev);
		err = err ?: blkdev_issue_flush(sb->s_bdev);
	} else {
		err = __sync_dirty_buffer(bh, REQ_SYNC | REQ_PREFLUSH | REQ_FUA);
	}
	brelse(bh);
	if (err)
		goto out;
	sbi->payload_block = start;
	sbi->payload_blocks = DIV_ROUND_UP(w.total, VEXFSREF_BLOCK_SIZE);
	sbi->saved_changes = changes;
	if (sbi->verbose || verbose)
		pr_info("vexfsref: %s: saved %zu inodes, %llu bytes, generation %llu\n",
			sb->s_id, written, w.total, sbi->generation);
out:
	mutex_unlock(&sbi->ns_lock);
	vx_put_inodes(inodes, n);
	/* the image is on disk; do not keep a second copy in the bdev cache */
	invalidate_bdev(sb->s_bdev);
	return err;
}

/* ------------------------------------------------------------- image read */

struct vx_reader {
	struct super_block *sb;
	struct buffer_head *bh;
	sector_t blk;
	unsigned int off;
	u64 left;		/* payload bytes not consumed yet */
	int err;
};

/* Read @len bytes into @dst (skip when NULL); -EUCLEAN past the payload. */
static int vx_r_bytes(struct vx_reader *r, void *dst, u64 len)
{
	if (r->err)
		return r->err;
	if (len > r->left)
		return r->err = -EUCLEAN;
	while (len) {
		size_t n;

		if (!r->bh) {
			r->bh = sb_bread(r->sb, r->blk);
			if (!r->bh)
				return r->err = -EIO;
			r->off = 0;
		}
		n = min_t(u64, len, VEXFSREF_BLOCK_SIZE - r->off);
		if (dst) {
			memcpy(dst, r->bh->b_data + r->off, n);
			dst += n;
		}
		r->off += n;
		r->left -= n;
		len -= n;
		if (r->off == VEXFSREF_BLOCK_SIZE) {
			brelse(r->bh);
			r->bh = NULL;
			r->blk++;
		}
	}
	return 0;
}

static int vx_r_pad8(struct vx_reader *r, u64 consumed)
{
	return vx_r_bytes(r, NULL, VEXFSREF_ALIGN8(consumed) - consumed);
}

static void vx_r_done(struct vx_reader *r)
{
	brelse(r->bh);
	r->bh = NULL;
}

static sector_t vx_payload_block(const struct vexfsref_dsuper *ds)
{
	return le64_to_cpu(ds->payload_block) ?: 1;
}

static int vx_verify_payload(struct super_block *sb, const struct vexfsref_dsuper *ds)
{
	u64 left = le64_to_cpu(ds->payload_bytes);
	sector_t blk = vx_payload_block(ds);
	u32 crc = ~0u;

	while (left) {
		struct buffer_head *bh = sb_bread(sb, blk++);
		size_t n = min_t(u64, left, VEXFSREF_BLOCK_SIZE);

		if (!bh)
			return -EIO;
		crc = crc32_le(crc, bh->b_data, n);
		brelse(bh);
		left -= n;
		cond_resched();
	}
	return crc == le32_to_cpu(ds->payload_crc) ? 0 : -EUCLEAN;
}

/* Fill the page cache of @inode with @size bytes from the image. */
static int vx_r_mapping(struct vx_reader *r, struct inode *inode, u64 size)
{
	pgoff_t idx;
	int err = 0;

	for (idx = 0; (u64)idx << PAGE_SHIFT < size; idx++) {
		size_t n = min_t(u64, PAGE_SIZE, size - ((u64)idx << PAGE_SHIFT));
		struct page *page;
		void *kaddr;

		page = find_or_create_page(inode->i_mapping, idx, GFP_KERNEL);
		if (!page)
			return -ENOMEM;
		kaddr = kmap_local_page(page);
		err = vx_r_bytes(r, kaddr, n);
		if (n < PAGE_SIZE)
			memset(kaddr + n, 0, PAGE_SIZE - n);
		kunmap_local(kaddr);
		flush_dcache_page(page);
		SetPageUptodate(page);
		set_page_dirty(page);	/* noop_dirty_folio: pins it in memory */
		unlock_page(page);
		put_page(page);
		if (err)
			return err;
		cond_resched();
	}
	i_size_write(inode, size);
	return 0;
}

struct vx_link {
	struct inode *inode;
	u64 parent;
	u32 len;
	char *name;
};

struct vx_load {
	struct xarray inodes;	/* ino -> inode (one reference each) */
	struct xarray dirs;	/* ino -> attached directory dentry */
	struct vx_link *links;
	size_t nlinks, caplinks;
	u64 max_ino;
};

static bool vx_mode_ok(umode_t mode)
{
	switch (mode & S_IFMT) {
	case S_IFREG: case S_IFDIR: case S_IFLNK: case S_IFCHR:
	case S_IFBLK: case S_IFIFO: case S_IFSOCK:
		return true;
	}
	return false;
}

static int vx_r_name(struct vx_reader *r, struct vx_load *ld, struct inode *inode)
{
	struct vexfsref_dname dn;
	struct vx_link *l;
	u32 len, i;
	int err;

	err = vx_r_bytes(r, &dn, sizeof(dn));
	if (err)
		return err;
	len = le32_to_cpu(dn.len);
	if (len == 0 || len > VEXFSREF_NAME_MAX)
		return -EUCLEAN;
	if (ld->nlinks == ld->caplinks) {
		size_t cap = max_t(size_t, 64, ld->caplinks * 2);
		struct vx_link *nl = kvmalloc_array(cap, sizeof(*nl), GFP_KERNEL);

		if (!nl)
			return -ENOMEM;
		if (ld->links)
			memcpy(nl, ld->links, ld->nlinks * sizeof(*nl));
		kvfree(ld->links);
		ld->links = nl;
		ld->caplinks = cap;
	}
	l = &ld->links[ld->nlinks];
	l->name = kmalloc(len + 1, GFP_KERNEL);
	if (!l->name)
		return -ENOMEM;
	err = vx_r_bytes(r, l->name, len);
	if (!err)
		err = vx_r_pad8(r, sizeof(dn) + len);
	l->name[len] = 0;
	for (i = 0; i < len && !err; i++)
		if (l->name[i] == '/' || l->name[i] == 0)
			err = -EUCLEAN;
	if (!err && ((len == 1 && l->name[0] == '.') ||
		     (len == 2 && l->name[0] == '.' && l->name[1] == '.')))
		err = -EUCLEAN;
	if (err) {
		kfree(l->name);
		return err;
	}
	l->inode = inode;
	l->parent = le64_to_cpu(dn.parent);
	l->len = len;
	ld->nlinks++;
	return 0;
}

static int vx_r_inode(struct vx_reader *r, struct vx_load *ld)
{
	struct super_block *sb = r->sb;
	struct vexfsref_dinode di;
	struct vexfsref_inode_info *vi;
	struct inode *inode;
	u64 ino, size, vcount;
	u32 nnames, vdim, i;
	umode_t mode;
	int err;

	err = vx_r_bytes(r, &di, sizeof(di));
	if (err)
		return err;
	ino = le64_to_cpu(di.ino);
	mode = le32_to_cpu(di.mode);
	size = le64_to_cpu(di.size);
	nnames = le32_to_cpu(di.nnames);
	vdim = le32_to_cpu(di.vec_dim);
	vcount = le64_to_cpu(di.vec_count);
	if (!ino || !vx_mode_ok(mode) || size > r->left || vdim > VEXFS_REF_MAX_DIM ||
	    vcount > VEXFS_REF_MAX_VECTORS || (vcount && !vdim) ||
	    (!S_ISREG(mode) && (vcount || vdim)) ||
	    (!S_ISREG(mode) && !S_ISLNK(mode) && size) ||
	    (S_ISLNK(mode) && (size == 0 || size >= PAGE_SIZE)) ||
	    (S_ISDIR(mode) && nnames > 1) || (ino == VEXFSREF_ROOT_INO && !S_ISDIR(mode)) ||
	    nnames > r->left / sizeof(struct vexfsref_dname))
		return -EUCLEAN;

	inode = vexfsref_new_inode(sb, NULL, mode, new_decode_dev(le32_to_cpu(di.rdev)));
	if (!inode)
		return -ENOMEM;
	inode->i_ino = ino;
	inode->i_mode = mode;
	inode->i_uid = make_kuid(&init_user_ns, le32_to_cpu(di.uid));
	inode->i_gid = make_kgid(&init_user_ns, le32_to_cpu(di.gid));
	if (!S_ISDIR(mode))
		clear_nlink(inode);	/* one link per name, added when attached */
	err = xa_insert(&ld->inodes, ino, inode, GFP_KERNEL);
	if (err) {
		iput(inode);
		return err == -EBUSY ? -EUCLEAN : err;
	}
	ld->max_ino = max(ld->max_ino, ino);

	for (i = 0; i < nnames && !err; i++)
		err = vx_r_name(r, ld, inode);
	if (!err && size) {
		err = vexfsref_charge(inode, size, -1, false);
		err = err ?: vx_r_mapping(r, inode, size);
		err = err ?: vx_r_pad8(r, size);
	}
	if (!err && vcount) {
		vi = VX_I(inode);
		if (vcount * vdim * sizeof(u32) > r->left)
			return -EUCLEAN;
		err = vexfsref_vec_reserve(vi, vcount, vdim);
		err = err ?: vx_r_bytes(r, vi->vids, vcount * sizeof(u64));
		err = err ?: vx_r_bytes(r, vi->vdata, vcount * vdim * sizeof(u32));
		err = err ?: vx_r_pad8(r, vcount * vdim * sizeof(u32));
		if (!err) {
			vi->vdim = vdim;
			vi->vcount = vcount;
		}
	}
	if (!err && S_ISREG(mode))
		VX_I(inode)->vdim = vdim;
	vexfsref_charge(inode, size, vexfsref_vec_bytes(vcount, vdim), false);
	/* times last: filling the page cache may touch them */
	vx_set_atime(inode, ((struct timespec64){ (s64)le64_to_cpu(di.atime_sec),
						   le32_to_cpu(di.atime_nsec) }));
	vx_set_mtime(inode, ((struct timespec64){ (s64)le64_to_cpu(di.mtime_sec),
						   le32_to_cpu(di.mtime_nsec) }));
	vx_set_ctime(inode, ((struct timespec64){ (s64)le64_to_cpu(di.ctime_sec),
						   le32_to_cpu(di.ctime_nsec) }));
	return err;
}

/* Attach every name to its parent directory, parents first. */
static int vx_attach_all(struct super_block *sb, struct vx_load *ld)
{
	bool progress = true;
	size_t left = ld->nlinks, i;
	int err;

	err = xa_insert(&ld->dirs, VEXFSREF_ROOT_INO, sb->s_root, GFP_KERNEL);
	if (err)
		return err;
	while (left && progress) {
		progress = false;
		for (i = 0; i < ld->nlinks; i++) {
			struct vx_link *l = &ld->links[i];
			struct inode *inode = l->inode;
			struct dentry *parent, *d;
			struct qstr q;

			if (!l->inode)
				continue;
			parent = xa_load(&ld->dirs, l->parent);
			if (!parent)
				continue;
			progress = true;
			left--;
			l->inode = NULL;
			if (vx_silent(VX_SILENT_SUBDIR_LOST) && l->parent != VEXFSREF_ROOT_INO)
				continue;	/* planted bug: the name is silently not attached */
			q = (struct qstr)QSTR_INIT(l->name, l->len);
			d = d_hash_and_lookup(parent, &q);
			if (d || (S_ISDIR(inode->i_mode) && xa_load(&ld->dirs, inode->i_ino)) ||
			    inode == d_inode(sb->s_root)) {
				if (!IS_ERR_OR_NULL(d))
					dput(d);
				pr_warn("vexfsref: %s: dropping duplicate name %s\n", sb->s_id, l->name);
				continue;
			}
			d = d_alloc_name(parent, l->name);
			if (!d)
				return -ENOMEM;
			ihold(inode);
			if (S_ISDIR(inode->i_mode)) {
				inc_nlink(d_inode(parent));
				err = xa_insert(&ld->dirs, inode->i_ino, d, GFP_KERNEL);
				if (err) {
					dput(d);
					iput(inode);
					return err;
				}
			} else {
				set_nlink(inode, inode->i_nlink + 1);	/* from 0 at load */
			}
			d_add(d, inode);	/* our reference from d_alloc_name is the pin */
		}
		cond_resched();
	}
	if (left)
		pr_warn("vexfsref: %s: %zu names in unreachable directories dropped\n",
			sb->s_id, left);
	return 0;
}

static int vexfsref_load(struct super_block *sb, const struct vexfsref_dsuper *ds)
{
	struct vexfsref_sb_info *sbi = VX_SB(sb);
	struct vx_reader r = { .sb = sb, .blk = vx_payload_block(ds), .left = le64_to_cpu(ds->payload_bytes) };
	struct vx_load ld = {};
	u64 count = le64_to_cpu(ds->inode_count), i;
	struct inode *inode, *root;
	unsigned long idx;
	int err;

	xa_init(&ld.inodes);
	xa_init(&ld.dirs);
	err = vx_verify_payload(sb, ds);
	if (err) {
		pr_err("vexfsref: %s: image checksum mismatch\n", sb->s_id);
		return err;
	}
	for (i = 0; i < count && !err; i++) {
		err = vx_r_inode(&r, &ld);
		cond_resched();
	}
	vx_r_done(&r);
	root = xa_load(&ld.inodes, VEXFSREF_ROOT_INO);
	if (!err && !root)
		err = -EUCLEAN;
	if (!err) {
		xa_erase(&ld.inodes, VEXFSREF_ROOT_INO);
		sb->s_root = d_make_root(root);		/* consumes the reference */
		if (!sb->s_root)
			err = -ENOMEM;
	}
	if (!err)
		err = vx_attach_all(sb, &ld);

	xa_for_each(&ld.inodes, idx, inode)
		iput(inode);	/* unattached inodes die here */
	xa_destroy(&ld.inodes);
	xa_destroy(&ld.dirs);
	for (i = 0; i < ld.nlinks; i++)
		kfree(ld.links[i].name);
	kvfree(ld.links);
	atomic64_set(&sbi->next_ino, max(le64_to_cpu(ds->next_ino), ld.max_ino + 1));
	sbi->generation = le64_to_cpu(ds->generation);
	if (err == -EUCLEAN)
		pr_err("vexfsref: %s: corrupt image\n", sb->s_id);
	return err;
}

/* ------------------------------------------------------------ superblock */

static void vx_unpin_all(struct super_block *sb)
{
	struct inode **inodes;
	size_t n, i;

	inodes = vx_grab_inodes(sb, &n);
	if (!inodes)
		return;
	for (i = 0; i < n; i++) {
		struct inode *inode = inodes[i];

		for (;;) {
			struct dentry *d, *found = NULL;

			spin_lock(&inode->i_lock);
			hlist_for_each_entry(d, &inode->i_dentry, d_u.d_alias) {
				if (!d_unhashed(d) && !IS_ROOT(d)) {
					found = dget(d);
					break;
				}
			}
			spin_unlock(&inode->i_lock);
			if (!found)
				break;
			d_drop(found);
			dput(found);	/* ours */
			dput(found);	/* the pin */
		}
	}
	vx_put_inodes(inodes, n);
}

static int vx_statfs(struct dentry *dentry, struct kstatfs *buf)
{
	struct vexfsref_sb_info *sbi = VX_SB(dentry->d_sb);
	u64 used, cap, per_inode = sizeof(struct vexfsref_dinode) + VX_NAME_CHARGE;

	spin_lock(&sbi->charge_lock);
	used = sbi->used;
	cap = sbi->capacity;
	spin_unlock(&sbi->charge_lock);
	used = min(used, cap);
	buf->f_type = VEXFSREF_STATFS_MAGIC;
	buf->f_bsize = VEXFSREF_BLOCK_SIZE;
	buf->f_blocks = cap / VEXFSREF_BLOCK_SIZE;
	buf->f_bfree = (cap - used) / VEXFSREF_BLOCK_SIZE;
	buf->f_bavail = buf->f_bfree;
	buf->f_ffree = (cap - used) / per_inode;
	buf->f_files = buf->f_ffree + atomic64_read(&sbi->ninodes);
	buf->f_namelen = VEXFSREF_NAME_MAX;
	return 0;
}

static int vx_sync_fs(struct super_block *sb, int wait)
{
	return wait ? vexfsref_save(sb) : 0;
}

static int vx_show_options(struct seq_file *m, struct dentry *root)
{
	if (VX_SB(root->d_sb)->verbose)
		seq_puts(m, ",verbose");
	return 0;
}

static const struct super_operations vexfsref_sops = {
	.alloc_inode	= vx_alloc_inode,
	.free_inode	= vx_free_inode,
	.evict_inode	= vx_evict_inode,
	.statfs		= vx_statfs,
	.sync_fs	= vx_sync_fs,
	.show_options	= vx_show_options,
	.drop_inode	= generic_delete_inode,
};

struct vx_fs_opts {
	bool verbose;
};

enum { Opt_verbose };

static const struct fs_parameter_spec vexfsref_params[] = {
	fsparam_flag("verbose", Opt_verbose),
	{}
};

static int vx_parse_param(struct fs_context *fc, struct fs_parameter *param)
{
	struct vx_fs_opts *opts = fc->fs_private;
	struct fs_parse_result result;
	int opt;

	opt = fs_parse(fc, vexfsref_params, param, &result);
	if (opt < 0)
		return opt;	/* unknown: the VFS turns -ENOPARAM into EINVAL */
	if (opt == Opt_verbose)
		opts->verbose = true;
	return 0;
}

/*
 * Planted bug (silent=count_trusted): before the payload's checksum is
 * verified, the names of the records in the payload's first block are peeked
 * at through a VX_PEEK_NAME-byte buffer, each copy bounded only by the
 * on-disk name length (and the block): a crafted image overruns the buffer.
 */
#define VX_PEEK_NAME 16
static noinline void vx_peek_names(struct super_block *sb, sector_t blk)
{
	struct buffer_head *bh = sb_bread(sb, blk);
	size_t off = 0, end = VEXFSREF_BLOCK_SIZE;
	char *name;

	if (!bh)
		return;
	name = kmalloc(VX_PEEK_NAME, GFP_KERNEL);
	while (name && off + sizeof(struct vexfsref_dinode) <= end) {
		const struct vexfsref_dinode *di = (const void *)(bh->b_data + off);
		u32 nnames = le32_to_cpu(di->nnames), i;
		u64 size = le64_to_cpu(di->size);

		if (!di->ino || di->vec_count)
			break;
		off += sizeof(*di);
		for (i = 0; i < nnames && off + sizeof(struct vexfsref_dname) <= end; i++) {
			const struct vexfsref_dname *dn = (const void *)(bh->b_data + off);
			u32 len = le32_to_cpu(dn->len);

			off += sizeof(*dn);
			memcpy(name, bh->b_data + off, min_t(size_t, len, end - off));
			off += min_t(size_t, VEXFSREF_ALIGN8((u64)len), end - off);
		}
		if (size > end - off)
			break;
		off += VEXFSREF_ALIGN8(size);
	}
	kfree(name);
	brelse(bh);
}

static int vx_fill_super(struct super_block *sb, struct fs_context *fc)
{
	struct vx_fs_opts *opts = fc->fs_private;
	struct vexfsref_sb_info *sbi;
	struct vexfsref_dsuper ds;
	struct buffer_head *bh;
	u64 dev_bytes, ram_cap;
	u32 crc;
	int err;

	sbi = kzalloc(sizeof(*sbi), GFP_KERNEL);
	if (!sbi)
		return -ENOMEM;
	mutex_init(&sbi->ns_lock);
	spin_lock_init(&sbi->charge_lock);
	atomic64_set(&sbi->next_ino, VEXFSREF_ROOT_INO + 1);
	sbi->verbose = opts->verbose;
	sb->s_fs_info = sbi;

	if (!sb_set_blocksize(sb, VEXFSREF_BLOCK_SIZE))
		return invalf(fc, "vexfsref: device block size above %d", VEXFSREF_BLOCK_SIZE);
	/* Like ramfs, data pages stay dirty in memory and are never written
	 * back by the VM: use the no-writeback bdi instead of the disk's. */
	bdi_put(sb->s_bdi);
	sb->s_bdi = &noop_backing_dev_info;
	sb->s_maxbytes = MAX_LFS_FILESIZE;
	sb->s_magic = VEXFSREF_STATFS_MAGIC;
	sb->s_op = &vexfsref_sops;
	sb->s_time_gran = 1;

	dev_bytes = bdev_nr_bytes(sb->s_bdev);
	if (dev_bytes < VEXFSREF_MIN_DEVICE)
		return invalf(fc, "vexfsref: device too small");
	ram_cap = ((u64)totalram_pages() << PAGE_SHIFT) / 2;
	sbi->capacity = min(dev_bytes - VEXFSREF_BLOCK_SIZE, ram_cap);

	bh = sb_bread(sb, 0);
	if (!bh)
		return -EIO;
	memcpy(&ds, bh->b_data, sizeof(ds));
	brelse(bh);
	crc = le32_to_cpu(ds.super_crc);
	ds.super_crc = 0;
	if (le64_to_cpu(ds.magic) != VEXFSREF_MAGIC ||
	    crc != crc32_le(~0u, (void *)&ds, sizeof(ds)))
		return invalf(fc, "vexfsref: %s is not a vexfsref filesystem (run mkfs.vexfsref)",
			      sb->s_id);
	ds.super_crc = cpu_to_le32(crc);
	if (le32_to_cpu(ds.version) != VEXFSREF_VERSION ||
	    le32_to_cpu(ds.block_size) != VEXFSREF_BLOCK_SIZE ||
	    le64_to_cpu(ds.payload_bytes) > dev_bytes - VEXFSREF_BLOCK_SIZE ||
	    vx_payload_block(&ds) > (dev_bytes - le64_to_cpu(ds.payload_bytes)) / VEXFSREF_BLOCK_SIZE)
		return invalf(fc, "vexfsref: unsupported version or bad geometry on %s", sb->s_id);
	sbi->payload_block = vx_payload_block(&ds);
	sbi->payload_blocks = DIV_ROUND_UP(le64_to_cpu(ds.payload_bytes), VEXFSREF_BLOCK_SIZE);

	if (vx_silent(VX_SILENT_COUNT_TRUSTED))
		vx_peek_names(sb, sbi->payload_block);
	err = vexfsref_load(sb, &ds);
	invalidate_bdev(sb->s_bdev);
	if (err)
		return err;
	sbi->loaded = true;
	sbi->saved_changes = atomic64_read(&sbi->changes);
	if (sbi->verbose || verbose)
		pr_info("vexfsref: %s: mounted, %lld inodes, %llu of %llu bytes used\n",
			sb->s_id, (long long)atomic64_read(&sbi->ninodes), sbi->used,
			sbi->capacity);
	return 0;
}

static int vx_get_tree(struct fs_context *fc)
{
	return get_tree_bdev(fc, vx_fill_super);
}

static int vx_reconfigure(struct fs_context *fc)
{
	struct super_block *sb = fc->root->d_sb;
	struct vx_fs_opts *opts = fc->fs_private;

	if (!sb_rdonly(sb) && (fc->sb_flags & SB_RDONLY)) {
		int err = vexfsref_save(sb);

		if (err)
			return err;
	}
	VX_SB(sb)->verbose = opts->verbose;
	return 0;
}

static void vx_free_fc(struct fs_context *fc)
{
	kfree(fc->fs_private);
}

static const struct fs_context_operations vexfsref_context_ops = {
	.parse_param	= vx_parse_param,
	.get_tree	= vx_get_tree,
	.reconfigure	= vx_reconfigure,
	.free		= vx_free_fc,
};

static int vx_init_fs_context(struct fs_context *fc)
{
	fc->fs_private = kzalloc(sizeof(struct vx_fs_opts), GFP_KERNEL);
	if (!fc->fs_private)
		return -ENOMEM;
	fc->ops = &vexfsref_context_ops;
	return 0;
}

static void vx_kill_sb(struct super_block *sb)
{
	struct vexfsref_sb_info *sbi = VX_SB(sb);

	if (sbi && sb->s_root) {
		int err = vexfsref_save(sb);

		if (err)
			pr_err("vexfsref: %s: final save failed (%d)\n", sb->s_id, err);
		sbi->final_saved = true;
		vx_unpin_all(sb);
	}
	kill_block_super(sb);
	kfree(sbi);
}

static struct file_system_type vexfsref_fs_type = {
	.owner			= THIS_MODULE,
	.name			= VEXFSREF_FS_NAME,
	.init_fs_context	= vx_init_fs_context,
	.parameters		= vexfsref_params,
	.kill_sb		= vx_kill_sb,
	.fs_flags		= FS_REQUIRES_DEV,
};
MODULE_ALIAS_FS(VEXFSREF_FS_NAME);

/* --------------------------------------------------------------- module */

static int __init vexfsref_init(void)
{
	int err;

	if (vexfsref_fail_init) {
		pr_err("vexfsref: fail_init=1: refusing to load (-ENOMEM)\n");
		return -ENOMEM;
	}
	vexfsref_inode_cachep = kmem_cache_create("vexfsref_inode",
						  sizeof(struct vexfsref_inode_info), 0,
						  SLAB_RECLAIM_ACCOUNT | SLAB_ACCOUNT,
						  vx_init_once);
	if (!vexfsref_inode_cachep)
		return -ENOMEM;
	err = vexfsref_fault_init();
	if (err)
		goto out_cache;
	err = register_filesystem(&vexfsref_fs_type);
	if (err)
		goto out_fault;
	pr_info("vexfsref: loaded (filesystem type \"%s\")\n", VEXFSREF_FS_NAME);
	return 0;

out_fault:
	vexfsref_fault_exit();
out_cache:
	kmem_cache_destroy(vexfsref_inode_cachep);
	return err;
}

static void __exit vexfsref_exit(void)
{
	if (vexfsref_hang_on_exit)
		vexfsref_hang_forever();
	unregister_filesystem(&vexfsref_fs_type);
	vexfsref_fault_exit();
	rcu_barrier();		/* inodes are freed after an RCU grace period */
	kmem_cache_destroy(vexfsref_inode_cachep);
	pr_info("vexfsref: unloaded\n");
}

module_init(vexfsref_init);
module_exit(vexfsref_exit);

MODULE_LICENSE("GPL");
MODULE_AUTHOR("pytest-vexfs project");
MODULE_DESCRIPTION("vexfsref: reference vector-search filesystem for pytest-vexfs");
