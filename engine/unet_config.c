/* unet_config.c: not yet written. */
#include "ddpm.h"
