/* fuzz_png.c: libFuzzer target for the CLI's PNG reader (cli/png_io.c, libpng underneath) with the
 * limit the CLI uses. The input reaches cli_png_load as a file (a memfd), as it does in the tool. */
#include "fuzz_parsers.h"
#include "fuzz_target.h"
#include "png_io.h"

#include <math.h>

static gboolean
fuzz_png (const guint8 *data, size_t size, GError **error)
{
  char path[64];
  int fd = fuzz_memfd_path (data, size, path, sizeof path);
  g_assert (fd >= 0);
  g_autoptr (CliImage) img = cli_png_load (path, CLI_PNG_DEFAULT_MAX_PIXELS, error);
  close (fd);
  if (!img)
    return FALSE;
  g_assert (img->channels >= 1 && img->channels <= 4 && img->width > 0 && img->height > 0);
  size_t n = (size_t) img->channels * img->width * img->height;
  for (size_t i = 0; i < n; i++)
    g_assert (img->data[i] >= 0.0f && img->data[i] <= 1.0f);   /* every value in [0, 1], as promised */
  return TRUE;
}

FUZZ_TARGET (fuzz_png)
