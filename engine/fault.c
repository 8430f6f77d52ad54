/* fault.c: allocation-failure injection for tests (see fault.h). */
#include "fault.h"

/* budget: allocations still allowed (< 0: unlimited); count: allocations seen while armed. Both are only
 * touched atomically, so contexts on several threads may allocate while a test arms the counter. */
static gint budget = -1;
static gint count = 0;
static gsize env_read = 0;

static void
read_env_once (void)
{
  if (g_once_init_enter (&env_read)) {
    const char *s = g_getenv ("DDPM_FAULT_ALLOC_AFTER");
    if (s && *s) {
      char *end = NULL;
      gint64 n = g_ascii_strtoll (s, &end, 10);
      if (end && *end == '\0' && n >= 0 && n <= G_MAXINT)
        g_atomic_int_set (&budget, (gint) n);
    }
    g_once_init_leave (&env_read, 1);
  }
}

void
ddpm_fault_set_alloc_after (gint n)
{
  read_env_once ();              /* so that a later first call cannot overwrite n with the environment */
  g_atomic_int_set (&count, 0);
  g_atomic_int_set (&budget, n < 0 ? -1 : n);
}

gboolean
ddpm_fault_alloc_should_fail (void)
{
  read_env_once ();
  if (g_atomic_int_get (&budget) < 0)
    return FALSE;
  g_atomic_int_inc (&count);
  /* Take one unit of budget; once it is 0 every allocation fails. */
  for (;;) {
    gint b = g_atomic_int_get (&budget);
    if (b < 0)
      return FALSE;
    if (b == 0)
      return TRUE;
    if (g_atomic_int_compare_and_exchange (&budget, b, b - 1))
      return FALSE;
  }
}

gint
ddpm_fault_alloc_count (void)
{
  return g_atomic_int_get (&count);
}
