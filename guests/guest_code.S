/* SPDX-License-Identifier: GPL-2.0 */
/*
 * Guest code run by s2fault-vmm at EL1 with the MMU off. The VMM copies
 * guest_code_start..guest_code_end to IPA 0 (so the section is 2K aligned:
 * VBAR_EL1 needs it) and guest_exec_target..guest_exec_target_end to the
 * base of the huge block, patching the nonce into the movz/movk pair.
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

	/* Data fault: KVM maps the whole block, without execute permission. */
	str	x0, [x1, x3]
	str	x0, [x2, #MMIO_READY]

	/* Every vCPU is released at once: exec permission fault on the block. */
	isb
	mrs	x19, cntvct_el0
	blr	x1

	str	x19, [x2, #MMIO_T0]
	str	x9, [x2, #MMIO_T1]
	str	x0, [x2, #MMIO_VALUE]
	/* The VMM resets PC and registers here for its next round. */
	str	x0, [x2, #MMIO_DONE]
1:	wfi
	b	1b

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
