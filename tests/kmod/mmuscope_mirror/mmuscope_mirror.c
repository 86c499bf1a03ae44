// SPDX-License-Identifier: GPL-2.0
/*
 * mmuscope_mirror: an HMM mirror for mmuscope's vm tier, modeled on the mirror half of the
 * kernel's lib/test_hmm.c (no device memory, no migration). A process opens /dev/mmuscope_mirror,
 * registers an interval notifier on one of its ranges and faults the range through the documented
 * collision-retry loop:
 *
 *	seq = mmu_interval_read_begin(sub);
 *	mmap_read_lock(); ret = hmm_range_fault(&range); mmap_read_unlock();
 *	if (ret == -EBUSY) again;
 *	mutex_lock(&lock);   // the "device page table" lock ops->invalidate takes too
 *	if (mmu_interval_read_retry(sub, seq)) { mutex_unlock(&lock); again; }
 *	mutex_unlock(&lock);
 *
 * Three controls make each collision happen an exact number of times, and the module counts what it
 * saw (the ground truth of the tests, independent of the agent):
 *  - MIRROR_HOLD_NEXT: the next blockable invalidation of the interval waits inside ops->invalidate
 *    (after mmu_interval_set_seq) until MIRROR_RELEASE; a reader calling mmu_interval_read_begin
 *    meanwhile must wait. With MIRROR_RELEASE_AFTER_READER_BLOCKS, the release first waits until
 *    the reader sleeps (TASK_UNINTERRUPTIBLE, the wait_event in mmu_interval_read_begin) and counts
 *    that confirmed wait.
 *  - MIRROR_PAUSE_BEFORE_FAULT: the first attempt stops between read_begin and hmm_range_fault until
 *    MIRROR_RESUME; an invalidation meanwhile makes hmm_range_fault return -EBUSY.
 *  - MIRROR_PAUSE_BEFORE_RETRY: the first attempt stops between hmm_range_fault and the lock; an
 *    invalidation meanwhile makes mmu_interval_read_retry say "retry".
 *
 * Read collisions, counted without sequence numbers: ops->invalidate marks every task that has called
 * mmu_interval_read_begin on the mirror ("invalidated since your last read_begin"); after each
 * mmu_interval_read_begin returns, the fault loop takes its task's mark (a task's first read_begin on the mirror has
 * none). Each retry and each -EBUSY is one; so is a later fault after an invalidation of a committed range.
 *
 * A second, independent subscriber per open file (MIRROR_TLB_REGISTER): a classic mmu_notifier on the
 * caller's mm that implements only the running kernel's secondary-TLB op, as IOMMU SVA drivers do
 * (->arch_invalidate_secondary_tlbs from 6.6, ->invalidate_range before; the rename is upstream
 * commit 1af5a8109904, 6.6-rc1). It counts the calls and the bytes it receives (MIRROR_TLB_STATUS):
 * the ground truth of the agent's secondary-TLB and double-notification figures. The module is built
 * per kernel, so the op is chosen at compile time.
 */
#include <linux/delay.h>
#include <linux/fs.h>
#include <linux/hmm.h>
#include <linux/miscdevice.h>
#include <linux/mm.h>
#include <linux/mmu_notifier.h>
#include <linux/module.h>
#include <linux/mutex.h>
#include <linux/sched.h>
#include <linux/sched/mm.h>
#include <linux/sched/task.h>
#include <linux/slab.h>
#include <linux/uaccess.h>
#include <linux/version.h>
#include <linux/wait.h>

#include "mmuscope_mirror.h"

/* A held invalidation or a paused fault gives up after this long (a test bug, not a hang). */
#define MIRROR_HOLD_LIMIT (60 * HZ)
#define MIRROR_MAX_ATTEMPTS 16
#define MIRROR_MAX_PAGES 4096
/* Tasks whose read collisions one mirror tracks; more readers make the fault ioctl fail (-ENOSPC). */
#define MIRROR_MAX_READERS 64

/* A task that has called mmu_interval_read_begin on the mirror, and whether ops->invalidate ran since. */
struct mirror_reader_mark {
	pid_t pid;
	bool invalidated;
};

struct mirror {
	struct mmu_interval_notifier notifier;
	bool registered;
	/* The "device page table" lock: ops->invalidate and the retry check take it. */
	struct mutex lock;
	/* Everything below: under state_lock; waiters on wq. */
	spinlock_t state_lock;
	wait_queue_head_t wq;
	bool hold_next, holding, release;
	bool paused, resume;
	struct task_struct *reader;
	struct mirror_status counts;
	struct mirror_reader_mark marks[MIRROR_MAX_READERS];
	unsigned int nr_marks;
	/* The secondary-TLB subscriber; its counts under state_lock. */
	struct mmu_notifier tlb;
	bool tlb_registered;
	struct mirror_tlb_status tlb_counts;
};

#if LINUX_VERSION_CODE >= KERNEL_VERSION(6, 6, 0)
#define MIRROR_TLB_API MIRROR_TLB_API_ARCH_INVALIDATE_SECONDARY
#else
#define MIRROR_TLB_API MIRROR_TLB_API_INVALIDATE_RANGE
#endif

/* The secondary-TLB op: may run under the page-table lock (before 6.6) or with preemption off (the
 * x86 TLB flush from 6.6), so it only counts, under a spinlock. */
static void mirror_tlb_invalidate(struct mmu_notifier *mn, struct mm_struct *mm, unsigned long start,
				  unsigned long end)
{
	struct mirror *m = container_of(mn, struct mirror, tlb);

	spin_lock(&m->state_lock);
	m->tlb_counts.calls++;
	if (start == 0 && end == ULONG_MAX)
		m->tlb_counts.full_mm++;
	else
		m->tlb_counts.range_bytes += end - start;
	spin_unlock(&m->state_lock);
}

static const struct mmu_notifier_ops mirror_tlb_ops = {
#if MIRROR_TLB_API == MIRROR_TLB_API_ARCH_INVALIDATE_SECONDARY
	.arch_invalidate_secondary_tlbs = mirror_tlb_invalidate,
#else
	.invalidate_range = mirror_tlb_invalidate,
#endif
};

static long mirror_tlb_register(struct mirror *m)
{
	int ret;

	if (m->tlb_registered)
		return -EBUSY;
	spin_lock(&m->state_lock);
	memset(&m->tlb_counts, 0, sizeof(m->tlb_counts));
	m->tlb_counts.api = MIRROR_TLB_API;
	spin_unlock(&m->state_lock);
	m->tlb.ops = &mirror_tlb_ops;
	ret = mmu_notifier_register(&m->tlb, current->mm);
	if (ret)
		return ret;
	m->tlb_registered = true;
	return 0;
}

static void mirror_tlb_unregister(struct mirror *m)
{
	/* Waits for callbacks in flight (SRCU); m->tlb.mm is the mm it was registered on. */
	mmu_notifier_unregister(&m->tlb, m->tlb.mm);
	m->tlb_registered = false;
}

static bool mirror_invalidate(struct mmu_interval_notifier *sub, const struct mmu_notifier_range *range,
			      unsigned long cur_seq)
{
	struct mirror *m = container_of(sub, struct mirror, notifier);
	unsigned int i;
	bool hold;

	if (mmu_notifier_range_blockable(range))
		mutex_lock(&m->lock);
	else if (!mutex_trylock(&m->lock))
		return false;
	mmu_interval_set_seq(sub, cur_seq);
	mutex_unlock(&m->lock);

	spin_lock(&m->state_lock);
	m->counts.invalidations++;
	for (i = 0; i < m->nr_marks; i++)
		m->marks[i].invalidated = true;
	hold = m->hold_next && mmu_notifier_range_blockable(range);
	if (hold) {
		m->hold_next = false;
		m->holding = true;
		m->release = false;
	}
	spin_unlock(&m->state_lock);
	if (hold) {
		wake_up_all(&m->wq);
		if (!wait_event_timeout(m->wq, READ_ONCE(m->release), MIRROR_HOLD_LIMIT))
			pr_warn("mmuscope_mirror: held invalidation never released; going on\n");
		spin_lock(&m->state_lock);
		m->holding = false;
		spin_unlock(&m->state_lock);
		wake_up_all(&m->wq);
	}
	return true;
}

static const struct mmu_interval_notifier_ops mirror_ops = {
	.invalidate = mirror_invalidate,
};

static int mirror_open(struct inode *inode, struct file *file)
{
	struct mirror *m = kzalloc(sizeof(*m), GFP_KERNEL);

	if (!m)
		return -ENOMEM;
	mutex_init(&m->lock);
	spin_lock_init(&m->state_lock);
	init_waitqueue_head(&m->wq);
	file->private_data = m;
	return 0;
}

static int mirror_release_file(struct inode *inode, struct file *file)
{
	struct mirror *m = file->private_data;

	if (m->registered)
		mmu_interval_notifier_remove(&m->notifier);
	if (m->tlb_registered)
		mirror_tlb_unregister(m);
	kfree(m);
	return 0;
}

static long mirror_register(struct mirror *m, void __user *arg)
{
	struct mirror_register r;
	int ret;

	if (copy_from_user(&r, arg, sizeof(r)))
		return -EFAULT;
	if (m->registered)
		return -EBUSY;
	if (!r.len || (r.addr | r.len) & ~PAGE_MASK)
		return -EINVAL;
	ret = mmu_interval_notifier_insert(&m->notifier, current->mm, r.addr, r.len, &mirror_ops);
	if (ret)
		return ret;
	m->registered = true;
	spin_lock(&m->state_lock);
	memset(&m->counts, 0, sizeof(m->counts));
	m->nr_marks = 0;
	spin_unlock(&m->state_lock);
	return 0;
}

/* Waits at a pause point until MIRROR_RESUME. */
static void mirror_pause(struct mirror *m)
{
	spin_lock(&m->state_lock);
	m->paused = true;
	m->resume = false;
	spin_unlock(&m->state_lock);
	wake_up_all(&m->wq);
	if (!wait_event_timeout(m->wq, READ_ONCE(m->resume), MIRROR_HOLD_LIMIT))
		pr_warn("mmuscope_mirror: paused fault never resumed; going on\n");
	spin_lock(&m->state_lock);
	m->paused = false;
	spin_unlock(&m->state_lock);
}

static void mirror_set_reader(struct mirror *m, struct task_struct *t)
{
	struct task_struct *old;

	spin_lock(&m->state_lock);
	old = m->reader;
	m->reader = t ? get_task_struct(t) : NULL;
	m->counts.reader_entered = !!t;
	spin_unlock(&m->state_lock);
	if (old)
		put_task_struct(old);
}

/*
 * Called when this task's mmu_interval_read_begin returned: 1 when ops->invalidate ran since the task's previous
 * one on the mirror (a read collision), 0 when not or when this is its first, -ENOSPC when too many tasks read.
 */
static int mirror_take_mark(struct mirror *m)
{
	pid_t pid = task_pid_nr(current);
	unsigned int i;
	int ret = -ENOSPC;

	spin_lock(&m->state_lock);
	for (i = 0; i < m->nr_marks; i++) {
		if (m->marks[i].pid == pid) {
			ret = m->marks[i].invalidated;
			m->marks[i].invalidated = false;
			break;
		}
	}
	if (i == m->nr_marks && i < MIRROR_MAX_READERS) {
		m->marks[i].pid = pid;
		m->marks[i].invalidated = false;
		m->nr_marks++;
		ret = 0;
	}
	spin_unlock(&m->state_lock);
	return ret;
}

static long mirror_fault(struct mirror *m, void __user *arg)
{
	struct mirror_fault f;
	struct mm_struct *mm = m->notifier.mm;
	struct hmm_range range = {};
	unsigned long *pfns;
	unsigned int attempt;
	int collided;
	long ret = -EAGAIN;

	if (copy_from_user(&f, arg, sizeof(f)))
		return -EFAULT;
	if (!m->registered)
		return -EINVAL;
	if (!f.npages || f.npages > MIRROR_MAX_PAGES || f.addr & ~PAGE_MASK)
		return -EINVAL;
	pfns = kvcalloc(f.npages, sizeof(*pfns), GFP_KERNEL);
	if (!pfns)
		return -ENOMEM;
	if (!mmget_not_zero(mm)) {
		kvfree(pfns);
		return -EFAULT;
	}
	range.notifier = &m->notifier;
	range.start = f.addr;
	range.end = f.addr + f.npages * PAGE_SIZE;
	range.hmm_pfns = pfns;
	range.default_flags = HMM_PFN_REQ_FAULT;
	f.attempts = f.retries = f.busy = f.collisions = 0;

	for (attempt = 0; attempt < MIRROR_MAX_ATTEMPTS; attempt++) {
		f.attempts++;
		mirror_set_reader(m, current);
		range.notifier_seq = mmu_interval_read_begin(&m->notifier);
		mirror_set_reader(m, NULL);
		collided = mirror_take_mark(m);
		if (collided < 0) {
			ret = collided;
			break;
		}
		f.collisions += collided;
		if (attempt == 0 && f.flags & MIRROR_PAUSE_BEFORE_FAULT)
			mirror_pause(m);
		mmap_read_lock(mm);
		ret = hmm_range_fault(&range);
		mmap_read_unlock(mm);
		if (ret == -EBUSY) {
			f.busy++;
			continue;
		}
		if (ret)
			break;
		if (attempt == 0 && f.flags & MIRROR_PAUSE_BEFORE_RETRY)
			mirror_pause(m);
		mutex_lock(&m->lock);
		if (mmu_interval_read_retry(&m->notifier, range.notifier_seq)) {
			mutex_unlock(&m->lock);
			f.retries++;
			ret = -EAGAIN;
			continue;
		}
		/* A real driver would program its page table from pfns here. */
		mutex_unlock(&m->lock);
		break;
	}
	mmput(mm);
	kvfree(pfns);
	spin_lock(&m->state_lock);
	m->counts.retries += f.retries;
	m->counts.busy += f.busy;
	m->counts.collisions += f.collisions;
	spin_unlock(&m->state_lock);
	if (copy_to_user(arg, &f, sizeof(f)))
		return -EFAULT;
	return ret;
}

/* task_struct's run state: `state` until 5.14 renamed it `__state` (2f064a59a11f). */
#if LINUX_VERSION_CODE < KERNEL_VERSION(5, 14, 0)
#define TASK_STATE_FIELD state
#else
#define TASK_STATE_FIELD __state
#endif

/* Whether the reader sleeps in mmu_interval_read_begin's wait_event. */
static bool mirror_reader_blocked(struct mirror *m)
{
	bool blocked = false;

	spin_lock(&m->state_lock);
	if (m->reader)
		blocked = READ_ONCE(m->reader->TASK_STATE_FIELD) == TASK_UNINTERRUPTIBLE;
	spin_unlock(&m->state_lock);
	return blocked;
}

static long mirror_release_hold(struct mirror *m, void __user *arg)
{
	u64 flags;
	long ret = 0;
	unsigned long deadline = jiffies + 10 * HZ;

	if (copy_from_user(&flags, arg, sizeof(flags)))
		return -EFAULT;
	if (!READ_ONCE(m->holding))
		return -ENOENT;
	if (flags & MIRROR_RELEASE_AFTER_READER_BLOCKS) {
		while (!mirror_reader_blocked(m) && time_before(jiffies, deadline))
			msleep(1);
		if (mirror_reader_blocked(m)) {
			spin_lock(&m->state_lock);
			m->counts.confirmed_waits++;
			spin_unlock(&m->state_lock);
		} else {
			ret = -ETIMEDOUT;
		}
	}
	WRITE_ONCE(m->release, true);
	wake_up_all(&m->wq);
	/* Returns once the held invalidation has left ops->invalidate. */
	wait_event_timeout(m->wq, !READ_ONCE(m->holding), MIRROR_HOLD_LIMIT);
	return ret;
}

static long mirror_ioctl(struct file *file, unsigned int cmd, unsigned long uarg)
{
	struct mirror *m = file->private_data;
	void __user *arg = (void __user *)uarg;
	struct mirror_status s;
	struct mirror_tlb_status t;

	switch (cmd) {
	case MIRROR_REGISTER:
		return mirror_register(m, arg);
	case MIRROR_UNREGISTER:
		if (!m->registered)
			return -EINVAL;
		mmu_interval_notifier_remove(&m->notifier);
		m->registered = false;
		return 0;
	case MIRROR_FAULT:
		return mirror_fault(m, arg);
	case MIRROR_HOLD_NEXT:
		spin_lock(&m->state_lock);
		m->hold_next = true;
		spin_unlock(&m->state_lock);
		return 0;
	case MIRROR_RELEASE:
		return mirror_release_hold(m, arg);
	case MIRROR_RESUME:
		spin_lock(&m->state_lock);
		m->resume = true;
		spin_unlock(&m->state_lock);
		wake_up_all(&m->wq);
		return 0;
	case MIRROR_STATUS:
		spin_lock(&m->state_lock);
		s = m->counts;
		s.holding = m->holding;
		s.paused = m->paused;
		spin_unlock(&m->state_lock);
		return copy_to_user(arg, &s, sizeof(s)) ? -EFAULT : 0;
	case MIRROR_TLB_REGISTER:
		return mirror_tlb_register(m);
	case MIRROR_TLB_UNREGISTER:
		if (!m->tlb_registered)
			return -EINVAL;
		mirror_tlb_unregister(m);
		return 0;
	case MIRROR_TLB_STATUS:
		spin_lock(&m->state_lock);
		t = m->tlb_counts;
		spin_unlock(&m->state_lock);
		return copy_to_user(arg, &t, sizeof(t)) ? -EFAULT : 0;
	default:
		return -ENOTTY;
	}
}

static const struct file_operations mirror_fops = {
	.owner = THIS_MODULE,
	.open = mirror_open,
	.release = mirror_release_file,
	.unlocked_ioctl = mirror_ioctl,
	.llseek = noop_llseek,
};

static struct miscdevice mirror_dev = {
	.minor = MISC_DYNAMIC_MINOR,
	.name = "mmuscope_mirror",
	.fops = &mirror_fops,
};

module_misc_device(mirror_dev);

MODULE_DESCRIPTION("mmuscope test module: HMM mirror (interval notifier, collision-retry loop), secondary-TLB subscriber");
MODULE_LICENSE("GPL");
