/* pickle.c: the whitelist pickle interpreter for torch state dicts (see pickle.h).
 *
 * What torch.save writes for {name: tensor} (protocol 2, pickletools notation):
 *   PROTO 2; GLOBAL 'collections OrderedDict'; EMPTY_TUPLE; REDUCE            -> the state dict
 *   MARK; BINUNICODE name;
 *     GLOBAL 'torch._utils _rebuild_tensor_v2'; MARK
 *       MARK 'storage' GLOBAL 'torch FloatStorage' '0' 'cpu' numel TUPLE; BINPERSID
 *       storage_offset (size...) (stride...) NEWFALSE <OrderedDict()> TUPLE; REDUCE
 *   ... SETITEMS                                                               (batches of 1000)
 *   EMPTY_DICT '_metadata' <OrderedDict of {'version': 1} dicts> SETITEM; BUILD; STOP
 * The BUILD sets the OrderedDict's _metadata attribute (module versions); we accept and drop it.
 *
 * Values are small tagged objects owned by one list and freed together, so the shared references that the
 * memo creates (and even cycles through dicts) need no reference counting. Nothing recurses over values. */
#include "pickle.h"

#include <string.h>

/* ---- opcodes ------------------------------------------------------------------------------------- */

static const char *const opcode_names[256] = {
  ['('] = "MARK", ['.'] = "STOP", ['0'] = "POP", ['1'] = "POP_MARK", ['2'] = "DUP", ['F'] = "FLOAT",
  ['I'] = "INT", ['J'] = "BININT", ['K'] = "BININT1", ['L'] = "LONG", ['M'] = "BININT2", ['N'] = "NONE",
  ['P'] = "PERSID", ['Q'] = "BINPERSID", ['R'] = "REDUCE", ['S'] = "STRING", ['T'] = "BINSTRING",
  ['U'] = "SHORT_BINSTRING", ['V'] = "UNICODE", ['X'] = "BINUNICODE", ['a'] = "APPEND", ['b'] = "BUILD",
  ['c'] = "GLOBAL", ['d'] = "DICT", ['}'] = "EMPTY_DICT", ['e'] = "APPENDS", ['g'] = "GET", ['h'] = "BINGET",
  ['i'] = "INST", ['j'] = "LONG_BINGET", ['l'] = "LIST", [']'] = "EMPTY_LIST", ['o'] = "OBJ", ['p'] = "PUT",
  ['q'] = "BINPUT", ['r'] = "LONG_BINPUT", ['s'] = "SETITEM", ['t'] = "TUPLE", [')'] = "EMPTY_TUPLE",
  ['u'] = "SETITEMS", ['G'] = "BINFLOAT", [0x80] = "PROTO", [0x81] = "NEWOBJ", [0x82] = "EXT1",
  [0x83] = "EXT2", [0x84] = "EXT4", [0x85] = "TUPLE1", [0x86] = "TUPLE2", [0x87] = "TUPLE3",
  [0x88] = "NEWTRUE", [0x89] = "NEWFALSE", [0x8a] = "LONG1", [0x8b] = "LONG4", ['B'] = "BINBYTES",
  ['C'] = "SHORT_BINBYTES", [0x8c] = "SHORT_BINUNICODE", [0x8d] = "BINUNICODE8", [0x8e] = "BINBYTES8",
  [0x8f] = "EMPTY_SET", [0x90] = "ADDITEMS", [0x91] = "FROZENSET", [0x92] = "NEWOBJ_EX",
  [0x93] = "STACK_GLOBAL", [0x94] = "MEMOIZE", [0x95] = "FRAME", [0x96] = "BYTEARRAY8",
  [0x97] = "NEXT_BUFFER", [0x98] = "READONLY_BUFFER",
};

const char *
ddpm_pickle_opcode_name (guint8 op)
{
  return opcode_names[op];
}

/* ---- the whitelist ------------------------------------------------------------------------------- */

/* torch's storage classes (torch/storage.py _LegacyStorage subclasses), as torch.save names them. */
static const DdpmStorageType storage_types[] = {
  { "FloatStorage", TRUE, DDPM_DTYPE_F32, 4 },
  { "HalfStorage", TRUE, DDPM_DTYPE_F16, 2 },
  { "BFloat16Storage", TRUE, DDPM_DTYPE_BF16, 2 },
  { "DoubleStorage", FALSE, 0, 8 },
  { "LongStorage", FALSE, 0, 8 },
  { "IntStorage", FALSE, 0, 4 },
  { "ShortStorage", FALSE, 0, 2 },
  { "CharStorage", FALSE, 0, 1 },
  { "ByteStorage", FALSE, 0, 1 },
  { "BoolStorage", FALSE, 0, 1 },
  { "ComplexFloatStorage", FALSE, 0, 8 },
  { "ComplexDoubleStorage", FALSE, 0, 16 },
  { "UntypedStorage", FALSE, 0, 1 },
};

typedef enum {
  GLOBAL_ORDERED_DICT,
  GLOBAL_REBUILD_TENSOR_V2,        /* (storage, offset, size, stride, requires_grad, hooks[, metadata]) */
  GLOBAL_REBUILD_TENSOR,           /* (storage, offset, size, stride): torch < 1.0 style */
  GLOBAL_REBUILD_PARAMETER,        /* (tensor, requires_grad, hooks): state_dict(keep_vars=True) */
  GLOBAL_STORAGE_TYPE,             /* a marker inside persistent ids; never called */
} GlobalKind;

/* ---- values -------------------------------------------------------------------------------------- */

typedef enum { K_NONE, K_BOOL, K_INT, K_STR, K_TUPLE, K_LIST, K_DICT, K_GLOBAL, K_STORAGE, K_TENSOR } Kind;

static const char *const kind_names[] = { "None", "bool", "int", "str", "tuple", "list", "dict", "global",
                                          "storage", "tensor" };

typedef struct Obj Obj;

typedef struct {
  Obj *storage;                    /* K_STORAGE */
  int64_t offset;
  int ndim;
  int64_t shape[DDPM_MAX_DIMS], stride[DDPM_MAX_DIMS];
  Obj *flag_set;                   /* a metadata key (K_STR) whose value was true ("neg", "conj"), or NULL */
} TensorInfo;

struct Obj {
  Kind kind;
  union {
    gboolean b;
    int64_t i;
    struct { const char *s; guint32 len; } str;          /* points into the pickle; not NUL-terminated */
    struct { Obj **items; guint n; } tuple;
    GPtrArray *items;                                     /* K_LIST: values; K_DICT: key, value, key, ... */
    struct { GlobalKind kind; const DdpmStorageType *type; char *qualname; } global;
    struct { const DdpmStorageType *type; Obj *key; int64_t numel; } storage;
    TensorInfo *tensor;
  } u;
};

typedef struct {
  const guint8 *start, *p, *end;
  const char *what;
  gsize op_pos;                    /* offset of the opcode being run */
  guint8 op;
  GPtrArray *objects;              /* every allocated Obj (owner) */
  GPtrArray *stack;                /* Obj * */
  GArray *marks;                   /* guint: stack heights at each MARK */
  GHashTable *memo;                /* index -> Obj * */
  Obj none, yes, no;
} Unpickler;

static void
obj_free (gpointer data)
{
  Obj *o = data;
  switch (o->kind) {
  case K_TUPLE: g_free (o->u.tuple.items); break;
  case K_LIST: case K_DICT: g_ptr_array_unref (o->u.items); break;
  case K_GLOBAL: g_free (o->u.global.qualname); break;
  case K_TENSOR: g_free (o->u.tensor); break;
  default: break;
  }
  g_free (o);
}

static G_GNUC_PRINTF (4, 5) gboolean
fail (Unpickler *u, GError **error, int code, const char *fmt, ...)
{
  va_list ap;
  va_start (ap, fmt);
  g_autofree char *msg = g_strdup_vprintf (fmt, ap);
  va_end (ap);
  if (opcode_names[u->op])
    g_set_error (error, DDPM_ERROR, code, "%s: %s (opcode %s at byte %" G_GSIZE_FORMAT ")", u->what, msg,
                 opcode_names[u->op], u->op_pos);
  else
    g_set_error (error, DDPM_ERROR, code, "%s: %s (at byte %" G_GSIZE_FORMAT ")", u->what, msg, u->op_pos);
  return FALSE;
}

static Obj *
new_obj (Unpickler *u, Kind kind, GError **error)
{
  if (u->objects->len >= DDPM_PICKLE_MAX_OBJECTS) {
    fail (u, error, DDPM_ERROR_LIMIT, "more than %d objects (DDPM_PICKLE_MAX_OBJECTS)", DDPM_PICKLE_MAX_OBJECTS);
    return NULL;
  }
  Obj *o = g_new0 (Obj, 1);
  o->kind = kind;
  if (kind == K_LIST || kind == K_DICT)
    o->u.items = g_ptr_array_new ();
  g_ptr_array_add (u->objects, o);
  return o;
}

static gboolean
push (Unpickler *u, Obj *o, GError **error)
{
  if (!o)
    return FALSE;
  if (u->stack->len >= DDPM_PICKLE_MAX_STACK)
    return fail (u, error, DDPM_ERROR_LIMIT, "stack deeper than %d (DDPM_PICKLE_MAX_STACK)", DDPM_PICKLE_MAX_STACK);
  g_ptr_array_add (u->stack, o);
  return TRUE;
}

/* Values above the innermost MARK: only these may be popped or used. */
static guint
frame_base (const Unpickler *u)
{
  return u->marks->len ? g_array_index (u->marks, guint, u->marks->len - 1) : 0;
}

static Obj *
pop (Unpickler *u, GError **error)
{
  if (u->stack->len <= frame_base (u)) {
    fail (u, error, DDPM_ERROR_FORMAT, "stack underflow");
    return NULL;
  }
  return g_ptr_array_steal_index (u->stack, u->stack->len - 1);
}

static Obj *
top (Unpickler *u, GError **error)
{
  if (u->stack->len <= frame_base (u)) {
    fail (u, error, DDPM_ERROR_FORMAT, "stack underflow");
    return NULL;
  }
  return u->stack->pdata[u->stack->len - 1];
}

/* Closes the innermost MARK: *first is the stack index of the first item above it. */
static gboolean
pop_mark (Unpickler *u, guint *first, GError **error)
{
  if (u->marks->len == 0)
    return fail (u, error, DDPM_ERROR_FORMAT, "no MARK to close");
  *first = g_array_index (u->marks, guint, u->marks->len - 1);
  g_array_set_size (u->marks, u->marks->len - 1);
  return TRUE;
}

static gboolean
need (Unpickler *u, gsize n, GError **error)
{
  if ((gsize) (u->end - u->p) < n)
    return fail (u, error, DDPM_ERROR_FORMAT, "truncated: %" G_GSIZE_FORMAT " bytes needed, %" G_GSIZE_FORMAT
                 " left", n, (gsize) (u->end - u->p));
  return TRUE;
}

static guint64
read_le (Unpickler *u, int n)
{
  guint64 v = 0;
  for (int i = 0; i < n; i++)
    v |= (guint64) u->p[i] << (8 * i);
  u->p += n;
  return v;
}

static Obj *
make_int (Unpickler *u, int64_t v, GError **error)
{
  Obj *o = new_obj (u, K_INT, error);
  if (o)
    o->u.i = v;
  return o;
}

static Obj *
make_str (Unpickler *u, gsize len, GError **error)
{
  if (len > DDPM_PICKLE_MAX_STRING) {
    fail (u, error, DDPM_ERROR_LIMIT, "string of %" G_GSIZE_FORMAT " bytes (limit DDPM_PICKLE_MAX_STRING = %d)",
          len, DDPM_PICKLE_MAX_STRING);
    return NULL;
  }
  if (!need (u, len, error))
    return NULL;
  /* g_utf8_validate_len also refuses NUL bytes, which could not survive as C strings. */
  if (!g_utf8_validate_len ((const char *) u->p, len, NULL)) {
    fail (u, error, DDPM_ERROR_FORMAT, "string is not valid UTF-8 or contains NUL");
    return NULL;
  }
  Obj *o = new_obj (u, K_STR, error);
  if (!o)
    return NULL;
  o->u.str.s = (const char *) u->p;
  o->u.str.len = (guint32) len;
  u->p += len;
  return o;
}

static gboolean
str_is (const Obj *o, const char *s)
{
  return o->kind == K_STR && o->u.str.len == strlen (s) && memcmp (o->u.str.s, s, o->u.str.len) == 0;
}

static Obj *
make_tuple (Unpickler *u, guint first, GError **error)
{
  Obj *o = new_obj (u, K_TUPLE, error);
  if (!o)
    return NULL;
  guint n = u->stack->len - first;
  o->u.tuple.n = n;
  o->u.tuple.items = g_new (Obj *, MAX (n, 1));
  if (n > 0)                       /* an empty stack's pdata may be NULL: no pointer arithmetic on it */
    memcpy (o->u.tuple.items, u->stack->pdata + first, n * sizeof (Obj *));
  g_ptr_array_set_size (u->stack, first);
  return o;
}

/* module and name are arbitrary bytes from the file: matched exactly, and escaped for messages. */
static Obj *
resolve_global (Unpickler *u, const char *module, gsize mlen, const char *name, gsize nlen, GError **error)
{
  g_autofree char *m = g_strndup (module, mlen), *n = g_strndup (name, nlen);
  int kind = -1;                   /* a GlobalKind once matched */
  const DdpmStorageType *type = NULL;

  if (strlen (m) != mlen || strlen (n) != nlen)
    ;                                           /* embedded NUL: matches nothing */
  else if (strcmp (m, "collections") == 0 && strcmp (n, "OrderedDict") == 0)
    kind = GLOBAL_ORDERED_DICT;
  else if (strcmp (m, "torch._utils") == 0 && strcmp (n, "_rebuild_tensor_v2") == 0)
    kind = GLOBAL_REBUILD_TENSOR_V2;
  else if (strcmp (m, "torch._utils") == 0 && strcmp (n, "_rebuild_tensor") == 0)
    kind = GLOBAL_REBUILD_TENSOR;
  else if (strcmp (m, "torch._utils") == 0 && strcmp (n, "_rebuild_parameter") == 0)
    kind = GLOBAL_REBUILD_PARAMETER;
  else {
    for (guint i = 0; strcmp (m, "torch") == 0 && i < G_N_ELEMENTS (storage_types); i++)
      if (strcmp (n, storage_types[i].name) == 0) {
        kind = GLOBAL_STORAGE_TYPE;
        type = &storage_types[i];
      }
  }
  g_autofree char *mq = g_strescape (m, NULL), *nq = g_strescape (n, NULL);
  if (kind < 0) {
    fail (u, error, DDPM_ERROR_FORMAT, "refuses global '%s.%s' (not on the state-dict whitelist; nothing from the "
          "file is ever executed)", mq, nq);
    return NULL;
  }
  Obj *o = new_obj (u, K_GLOBAL, error);
  if (!o)
    return NULL;
  o->u.global.kind = (GlobalKind) kind;
  o->u.global.type = type;
  o->u.global.qualname = g_strdup_printf ("%s.%s", mq, nq);
  return o;
}

static gboolean
read_global_line (Unpickler *u, const char **line, gsize *len, GError **error)
{
  gsize avail = MIN ((gsize) (u->end - u->p), (gsize) DDPM_PICKLE_MAX_GLOBAL + 1);
  const guint8 *nl = memchr (u->p, '\n', avail);
  if (!nl)
    return fail (u, error, DDPM_ERROR_FORMAT, "GLOBAL line not terminated within %d bytes (DDPM_PICKLE_MAX_GLOBAL)",
                 DDPM_PICKLE_MAX_GLOBAL);
  *line = (const char *) u->p;
  *len = (gsize) (nl - u->p);
  u->p = nl + 1;
  return TRUE;
}

/* ---- REDUCE, BUILD, BINPERSID -------------------------------------------------------------------- */

static gboolean
int_arg (Unpickler *u, Obj *o, const char *what, int64_t min, int64_t *out, GError **error)
{
  if (o->kind != K_INT || o->u.i < min)
    return fail (u, error, DDPM_ERROR_FORMAT, "%s must be an int >= %" G_GINT64_FORMAT ", got %s", what, min,
                 kind_names[o->kind]);
  *out = o->u.i;
  return TRUE;
}

static gboolean
dims_arg (Unpickler *u, Obj *o, const char *what, int64_t min, int64_t *out, int *ndim, GError **error)
{
  if (o->kind != K_TUPLE)
    return fail (u, error, DDPM_ERROR_FORMAT, "tensor %s must be a tuple, got %s", what, kind_names[o->kind]);
  if (o->u.tuple.n > DDPM_MAX_DIMS)
    return fail (u, error, DDPM_ERROR_LIMIT, "tensor has %u dimensions (limit DDPM_MAX_DIMS = %d)", o->u.tuple.n,
                 DDPM_MAX_DIMS);
  *ndim = (int) o->u.tuple.n;
  for (guint i = 0; i < o->u.tuple.n; i++)
    if (!int_arg (u, o->u.tuple.items[i], what, min, &out[i], error))
      return FALSE;
  return TRUE;
}

static gboolean
dict_is_empty (const Obj *o)
{
  return o->kind == K_DICT && o->u.items->len == 0;
}

/* _rebuild_tensor_v2 (storage, storage_offset, size, stride, requires_grad, backward_hooks[, metadata])
 * and _rebuild_tensor (storage, storage_offset, size, stride). Only the description is kept; the bytes
 * are checked against the storage's zip entry by the caller. */
static Obj *
rebuild_tensor (Unpickler *u, Obj *args, gboolean v2, GError **error)
{
  guint n = args->u.tuple.n;
  if (v2 ? (n != 6 && n != 7) : n != 4) {
    fail (u, error, DDPM_ERROR_FORMAT, "%s takes %s arguments, got %u", v2 ? "_rebuild_tensor_v2" : "_rebuild_tensor",
          v2 ? "6 or 7" : "4", n);
    return NULL;
  }
  Obj **a = args->u.tuple.items;
  if (a[0]->kind != K_STORAGE) {
    fail (u, error, DDPM_ERROR_FORMAT, "tensor storage must come from a persistent id, got %s", kind_names[a[0]->kind]);
    return NULL;
  }
  TensorInfo info = { .storage = a[0] };
  int nstride;
  if (!int_arg (u, a[1], "storage_offset", 0, &info.offset, error) ||
      !dims_arg (u, a[2], "size", 0, info.shape, &info.ndim, error) ||
      !dims_arg (u, a[3], "stride", 0, info.stride, &nstride, error))
    return NULL;
  if (nstride != info.ndim) {
    fail (u, error, DDPM_ERROR_FORMAT, "tensor has %d sizes but %d strides", info.ndim, nstride);
    return NULL;
  }
  if (v2) {
    if (a[4]->kind != K_BOOL) {
      fail (u, error, DDPM_ERROR_FORMAT, "requires_grad must be a bool, got %s", kind_names[a[4]->kind]);
      return NULL;
    }
    /* Hooks would be callables (refused globals anyway); torch itself only ever writes OrderedDict(). */
    if (!dict_is_empty (a[5])) {
      fail (u, error, DDPM_ERROR_FORMAT, "backward_hooks must be an empty dict");
      return NULL;
    }
    /* metadata: {'neg': True} / {'conj': True} would change the values (torch._utils.set_tensor_metadata). */
    if (n == 7 && a[6]->kind != K_NONE) {
      if (a[6]->kind != K_DICT) {
        fail (u, error, DDPM_ERROR_FORMAT, "tensor metadata must be a dict, got %s", kind_names[a[6]->kind]);
        return NULL;
      }
      GPtrArray *kv = a[6]->u.items;
      for (guint i = 0; i + 1 < kv->len; i += 2) {
        Obj *k = kv->pdata[i], *v = kv->pdata[i + 1];
        if (k->kind != K_STR || v->kind != K_BOOL) {
          fail (u, error, DDPM_ERROR_FORMAT, "tensor metadata must map str to bool");
          return NULL;
        }
        if (v->u.b && !info.flag_set)
          info.flag_set = k;
      }
    }
  }
  Obj *o = new_obj (u, K_TENSOR, error);
  if (!o)
    return NULL;
  o->u.tensor = g_memdup2 (&info, sizeof info);
  return o;
}

static Obj *
reduce (Unpickler *u, Obj *callable, Obj *args, GError **error)
{
  if (callable->kind != K_GLOBAL) {
    fail (u, error, DDPM_ERROR_FORMAT, "REDUCE on a %s, not a whitelisted global", kind_names[callable->kind]);
    return NULL;
  }
  if (args->kind != K_TUPLE) {
    fail (u, error, DDPM_ERROR_FORMAT, "REDUCE arguments must be a tuple, got %s", kind_names[args->kind]);
    return NULL;
  }
  switch (callable->u.global.kind) {
  case GLOBAL_ORDERED_DICT:
    if (args->u.tuple.n != 0) {
      fail (u, error, DDPM_ERROR_FORMAT, "collections.OrderedDict takes no arguments here, got %u", args->u.tuple.n);
      return NULL;
    }
    return new_obj (u, K_DICT, error);
  case GLOBAL_REBUILD_TENSOR_V2:
    return rebuild_tensor (u, args, TRUE, error);
  case GLOBAL_REBUILD_TENSOR:
    return rebuild_tensor (u, args, FALSE, error);
  case GLOBAL_REBUILD_PARAMETER:
    /* nn.Parameter(data, requires_grad): the parameter is its data for us. */
    if (args->u.tuple.n != 3 || args->u.tuple.items[0]->kind != K_TENSOR ||
        args->u.tuple.items[1]->kind != K_BOOL || !dict_is_empty (args->u.tuple.items[2])) {
      fail (u, error, DDPM_ERROR_FORMAT, "_rebuild_parameter takes (tensor, bool, empty dict)");
      return NULL;
    }
    return args->u.tuple.items[0];
  case GLOBAL_STORAGE_TYPE:
    break;
  }
  fail (u, error, DDPM_ERROR_FORMAT, "global '%s' cannot be called", callable->u.global.qualname);
  return NULL;
}

/* torch's persistent id: ('storage', torch.<T>Storage, key: str, location: str, numel: int). */
static Obj *
persistent_load (Unpickler *u, Obj *pid, GError **error)
{
  if (pid->kind != K_TUPLE || pid->u.tuple.n != 5 || !str_is (pid->u.tuple.items[0], "storage")) {
    fail (u, error, DDPM_ERROR_FORMAT, "persistent id is not ('storage', type, key, location, numel)");
    return NULL;
  }
  Obj **a = pid->u.tuple.items;
  if (a[1]->kind != K_GLOBAL || a[1]->u.global.kind != GLOBAL_STORAGE_TYPE) {
    fail (u, error, DDPM_ERROR_FORMAT, "persistent id names no storage type");
    return NULL;
  }
  if (a[2]->kind != K_STR || a[2]->u.str.len == 0 || a[3]->kind != K_STR) {
    fail (u, error, DDPM_ERROR_FORMAT, "persistent id key and location must be non-empty strings");
    return NULL;
  }
  int64_t numel = 0;
  if (!int_arg (u, a[4], "storage numel", 0, &numel, error))
    return NULL;
  Obj *o = new_obj (u, K_STORAGE, error);
  if (!o)
    return NULL;
  o->u.storage.type = a[1]->u.global.type;
  o->u.storage.key = a[2];
  o->u.storage.numel = numel;
  return o;
}

/* ---- the loop ------------------------------------------------------------------------------------ */

static gboolean
memo_put (Unpickler *u, guint64 index, GError **error)
{
  Obj *o = top (u, error);
  if (!o)
    return FALSE;
  gpointer key = GUINT_TO_POINTER ((guint) index);
  if (!g_hash_table_contains (u->memo, key) && g_hash_table_size (u->memo) >= DDPM_PICKLE_MAX_MEMO)
    return fail (u, error, DDPM_ERROR_LIMIT, "more than %d memo entries (DDPM_PICKLE_MAX_MEMO)", DDPM_PICKLE_MAX_MEMO);
  g_hash_table_insert (u->memo, key, o);
  return TRUE;
}

static gboolean
memo_get (Unpickler *u, guint64 index, GError **error)
{
  Obj *o = g_hash_table_lookup (u->memo, GUINT_TO_POINTER ((guint) index));
  if (!o)
    return fail (u, error, DDPM_ERROR_FORMAT, "memo index %" G_GUINT64_FORMAT " was never stored", index);
  return push (u, o, error);
}

/* Adds the items stack[first..] (key, value pairs for dicts) to the container at stack[first - 1]. */
static gboolean
add_items (Unpickler *u, guint first, gboolean pairs, GError **error)
{
  if (first <= frame_base (u))
    return fail (u, error, DDPM_ERROR_FORMAT, "no container below the items");
  Obj *target = u->stack->pdata[first - 1];
  guint n = u->stack->len - first;
  if (target->kind != (pairs ? K_DICT : K_LIST))
    return fail (u, error, DDPM_ERROR_FORMAT, "%s target is a %s", pairs ? "SETITEM" : "APPEND",
                 kind_names[target->kind]);
  if (pairs && n % 2)
    return fail (u, error, DDPM_ERROR_FORMAT, "odd number of items (%u) for a dict", n);
  for (guint i = 0; i < n; i += pairs ? 2 : 1) {
    Obj *k = u->stack->pdata[first + i];
    if (pairs && k->kind != K_STR && k->kind != K_INT)
      return fail (u, error, DDPM_ERROR_FORMAT, "dict key is a %s (only str and int are accepted)",
                   kind_names[k->kind]);
  }
  for (guint i = 0; i < n; i++)
    g_ptr_array_add (target->u.items, u->stack->pdata[first + i]);
  g_ptr_array_set_size (u->stack, first);
  return TRUE;
}

/* Runs one opcode. Returns FALSE with error set on failure; sets *result on STOP. */
static gboolean
step (Unpickler *u, Obj **result, GError **error)
{
  u->op_pos = (gsize) (u->p - u->start);
  u->op = *u->p++;
  Obj *a, *b;
  guint first = 0;
  const char *m = NULL, *n = NULL;
  gsize ml = 0, nl = 0;

  switch (u->op) {
  case 0x80:                                            /* PROTO */
    if (!need (u, 1, error))
      return FALSE;
    if (*u->p > 5)
      return fail (u, error, DDPM_ERROR_UNSUPPORTED, "pickle protocol %u (5 is the newest known)", *u->p);
    u->p++;
    return TRUE;
  case 0x95: {                                          /* FRAME: a length prefix, only an I/O hint */
    if (!need (u, 8, error))
      return FALSE;
    guint64 len = read_le (u, 8);
    if (len > (guint64) (u->end - u->p))
      return fail (u, error, DDPM_ERROR_FORMAT, "frame of %" G_GUINT64_FORMAT " bytes overruns the pickle", len);
    return TRUE;
  }
  case '.':                                             /* STOP */
    if (u->marks->len != 0 || u->stack->len != 1)
      return fail (u, error, DDPM_ERROR_FORMAT, "STOP with %u values and %u open MARKs", u->stack->len,
                   u->marks->len);
    *result = u->stack->pdata[0];
    return TRUE;
  case '(':                                             /* MARK */
    if (u->marks->len >= DDPM_PICKLE_MAX_MARKS)
      return fail (u, error, DDPM_ERROR_LIMIT, "MARKs nested deeper than %d (DDPM_PICKLE_MAX_MARKS)",
                   DDPM_PICKLE_MAX_MARKS);
    g_array_append_val (u->marks, u->stack->len);
    return TRUE;
  case '}': return push (u, new_obj (u, K_DICT, error), error);    /* EMPTY_DICT */
  case ']': return push (u, new_obj (u, K_LIST, error), error);    /* EMPTY_LIST */
  case ')': return push (u, make_tuple (u, u->stack->len, error), error); /* EMPTY_TUPLE */
  case 't':                                             /* TUPLE */
    return pop_mark (u, &first, error) && push (u, make_tuple (u, first, error), error);
  case 0x85: case 0x86: case 0x87: {                    /* TUPLE1..3 */
    guint k = u->op - 0x84;
    if (u->stack->len - frame_base (u) < k)
      return fail (u, error, DDPM_ERROR_FORMAT, "stack underflow");
    return push (u, make_tuple (u, u->stack->len - k, error), error);
  }
  case 'X':                                             /* BINUNICODE */
    return need (u, 4, error) && push (u, make_str (u, read_le (u, 4), error), error);
  case 0x8c:                                            /* SHORT_BINUNICODE */
    return need (u, 1, error) && push (u, make_str (u, read_le (u, 1), error), error);
  case 'J':                                             /* BININT: signed 32-bit */
    return need (u, 4, error) && push (u, make_int (u, (gint32) (guint32) read_le (u, 4), error), error);
  case 'K':                                             /* BININT1: unsigned 8-bit */
    return need (u, 1, error) && push (u, make_int (u, (int64_t) read_le (u, 1), error), error);
  case 'M':                                             /* BININT2: unsigned 16-bit */
    return need (u, 2, error) && push (u, make_int (u, (int64_t) read_le (u, 2), error), error);
  case 0x8a: {                                          /* LONG1: n-byte two's complement */
    if (!need (u, 1, error))
      return FALSE;
    guint len = *u->p++;
    if (len > 8)
      return fail (u, error, DDPM_ERROR_LIMIT, "integer of %u bytes (64-bit at most)", len);
    if (!need (u, len, error))
      return FALSE;
    guint64 v = read_le (u, (int) len);
    if (len > 0 && len < 8 && (v >> (8 * len - 1)) & 1)
      v |= ~(guint64) 0 << (8 * len);                 /* sign-extend */
    return push (u, make_int (u, (int64_t) v, error), error);
  }
  case 'N': return push (u, &u->none, error);           /* NONE */
  case 0x88: return push (u, &u->yes, error);           /* NEWTRUE */
  case 0x89: return push (u, &u->no, error);            /* NEWFALSE */
  case 'q': return need (u, 1, error) && memo_put (u, read_le (u, 1), error);        /* BINPUT */
  case 'r': return need (u, 4, error) && memo_put (u, read_le (u, 4), error);        /* LONG_BINPUT */
  case 0x94: return memo_put (u, g_hash_table_size (u->memo), error);                /* MEMOIZE */
  case 'h': return need (u, 1, error) && memo_get (u, read_le (u, 1), error);        /* BINGET */
  case 'j': return need (u, 4, error) && memo_get (u, read_le (u, 4), error);        /* LONG_BINGET */
  case 's':                                             /* SETITEM */
    if (u->stack->len - frame_base (u) < 3)
      return fail (u, error, DDPM_ERROR_FORMAT, "stack underflow");
    return add_items (u, u->stack->len - 2, TRUE, error);
  case 'u':                                             /* SETITEMS */
    return pop_mark (u, &first, error) && add_items (u, first, TRUE, error);
  case 'a':                                             /* APPEND */
    if (u->stack->len - frame_base (u) < 2)
      return fail (u, error, DDPM_ERROR_FORMAT, "stack underflow");
    return add_items (u, u->stack->len - 1, FALSE, error);
  case 'e':                                             /* APPENDS */
    return pop_mark (u, &first, error) && add_items (u, first, FALSE, error);
  case 'c':                                             /* GLOBAL 'module\nname\n' */
    return read_global_line (u, &m, &ml, error) && read_global_line (u, &n, &nl, error) &&
           push (u, resolve_global (u, m, ml, n, nl, error), error);
  case 0x93:                                            /* STACK_GLOBAL: module, name on the stack */
    if (!(b = pop (u, error)) || !(a = pop (u, error)))
      return FALSE;
    if (a->kind != K_STR || b->kind != K_STR)
      return fail (u, error, DDPM_ERROR_FORMAT, "STACK_GLOBAL needs two strings");
    return push (u, resolve_global (u, a->u.str.s, a->u.str.len, b->u.str.s, b->u.str.len, error), error);
  case 'R':                                             /* REDUCE: callable, args -> callable(*args) */
    if (!(b = pop (u, error)) || !(a = pop (u, error)))
      return FALSE;
    return push (u, reduce (u, a, b, error), error);
  case 'b':                                             /* BUILD: target.__setstate__(state) */
    if (!(b = pop (u, error)) || !(a = top (u, error)))
      return FALSE;
    /* The only BUILD a state dict has: OrderedDict's attributes ({'_metadata': ...}), which we drop. */
    if (a->kind != K_DICT || (b->kind != K_NONE && b->kind != K_DICT))
      return fail (u, error, DDPM_ERROR_FORMAT, "BUILD of a %s with a %s state (only a dict's attribute dict is "
                   "accepted)", kind_names[a->kind], kind_names[b->kind]);
    return TRUE;
  case 'Q':                                             /* BINPERSID */
    if (!(a = pop (u, error)))
      return FALSE;
    return push (u, persistent_load (u, a, error), error);
  default:
    if (opcode_names[u->op])
      return fail (u, error, DDPM_ERROR_FORMAT, "opcode 0x%02x (%s) is not allowed in a state dict", u->op,
                   opcode_names[u->op]);
    return fail (u, error, DDPM_ERROR_FORMAT, "byte 0x%02x is not a pickle opcode", u->op);
  }
}

/* ---- the state dict ------------------------------------------------------------------------------ */

void
ddpm_pickle_state_dict_free (DdpmPickleStateDict *sd)
{
  if (!sd)
    return;
  for (guint i = 0; i < sd->n; i++) {
    g_free (sd->tensors[i].name);
    g_free (sd->tensors[i].storage_key);
  }
  g_free (sd->tensors);
  g_free (sd);
}

static DdpmPickleStateDict *
to_state_dict (Unpickler *u, Obj *root, GError **error)
{
  if (root->kind != K_DICT) {
    g_set_error (error, DDPM_ERROR, DDPM_ERROR_FORMAT, "%s: the pickle holds a %s, not a state dict", u->what,
                 kind_names[root->kind]);
    return NULL;
  }
  GPtrArray *kv = root->u.items;
  g_autoptr (DdpmPickleStateDict) sd = g_new0 (DdpmPickleStateDict, 1);
  sd->tensors = g_new0 (DdpmPickleTensor, MAX (kv->len / 2, 1));
  for (guint i = 0; i + 1 < kv->len; i += 2) {
    Obj *k = kv->pdata[i], *v = kv->pdata[i + 1];
    if (k->kind != K_STR) {
      g_set_error (error, DDPM_ERROR, DDPM_ERROR_FORMAT, "%s: state dict key %u is a %s, not a str", u->what, i / 2,
                   kind_names[k->kind]);
      return NULL;
    }
    g_autofree char *name = g_strndup (k->u.str.s, k->u.str.len);
    if (v->kind != K_TENSOR) {
      g_set_error (error, DDPM_ERROR, DDPM_ERROR_FORMAT, "%s: state dict entry '%s' is a %s, not a tensor", u->what,
                   name, kind_names[v->kind]);
      return NULL;
    }
    const TensorInfo *t = v->u.tensor;
    if (t->flag_set) {
      g_set_error (error, DDPM_ERROR, DDPM_ERROR_UNSUPPORTED, "%s: tensor '%s' has the lazy '%.*s' bit set "
                   "(torch tensor metadata), which is not supported", u->what, name,
                   (int) t->flag_set->u.str.len, t->flag_set->u.str.s);
      return NULL;
    }
    DdpmPickleTensor *out = &sd->tensors[sd->n++];
    out->name = g_steal_pointer (&name);
    out->storage_type = t->storage->u.storage.type;
    out->storage_key = g_strndup (t->storage->u.storage.key->u.str.s, t->storage->u.storage.key->u.str.len);
    out->storage_numel = t->storage->u.storage.numel;
    out->offset = t->offset;
    out->ndim = t->ndim;
    memcpy (out->shape, t->shape, sizeof out->shape);
    memcpy (out->stride, t->stride, sizeof out->stride);
  }
  return g_steal_pointer (&sd);
}

DdpmPickleStateDict *
ddpm_pickle_read_state_dict (const guint8 *data, gsize len, const char *what, GError **error)
{
  if (len > DDPM_PICKLE_MAX_BYTES) {
    g_set_error (error, DDPM_ERROR, DDPM_ERROR_LIMIT, "%s: pickle of %" G_GSIZE_FORMAT " bytes (limit "
                 "DDPM_PICKLE_MAX_BYTES = %" G_GSIZE_FORMAT ")", what, len, DDPM_PICKLE_MAX_BYTES);
    return NULL;
  }
  if (len == 0 || data == NULL) {  /* also keeps data + len defined: data may be NULL when len is 0 */
    g_set_error (error, DDPM_ERROR, DDPM_ERROR_FORMAT, "%s: empty pickle (no STOP)", what);
    return NULL;
  }
  Unpickler u = {
    .start = data, .p = data, .end = data + len, .what = what,
    .objects = g_ptr_array_new_with_free_func (obj_free),
    .stack = g_ptr_array_new (),
    .marks = g_array_new (FALSE, FALSE, sizeof (guint)),
    .memo = g_hash_table_new (g_direct_hash, g_direct_equal),
    .none = { .kind = K_NONE }, .yes = { .kind = K_BOOL, .u.b = TRUE }, .no = { .kind = K_BOOL, .u.b = FALSE },
  };
  Obj *root = NULL;
  DdpmPickleStateDict *sd = NULL;
  gboolean ok = TRUE;
  while (ok && !root && u.p < u.end)
    ok = step (&u, &root, error);
  if (ok && !root)
    g_set_error (error, DDPM_ERROR, DDPM_ERROR_FORMAT, "%s: pickle ends without STOP (truncated?)", what);
  else if (ok)
    sd = to_state_dict (&u, root, error);

  g_hash_table_unref (u.memo);
  g_array_unref (u.marks);
  g_ptr_array_unref (u.stack);
  g_ptr_array_unref (u.objects);
  return sd;
}
