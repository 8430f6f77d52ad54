/* image_ops.h: what the ddpm tool does to pictures around the engine: channel mapping between a PNG's
 * layout and the model's, the [0, 1] <-> [-1, 1] range change, and reflect padding to the model's size
 * multiple. All images are planar float32 (C, H, W). */
#pragma once

#include <glib.h>
#include <stddef.h>

G_BEGIN_DECLS

/* Which channels go where. A layout is colour (1 gray or 3 RGB) plus an optional alpha channel.
 *   image -> model: gray is replicated to RGB, RGB becomes gray by BT.601 luma (0.299, 0.587, 0.114);
 *                   a model alpha channel gets the image's alpha, or 1 (opaque) when the image has none.
 *   model -> image: back to the image's own layout (RGB -> gray by luma, gray -> RGB by replication);
 *                   the image's alpha is the model's alpha when the model has one, otherwise the original
 *                   alpha, untouched. The result always has the image's channel count. */
typedef struct {
  int image_color, image_alpha;    /* image_color 1 or 3, image_alpha 0 or 1 */
  int model_color, model_alpha;
} ChannelMap;

/* image_channels 1..4 (PNG colour types); model_channels 1..4. FALSE (DDPM_ERROR_UNSUPPORTED) otherwise. */
gboolean channel_map_init (ChannelMap *m, int image_channels, int model_channels, GError **error);
static inline int channel_map_model_channels (const ChannelMap *m) { return m->model_color + m->model_alpha; }
static inline int channel_map_image_channels (const ChannelMap *m) { return m->image_color + m->image_alpha; }

/* img (Ci, plane) in [0, 1] -> model (Cm, plane) in [-1, 1] (x = 2p - 1). */
void channel_map_to_model (const ChannelMap *m, const float *img, float *model, size_t plane);
/* model (Cm, plane) in model range -> out (Ci, plane) in [0, 1] (p = x/2 + 0.5, unclamped); orig is the
 * input image (Ci, plane), the source of an alpha the model does not have. */
void channel_map_from_model (const ChannelMap *m, const float *model, const float *orig, float *out, size_t plane);

/* x -> x/2 + 0.5 in float32, as diffusers' pipelines do before clamping (n values, in place). */
void model_to_unit_range (float *x, size_t n);

/* numpy 'reflect' index (mirror without repeating the edge) of i into [0, n). */
int reflect_index (int i, int n);
/* (C, H, W) -> (C, hp, wp), hp >= h, wp >= w: the original at the top left, bottom rows and right columns
 * mirrored (numpy.pad mode='reflect'). Returns a new g_malloc'ed array, NULL if out of memory. */
float *image_pad_reflect (const float *x, int c, int h, int w, int hp, int wp);
/* (C, hp, wp) -> its top-left (C, h, w) into out. */
void image_crop (const float *x, int c, int hp, int wp, int h, int w, float *out);

/* Smallest multiple of m that is >= v (m >= 1). */
static inline int round_up_multiple (int v, int m) { return (v + m - 1) / m * m; }

G_END_DECLS
