/* SPDX-License-Identifier: GPL-2.0 */
/*
 * vexfsref_format.h - on-disk image format, shared by the module and mkfs.
 *
 * Block 0 (4096 bytes) holds struct vexfsref_dsuper.  The payload starts at
 * block @payload_block (1 after mkfs; a save writes the new payload after the
 * old one, or from block 1 again when it fits before it, so a crash during a
 * save leaves the old image whole) and is a sequence of @inode_count inode
 * records, each laid out as
 *
 *   struct vexfsref_dinode
 *   nnames x { struct vexfsref_dname, name bytes, pad to 8 }
 *   file data (regular file) or target (symlink, no NUL), size bytes, pad to 8
 *   vec_count x __le64 id
 *   vec_count * vec_dim x IEEE-754 binary32, pad to 8
 *
 * Every integer is little-endian.  Names link the inode into directory
 * @parent; directories have exactly one name, the root (ino 1) none.
 * payload_crc and super_crc are crc32_le(~0, ...) without final inversion
 * (the kernel's crc32_le); super_crc covers the struct with super_crc = 0.
 */
#ifndef VEXFSREF_FORMAT_H
#define VEXFSREF_FORMAT_H

#include <linux/types.h>

#define VEXFSREF_MAGIC		0x3130464552584556ULL	/* "VEXREF01" */
#define VEXFSREF_VERSION	1
#define VEXFSREF_BLOCK_SIZE	4096
#define VEXFSREF_ROOT_INO	1
#define VEXFSREF_STATFS_MAGIC	0x56584652		/* "VXFR" */
#define VEXFSREF_NAME_MAX	255
#define VEXFSREF_MIN_DEVICE	(64 * 1024)

struct vexfsref_dsuper {
	__le64 magic;
	__le32 version;
	__le32 block_size;
	__le64 device_bytes;	/* device size when formatted (informational) */
	__le64 payload_bytes;
	__le64 inode_count;
	__le64 next_ino;
	__le64 generation;	/* bumped by every save */
	__le32 payload_crc;
	__le32 super_crc;
	__le64 payload_block;	/* first block of the payload (0 is read as 1) */
};

struct vexfsref_dinode {
	__le64 ino;
	__le32 mode;
	__le32 uid;
	__le32 gid;
	__le32 rdev;		/* new_encode_dev() */
	__le64 size;
	__le64 atime_sec;
	__le64 mtime_sec;
	__le64 ctime_sec;
	__le32 atime_nsec;
	__le32 mtime_nsec;
	__le32 ctime_nsec;
	__le32 nnames;
	__le32 vec_dim;
	__le32 reserved;
	__le64 vec_count;
};

struct vexfsref_dname {
	__le64 parent;
	__le32 len;
	__le32 reserved;
};

#define VEXFSREF_ALIGN8(x)	(((x) + 7) & ~(__u64)7)

#endif /* VEXFSREF_FORMAT_H */
