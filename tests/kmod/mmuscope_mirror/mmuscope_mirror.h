/* SPDX-License-Identifier: GPL-2.0 */
/*
 * mmuscope_mirror: the user-space interface of the HMM mirror test module (ioctls on
 * /dev/mmuscope_mirror). Mirrored by tests/src/bin/mmuscope-workload/mirror.rs.
 */
#ifndef MMUSCOPE_MIRROR_H
#define MMUSCOPE_MIRROR_H

#include <linux/types.h>
#include <linux/ioctl.h>

/* MIRROR_REGISTER: an interval notifier on [addr, addr + len) of the caller's mm. */
struct mirror_register {
	__u64 addr;
	__u64 len;
};

/* Pause points of MIRROR_FAULT's first attempt (flags). */
#define MIRROR_PAUSE_BEFORE_FAULT 1 /* after mmu_interval_read_begin, before hmm_range_fault */
#define MIRROR_PAUSE_BEFORE_RETRY 2 /* after hmm_range_fault, before the lock and read_retry */

/* MIRROR_FAULT: the collision-retry loop over [addr, addr + npages pages). */
struct mirror_fault {
	__u64 addr;
	__u64 npages;
	__u64 flags;
	/* out: what this call saw */
	__u64 attempts;
	__u64 retries; /* mmu_interval_read_retry() said the range changed */
	__u64 busy;    /* hmm_range_fault() returned -EBUSY */
};

/* MIRROR_STATUS / the module's own counters for this file (since MIRROR_REGISTER). */
struct mirror_status {
	__u64 invalidations;   /* ops->invalidate calls (brackets that hit the interval) */
	__u64 confirmed_waits; /* readers seen blocked in mmu_interval_read_begin by MIRROR_RELEASE */
	__u64 retries;
	__u64 busy;
	__u64 holding;         /* an invalidation is held in ops->invalidate now */
	__u64 paused;          /* a fault is paused at a pause point now */
	__u64 reader_entered;  /* a fault is calling mmu_interval_read_begin now */
};

/* MIRROR_RELEASE flags */
#define MIRROR_RELEASE_AFTER_READER_BLOCKS 1

#define MIRROR_IOC 'M'
#define MIRROR_REGISTER _IOW(MIRROR_IOC, 1, struct mirror_register)
#define MIRROR_UNREGISTER _IO(MIRROR_IOC, 2)
#define MIRROR_FAULT _IOWR(MIRROR_IOC, 3, struct mirror_fault)
#define MIRROR_HOLD_NEXT _IO(MIRROR_IOC, 4)     /* hold the next blockable invalidation */
#define MIRROR_RELEASE _IOW(MIRROR_IOC, 5, __u64) /* release it (flags above) */
#define MIRROR_RESUME _IO(MIRROR_IOC, 6)        /* resume a paused fault */
#define MIRROR_STATUS _IOR(MIRROR_IOC, 7, struct mirror_status)

#endif
