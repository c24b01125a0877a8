/* SPDX-License-Identifier: GPL-2.0 */
/* The kernel's attribute shorthands, for userspace (as tools/include does). */
#ifndef S2FAULT_COMPILER_H
#define S2FAULT_COMPILER_H

#define __printf(a, b)	__attribute__((format(printf, a, b)))
#define __noreturn	__attribute__((noreturn))
#define ARRAY_SIZE(a)	(sizeof(a) / sizeof((a)[0]))

#endif /* S2FAULT_COMPILER_H */
