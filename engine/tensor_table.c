/* tensor_table.c: not yet written. */
#include "ddpm.h"
