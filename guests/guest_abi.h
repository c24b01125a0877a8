/* SPDX-License-Identifier: GPL-2.0 */
/*
 * Contract between the VMM (vmm.c) and the code it runs in the guest
 * (guest_code.S): which register carries what at reset, and the MMIO
 * result channel. Included from C and from assembly.
 */
#ifndef S2FAULT_GUEST_ABI_H
#define S2FAULT_GUEST_ABI_H

/*
 * Registers set by the VMM before the first KVM_RUN of each round:
 *   x0 vCPU index, x1 IPA of the huge block, x2 MMIO base,
 *   x3 offset of this vCPU's data slot inside the block.
 */
#define GUEST_REG_INDEX		0
#define GUEST_REG_BLOCK		1
#define GUEST_REG_MMIO		2
#define GUEST_REG_DATA_OFF	3

/* The code slot sits at IPA 0; the guest starts at its first byte. */
#define GUEST_CODE_IPA		0x0
#define GUEST_MMIO_IPA		0x10000000

/*
 * MMIO registers, one 64-bit store each. The guest uses "str xN, [x2, #off]"
 * (no writeback) so that the abort syndrome is valid and KVM forwards it as
 * KVM_EXIT_MMIO instead of KVM_EXIT_ARM_NISV.
 */
#define MMIO_READY		0x00	/* data fault done, waiting to exec */
#define MMIO_T0			0x08	/* CNTVCT just before the branch */
#define MMIO_T1			0x10	/* CNTVCT first thing inside the block */
#define MMIO_VALUE		0x18	/* what the block code returned */
#define MMIO_DONE		0x20	/* end of the run */
#define MMIO_EXC_ESR		0x40	/* unexpected guest exception... */
#define MMIO_EXC_ELR		0x48
#define MMIO_EXC_FAR		0x50
#define MMIO_EXC_VECTOR		0x58	/* ...vector index, written last */
#define MMIO_SIZE		0x1000

#ifndef __ASSEMBLER__
#include <stdint.h>

/* Symbols of guest_code.S, copied into guest memory by the VMM. */
extern const uint32_t guest_code_start[], guest_code_end[];
extern const uint32_t guest_exec_target[], guest_exec_target_end[];
extern const uint32_t guest_exec_nonce[];	/* movz x0; movk x0, lsl 16 */
#endif

#endif /* S2FAULT_GUEST_ABI_H */
