"""Stack frames in console text, and which of them is the code to blame.

A report's frames are the functions of its call trace, top (innermost) first. Most of the top
of any trace is plumbing: the interrupt entry that let the watchdog run, the lock and debug code
that noticed the problem, the stack dumper itself. The culprit is the first frame that is none
of those: for a soft lockup the interrupted function, for a lockdep or sleeping-in-atomic report
the caller of mutex_lock(), for a leak the caller of kmalloc().
"""

from __future__ import annotations

import re

# A kernel symbol as %pS prints it; compiler clones keep their suffix (".part.0", ".isra.0").
SYMBOL = r"[A-Za-z_.$][\w.$]*"
OFFSET = r"\+0x[0-9a-f]+/0x[0-9a-f]+"

# One frame per line, in every spelling the consoles here produce:
#   " icache_inval_pou+0x18/0x58"                 arm64 %pSb
#   " kvm_pgtable_walk+0x1a0/0x2b0 [kvm]"          module (with or without build id)
#   " ? foo+0x1/0x2"                               x86 unreliable frame
#   " foo+0x1/0x2 (P)"                             arm64 6.14+ frame kind marks
#   "[<ffff800080012345>] foo+0x1/0x2"             old arm64/x86 with raw address
#   " __dump_stack lib/dump_stack.c:94 [inline]"   symbolized (syzkaller) inline frame
_FRAME = re.compile(
    r"\s*(?:\[<[0-9a-f]{1,16}>\]\s*)?(?P<unreliable>\?\s+)?(?P<name>" + SYMBOL + r")"
    r"(?:" + OFFSET + r"(?=\s|$)|\s+\S+:\d+(?::\d+)?\s+\[inline\])"
)
# ("<<EOE>>": end of an exception stack, x86 before 4.x)
_MARKER = re.compile(r"\s*<?</?(?:IRQ|TASK|NMI|SOFTIRQ|EOI|EOE|#DF|DB|MCE|VC|#[A-Z]{2})>>?\s*$")
# x86 before 4.x put the stack-switch mark and the first frame of the next stack on one line:
# " <IRQ>  [<ffffffff8108b8fd>] rcu_check_callbacks+0x..." / " <EOI>  [<...>] ? foo+0x...".
_LEAD_MARKER = re.compile(r"\s*<<?(?P<mark>/?(?:IRQ|NMI|EOI|EOE|TASK|SOFTIRQ))>>?\s+(?=\S)")
# Marks after which the trace goes on in the interrupted context: the end of an interrupt or
# NMI stack ("</IRQ>", old "<EOI>").
_LEAVES_IRQ = frozenset({"/IRQ", "EOI", "EOE", "/NMI", "/SOFTIRQ"})

# Where the CPU was when the report's regs were taken.
_ADDR = r"\s*(?:\[<[0-9a-f]+>\]\s*){0,2}"  # 3.x x86: "RIP: 0010:[<addr>]  [<addr>] foo+0x1/0x2"
_PC = re.compile(r"\s*(?:pc\s*:|PC is at|RIP: [0-9a-f]{4}:)" + _ADDR + "(" + SYMBOL + r")\+0x")
_LR = re.compile(r"\s*(?:lr\s*:|LR is at)" + _ADDR + "(" + SYMBOL + r")\+0x")
_SYMBOL_WITH_OFFSET = re.compile(r"(" + SYMBOL + r")(?:" + OFFSET + r")?")


def parse_frame(body: str) -> tuple[str, bool] | None:
    """(function name, reliable) for a call-trace line, or None if the line is not a frame."""
    m = _FRAME.match(body)
    if m is None:
        return None
    return m.group("name"), m.group("unreliable") is None


def is_marker(body: str) -> bool:
    """x86 stack-switch marks such as "<IRQ>" and "</TASK>"."""
    return body.lstrip().startswith("<") and _MARKER.match(body) is not None


def leaves_irq(body: str) -> bool:
    """A mark after which the trace is in the interrupted context ("</IRQ>", "<EOI>")."""
    mark = body.strip().strip("<>")
    return mark in _LEAVES_IRQ or mark.lstrip("<") in _LEAVES_IRQ


def split_lead_marker(body: str) -> tuple[str | None, str]:
    """(" <EOI>  [<..>] foo+0x1/0x2") -> ("EOI", " [<..>] foo+0x1/0x2"); no mark: (None, body)."""
    if "<" not in body[:8]:
        return None, body
    m = _LEAD_MARKER.match(body)
    if m is None:
        return None, body
    return m.group("mark"), body[m.end() :]


def parse_pc(body: str) -> str | None:
    m = _PC.match(body)
    return m.group(1) if m else None


def parse_lr(body: str) -> str | None:
    m = _LR.match(body)
    return m.group(1) if m else None


def symbol_name(text: str | None) -> str | None:
    """The function in a %pS value ("foo+0x1/0x2 [kvm]" -> "foo")."""
    if not text:
        return None
    m = _SYMBOL_WITH_OFFSET.match(text)
    return m.group(1) if m else None


def base_name(name: str) -> str:
    """The C function behind a compiler clone: "lock_acquire.part.0" -> "lock_acquire"."""
    head = name.split(".", 1)[0]
    return head or name


# The plumbing: frames that are never the code to blame. Exact names and name patterns, grouped
# by why they sit on top of a trace. Matching is on base_name(), so ".part.0" clones match too.
# fmt: off
_PLUMBING_GROUPS: dict[str, tuple[str, ...]] = {
    # The stack dumper and report printers above every dump_stack().
    "dump": (
        "dump_backtrace", "show_stack", "dump_stack", "dump_stack_lvl", "__dump_stack",
        "show_regs", "__show_regs", "show_trace_log_lvl", "show_stack_log_lvl",
        "dump_stack_print_info", "sched_show_task", "show_one_task",
        "nmi_cpu_backtrace", "nmi_trigger_cpumask_backtrace", "arch_trigger_cpumask_backtrace",
        "do_handle_IPI", "ipi_handler", "ipi_cpu_backtrace", "trigger_single_cpu_backtrace",
        r"print_\w+", r"__print_\w+", "report_bug", "__report_bug",
        r"__pfx_\w+", "stack_trace_save", "arch_stack_walk", r"kunwind_\w+",
    ),
    # WARN/BUG/oops entry: the brk/ud2 trap and the fault handlers that print the oops.
    "trap": (
        "__warn", "warn_slowpath_fmt", "__warn_printk", "bug_handler", "call_break_hook",
        "call_el1_break_hook", "do_el1_brk64", "reserved_fault_brk_handler",
        "brk_handler", "do_debug_exception", "el1_dbg", "el1h_64_sync_handler", "el1h_64_sync",
        "el1_abort", "el1_undef", "el1_bti", "el1_fpac", "el1_pc", "el1_inv",
        "do_mem_abort", "__do_kernel_fault", "die_kernel_fault", "do_page_fault",
        "do_translation_fault", "do_bad_area", "die", "__die", "arm64_notify_die",
        "do_el1_undef", "do_el1_bti", "do_el1_fpac", "bug_brk_handler", "report_ubsan_failure",
        "ubsan_brk_handler", "kasan_brk_handler", "cfi_brk_handler", "early_brk64",
        "handle_bug", "fixup_bug", "invalid_op", "exc_invalid_op", "asm_exc_invalid_op",
        "exc_page_fault",
        "asm_exc_page_fault", "page_fault_oops", "kernelmode_fixup_or_oops",
        "do_user_addr_fault", "handle_page_fault", "__bad_area_nosemaphore", "bad_area_nosemaphore",
        "no_context", "do_trap", "do_error_trap", "exc_general_protection",
        "asm_exc_general_protection", "die_addr", "oops_end", "fixup_exception",
        r"ex_handler_\w+", "exc_int3", "asm_exc_int3", "do_int3", "do_int3_user",
    ),
    # Interrupt entry and timer/softirq dispatch: what let the watchdog run on top of the
    # interrupted code.
    "irq": (
        r"el1h_64_irq\w*", r"el1h_64_fiq\w*", r"el1h_64_error\w*", "el1_interrupt",
        "__el1_irq", "__el1_pnmi", "el1_irq", "el1_fiq", r"el0t_64_irq\w*", r"el0t_64_fiq\w*",
        "el0_interrupt", "__el0_irq_handler_common", "gic_handle_irq", "__gic_handle_irq",
        r"__gic_handle_irq_\w+", "gic_handle_nmi",
        "handle_domain_irq", "__handle_domain_irq", r"generic_handle_\w+", "handle_irq_desc",
        r"handle_\w*_irq", r"handle_irq_event\w*", "handle_irq", "__handle_irq_event_percpu",
        "handle_softirqs", "__do_softirq", "____do_softirq", "do_softirq", "do_softirq_own_stack",
        "call_on_irq_stack", "do_interrupt_handler", "irq_exit_rcu", "__irq_exit_rcu", "irq_exit",
        "__local_bh_enable_ip", "local_bh_enable", "invoke_softirq",
        r"arch_timer_handler_\w+", "hrtimer_interrupt", "__hrtimer_run_queues", "__run_hrtimer",
        "hrtimer_run_queues", "watchdog_timer_fn", r"tick_\w+", "update_process_times",
        "sched_tick", "scheduler_tick", "rcu_sched_clock_irq", "rcu_pending", "check_cpu_stall",
        "rcu_dump_cpu_stacks", "dump_cpu_task", "account_process_tick",
        r"asm_sysvec_\w+", r"sysvec_\w+", r"__sysvec_\w+", "apic_timer_interrupt",
        "smp_apic_timer_interrupt", "local_apic_timer_interrupt", "asm_common_interrupt",
        "common_interrupt", "__common_interrupt", "do_IRQ", "asm_call_irq_on_stack",
        "run_on_irqstack_cond", "call_on_stack", r"(?:__)?run_\w*on_irqstack\w*",
        r"asm_call_\w*irq\w*", "irq_exit_rcu", "__irq_exit_rcu", "irqentry_exit", "irqentry_enter",
        r"irqentry_\w+", "asm_exc_nmi", "exc_nmi", "default_do_nmi", "nmi_handle",
        "perf_event_nmi_handler", "x86_pmu_handle_irq", "handle_pmi_common",
        "armv8pmu_handle_irq", "armpmu_dispatch_irq", "__perf_event_overflow",
        "perf_event_overflow", "watchdog_overflow_callback", "watchdog_hardlockup_check",
        "watchdog_buddy_check_hardlockup", "watchdog_check_hardlockup",
        "__flush_smp_call_function_queue", "generic_smp_call_function_single_interrupt",
    ),
    # Locking primitives and the lockdep/DEBUG_SPINLOCK machinery that printed the report: blame
    # the code that took the lock.
    "lock": (
        "lock_acquire", "__lock_acquire", "lock_release", "__lock_release", "lock_acquired",
        "lock_contended", "lock_is_held_type", "mark_lock", "mark_usage", "mark_held_locks",
        r"mark_lock_\w+", "check_prev_add", "check_prevs_add", "check_noncircular",
        "check_deadlock", "check_irq_usage", "check_wait_context", "check_usage_backwards",
        "check_usage_forwards", "check_usage", "check_path", "check_redundant",
        "check_chain_key", "check_flags", "validate_chain", "lookup_chain_cache_add",
        "add_chain_cache", "lockdep_rcu_suspicious", r"lockdep_\w+", "debug_show_held_locks",
        "debug_check_no_locks_held",
        "debug_show_all_locks", r"debug_lockdep_\w+", "valid_state", "usage_match",
        "register_lock_class", "look_up_lock_class", "hlock_class",
        r"trace_hardirqs_\w+", "rcu_lock_acquire", "rcu_lock_release", "rcu_read_lock_held",
        r"(?:__)?mutex_\w+", r"mutex_\w+", r"(?:__)?ww_mutex_\w+", r"(?:__)?rt_mutex_\w+",
        r"rt_spin_\w+", r"(?:__)?down(?:_\w+)?", r"(?:__)?up(?:_\w+)?", r"(?:__)?rwsem_\w+",
        r"rwsem_\w+",
        r"_raw_\w+", r"__raw_\w+", r"do_raw_\w+", r"queued_\w+", r"native_queued_\w+",
        r"__pv_queued_\w+", r"arch_spin_\w+", r"arch_read_\w+", r"arch_write_\w+",
        "spin_bug", "spin_dump", "rwlock_bug", "debug_spin_lock_before", "debug_spin_unlock",
        r"percpu_\w*down_\w+", r"__percpu_\w*down_\w+", r"percpu_rwsem_\w+",
        r"call_rwsem_\w+", "osq_lock", "osq_unlock",
        r"(?:__)?percpu_\w*up_\w+",
    ),
    # Lock wrappers: functions whose whole job is to take or drop a lock for their caller
    # (rtnl_lock, lock_sock_nested, inode_lock, mmap_read_lock, flush_work's lockdep maps).
    # Skipped when blaming, like the primitives, but kept at the top of a splat's frames: they
    # say which lock it was.
    "wrapper": (
        r"(?:__)?(?:un|try)?lock_\w+", r"\w+_(?:un|try)?lock(?:_\w+)?",
        r"(?:__)?release_sock", "sk_wait_data", r"sock_\w*lock\w*",
        r"cpus_\w+_lock", "get_online_cpus", "put_online_cpus", r"cpu_hotplug_\w+",
        r"(?:__)?sb_start_\w+", r"(?:__)?sb_end_\w+", r"(?:__)?mnt_want_write\w*", "mnt_drop_write",
        r"(?:__)?flush_workqueue", "drain_workqueue", "start_flush_work", r"touch_\w+_lockdep_map",
        r"(?:__)?flush_work", r"flush_delayed_work", r"(?:__)?cancel_work\w*",
        r"cancel_delayed_work_sync",
        r"(?:__)?srcu_read_\w+", r"rcu_read_\w+", r"__rcu_read_\w+", r"rcu_lock_\w+",
        r"(?:__)?fs_reclaim_\w+", r"local_bh_\w+", r"__local_bh_\w+",
        r"_?copy_(?:to|from)_user\w*", r"(?:__)?copy_(?:to|from)_user\w*", r"raw_copy_\w+",
        "strncpy_from_user", r"(?:__)?(?:get|put)_user(?:_[1248]|_nocheck\w*|_size|_asm)?",
        r"__arch_copy_\w+",
    ),
    # Sleeping and waiting: blame whoever decided to wait (hung tasks) or to sleep (atomic).
    "sched": (
        "schedule", "__schedule", "schedule_preempt_disabled", "schedule_timeout",
        r"schedule_\w+", r"__schedule_\w+", "schedule_debug", r"preempt_schedule\w*",
        "__cond_resched", "_cond_resched", "io_schedule", "io_schedule_timeout", "__switch_to",
        "context_switch", "__switch_to_asm", "do_nanosleep", "__wait_for_common",
        "do_wait_for_common", r"wait_for_completion\w*", r"__wait_rcu_gp", "wait_rcu_gp",
        r"synchronize_rcu\w*", r"synchronize_srcu\w*", "__synchronize_srcu",
        "folio_wait_bit_common", "__folio_lock", r"bit_wait\w*", r"out_of_line_wait_on_\w+",
        "__flush_work", "flush_work", r"(?:__)?wait_on_bit\w*", "wait_on_page_bit",
        # Busy-wait delays: a lockup in one is its caller's.
        "__delay", "__const_udelay", "__udelay", "__ndelay", "udelay", "mdelay", "ndelay",
        "delay_tsc", "delay_loop", r"delay_halt\w*", "__timer_delay", "__loop_delay",
        r"wait_on_page_bit_\w+", "__wait_on_buffer", r"folio_wait_bit\w*",
        "__might_sleep", "___might_sleep", "__might_resched", "__might_fault", "might_fault",
        "__cant_sleep", "__cant_migrate", "debug_smp_processor_id", "__this_cpu_preempt_check",
        "check_preemption_disabled", "rcu_note_context_switch", "finish_task_switch",
        r"finish_task_switch\w*", "preempt_count_add", "preempt_count_sub",
        r"msleep\w*", r"usleep_range\w*", "ssleep", "fsleep", r"(?:__)?cond_resched\w*",
    ),
    # Allocation and free plumbing: kmemleak, might_alloc and "held lock freed" blame the
    # caller of kmalloc()/kfree().
    "alloc": (
        r"(?:__)?kmalloc\w*", r"___?kmalloc\w*", r"kmem_cache_alloc\w*", r"__kmem_cache_\w+",
        r"kmem_cache_free\w*", r"slab_\w+", r"__slab_\w+", r"___slab_\w+", "do_slab_free",
        r"kvmalloc\w*", r"__kvmalloc\w*", r"kzalloc\w*", r"kcalloc\w*", r"krealloc\w*",
        r"(?:__)?alloc_pages\w*", r"kmemleak_\w+", r"new_slab\w*", "allocate_slab",
        "alloc_slab_page", "kfree", "kvfree", "kfree_sensitive", "free_large_kmalloc",
        "__free_pages", "free_pages", "__free_pages_ok", "fs_reclaim_acquire",
        "fs_reclaim_release", "might_alloc", r"(?:__)?kmemdup\w*", r"(?:__)?vmalloc\w*",
        r"(?:__)?alloc_object\w*", "debug_check_no_locks_freed", "free_unref_page",
        "bad_page", "free_page_is_bad", "free_page_is_bad_report", "free_pages_prepare",
        "__folio_put", "folio_put", "put_page",
    ),
    # Sanitizer runtime and compiler instrumentation.
    "sanitizer": (
        r"__asan_\w+", r"__kasan_\w+", r"kasan_\w+", r"__hwasan_\w+", r"__msan_\w+",
        r"kmsan_\w+", r"__kmsan_\w+", r"__tsan_\w+", r"kcsan_\w+", r"__kcsan_\w+",
        r"__ubsan_\w+", r"ubsan_\w+", r"__sanitizer_\w+", r"kfence_\w+", r"__kfence_\w+",
        "check_memory_region", "check_region_inline", "memcpy", "memset", "memmove",
        "__memcpy", "__memset", "__memmove", "check_panic_on_warn",
    ),
    # The detectors that sample another context and print it: RCU stall checks run from the
    # scheduler tick, the soft-lockup watchdog from an hrtimer, the hung-task checker from
    # khungtaskd. Their frames sit above the interrupted code in every dump_stack()-style
    # report ("rcu_check_callbacks <- update_process_times <- ... <- el1_irq <- culprit").
    "detector": (
        "rcu_check_callbacks", "__rcu_pending", "rcu_pending", r"print_\w*cpu_stall\w*",
        "check_cpu_stall", "rcu_dump_cpu_stacks", "dump_cpu_task", "rcu_stall_kick_kthreads",
        "panic_on_rcu_stall", r"rcu_check_gp_kthread_\w+", r"rcu_print_\w*task_stall\w*",
        r"rcu_sched_clock_irq", r"rcu_flavor_\w*clock_irq", "rcu_note_context_switch",
        "trigger_single_cpu_backtrace", "trigger_all_cpu_backtrace",
        r"trigger_\w*cpu\w*_backtrace", r"nmi_trigger_\w+", r"arch_trigger_\w+",
        "nmi_raise_cpu_backtrace", "nmi_cpu_backtrace_handler", "raise_nmi",
        "softlockup_fn", "watchdog_timer_fn", r"watchdog_\w*check\w*", "check_hung_task",
        "check_hung_uninterruptible_tasks", r"sysrq_\w+", r"__handle_sysrq\w*",
        "rcu_exp_handler", "rcu_exp_wait_wake", "synchronize_rcu_expedited_wait",
        r"rcu_exp_\w+", r"rcu_print_\w+", "show_state_filter", "show_state",
    ),
    # Panic and task teardown after a fatal report.
    "panic": (
        "panic", "nmi_panic", "vpanic", "make_task_dead", "do_exit", "do_group_exit",
    ),
    # Syscall, kthread and workqueue entry at the bottom of every trace: never the culprit.
    "entry": (
        "invoke_syscall", "el0_svc_common", "do_el0_svc", "el0_svc", r"el0t_64_sync\w*",
        r"el0t_32_sync\w*", "el0_da", "el0_ia", "el0_sync", "ret_to_user", "ret_from_fork",
        "ret_from_fork_asm", "kthread", "worker_thread", "process_one_work",
        "process_scheduled_works", "smpboot_thread_fn", "do_syscall_64", "do_syscall_x64",
        "entry_SYSCALL_64_after_hwframe", "entry_SYSCALL_64", "syscall_exit_to_user_mode",
        r"exit_to_user_mode\w*", "cpu_startup_entry", "do_idle", "secondary_start_kernel",
    ),
}
# fmt: on



def _any_of(groups: tuple[str, ...]) -> re.Pattern[str]:
    return re.compile(
        "|".join(f"(?:{p})" for group in groups for p in _PLUMBING_GROUPS[group])
    )


_PLUMBING = _any_of(tuple(_PLUMBING_GROUPS))
# Everything but the wrappers: what is cut off the top of a splat's frames.
_MACHINERY = _any_of(tuple(g for g in _PLUMBING_GROUPS if g != "wrapper"))
# A trace whose top frame is one of these was printed by a reporter on top of the code it
# interrupted (dump_stack() in the tick, nmi_cpu_backtrace(NULL), sched_show_task(current)).
_DUMPER = _any_of(("dump", "detector"))

# Exception entry of an interrupt: below it, the trace is in the interrupted context.
# fmt: off
_IRQ_ENTRY = re.compile("|".join(f"(?:{p})" for p in (
    r"el1h_64_irq\w*", r"el1h_64_fiq\w*", "el1_interrupt", "__el1_irq", "el1_irq", "el1_fiq",
    "__irq_svc", "gic_handle_irq", r"asm_sysvec_\w+", "apic_timer_interrupt",
    "smp_apic_timer_interrupt", "asm_common_interrupt", "common_interrupt", "ret_from_intr",
    "call_function_interrupt", "call_function_single_interrupt", "reschedule_interrupt",
    "irq_work_interrupt", "end_repeat_nmi", "nmi", "asm_exc_nmi",
)))
# fmt: on


def is_plumbing(name: str) -> bool:
    """Never the code to blame: reporter, interrupt, lock, allocator and entry frames, wrappers."""
    return _PLUMBING.fullmatch(base_name(name)) is not None


def is_machinery(name: str) -> bool:
    """Plumbing that is not a lock wrapper: cut off the top of a splat's frames."""
    return _MACHINERY.fullmatch(base_name(name)) is not None


def is_dumper(name: str) -> bool:
    return _DUMPER.fullmatch(base_name(name)) is not None


def is_irq_entry(name: str) -> bool:
    return _IRQ_ENTRY.fullmatch(base_name(name)) is not None


def interrupted_part(
    frames: list[str], breaks: list[int], regs_at: tuple[int, ...] | list[int] = ()
) -> list[str] | None:
    """The frames of the code a reporter interrupted, or None if the trace is not such a dump.

    A trace that starts in a stack dumper was taken in the reporter's own context (the RCU
    stall check in the timer tick, a self-NMI backtrace). What it interrupted starts below the
    first interrupt entry ("el1h_64_irq", "apic_timer_interrupt", "</IRQ>"): the first one,
    so that code stuck inside a softirq is blamed rather than what the softirq interrupted.
    `breaks` are frame indexes where the trace changed stacks ("</IRQ>"); `regs_at` those
    where x86 printed the interrupted registers inside the trace (their RIP is that frame).
    """
    if not frames or not is_dumper(frames[0]):
        return None
    boundary = None
    for i, name in enumerate(frames):
        if i in breaks:
            boundary = i
            break
        if is_irq_entry(name):
            boundary = i + 1
            break
    if boundary is None:
        return None
    for r in regs_at:
        if r >= boundary - 1:
            # The registers printed below the boundary: their RIP is the interrupted code.
            return frames[r:]
    # Interrupt entry comes in layers (gic_handle_irq ... el1_interrupt ... el1h_64_irq):
    # start below the last of them that comes before the interrupted code's own frames.
    start = boundary
    for i in range(boundary, len(frames)):
        name = frames[i]
        if is_irq_entry(name):
            start = i + 1
        elif not is_plumbing(name):
            break
    return frames[start:]


def trim(frames: list[str] | tuple[str, ...]) -> tuple[str, ...]:
    """Frames from the first one that is not reporter or lock machinery (wrappers stay)."""
    for i, name in enumerate(frames):
        if not is_machinery(name):
            return tuple(frames[i:])
    return tuple(frames)


def first_own(names: list[str] | tuple[str, ...]) -> str | None:
    """The first name that is the code's own (not plumbing), as a base name."""
    for name in names:
        if not is_plumbing(name):
            return base_name(name)
    return None
