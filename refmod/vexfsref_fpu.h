/* SPDX-License-Identifier: GPL-2.0 */
/*
 * vexfsref_fpu.h - interface of vexfsref_fpu.c, the float code.
 * Call only between kernel_fpu_begin() and kernel_fpu_end().
 * Keys and scores are IEEE-754 binary64 bit patterns stored in u64 arrays so
 * the non-FPU side never handles a double.
 */
#ifndef VEXFSREF_FPU_H
#define VEXFSREF_FPU_H

#include <linux/types.h>

struct vx_topk {
	u32 k;			/* capacity */
	u32 n;			/* filled entries */
	u64 *idx;		/* vector indexes */
	u64 *key;		/* sort key (smaller is better), binary64 bits */
	u64 *score;		/* reported score, binary64 bits */
};

void vexfsref_fpu_scan(const u32 *data, u64 first, u64 n, u32 dim, const u32 *query,
		       u32 metric, struct vx_topk *tk);
void vexfsref_fpu_finish(struct vx_topk *tk);

#endif /* VEXFSREF_FPU_H */
