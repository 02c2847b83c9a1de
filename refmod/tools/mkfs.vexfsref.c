// SPDX-License-Identifier: GPL-2.0
/*
 * mkfs.vexfsref - format a device or image file as an empty vexfsref
 * filesystem: a superblock (block 0) and an image holding the root directory.
 *
 * usage: mkfs.vexfsref [-q] DEVICE
 */
#define _GNU_SOURCE
#include <endian.h>
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <linux/fs.h>

#include "../vexfsref_format.h"

/* The kernel's crc32_le(): reflected CRC-32, no final inversion. */
static uint32_t crc32_le(uint32_t crc, const void *p, size_t len)
{
	const unsigned char *b = p;

	while (len--) {
		crc ^= *b++;
		for (int i = 0; i < 8; i++)
			crc = (crc >> 1) ^ (0xEDB88320u & -(crc & 1));
	}
	return crc;
}

int main(int argc, char **argv)
{
	static unsigned char block[VEXFSREF_BLOCK_SIZE];
	struct vexfsref_dsuper ds;
	struct vexfsref_dinode root;
	const char *dev = NULL;
	uint64_t size = 0;
	struct timespec now;
	struct stat st;
	int quiet = 0, fd;

	for (int i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "-q"))
			quiet = 1;
		else if (argv[i][0] == '-' || dev) {
			fprintf(stderr, "usage: mkfs.vexfsref [-q] DEVICE\n");
			return 2;
		} else
			dev = argv[i];
	}
	if (!dev) {
		fprintf(stderr, "usage: mkfs.vexfsref [-q] DEVICE\n");
		return 2;
	}
	fd = open(dev, O_RDWR);
	if (fd < 0 || fstat(fd, &st) < 0) {
		fprintf(stderr, "mkfs.vexfsref: %s: %s\n", dev, strerror(errno));
		return 1;
	}
	if (S_ISBLK(st.st_mode)) {
		/* refuse a mounted or otherwise busy device */
		close(fd);
		fd = open(dev, O_RDWR | O_EXCL);
		if (fd < 0 || ioctl(fd, BLKGETSIZE64, &size) < 0) {
			fprintf(stderr, "mkfs.vexfsref: %s: %s\n", dev, strerror(errno));
			return 1;
		}
	} else {
		size = st.st_size;
	}
	if (size < VEXFSREF_MIN_DEVICE) {
		fprintf(stderr, "mkfs.vexfsref: %s: %llu bytes, need at least %d\n", dev,
			(unsigned long long)size, VEXFSREF_MIN_DEVICE);
		return 1;
	}

	clock_gettime(CLOCK_REALTIME, &now);
	memset(&root, 0, sizeof(root));
	root.ino = htole64(VEXFSREF_ROOT_INO);
	root.mode = htole32(S_IFDIR | 0755);
	root.atime_sec = root.mtime_sec = root.ctime_sec = htole64(now.tv_sec);
	root.atime_nsec = root.mtime_nsec = root.ctime_nsec = htole32(now.tv_nsec);

	memset(&ds, 0, sizeof(ds));
	ds.magic = htole64(VEXFSREF_MAGIC);
	ds.version = htole32(VEXFSREF_VERSION);
	ds.block_size = htole32(VEXFSREF_BLOCK_SIZE);
	ds.device_bytes = htole64(size);
	ds.payload_bytes = htole64(sizeof(root));
	ds.inode_count = htole64(1);
	ds.next_ino = htole64(VEXFSREF_ROOT_INO + 1);
	ds.generation = htole64(1);
	ds.payload_crc = htole32(crc32_le(~0u, &root, sizeof(root)));
	ds.payload_block = htole64(1);
	ds.super_crc = htole32(crc32_le(~0u, &ds, sizeof(ds)));

	memset(block, 0, sizeof(block));
	memcpy(block, &root, sizeof(root));
	if (pwrite(fd, block, sizeof(block), VEXFSREF_BLOCK_SIZE) != sizeof(block))
		goto io_error;
	memset(block, 0, sizeof(block));
	memcpy(block, &ds, sizeof(ds));
	if (pwrite(fd, block, sizeof(block), 0) != sizeof(block) || fsync(fd) < 0)
		goto io_error;
	close(fd);
	if (!quiet)
		printf("vexfsref: formatted %s (%llu bytes)\n", dev, (unsigned long long)size);
	return 0;

io_error:
	fprintf(stderr, "mkfs.vexfsref: %s: write failed: %s\n", dev, strerror(errno));
	return 1;
}
