/*
 * cortex.h — the C ABI of Cortex, a runtime for recurrent memory models.
 *
 * Conventions (read once, they hold everywhere):
 *  - Every fallible call returns a cx_status (0 = CX_STATUS_OK). Results come back
 *    through trailing out-pointers, which are written only on success.
 *  - A failed call changes nothing: handles, out-params and caller buffers are left
 *    exactly as they were (except *needed of a size query, which reports the size with
 *    CX_STATUS_BUFFER_TOO_SMALL). cx_last_error() then explains why, e.g.
 *    "[cx_model_step] x: expected (B=4, D=128), got (4, 64)".
 *  - Ownership is stated on every pointer: "caller owns; free with ..." (you must
 *    release it), "borrowed" (valid as long as the named object lives), "takes
 *    ownership" (Cortex releases it, whatever the status).
 *  - Thread safety: a cx_model_t is immutable after load and may be shared by any
 *    number of threads. A cx_state_t is used by one thread at a time (a concurrent
 *    second call is refused with CX_STATUS_BUSY, never corrupts it); so are a
 *    cx_cache_t, cx_generator_t and cx_session_t. A cx_store_t is thread-safe (its
 *    calls are serialised). A cx_tensor_t is immutable and shareable. cx_set_num_threads may be called from any thread at any time.
 *  - Handles are validated on entry: NULL, already-freed and wrong-kind handles give
 *    CX_STATUS_INVALID_HANDLE (detection of a freed handle is best effort: a new
 *    handle may reuse its address).
 *  - Tensors cross the ABI as DLPack (see cortex_dlpack.h). Inputs may have any
 *    strides (in elements) and byte_offset, must live on the CPU, and may be
 *    float32, float64, float16 or bfloat16: non-float32 data is converted to
 *    float32 (round to nearest even from float64), never reinterpreted. Other
 *    dtypes are refused. Reset masks additionally accept bool, int8..int64 and
 *    uint8..uint64; any non-zero element means "reset this row".
 *
 * The grammar, everywhere:
 *   names        cx_<object>_<action>: objects are model, state, cache, generator,
 *                session, store, spike_stream, tensor; a model's calls name what they
 *                run on (cx_model_forward: a state; cx_model_forward_tokens: a cache;
 *                cx_model_forward_sidecar: a session; cx_model_decode: spike events).
 *                Calls with no handle: cx_config_auto_stack, cx_task_evaluate and the
 *                library's own (cx_last_error, cx_status_name, cx_abi_version,
 *                cx_version_string, cx_set_num_threads, cx_get_num_threads). Enum
 *                values are only ever appended.
 *   lifetime     every handle is made by _create, _load (_load_from_memory), _from_bytes,
 *                _clone or _fork, or is a call's output tensor (forward, step, decode,
 *                get, _from_dlpack), and is released by <object>_free, which accepts
 *                NULL.
 *   getters      infallible library facts return their value (cx_abi_version); a
 *                handle's properties come through out-pointers (cx_state_batch); text
 *                and byte blobs use the size query (buf, cap, needed): *needed gets the
 *                size, and cap too small gives CX_STATUS_BUFFER_TOO_SMALL, buf untouched.
 *   NULL         handle out-pointers (**out) and the values a call exists to return
 *                must not be NULL (CX_STATUS_INVALID_ARGUMENT); in the property
 *                queries cx_model_dims, cx_cache_info, cx_session_info and
 *                cx_spike_stream_info any out-pointer may be NULL: it is skipped.
 *   const        a const handle is not changed by the call.
 *   options      every options struct starts with struct_size and ends with reserved
 *                space (zero); later versions only append fields. A struct from an
 *                older header (at least its ABI v1 size) is accepted, the fields it
 *                lacks taking their defaults; one from a newer header only if the bytes
 *                this library does not know are zero. Get defaults from
 *                cx_<what>_default_options.
 *   status       every call may return CX_STATUS_INVALID_ARGUMENT, _INVALID_HANDLE,
 *                _OUT_OF_MEMORY and _INTERNAL; other codes are named per call.
 */
#ifndef CORTEX_H
#define CORTEX_H

#include <stddef.h>
#include <stdint.h>

#include "cortex_dlpack.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ABI version of this header. Bumped on any incompatible change. */
#define CX_ABI_VERSION 1
/* The library's version: the project's one version source (CMake, the Python package
 * and cx_version_string read it from here). */
#define CX_VERSION "0.1.0"

/* ---------------------------------------------------------------- status -- */

typedef int32_t cx_status;

enum cx_status_code {
  CX_STATUS_OK = 0,
  CX_STATUS_INVALID_ARGUMENT = 1, /* NULL pointer, bad option value, bad path */
  CX_STATUS_INVALID_HANDLE = 2,   /* NULL, freed or wrong-kind handle */
  CX_STATUS_SHAPE_MISMATCH = 3,   /* tensor rank/shape/batch does not fit */
  CX_STATUS_DTYPE_MISMATCH = 4,   /* tensor dtype not accepted */
  CX_STATUS_DEVICE_MISMATCH = 5,  /* tensor not on the CPU */
  CX_STATUS_IO_ERROR = 6,         /* file cannot be read or written */
  CX_STATUS_PARSE_ERROR = 7,      /* malformed JSON, safetensors or state bytes */
  CX_STATUS_UNSUPPORTED = 8,      /* unknown architecture, block or cell type, option, or a value out of range */
  CX_STATUS_MISSING_TENSOR = 9,   /* a weight the config needs is absent or mis-shaped */
  CX_STATUS_STATE_MISMATCH = 10,  /* state belongs to another model, batch or format */
  CX_STATUS_BUFFER_TOO_SMALL = 11,/* the needed size was written to the size out-param */
  CX_STATUS_OUT_OF_MEMORY = 12,
  CX_STATUS_NAN_INPUT = 13,       /* non-finite input refused under CX_NAN_REJECT */
  CX_STATUS_BUSY = 14,            /* the state is in use by another thread */
  CX_STATUS_INTERNAL = 15,        /* a bug in Cortex; please report it */
  CX_STATUS_NOT_FOUND = 16        /* no such session id (in memory or in a store) */
};

/* Human-readable message of the last failed call on this thread. Never NULL; ""
 * after a successful call. Borrowed: valid until this thread's next cx_ call. */
const char *cx_last_error(void);

/* Constant name of a status code, e.g. "CX_STATUS_SHAPE_MISMATCH". Never NULL. */
const char *cx_status_name(cx_status status);

/* ------------------------------------------------------------- library -- */

/* The CX_ABI_VERSION the library was built with. Wrappers refuse a mismatch. */
uint32_t cx_abi_version(void);

/* CX_VERSION of the library as built. Static string, never NULL. */
const char *cx_version_string(void);

/* Threads Cortex splits work over. n >= 1 sets the count (at most 512; larger n is
 * clamped); n <= 0 restores the default: CORTEX_NUM_THREADS when it is a positive
 * integer, else the CPUs this process may use (its affinity mask, capped by its
 * cgroup's CPU quota). Cortex runs its own pool of persistent workers and calls
 * OpenBLAS single-threaded inside each part, so the process never has two pools
 * fighting for cores. Calls on several states at once share the pool: each takes idle
 * workers, at most its share (threads / calls running), and one that finds none runs
 * alone on its caller's thread. Results are bitwise the same for any thread count and
 * split. Waiting workers spin a few microseconds, yield, then sleep: an idle pool costs
 * no CPU. Thread-safe; calls already running keep their split. */
cx_status cx_set_num_threads(int32_t n);
int32_t cx_get_num_threads(void);

/* -------------------------------------------------------------- handles -- */

typedef struct cx_model cx_model_t;   /* a loaded model: immutable, shareable */
typedef struct cx_state cx_state_t;   /* recurrent state of a batch of streams */
typedef struct cx_tensor cx_tensor_t; /* an immutable tensor (output or import) */
typedef struct cx_cache cx_cache_t;   /* KV cache of a batch of sequences (language models) */
typedef struct cx_generator cx_generator_t; /* token-by-token generation (language models) */
typedef struct cx_session cx_session_t; /* sidecar memory of one conversation (sidecars) */
typedef struct cx_store cx_store_t;     /* a SQLite file of saved sessions (sidecars) */
typedef struct cx_spike_stream cx_spike_stream_t; /* a sliding-window spike stream (spike decoders) */

/* ------------------------------------------------------------- options -- */

enum cx_nan_policy {
  CX_NAN_PROPAGATE = 0, /* non-finite inputs flow through like any value */
  CX_NAN_REJECT = 1     /* inputs are scanned; NaN/Inf gives CX_STATUS_NAN_INPUT */
};

enum cx_load_flags {
  /* Hold every nn.Linear weight as INT8, symmetric per output channel (scale = max|row| /
   * 127, round half to even); products compute from the INT8 values directly.
   * Embeddings, norms, convolutions and recurrent kernels stay float32. The model's
   * fingerprint is its file's: states, caches and sessions move between the float32 and
   * the INT8 load of one file. Weights saved as INT8 (<name>.weight_int8 I8 [out, in],
   * <name>.weight_scale [out]) load as INT8 with or without this flag. */
  CX_LOAD_INT8_WEIGHTS = 1,
  /* Refuse weights holding NaN or +-infinity (CX_STATUS_PARSE_ERROR naming the tensor and
   * the index). Each tensor is scanned once as it loads: about the cost of reading it. */
  CX_LOAD_CHECK_WEIGHTS = 2,
  /* Every Axon SRHT (Axon cells, and the AxonLayers inside sLSTM, mLSTM and XL) computes
   * cortexcore's CPU butterfly, [a+b, a], instead of the true Walsh-Hadamard transform,
   * whatever the config says: for models trained with cortexcore on CPU (its CUDA
   * kernel computes the true transform, Cortex's default). States are unchanged. */
  CX_LOAD_SRHT_CPU_REFERENCE = 4
};

typedef struct cx_load_options {
  uint32_t struct_size; /* sizeof(cx_load_options), set by cx_load_default_options */
  int32_t nan_policy;   /* enum cx_nan_policy; default CX_NAN_PROPAGATE */
  uint32_t flags;       /* enum cx_load_flags bits; default 0; unknown bits are refused */
  uint32_t reserved[5]; /* zero */
} cx_load_options;

/* Default options with struct_size filled in. */
cx_load_options cx_load_default_options(void);

/* --------------------------------------------------------------- model -- */

/* Load a model directory holding config.json and model.safetensors.
 * opts may be NULL (defaults). On success *out is caller-owned: free with
 * cx_model_free. */
/* Returns: CX_STATUS_IO_ERROR (no such directory, unreadable file), CX_STATUS_PARSE_ERROR (malformed or mistyped config, malformed safetensors, non-finite weights under CX_LOAD_CHECK_WEIGHTS), CX_STATUS_UNSUPPORTED (unknown architecture or type, a value out of range), CX_STATUS_MISSING_TENSOR, CX_STATUS_DTYPE_MISMATCH (a weight of a non-float dtype). */
cx_status cx_model_load(const char *dir, const cx_load_options *opts, cx_model_t **out);

/* Load from memory: config_json is the text of a config.json (not NUL-terminated
 * necessarily), weights the bytes of a model.safetensors. Both are copied; the
 * caller keeps ownership of its buffers. *out is caller-owned (cx_model_free). */
/* Returns: as cx_model_load, without IO_ERROR. */
cx_status cx_model_load_from_memory(const char *config_json, size_t config_len,
                                    const void *weights, size_t weights_len,
                                    const cx_load_options *opts, cx_model_t **out);

/* The config.json text (NUL-terminated) of an auto-built Column stack: cortexcore
 * 0.1.6's build_cortex_auto_config for the recipe (a JSON object: d_hidden, num_layers,
 * pattern, layers, custom_map, router, post_norm, compile_blocks, overrides; see the
 * README). The config equals cortexcore's own; load it with the PyTorch module's
 * weights through cx_model_load_from_memory. Size-query pattern as cx_model_info_json. */
/* Returns: CX_STATUS_PARSE_ERROR, CX_STATUS_UNSUPPORTED, CX_STATUS_BUFFER_TOO_SMALL. */
cx_status cx_config_auto_stack(const char *recipe_json, size_t recipe_len, char *buf, size_t cap, size_t *needed);

/* Score a trained task model directory (model/, head.safetensors, task.json,
 * testset.safetensors; see scripts/train_tasks.py) on the synthetic task it was trained
 * for. options_json (NULL: {}): {"source": "testset"} (default: the exported test set;
 * the report adds PyTorch's accuracy and the max logit difference) or
 * {"source": "generated", "samples": N, "seed": S} (fresh sequences from Cortex's
 * generator). Writes a NUL-terminated JSON report; size-query pattern as
 * cx_model_info_json. */
/* Returns: CX_STATUS_IO_ERROR, CX_STATUS_PARSE_ERROR, CX_STATUS_UNSUPPORTED, CX_STATUS_BUFFER_TOO_SMALL. */
cx_status cx_task_evaluate(const char *dir, const char *options_json, char *buf, size_t cap, size_t *needed);

/* Release a model. Accepts NULL. States created from it keep it alive. */
void cx_model_free(cx_model_t *model);

/* What a model is. Each kind's calls are in its section below; a call for another kind
 * is refused with CX_STATUS_UNSUPPORTED naming what the model runs on. */
enum cx_kind {
  CX_KIND_STACK = 1,          /* a memory stack: cx_model_forward / cx_model_step with a cx_state_t */
  CX_KIND_LANGUAGE_MODEL = 2, /* OpenMythos: cx_model_forward_tokens, caches, generation */
  CX_KIND_SIDECAR = 3,        /* a memory sidecar: cx_model_forward_sidecar with a cx_session_t */
  CX_KIND_SPIKE_DECODER = 4   /* a spike decoder: cx_model_decode, spike streams */
};

/* The model's enum cx_kind. */
cx_status cx_model_kind(const cx_model_t *model, int32_t *kind);

/* Feature size of the model's input and output (d_hidden for a memory stack). */
cx_status cx_model_dims(const cx_model_t *model, int64_t *d_in, int64_t *d_out);

/* Model description as NUL-terminated JSON (architecture, config, parameter count,
 * fingerprint, state tensor names and shapes per batch row). Size-query pattern:
 * *needed receives the size including the NUL; if cap is too small (buf may then be
 * NULL) nothing is written and CX_STATUS_BUFFER_TOO_SMALL is returned. */
/* Returns: CX_STATUS_BUFFER_TOO_SMALL. */
cx_status cx_model_info_json(const cx_model_t *model, char *buf, size_t cap, size_t *needed);

/* --------------------------------------------------------------- state -- */

/* A fresh zero state for `batch` streams (batch >= 1). Caller-owned: cx_state_free.
 * The state keeps its model alive. */
/* Returns: CX_STATUS_UNSUPPORTED (not a stack). */
cx_status cx_state_create(const cx_model_t *model, int64_t batch, cx_state_t **out);

/* Release a state. Accepts NULL. */
void cx_state_free(cx_state_t *state);

/* Deep copy. Caller-owned: cx_state_free. */
/* Returns: CX_STATUS_BUSY. */
cx_status cx_state_clone(const cx_state_t *state, cx_state_t **out);

/* Number of streams (rows) in the state. */
cx_status cx_state_batch(const cx_state_t *state, int64_t *batch);

/* Zero the rows whose mask element is non-zero. mask: [B], any accepted mask dtype,
 * or NULL to reset every row. */
/* Returns: CX_STATUS_SHAPE_MISMATCH, CX_STATUS_DTYPE_MISMATCH, CX_STATUS_DEVICE_MISMATCH, CX_STATUS_BUSY. */
cx_status cx_state_reset(cx_state_t *state, const DLTensor *mask);

/* Routed adapters (a config with "routed_adapter"; cx_model_info_json lists it): bind
 * stream b to adapter slot ids[b] for every call that follows, until changed. ids: [B]
 * of any integer dtype, values in [0, num_slots). NULL unbinds. cortexcore takes
 * route_ids per call; here they stay with the state, as a stream keeps its slot. A model
 * with require_route_ids (the default) refuses forward/step until ids are bound; without
 * it, unbound streams use slot 0. Refused (CX_STATUS_INVALID_ARGUMENT) for a model
 * without routed adapters. Route ids are not part of cx_state_to_bytes. */
/* Returns: CX_STATUS_SHAPE_MISMATCH, CX_STATUS_DTYPE_MISMATCH, CX_STATUS_DEVICE_MISMATCH, CX_STATUS_BUSY. */
cx_status cx_state_set_route_ids(cx_state_t *state, const DLTensor *ids);

/* The bound route ids: count must equal B; ids[b] receives stream b's slot (0 when
 * unbound) and *is_set 1 if ids are bound, else 0. */
cx_status cx_state_get_route_ids(const cx_state_t *state, int64_t *ids, int64_t count, int32_t *is_set);

/* Copy of the state tensor at `path` (e.g. "PassThroughBlock_0.LSTMCell.h", as
 * listed by cx_model_info_json), shape [B, ...]. Caller-owned: cx_tensor_free. */
/* Returns: CX_STATUS_BUSY. */
cx_status cx_state_get_tensor(const cx_state_t *state, const char *path, cx_tensor_t **out);

/* Overwrite the state tensor at `path` with `value`, which must have exactly its shape
 * [B, ...] (any accepted float dtype and strides; converted to float32). This is how a
 * PyTorch state (the reference's TensorDict, flattened to these paths) is imported, or
 * memory is spliced between streams. On failure the state is unchanged. */
/* Returns: CX_STATUS_SHAPE_MISMATCH, CX_STATUS_DTYPE_MISMATCH, CX_STATUS_DEVICE_MISMATCH, CX_STATUS_BUSY. */
cx_status cx_state_set_tensor(cx_state_t *state, const char *path, const DLTensor *value);

/* Serialize: magic "CXSTATE1", format version, model fingerprint, batch, then the
 * tensors. Size-query pattern as cx_model_info_json (buf may be NULL when cap is 0). */
/* Returns: CX_STATUS_BUFFER_TOO_SMALL, CX_STATUS_BUSY. */
cx_status cx_state_to_bytes(const cx_state_t *state, void *buf, size_t cap, size_t *needed);

/* Rebuild a state from cx_state_to_bytes output. A blob from another model
 * (fingerprint), another format version or a damaged blob is refused before any
 * byte is used. Caller-owned: cx_state_free. */
/* Returns: CX_STATUS_PARSE_ERROR (a damaged blob, or non-finite values under CX_NAN_REJECT), CX_STATUS_STATE_MISMATCH (another model or format). */
cx_status cx_state_from_bytes(const cx_model_t *model, const void *buf, size_t len, cx_state_t **out);

/* The same through a file (written atomically: temp file then rename). */
/* Returns: CX_STATUS_IO_ERROR, CX_STATUS_BUSY. */
cx_status cx_state_save(const cx_state_t *state, const char *path);
/* Returns: CX_STATUS_IO_ERROR, CX_STATUS_PARSE_ERROR, CX_STATUS_STATE_MISMATCH. */
cx_status cx_state_load(const cx_model_t *model, const char *path, cx_state_t **out);

/* ------------------------------------------------------------- compute -- */

/* Sequence mode. x: [B, T, D_in]; resets: NULL, [B, T] (reset row b before step t)
 * or [B] (reset those rows before the first step). On success *y (caller-owned,
 * cx_tensor_free) is float32 [B, T, D_out] and `state` holds the state after the
 * last step. On failure the state is untouched. T may be 0. */
/* Returns: CX_STATUS_SHAPE_MISMATCH, CX_STATUS_DTYPE_MISMATCH, CX_STATUS_DEVICE_MISMATCH, CX_STATUS_NAN_INPUT (CX_NAN_REJECT), CX_STATUS_STATE_MISMATCH (a state of another model), CX_STATUS_UNSUPPORTED (not a stack), CX_STATUS_BUSY. */
cx_status cx_model_forward(const cx_model_t *model, cx_state_t *state, const DLTensor *x,
                           const DLTensor *resets, cx_tensor_t **y);

/* Step mode. x: [B, D_in]; resets: NULL or [B]. *y: float32 [B, D_out]. */
/* Returns: as cx_model_forward. */
cx_status cx_model_step(const cx_model_t *model, cx_state_t *state, const DLTensor *x,
                        const DLTensor *resets, cx_tensor_t **y);

/* As above, writing into a caller buffer instead of allocating: y must be a
 * writable float32 CPU tensor of the output shape (any strides, no overlap with x).
 * cx_model_step_into performs no heap allocation after the state's first step. */
/* Returns: as cx_model_forward. */
cx_status cx_model_forward_into(const cx_model_t *model, cx_state_t *state, const DLTensor *x,
                                const DLTensor *resets, DLTensor *y);
/* Returns: as cx_model_forward. */
cx_status cx_model_step_into(const cx_model_t *model, cx_state_t *state, const DLTensor *x,
                             const DLTensor *resets, DLTensor *y);

/* ----------------------------------------- language models (open_mythos) -- */

/* An "architecture": "open_mythos" model (open-mythos' OpenMythos, exported with
 * cx.export) reads token ids and writes logits; it has no recurrent state
 * (cx_state_create refuses it) and cx_model_dims reports (vocab, vocab). Token ids are
 * DLTensors [B, T] of any integer dtype, each in [0, vocab_size). */

/* An empty KV cache for `batch` sequences. Caller-owned: cx_cache_free; keeps its model
 * alive. One thread at a time (a concurrent call gets CX_STATUS_BUSY). Each attention
 * layer holds the tokens it has seen in pages of 64 tokens (a block table per
 * sequence; growing never copies), up to max_seq_len (a call that would pass it fails
 * with CX_STATUS_INVALID_ARGUMENT). */
/* Returns: CX_STATUS_UNSUPPORTED (not a language model). */
cx_status cx_cache_create(const cx_model_t *model, int64_t batch, cx_cache_t **out);

/* A second cache continuing from the same tokens, sharing every page copy-on-write: a
 * page is copied only when one of the two writes into a page both hold (when decoding,
 * the last, partly filled page of the shared prefix), so forking a long prompt costs
 * no memory until the branches diverge. Both are independent caches afterwards (each
 * one thread at a time; the two may be used from different threads). Caller-owned:
 * cx_cache_free, in any order. *pages_shared (may be NULL) gets the number of pages the
 * fork shares with `cache`. */
cx_status cx_cache_fork(const cx_cache_t *cache, cx_cache_t **out, int64_t *pages_shared);

/* Release a cache. Accepts NULL. */
void cx_cache_free(cx_cache_t *cache);

/* Its batch size and position (the end position of the latest call: start_pos + T). */
cx_status cx_cache_info(const cx_cache_t *cache, int64_t *batch, int64_t *position);

/* Serialize ("CXKVCAC1", version, model fingerprint, batch, position, per-layer keys;
 * size-query pattern as cx_state_to_bytes) and rebuild (refused for another model or
 * a damaged blob). */
/* Returns: CX_STATUS_BUFFER_TOO_SMALL, CX_STATUS_BUSY. */
cx_status cx_cache_to_bytes(const cx_cache_t *cache, void *buf, size_t cap, size_t *needed);
/* Returns: CX_STATUS_PARSE_ERROR, CX_STATUS_STATE_MISMATCH. */
cx_status cx_cache_from_bytes(const cx_model_t *model, const void *buf, size_t len, cx_cache_t **out);

/* Logits of ids [B, T]: *logits is float32 [B, T, vocab] (caller-owned). n_loops: the
 * recurrent depth (0: max_loop_iters; deeper than trained is allowed). cache: NULL for a
 * self-contained forward (ACT may stop the loop once every position halted), or a
 * cache of B sequences: the call's keys are appended (every loop runs). start_pos: the
 * position of ids[:, 0], or -1 for the cache's position (0 without a cache);
 * start_pos + T must not exceed max_seq_len. Queries attend causally to the cache and
 * to the call's earlier tokens. On failure the cache is unchanged. */
/* Returns: CX_STATUS_SHAPE_MISMATCH, CX_STATUS_DTYPE_MISMATCH, CX_STATUS_DEVICE_MISMATCH, CX_STATUS_STATE_MISMATCH (a cache of another model), CX_STATUS_UNSUPPORTED (not a language model), CX_STATUS_BUSY. */
cx_status cx_model_forward_tokens(const cx_model_t *model, const DLTensor *ids, int32_t n_loops, cx_cache_t *cache,
                        int64_t start_pos, cx_tensor_t **logits);

typedef struct cx_generate_options {
  uint32_t struct_size; /* sizeof(cx_generate_options), set by cx_generate_default_options */
  int32_t n_loops;      /* recurrent depth per call; 0: max_loop_iters */
  float temperature;    /* 0: greedy (argmax, first maximum on ties); else logits / temperature */
  int32_t top_k;        /* keep logits >= the k-th largest (ties kept); 0: all */
  uint64_t seed;        /* SplitMix64 seed of the sampler */
  int64_t eos_token;    /* a sequence that emits it stops (then repeats it); -1: none */
  uint64_t reserved[4]; /* zero */
} cx_generate_options;

/* Defaults: greedy, max_loop_iters, no top-k, seed 0, no EOS. */
cx_generate_options cx_generate_default_options(void);

/* Sampling (temperature > 0), per sequence in batch order: top-k filter, softmax of
 * logits / temperature in double precision, one uniform u = (x >> 11) * 2^-53 from the
 * generator's SplitMix64 stream (x its next 64-bit output), and the first token whose
 * cumulative probability exceeds u. Same seed, same tokens. */

/* A generator over prompt [B, T]: its own cache; the first cx_generator_next runs the
 * prompt, each later one feeds the previous tokens back. Caller-owned:
 * cx_generator_free. opts may be NULL (defaults). One thread at a time. */
/* Returns: CX_STATUS_SHAPE_MISMATCH, CX_STATUS_DTYPE_MISMATCH, CX_STATUS_DEVICE_MISMATCH, CX_STATUS_UNSUPPORTED. */
cx_status cx_generator_create(const cx_model_t *model, const DLTensor *prompt, const cx_generate_options *opts,
                              cx_generator_t **out);
void cx_generator_free(cx_generator_t *gen);

/* The next token of each sequence into tokens[count] (count must be B); *done is 1 once
 * every sequence has emitted eos_token. */
/* Returns: CX_STATUS_SHAPE_MISMATCH (count is not the batch), CX_STATUS_BUSY. */
cx_status cx_generator_next(cx_generator_t *gen, int64_t *tokens, int64_t count, int32_t *done);

/* Called after each generated step with the B new tokens; return non-zero to stop. */
typedef int32_t (*cx_token_callback)(void *user, int64_t step, const int64_t *tokens, int64_t batch);

/* Generate up to max_new_tokens per sequence (stopping early when every sequence hit
 * eos_token or the callback asks). out (may be NULL with out_count 0): int64
 * [B, T + max_new_tokens], the prompt then the tokens, padded with eos_token (or 0)
 * after an early stop; *generated receives the number of steps run. */
/* Returns: CX_STATUS_SHAPE_MISMATCH, CX_STATUS_DTYPE_MISMATCH, CX_STATUS_DEVICE_MISMATCH, CX_STATUS_UNSUPPORTED. */
cx_status cx_model_generate(const cx_model_t *model, const DLTensor *prompt, int64_t max_new_tokens,
                      const cx_generate_options *opts, cx_token_callback callback, void *user, int64_t *out,
                      int64_t out_count, int64_t *generated);

/* ------------------------------------------------ memory sidecars (cortex_sidecar) -- */

/* An "architecture": "cortex_sidecar" model holds the sidecars of the hooked layers of
 * a host transformer (a Gated-DeltaNet hybrid or a low-rank fast
 * weights). The host adds the sidecar's output to its layer: h <- h + Attn(LN1 h) +
 * Sidecar(LN1 h), then the MLP. cx_model_dims reports (d_model, d_model); it has no
 * recurrent state (cx_state_create refuses it): its memory lives in sessions. */

/* A fresh session (one conversation, or `batch` parallel streams) named `id` (1..256
 * bytes of UTF-8, no control characters). Caller-owned: cx_session_free; keeps its
 * model alive. Its memory is fixed at creation, constant in the tokens seen. One
 * thread at a time (a concurrent call gets CX_STATUS_BUSY); a failed call leaves the
 * session unchanged. */
/* Returns: CX_STATUS_UNSUPPORTED (not a sidecar). */
cx_status cx_session_create(const cx_model_t *model, const char *id, int64_t batch, cx_session_t **out);

/* Release a session. Accepts NULL. */
void cx_session_free(cx_session_t *session);

/* Batch size, tokens seen (the most of any stream, counted at the first hooked layer)
 * and the bytes of memory it holds. */
cx_status cx_session_info(const cx_session_t *session, int64_t *batch, int64_t *tokens, int64_t *bytes);

/* Its id, NUL-terminated (size-query pattern). */
/* Returns: CX_STATUS_BUFFER_TOO_SMALL. */
cx_status cx_session_id(const cx_session_t *session, char *buf, size_t cap, size_t *needed);

/* Reset the streams where mask[b] != 0 (mask: [B], any integer or bool dtype; NULL:
 * all) to a fresh state: memory, signals and segments. */
cx_status cx_session_reset(cx_session_t *session, const DLTensor *mask);

/* A deep copy named `id` (caller-owned); the original is unchanged. */
cx_status cx_session_fork(const cx_session_t *session, const char *id, cx_session_t **out);

/* Serialize ("CXSESS01", version, sidecar fingerprint, batch, every state tensor,
 * signals, segments, checksum; size-query pattern) and rebuild (refused for another
 * sidecar or a damaged blob). id: NULL keeps the saved id. */
/* Returns: CX_STATUS_BUFFER_TOO_SMALL, CX_STATUS_BUSY. */
cx_status cx_session_to_bytes(const cx_session_t *session, void *buf, size_t cap, size_t *needed);
/* Returns: CX_STATUS_PARSE_ERROR, CX_STATUS_STATE_MISMATCH. */
cx_status cx_session_from_bytes(const cx_model_t *model, const void *buf, size_t len, const char *id,
                                cx_session_t **out);

/* A copy of state tensor `name` of hooked layer `layer`, float32 [B, n] (caller-owned).
 * GDN: conv_q, conv_k, conv_v, S, win_k, win_v, win_n; fast weights: U, V. */
cx_status cx_session_get_state(const cx_session_t *session, int32_t layer, const char *name, cx_tensor_t **out);

/* The sidecar output of host layer `layer` for its normalised hidden states h
 * (float32 [B, T, D] or, one decode step, [B, D]), advancing the session's memory of
 * that layer: *y has h's shape (caller-owned). Sequence mode runs the delta rule
 * chunkwise, step mode recurrently. signals (fast weights only; NULL: the input
 * cx_session_observe set): the controller inputs [surprise, uncertainty, reward,
 * phase] as [B, T, 4] / [B, 4]. Errors (unhooked layer, wrong shape or dtype, a
 * session of another model) change nothing. */
/* Returns: CX_STATUS_SHAPE_MISMATCH, CX_STATUS_DTYPE_MISMATCH, CX_STATUS_DEVICE_MISMATCH, CX_STATUS_NAN_INPUT, CX_STATUS_STATE_MISMATCH, CX_STATUS_UNSUPPORTED, CX_STATUS_BUSY. */
cx_status cx_model_forward_sidecar(const cx_model_t *model, int32_t layer, const DLTensor *h, cx_session_t *session,
                             const DLTensor *signals, cx_tensor_t **y);

/* As above into a caller buffer: y must be a writable float32 CPU tensor of h's shape. */
/* Returns: as cx_model_forward_sidecar. */
cx_status cx_model_forward_sidecar_into(const cx_model_t *model, int32_t layer, const DLTensor *h,
                                  cx_session_t *session, const DLTensor *signals, DLTensor *y);

/* Advance the plasticity signals of a fast-weight session by one token per stream
 * (inference-time surprise): loss = losses[b], or -log softmax(logits[b])
 * [tokens[b]] (logits: float32 [B, V]; tokens: integers [B], the tokens that followed);
 * uncertainty = entropy of softmax(logits[b]) in nats (0 without logits); rewards: [B]
 * or NULL (0). Then ema = d*ema + (1-d)*loss (starting at the first loss), surprise =
 * loss - ema, phase = sin(2*pi*step/period): the controller input of the next tokens.
 * The segmenter opens a segment when surprise > 1.2*ema and closes it when surprise <
 * 1.05*ema (config segment_open / segment_close). */
/* Returns: CX_STATUS_SHAPE_MISMATCH, CX_STATUS_DTYPE_MISMATCH, CX_STATUS_DEVICE_MISMATCH, CX_STATUS_NAN_INPUT, CX_STATUS_BUSY. */
cx_status cx_session_observe(cx_session_t *session, const DLTensor *logits, const DLTensor *tokens,
                             const DLTensor *losses, const DLTensor *rewards);

/* The controller input of each stream's next tokens, float32 [B, 4] (caller-owned). */
cx_status cx_session_signals(const cx_session_t *session, cx_tensor_t **out);

/* Closed segments of stream `stream` (the latest 64 are kept), and segment `index`
 * (0 = oldest kept): its first and last token, the mean and variance of the hidden
 * states the hooked layers saw over it (float32 [L * D], layer-major), and the change
 * of every layer's U and V over it (float32, layers concatenated). Handles are
 * caller-owned. */
cx_status cx_session_segment_count(const cx_session_t *session, int64_t stream, int64_t *count);
cx_status cx_session_segment(const cx_session_t *session, int64_t stream, int64_t index, int64_t *start, int64_t *end,
                             cx_tensor_t **h_mean, cx_tensor_t **h_var, cx_tensor_t **delta_u,
                             cx_tensor_t **delta_v);

typedef struct cx_store_options {
  uint32_t struct_size; /* sizeof(cx_store_options), set by cx_store_default_options */
  uint32_t reserved;    /* 0 */
  double ttl_seconds;   /* a session not saved or loaded for this long expires; 0: never */
  int64_t max_bytes;    /* past this total, least recently used sessions are evicted; 0: no cap */
  uint64_t reserved2[4]; /* zero */
} cx_store_options;

/* Defaults: no TTL, no size cap. */
cx_store_options cx_store_default_options(void);

/* Open (or create) a session store: one SQLite database file in WAL mode. A save is
 * one transaction, so a process killed mid-save leaves the previous session intact.
 * Caller-owned: cx_store_free. Thread-safe (calls are serialised); several processes
 * may share the file. opts may be NULL (defaults). */
/* Returns: CX_STATUS_IO_ERROR. */
cx_status cx_store_create(const char *path, const cx_store_options *opts, cx_store_t **out);
void cx_store_free(cx_store_t *store);

/* Save (insert or replace) a session under its id. */
/* Returns: CX_STATUS_IO_ERROR. */
cx_status cx_store_save(cx_store_t *store, const cx_session_t *session);

/* The session saved under id, for model (refused, CX_STATUS_STATE_MISMATCH, when another
 * sidecar saved it); CX_STATUS_NOT_FOUND when there is none or it expired. */
/* Returns: CX_STATUS_NOT_FOUND, CX_STATUS_IO_ERROR, CX_STATUS_PARSE_ERROR, CX_STATUS_STATE_MISMATCH. */
cx_status cx_store_load(cx_store_t *store, const cx_model_t *model, const char *id, cx_session_t **out);

/* Delete a saved session; *existed (may be NULL) tells whether it was there. */
/* Returns: CX_STATUS_IO_ERROR. */
cx_status cx_store_delete(cx_store_t *store, const char *id, int32_t *existed);

/* The live sessions as a JSON array of {"id", "bytes", "fingerprint", "updated",
 * "accessed"} (seconds since the epoch), most recently used first (size-query pattern). */
/* Returns: CX_STATUS_IO_ERROR, CX_STATUS_BUFFER_TOO_SMALL. */
cx_status cx_store_list_json(cx_store_t *store, char *buf, size_t cap, size_t *needed);

/* Delete expired sessions now; *removed (may be NULL) gets their number. */
cx_status cx_store_purge_expired(cx_store_t *store, int64_t *removed);

/* ----------------------------------------- spike decoders (spike_decoder) -- */

/* Hand velocity for B requests of spike events (the Perceiver decoder; stateless,
 * safe to call from several threads on one model). Events are packed without padding:
 * neuron_ids, time_bins, values are 1-D [E] of any integer dtype (strides honoured),
 * offsets is 1-D [B + 1] (request b owns events offsets[b] .. offsets[b+1]-1; it starts
 * at 0, ends at E and never decreases). Ids must lie inside the config's tables
 * (max_neurons, max_time_bins, spike_value_buckets): anything else is refused,
 * CX_STATUS_INVALID_ARGUMENT naming the event. A request with no events gets the
 * decoder's prediction from its latents alone. *velocity is float32 [B, behavior_dim]
 * (caller-owned). */
/* Returns: CX_STATUS_SHAPE_MISMATCH, CX_STATUS_DTYPE_MISMATCH, CX_STATUS_DEVICE_MISMATCH, CX_STATUS_UNSUPPORTED (not a spike decoder). */
cx_status cx_model_decode(const cx_model_t *model, const DLTensor *neuron_ids, const DLTensor *time_bins,
                    const DLTensor *values, const DLTensor *offsets, cx_tensor_t **velocity);

/* Streaming: one stride of events at a time, the last window decoded after each.
 * A stream keeps its window's cross-attention keys/values in fixed-size pages (64
 * events each) from its own bounded pool: each stride computes them only for its new
 * events, and a page returns to the pool once all its events have left the window. The
 * result equals cx_model_decode on the window's events with time_bin = bin - window start
 * (the newest bin is window_bins - 1; before a full window has passed, the bins before
 * the stream began are empty), to float rounding. Memory is bounded by
 * max_window_events. One thread at a time (a concurrent call: CX_STATUS_BUSY). */
typedef struct cx_spike_stream_options {
  uint32_t struct_size;      /* sizeof(cx_spike_stream_options), set by cx_spike_stream_default_options */
  uint32_t reserved;         /* 0 */
  int64_t window_bins;       /* bins per window, <= max_time_bins (default 120: 600 ms of 5 ms bins) */
  int64_t stride_bins;       /* bins per step, <= window_bins (default 10: 50 ms) */
  int64_t max_window_events; /* events a window may hold; a step past it is refused (default 8192) */
  uint64_t reserved2[4];     /* zero */
} cx_spike_stream_options;

/* Defaults: window 120 bins, stride 10 bins, at most 8192 events per window. */
cx_spike_stream_options cx_spike_stream_default_options(void);

/* A new stream at bin 0 for a spike_decoder model (the
 * stream holds what it needs of it: freeing the model first is safe). opts may be NULL
 * (defaults). Caller-owned: cx_spike_stream_free. */
/* Returns: CX_STATUS_UNSUPPORTED (not a spike decoder). */
cx_status cx_spike_stream_create(const cx_model_t *model, const cx_spike_stream_options *opts,
                               cx_spike_stream_t **out);
void cx_spike_stream_free(cx_spike_stream_t *stream);

/* Append one stride of events and decode the window that ends with it. neuron_ids,
 * time_bins, values: 1-D [E] integers (E may be 0); time_bins count from the stride's
 * start, in [0, stride_bins). *velocity: float32 [1, behavior_dim] (caller-owned). A
 * refused step (ids out of range, too many events) leaves the stream unchanged. */
/* Returns: CX_STATUS_SHAPE_MISMATCH, CX_STATUS_DTYPE_MISMATCH, CX_STATUS_DEVICE_MISMATCH, CX_STATUS_BUSY. */
cx_status cx_spike_stream_step(cx_spike_stream_t *stream, const DLTensor *neuron_ids, const DLTensor *time_bins,
                               const DLTensor *values, cx_tensor_t **velocity);

/* Forget every event and restart at bin 0 (the pages go back to the pool). */
cx_status cx_spike_stream_reset(cx_spike_stream_t *stream);

/* Bins seen so far, events in the current window, pages in use and the bytes the
 * stream's pages hold. Out-pointers may be NULL. */
cx_status cx_spike_stream_info(const cx_spike_stream_t *stream, int64_t *bins, int64_t *events, int64_t *pages,
                               int64_t *page_bytes);

/* -------------------------------------------------------------- tensor -- */

/* Borrowed DLTensor view of a tensor, valid while the handle lives. */
cx_status cx_tensor_view(const cx_tensor_t *tensor, const DLTensor **view);

/* Export as DLPack 1.x. *out is caller-owned: call (*out)->deleter(*out) exactly
 * once, from any thread, also after cx_tensor_free. Each call makes a new managed
 * tensor sharing the same memory. Cortex never writes an output buffer again, so
 * exports of outputs are writable (flags = 0); exports of imported tensors keep
 * the producer's READ_ONLY flag. */
/* Returns: CX_STATUS_OUT_OF_MEMORY. */
cx_status cx_tensor_to_dlpack(const cx_tensor_t *tensor, DLManagedTensorVersioned **out);

/* Export as legacy DLPack 0.6 (DLManagedTensor), same contract. */
/* Returns: as cx_tensor_to_dlpack. */
cx_status cx_tensor_to_dlpack_legacy(const cx_tensor_t *tensor, DLManagedTensor **out);

/* Import a producer's DLPack tensor. Takes ownership of `managed` whatever the
 * status: its deleter is called exactly once (immediately on failure, otherwise
 * when the last reference is released). Checks version.major == 1 first. The data
 * is not copied; *out (caller-owned, cx_tensor_free) is a handle whose view can be
 * passed as an input. */
/* Returns: CX_STATUS_DTYPE_MISMATCH, CX_STATUS_DEVICE_MISMATCH. */
cx_status cx_tensor_from_dlpack(DLManagedTensorVersioned *managed, cx_tensor_t **out);
/* Returns: as cx_tensor_from_dlpack. */
cx_status cx_tensor_from_dlpack_legacy(DLManagedTensor *managed, cx_tensor_t **out);

/* Release a tensor handle. Accepts NULL. DLPack exports stay valid. */
void cx_tensor_free(cx_tensor_t *tensor);

#ifdef __cplusplus
}
#endif
#endif /* CORTEX_H */
