/* fault.h: fault injection for tests (allocation failures), off unless a test or the environment asks.
 *
 * DDPM_FAULT_ALLOC_AFTER=N (environment, read once) or ddpm_fault_set_alloc_after (N) makes every backend
 * allocation after the first N fail as if memory were exhausted (the backend reports DDPM_ERROR_NOMEM), so
 * tests can prove that each failure path returns an error and frees what it had. Backends call
 * ddpm_fault_alloc_should_fail () at the top of each allocation function.
 *
 * This is process-wide state, an honest exception to "no global mutable state": it exists only to break
 * things on purpose and costs one relaxed atomic read when unused. */
#pragma once

#include <glib.h>

/* n >= 0: allow n more allocations, then fail every one; n < 0: never fail (the default). */
void ddpm_fault_set_alloc_after (gint n);
/* TRUE when this allocation must fail. Counts allocations while injection is armed. */
gboolean ddpm_fault_alloc_should_fail (void);
/* Allocations counted since the last ddpm_fault_set_alloc_after (how many a run makes). */
gint ddpm_fault_alloc_count (void);
