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
 *   x0 vCPU index, x1 IPA of the first huge block, x2 MMIO base,
 *   x3 offset of this vCPU's data slot inside each block,
 *   x4 number of blocks (consecutive, x5 bytes apart),
 *   x6 IPA of the range a storm vCPU invalidates, x7 its length in bytes
 *   (0: this vCPU takes exec faults instead),
 *   x8 the value the vCPU stores into its data slot (the data fault): the
 *   VMM reads it back after the round to check the store landed,
 *   x26 non-zero: no store; the block's first access is the fetch.
 */
#define GUEST_REG_INDEX		0
#define GUEST_REG_BLOCK		1
#define GUEST_REG_MMIO		2
#define GUEST_REG_DATA_OFF	3
#define GUEST_REG_NR_BLOCKS	4
#define GUEST_REG_BLOCK_STRIDE	5
#define GUEST_REG_STORM_START	6
#define GUEST_REG_STORM_BYTES	7
#define GUEST_REG_DATA_TOKEN	8
#define GUEST_REG_EXEC_FIRST	26

/*
 * Storm vCPUs time each iteration of I-cache maintenance and report the
 * max and the sum once per batch of this many, then read MMIO_STORM_GO.
 */
#define STORM_BATCH		16

/* The code slot sits at IPA 0; the guest starts at its first byte. */
#define GUEST_CODE_IPA		0x0
#define GUEST_MMIO_IPA		0x10000000

/*
 * MMIO registers, one 64-bit store each (MMIO_STORM_GO: one load). The
 * guest uses "str xN, [x2, #off]" (no writeback) so that the abort
 * syndrome is valid and KVM forwards it as KVM_EXIT_MMIO instead of
 * KVM_EXIT_ARM_NISV.
 */
#define MMIO_READY		0x00	/* data fault done, waiting to exec */
#define MMIO_T0			0x08	/* CNTVCT just before the branch */
#define MMIO_T1			0x10	/* CNTVCT first thing inside the block */
#define MMIO_VALUE		0x18	/* what the block code returned */
#define MMIO_DONE		0x20	/* end of the run */
#define MMIO_BLOCK		0x28	/* block of the T0/T1/VALUE that follow */
#define MMIO_STORM_MAX		0x30	/* longest iteration of a batch, ticks */
#define MMIO_STORM_SUM		0x38	/* all iterations of a batch, ticks */
#define MMIO_EXC_ESR		0x40	/* unexpected guest exception... */
#define MMIO_EXC_ELR		0x48
#define MMIO_EXC_FAR		0x50
#define MMIO_EXC_VECTOR		0x58	/* ...vector index, written last */
#define MMIO_STORM_GO		0x60	/* load: non-zero while exec faults run */
#define MMIO_SIZE		0x1000

#ifndef __ASSEMBLER__
#include <stdint.h>

/* Symbols of guest_code.S, copied into guest memory by the VMM. */
extern const uint32_t guest_code_start[], guest_code_end[];
extern const uint32_t guest_exec_target[], guest_exec_target_end[];
extern const uint32_t guest_exec_nonce[];	/* movz x0; movk x0, lsl 16 */
#endif

#endif /* S2FAULT_GUEST_ABI_H */
