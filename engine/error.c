/* error.c: the engine's GError domain. */
#include "ddpm.h"

G_DEFINE_QUARK (ddpm-error-quark, ddpm_error)
