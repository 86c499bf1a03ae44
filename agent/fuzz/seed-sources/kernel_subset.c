/* A few kernel types and functions with the names the probe planner looks up, so the btf_plan fuzz target starts
 * from BTF that resolves (seeds/btf_plan/kernel_subset.btf). Regenerate:
 *   clang -g -O1 -target bpf -c kernel_subset.c -o /tmp/k.o
 *   llvm-objcopy --dump-section .BTF=../seeds/btf_plan/kernel_subset.btf /tmp/k.o
 * Layouts are arbitrary: the fuzzer mutates them anyway. */
typedef unsigned long long u64;
typedef unsigned int u32;
struct hlist_node { struct hlist_node *next, **pprev; };
struct kernfs_node { u64 id; };
struct cgroup { struct kernfs_node *kn; };
struct cgroup_subsys_state { struct cgroup *cgroup; };
struct css_set { struct cgroup_subsys_state *subsys[14]; struct cgroup *dfl_cgrp; };
enum cgroup_subsys_id { cpuset_cgrp_id, memory_cgrp_id, CGROUP_SUBSYS_COUNT };
struct task_struct { struct css_set *cgroups; struct mm_struct *mm; };
struct mmu_notifier_subscriptions { struct hlist_node *list; _Bool has_itree; };
struct mm_struct { struct task_struct *owner; struct mmu_notifier_subscriptions *notifier_subscriptions; };
enum mmu_notifier_event { MMU_NOTIFY_UNMAP, MMU_NOTIFY_CLEAR, MMU_NOTIFY_PROTECTION_VMA, MMU_NOTIFY_RELEASE };
struct mmu_notifier_range { struct mm_struct *mm; u64 start, end; u32 flags; enum mmu_notifier_event event; };
struct mmu_notifier_ops { void (*arch_invalidate_secondary_tlbs)(void *, struct mm_struct *, u64, u64); };
struct mmu_notifier { struct hlist_node hlist; const struct mmu_notifier_ops *ops; };
enum { ___GFP_IO_BIT, ___GFP_FS_BIT, ___GFP_HARDWALL_BIT, ___GFP_HIGHMEM_BIT, ___GFP_MOVABLE_BIT,
       ___GFP_DIRECT_RECLAIM_BIT, ___GFP_KSWAPD_RECLAIM_BIT };
typedef void (*btf_trace_kvm_unmap_hva_range)(void *, u64, u64);
typedef void (*btf_trace_mm_page_alloc)(void *, void *, u32, u32, int);

volatile u64 sink;
__attribute__((noinline)) int __mmu_notifier_invalidate_range_start(struct mmu_notifier_range *r) { sink = r->start; return 0; }
__attribute__((noinline)) void __mmu_notifier_invalidate_range_end(struct mmu_notifier_range *r) { sink = r->end; }
__attribute__((noinline)) void __mmu_notifier_arch_invalidate_secondary_tlbs(struct mm_struct *mm, u64 s, u64 e) { sink = s + e; }
struct all { struct mmu_notifier *n; struct css_set *c; enum cgroup_subsys_id id; btf_trace_kvm_unmap_hva_range a;
              btf_trace_mm_page_alloc b; };
int keep(struct task_struct *t, struct all *x) {
  struct mmu_notifier_range r = { .mm = t->mm };
  sink = (u64)x->n + (u64)x->c + x->id + (u64)x->a + (u64)x->b + ___GFP_IO_BIT;
  __mmu_notifier_arch_invalidate_secondary_tlbs(t->mm, 0, 1);
  __mmu_notifier_invalidate_range_end(&r);
  return __mmu_notifier_invalidate_range_start(&r);
}
