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
	__u64 collisions; /* read_begin calls after an invalidation since this task's previous one */
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
	/* mmu_interval_read_begin calls of a task after ops->invalidate ran (and set the sequence) since that task's
	 * previous mmu_interval_read_begin on this mirror: read collisions; retries + busy <= collisions */
	__u64 collisions;
};

/* MIRROR_RELEASE flags */
#define MIRROR_RELEASE_AFTER_READER_BLOCKS 1

/* The secondary-TLB op the module implements (the kernel it was built for has exactly one). */
#define MIRROR_TLB_API_INVALIDATE_RANGE 1      /* ->invalidate_range, before 6.6 */
#define MIRROR_TLB_API_ARCH_INVALIDATE_SECONDARY 2 /* ->arch_invalidate_secondary_tlbs, 6.6+ */

/* MIRROR_TLB_STATUS: what the secondary-TLB subscriber received since MIRROR_TLB_REGISTER. */
struct mirror_tlb_status {
	__u64 api;         /* MIRROR_TLB_API_* */
	__u64 calls;       /* calls of the op */
	__u64 full_mm;     /* of them, over (0, ~0UL): the whole address space */
	__u64 range_bytes; /* bytes of the others */
};

#define MIRROR_IOC 'M'
#define MIRROR_REGISTER _IOW(MIRROR_IOC, 1, struct mirror_register)
#define MIRROR_UNREGISTER _IO(MIRROR_IOC, 2)
#define MIRROR_FAULT _IOWR(MIRROR_IOC, 3, struct mirror_fault)
#define MIRROR_HOLD_NEXT _IO(MIRROR_IOC, 4)     /* hold the next blockable invalidation */
#define MIRROR_RELEASE _IOW(MIRROR_IOC, 5, __u64) /* release it (flags above) */
#define MIRROR_RESUME _IO(MIRROR_IOC, 6)        /* resume a paused fault */
#define MIRROR_STATUS _IOR(MIRROR_IOC, 7, struct mirror_status)
/* A classic mmu_notifier on the caller's mm implementing only the secondary-TLB op. */
#define MIRROR_TLB_REGISTER _IO(MIRROR_IOC, 8)
#define MIRROR_TLB_UNREGISTER _IO(MIRROR_IOC, 9)
#define MIRROR_TLB_STATUS _IOR(MIRROR_IOC, 10, struct mirror_tlb_status)

#endif
