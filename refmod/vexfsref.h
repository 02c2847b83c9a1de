/* SPDX-License-Identifier: GPL-2.0 */
/* vexfsref.h - internal declarations of the vexfsref reference filesystem. */
#ifndef VEXFSREF_H
#define VEXFSREF_H

#include <linux/fs.h>
#include <linux/mutex.h>
#include <linux/spinlock.h>
#include <linux/version.h>
#include <linux/atomic.h>

#include "vexfs_ref_ioctl.h"
#include "vexfsref_format.h"
#include "vexfsref_fpu.h"

/* The filesystem type name; a module profile refers to it. */
#define VEXFSREF_FS_NAME	"vexfsref"

/* ---- kernel API differences between 6.1 and 6.12 ---- */
#if LINUX_VERSION_CODE >= KERNEL_VERSION(6, 3, 0)
#define VX_IDMAP_T		struct mnt_idmap
#define VX_NOP_IDMAP		(&nop_mnt_idmap)
#else
#define VX_IDMAP_T		struct user_namespace
#define VX_NOP_IDMAP		(&init_user_ns)
#endif

#if LINUX_VERSION_CODE >= KERNEL_VERSION(6, 7, 0)
#define vx_get_atime(i)		inode_get_atime(i)
#define vx_get_mtime(i)		inode_get_mtime(i)
#define vx_set_atime(i, ts)	inode_set_atime_to_ts(i, ts)
#define vx_set_mtime(i, ts)	inode_set_mtime_to_ts(i, ts)
#else
#define vx_get_atime(i)		((i)->i_atime)
#define vx_get_mtime(i)		((i)->i_mtime)
#define vx_set_atime(i, ts)	((i)->i_atime = (ts))
#define vx_set_mtime(i, ts)	((i)->i_mtime = (ts))
#endif
#if LINUX_VERSION_CODE >= KERNEL_VERSION(6, 6, 0)
#define vx_get_ctime(i)		inode_get_ctime(i)
#define vx_set_ctime(i, ts)	inode_set_ctime_to_ts(i, ts)
#define vx_touch_ctime(i)	inode_set_ctime_current(i)
#else
#define vx_get_ctime(i)		((i)->i_ctime)
#define vx_set_ctime(i, ts)	((i)->i_ctime = (ts))
#define vx_touch_ctime(i)	((i)->i_ctime = current_time(i))
#endif

/* ---- per-superblock state ---- */
struct vexfsref_sb_info {
	struct mutex ns_lock;	/* serialises namespace changes and saves */
	spinlock_t charge_lock;	/* protects used and every inode's charge */
	u64 used;		/* upper bound of the serialised image size */
	u64 capacity;		/* bytes the image may take */
	atomic64_t next_ino;
	atomic64_t ninodes;
	atomic64_t changes;	/* bumped by every modification */
	u64 saved_changes;	/* value of changes at the last save */
	u64 generation;
	sector_t payload_block;	/* where the image on disk starts, and its length */
	sector_t payload_blocks;
	bool mmap_written;	/* a shared writable mapping was made */
	bool verbose;
	bool loaded;		/* image read successfully; save allowed */
	bool final_saved;	/* saved at kill_sb; later syncs are no-ops */
};

static inline struct vexfsref_sb_info *VX_SB(struct super_block *sb)
{
	return sb->s_fs_info;
}

/* ---- per-inode state ---- */
struct vexfsref_inode_info {
	struct inode vfs_inode;
	u64 charged;		/* bytes of sbi->used owed to this inode */
	u64 c_size;		/* file size included in charged */
	u64 c_vbytes;		/* vector bytes included in charged */
	struct mutex vlock;	/* protects the vector set */
	u32 vdim;
	u64 vcount;
	u64 vcap;
	u64 *vids;
	u32 *vdata;		/* vcap * vdim raw binary32 values */
	/* VX_SILENT_RENAME_UNDONE: the name before the last cross-directory rename */
	u64 stale_parent;
	u32 stale_len;
	char stale_name[VEXFSREF_NAME_MAX + 1];
};

static inline struct vexfsref_inode_info *VX_I(struct inode *inode)
{
	return container_of(inode, struct vexfsref_inode_info, vfs_inode);
}

/* Bytes a name record may take in the image (upper bound). */
#define VX_NAME_CHARGE	(sizeof(struct vexfsref_dname) + VEXFSREF_ALIGN8(VEXFSREF_NAME_MAX))

/* inode.c */
extern const struct inode_operations vexfsref_dir_iops;
extern const struct inode_operations vexfsref_file_iops;
extern const struct inode_operations vexfsref_symlink_iops;
extern const struct file_operations vexfsref_file_fops;
extern const struct address_space_operations vexfsref_aops;
struct inode *vexfsref_new_inode(struct super_block *sb, const struct inode *dir,
				 umode_t mode, dev_t dev);
u64 vexfsref_charge_for(struct inode *inode, u64 size, u64 vbytes);
int vexfsref_charge(struct inode *inode, s64 size, s64 vbytes, bool check);
void vexfsref_uncharge(struct inode *inode);
int vexfsref_space_check(struct super_block *sb, u64 extra);

/* vexfsref_super.c */
int vexfsref_save(struct super_block *sb);

/* vec.c */
long vexfsref_ioctl(struct file *file, unsigned int cmd, unsigned long arg);
void vexfsref_vec_free(struct vexfsref_inode_info *vi);
int vexfsref_vec_reserve(struct vexfsref_inode_info *vi, u64 want, u32 dim);
static inline u64 vexfsref_vec_bytes(u64 count, u32 dim)
{
	return count * sizeof(u64) + VEXFSREF_ALIGN8(count * dim * sizeof(u32));
}

/* fault.c: silent-corruption modes (module parameter silent=WORD,WORD), off by default */
#define VX_SILENT_SUBDIR_LOST		(1u << 0)	/* names in subdirectories dropped at mount */
#define VX_SILENT_RENAME_UNDONE		(1u << 1)	/* a rename across directories is saved undone */
#define VX_SILENT_ZERO_PAST_64K		(1u << 2)	/* written bytes past 64 KiB become zeros */
#define VX_SILENT_FSYNC_LOST		(1u << 3)	/* fsync returns 0 without saving */
#define VX_SILENT_STALE_TRUNCATE	(1u << 4)	/* truncate down keeps the cut bytes in the page cache */
#define VX_SILENT_COMMIT_BEFORE_DATA	(1u << 5)	/* a save writes the superblock before the payload, no flush between */
#define VX_SILENT_COUNT_TRUSTED		(1u << 6)	/* mount trusts on-disk name lengths as a buffer's bound */
extern unsigned int vexfsref_silent;
static inline bool vx_silent(unsigned int mode)
{
	return vexfsref_silent & mode;
}

/* fault.c */
int vexfsref_fault_init(void);
void vexfsref_fault_exit(void);
extern int vexfsref_fail_init;
extern int vexfsref_hang_on_exit;
extern int vexfsref_errpath_bug;
extern unsigned int vexfsref_file_limit_kib;
void vexfsref_hang_forever(void);
int vexfsref_planted_refusal(const char *op, struct inode *dir, struct dentry *dentry);

#endif /* VEXFSREF_H */
