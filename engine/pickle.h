/* pickle.h: a whitelist interpreter for the data.pkl of a torch.save'd state dict.
 *
 * It is not an unpickler: it runs only the opcodes a state dict needs and knows only a handful of global
 * names, each mapped to a fixed built-in meaning (an ordered dict, a tensor description, a storage dtype).
 * Nothing named in the file is ever imported, called or executed; any other global or opcode is an error
 * naming it. Memory is bounded by the limits below and by the pickle's own length.
 *
 * Accepted opcodes: PROTO (<= 5), FRAME, STOP, MARK, EMPTY_DICT, EMPTY_LIST, EMPTY_TUPLE, TUPLE, TUPLE1-3,
 * BINUNICODE, SHORT_BINUNICODE, BININT, BININT1, BININT2, LONG1 (<= 8 bytes), NONE, NEWTRUE, NEWFALSE,
 * BINPUT, LONG_BINPUT, MEMOIZE, BINGET, LONG_BINGET, SETITEM, SETITEMS, APPEND, APPENDS, GLOBAL,
 * STACK_GLOBAL, REDUCE, BUILD, BINPERSID.
 * Accepted globals: collections.OrderedDict, torch._utils._rebuild_tensor_v2, torch._utils._rebuild_tensor,
 * torch._utils._rebuild_parameter, and the storage classes torch.<T>Storage / torch.UntypedStorage (only
 * Float, Half and BFloat16 give usable tensors; the others are recognised so that the error can name the
 * tensor and its type). */
#pragma once

#include "tensor_table.h"

#define DDPM_PICKLE_MAX_BYTES    ((gsize) 64 << 20) /* data.pkl size (a 10k-tensor state dict is ~2 MB) */
#define DDPM_PICKLE_MAX_STACK    (1 << 20)          /* values on the stack (pickle batches 1000 items) */
#define DDPM_PICKLE_MAX_MARKS    256                /* nesting of MARKs */
#define DDPM_PICKLE_MAX_MEMO     (1 << 21)          /* memo entries */
#define DDPM_PICKLE_MAX_OBJECTS  (1 << 21)          /* objects built (~11 per tensor) */
#define DDPM_PICKLE_MAX_STRING   (1 << 16)          /* bytes in one string (tensor names are short) */
#define DDPM_PICKLE_MAX_GLOBAL   256                /* bytes in a GLOBAL module or name line */

typedef struct {
  const char *name;                /* "FloatStorage" (the global is torch.<name>) */
  gboolean supported;              /* a DdpmDType exists for it */
  DdpmDType dtype;                 /* when supported */
  int element_size;                /* bytes; 1 for UntypedStorage */
} DdpmStorageType;

/* One value of the state dict: a tensor view of a storage (torch's _rebuild_tensor_v2 arguments). */
typedef struct {
  char *name;                      /* the state-dict key, valid UTF-8 without NUL */
  const DdpmStorageType *storage_type;
  char *storage_key;               /* the storage's data is the zip entry <archive>/data/<key> */
  int64_t storage_numel;           /* elements of storage_type in the storage (persistent id) */
  int64_t offset;                  /* storage_offset, in elements */
  int ndim;
  int64_t shape[DDPM_MAX_DIMS];    /* each >= 0 */
  int64_t stride[DDPM_MAX_DIMS];   /* in elements, as saved (not yet checked for contiguity) */
} DdpmPickleTensor;

typedef struct {
  DdpmPickleTensor *tensors;       /* n, in the state dict's order */
  guint n;
} DdpmPickleStateDict;

/* Interprets data (len bytes) and returns the top-level dict (or OrderedDict) of name -> tensor.
 * what names the pickle in error messages ("model.bin: archive/data.pkl"). */
DdpmPickleStateDict *ddpm_pickle_read_state_dict (const guint8 *data, gsize len, const char *what, GError **error);
void ddpm_pickle_state_dict_free (DdpmPickleStateDict *sd);
G_DEFINE_AUTOPTR_CLEANUP_FUNC (DdpmPickleStateDict, ddpm_pickle_state_dict_free)

/* Name of a pickle opcode byte ("GLOBAL"), or NULL for a byte that is no opcode. */
const char *ddpm_pickle_opcode_name (guint8 op);
