/* SPDX-License-Identifier: GPL-2.0 */
/*
 * Guest code run by s2fault-vmm at EL1 with the MMU off. The VMM copies
 * guest_code_start..guest_code_end to IPA 0 (so the section is 2K aligned:
 * VBAR_EL1 needs it) and guest_exec_target..guest_exec_target_end to the
 * base of each huge block, patching the nonce into the movz/movk pair.
 * The host never executes any of this, hence a non-executable section.
 */
#include "guest_abi.h"

	.section .rodata.s2fault_guest, "a"
	.balign	2048

	.global	guest_code_start
guest_code_start:
	adr	x9, guest_vectors
	msr	vbar_el1, x9
	isb

	/*
	 * Data faults: KVM maps each block, without execute permission.
	 * Skipped when the first touch must be the fetch (x26).
	 */
	cbnz	x26, 7f
	mov	x24, x4
	add	x25, x1, x3
1:	str	x8, [x25]
	add	x25, x25, x5
	subs	x24, x24, #1
	b.ne	1b
7:	str	x0, [x2, #MMIO_READY]
	cbnz	x7, guest_storm

	/*
	 * Every vCPU is released at once: an exec permission fault on each
	 * block in turn, each timed on its own.
	 */
	mov	x24, #0
	mov	x25, x1
2:	isb
	mrs	x19, cntvct_el0
	blr	x25

	str	x24, [x2, #MMIO_BLOCK]
	str	x19, [x2, #MMIO_T0]
	str	x9, [x2, #MMIO_T1]
	str	x0, [x2, #MMIO_VALUE]
	add	x24, x24, #1
	add	x25, x25, x5
	cmp	x24, x4
	b.lo	2b
guest_done:
	/* The VMM resets PC and registers here for its next round. */
	str	x0, [x2, #MMIO_DONE]
3:	wfi
	b	3b

	/*
	 * A storm vCPU takes no exec fault: it invalidates the I-cache over
	 * [x6, x6 + x7) line by line, then all of it, in batches of
	 * STORM_BATCH timed iterations, for as long as the VMM answers
	 * MMIO_STORM_GO with non-zero (while the other vCPUs fault).
	 */
guest_storm:
	mrs	x10, ctr_el0
	and	x10, x10, #0xf		/* IminLine: log2 of words */
	mov	x11, #4
	lsl	x11, x11, x10		/* I-cache line in bytes */
	add	x12, x6, x7
4:	mov	x13, #0			/* longest iteration of the batch */
	mov	x14, #0			/* sum of the batch */
	mov	x15, #STORM_BATCH
5:	isb
	mrs	x16, cntvct_el0
	mov	x17, x6
6:	ic	ivau, x17
	add	x17, x17, x11
	cmp	x17, x12
	b.lo	6b
	ic	iallu
	dsb	ish
	isb
	mrs	x17, cntvct_el0
	sub	x17, x17, x16
	add	x14, x14, x17
	cmp	x17, x13
	csel	x13, x17, x13, hi
	subs	x15, x15, #1
	b.ne	5b
	str	x13, [x2, #MMIO_STORM_MAX]
	str	x14, [x2, #MMIO_STORM_SUM]
	ldr	x15, [x2, #MMIO_STORM_GO]
	cbnz	x15, 4b
	b	guest_done

	/* Any exception is a failed run: report it and park. */
	.balign	2048
guest_vectors:
	.irp	vec, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15
	.balign	0x80
	mov	x20, #\vec
	b	guest_exception
	.endr

guest_exception:
	mrs	x21, esr_el1
	mrs	x22, elr_el1
	mrs	x23, far_el1
	str	x21, [x2, #MMIO_EXC_ESR]
	str	x22, [x2, #MMIO_EXC_ELR]
	str	x23, [x2, #MMIO_EXC_FAR]
	str	x20, [x2, #MMIO_EXC_VECTOR]
1:	wfi
	b	1b
	.global	guest_code_end
guest_code_end:

	/* Placed at the block base; returns t1 in x9 and the nonce in x0. */
	.balign	4
	.global	guest_exec_target
guest_exec_target:
	mrs	x9, cntvct_el0
	.global	guest_exec_nonce
guest_exec_nonce:
	movz	x0, #0
	movk	x0, #0, lsl #16
	ret
	.global	guest_exec_target_end
guest_exec_target_end:

	.section .note.GNU-stack, "", %progbits
