// SPDX-License-Identifier: GPL-2.0
/*
 * vexfsref_fpu.c - the only float arithmetic in vexfsref.
 *
 * Built with the kernel's CC_FLAGS_FPU (SSE2 enabled) and called only
 * between kernel_fpu_begin() and kernel_fpu_end() (vexfsref_vec.c).  It
 * includes nothing but <linux/types.h> and calls no kernel function, so no
 * SSE code can run outside an FPU section.
 *
 * Scores are accumulated in double precision.  The top-k set is a max-heap
 * on (key, index) where key is smaller-is-better (l2: distance; cosine and
 * dot: negated similarity); vexfsref_fpu_finish() sorts it best first,
 * ties by insertion order.
 */
#include <linux/types.h>
#include "vexfs_ref_ioctl.h"
#include "vexfsref_fpu.h"

/* (key a, index ia) ranks after (key b, index ib) */
static inline bool worse(double a, u64 ia, double b, u64 ib)
{
	return a > b || (a == b && ia > ib);
}

static void sift_down(double *key, u64 *idx, double *score, u32 n, u32 i)
{
	for (;;) {
		u32 l = 2 * i + 1, r = l + 1, m = i;
		double tk, ts;
		u64 ti;

		if (l < n && worse(key[l], idx[l], key[m], idx[m]))
			m = l;
		if (r < n && worse(key[r], idx[r], key[m], idx[m]))
			m = r;
		if (m == i)
			return;
		tk = key[i]; key[i] = key[m]; key[m] = tk;
		ti = idx[i]; idx[i] = idx[m]; idx[m] = ti;
		ts = score[i]; score[i] = score[m]; score[m] = ts;
		i = m;
	}
}

static void push(struct vx_topk *tk, u64 index, double key, double score)
{
	double *keys = (double *)tk->key, *scores = (double *)tk->score;
	u64 *idx = tk->idx;
	u32 i;

	if (tk->n == tk->k) {
		/* indexes arrive in increasing order: a tie never displaces */
		if (!(key < keys[0]))
			return;
		keys[0] = key;
		idx[0] = index;
		scores[0] = score;
		sift_down(keys, idx, scores, tk->n, 0);
		return;
	}
	i = tk->n++;
	keys[i] = key;
	idx[i] = index;
	scores[i] = score;
	while (i > 0) {
		u32 p = (i - 1) / 2;
		double t;
		u64 ti;

		if (!worse(keys[i], idx[i], keys[p], idx[p]))
			break;
		t = keys[i]; keys[i] = keys[p]; keys[p] = t;
		ti = idx[i]; idx[i] = idx[p]; idx[p] = ti;
		t = scores[i]; scores[i] = scores[p]; scores[p] = t;
		i = p;
	}
}

void vexfsref_fpu_scan(const u32 *data, u64 first, u64 n, u32 dim, const u32 *query,
		       u32 metric, struct vx_topk *tk)
{
	const float *q = (const float *)query;
	double qn = 0.0;
	u64 i;
	u32 d;

	if (!tk->k)
		return;
	if (metric == VEXFS_REF_METRIC_COSINE)
		for (d = 0; d < dim; d++)
			qn += (double)q[d] * (double)q[d];

	for (i = first; i < first + n; i++) {
		const float *v = (const float *)data + i * dim;
		double s = 0.0, vn = 0.0, score, key;

		switch (metric) {
		case VEXFS_REF_METRIC_L2:
			for (d = 0; d < dim; d++) {
				double diff = (double)v[d] - (double)q[d];

				s += diff * diff;
			}
			score = s;
			key = s;
			break;
		case VEXFS_REF_METRIC_DOT:
			for (d = 0; d < dim; d++)
				s += (double)v[d] * (double)q[d];
			score = s;
			key = -s;
			break;
		default:	/* cosine */
			for (d = 0; d < dim; d++) {
				s += (double)v[d] * (double)q[d];
				vn += (double)v[d] * (double)v[d];
			}
			score = (vn > 0.0 && qn > 0.0) ? s / __builtin_sqrt(vn * qn) : 0.0;
			key = -score;
			break;
		}
		push(tk, i, key, score);
	}
}

/* Heap-sort the top-k set in place: best (smallest key) first. */
void vexfsref_fpu_finish(struct vx_topk *tk)
{
	double *keys = (double *)tk->key, *scores = (double *)tk->score;
	u64 *idx = tk->idx;
	u32 end;

	for (end = tk->n; end > 1; end--) {
		double t;
		u64 ti;

		t = keys[0]; keys[0] = keys[end - 1]; keys[end - 1] = t;
		ti = idx[0]; idx[0] = idx[end - 1]; idx[end - 1] = ti;
		t = scores[0]; scores[0] = scores[end - 1]; scores[end - 1] = t;
		sift_down(keys, idx, scores, end - 1, 0);
	}
}
