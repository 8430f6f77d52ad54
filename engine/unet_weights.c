/* unet_weights.c: not yet written. */
#include "ddpm.h"
