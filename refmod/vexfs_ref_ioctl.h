/* SPDX-License-Identifier: GPL-2.0 WITH Linux-syscall-note */
/*
 * vexfs_ref_ioctl.h - vector ioctl ABI of the vexfsref reference filesystem.
 *
 * The one header shared by the kernel module and the userspace client
 * (vexctl).  All ioctls are issued on an open regular file of a mounted
 * vexfsref filesystem; each file holds one vector set of a single dimension.
 *
 * Pointers are passed as __u64 so the layout is identical for 32- and 64-bit
 * callers.  Floats are IEEE-754 binary32 (vectors) and binary64 (scores).
 * Inside the kernel they are opaque bit patterns (__u32/__u64): the only code
 * doing float arithmetic is vexfsref_fpu.c, between kernel_fpu_begin/end.
 *
 * Errors:
 *   EINVAL  dim == 0, dim differs from the file's dimension, k == 0, count == 0,
 *           unknown metric, non-zero reserved fields
 *   E2BIG   dim > VEXFS_REF_MAX_DIM, count > VEXFS_REF_MAX_BATCH,
 *           k > VEXFS_REF_MAX_K, or the file would exceed VEXFS_REF_MAX_VECTORS
 *   EFAULT  bad or NULL user pointer
 *   EBADF   add/delete/clear on a file not open for writing
 *   ENOTTY  ioctl on something that is not a vexfsref regular file
 *   ENOSPC  the vectors would not fit on the device
 *   ENOENT  delete: no vector has that id
 */
#ifndef VEXFS_REF_IOCTL_H
#define VEXFS_REF_IOCTL_H

#ifdef __KERNEL__
#include <linux/types.h>
#include <linux/ioctl.h>
typedef __u32 vexfs_ref_f32;	/* raw IEEE-754 binary32 bits */
typedef __u64 vexfs_ref_f64;	/* raw IEEE-754 binary64 bits */
#else
#include <stdint.h>
#include <sys/ioctl.h>
#include <linux/types.h>
typedef float vexfs_ref_f32;
typedef double vexfs_ref_f64;
#endif

#define VEXFS_REF_MAX_DIM	4096u
#define VEXFS_REF_MAX_BATCH	65536u		/* vectors per ADD call */
#define VEXFS_REF_MAX_BATCH_BYTES (64u << 20)	/* count * dim * 4 per ADD call */
#define VEXFS_REF_MAX_K		10000u
#define VEXFS_REF_MAX_VECTORS	(4u << 20)	/* per file */

enum vexfs_ref_metric {
	VEXFS_REF_METRIC_L2 = 0,	/* squared Euclidean distance, ascending */
	VEXFS_REF_METRIC_COSINE = 1,	/* cosine similarity, descending (0 if a norm is 0) */
	VEXFS_REF_METRIC_DOT = 2,	/* dot product, descending */
};

/* VEXFS_REF_IOC_ADD: append @count vectors of @dim floats.  The first add
 * fixes the file's dimension.  Ids need not be unique. */
struct vexfs_ref_add {
	__u32 dim;
	__u32 count;
	__u64 ids;		/* user pointer to __u64[count] */
	__u64 data;		/* user pointer to vexfs_ref_f32[count * dim], row-major */
};

struct vexfs_ref_result {
	__u64 id;
	vexfs_ref_f64 score;	/* distance (l2) or similarity (cosine, dot) */
};

/* VEXFS_REF_IOC_SEARCH: exact k-nearest-neighbour search.  Results are sorted
 * best first; ties are broken by insertion order.  Sums are accumulated in
 * double precision.  @found returns min(k, count). */
struct vexfs_ref_search {
	__u32 dim;
	__u32 k;
	__u32 metric;		/* enum vexfs_ref_metric */
	__u32 found;		/* out */
	__u64 query;		/* user pointer to vexfs_ref_f32[dim] */
	__u64 results;		/* user pointer to struct vexfs_ref_result[k] */
};

struct vexfs_ref_stats {
	__u64 count;		/* vectors stored */
	__u32 dim;		/* 0 while empty */
	__u32 reserved;
	__u64 bytes;		/* ids + float data held in memory and on disk */
};

/* VEXFS_REF_IOC_DELETE: remove every vector with @id; @deleted returns how many. */
struct vexfs_ref_delete {
	__u64 id;
	__u64 deleted;		/* out */
};

#define VEXFS_REF_IOC_MAGIC	0xE7
#define VEXFS_REF_IOC_ADD	_IOW(VEXFS_REF_IOC_MAGIC, 1, struct vexfs_ref_add)
#define VEXFS_REF_IOC_SEARCH	_IOWR(VEXFS_REF_IOC_MAGIC, 2, struct vexfs_ref_search)
#define VEXFS_REF_IOC_STATS	_IOR(VEXFS_REF_IOC_MAGIC, 3, struct vexfs_ref_stats)
#define VEXFS_REF_IOC_CLEAR	_IO(VEXFS_REF_IOC_MAGIC, 4)
#define VEXFS_REF_IOC_DELETE	_IOWR(VEXFS_REF_IOC_MAGIC, 5, struct vexfs_ref_delete)

#endif /* VEXFS_REF_IOCTL_H */
