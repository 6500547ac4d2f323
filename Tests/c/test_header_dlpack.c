/*
 * test_header_dlpack.c — <dlpack/dlpack.h> (Debian's DLPack 0.6) included BEFORE
 * cortex.h: the two must coexist (cortex_dlpack.h reuses dlpack.h's core structs and
 * adds only the versioned 1.x ones), with the same layouts.
 */
#ifdef CORTEX_HAVE_DLPACK_H
#include <dlpack/dlpack.h>
#endif

#include "cortex.h"

#include <stddef.h>
#include <stdio.h>

#define STATIC_ASSERT(cond, name) typedef char static_assert_dlpack_##name[(cond) ? 1 : -1]

#ifdef CORTEX_HAVE_DLPACK_H
/* dlpack.h was really seen first, and it is the 0.x one that lacks the versioned structs. */
STATIC_ASSERT(DLPACK_VERSION > 0, dlpack_seen);
#endif
STATIC_ASSERT(offsetof(DLManagedTensorVersioned, version) == 0, versioned_version);
STATIC_ASSERT(offsetof(DLManagedTensorVersioned, manager_ctx) == 8, versioned_manager_ctx);
STATIC_ASSERT(offsetof(DLManagedTensorVersioned, deleter) == 16, versioned_deleter);
STATIC_ASSERT(offsetof(DLManagedTensorVersioned, flags) == 24, versioned_flags);
STATIC_ASSERT(offsetof(DLManagedTensorVersioned, dl_tensor) == 32, versioned_dl_tensor);
STATIC_ASSERT(sizeof(DLTensor) == 48, dltensor_size);
STATIC_ASSERT(offsetof(DLTensor, byte_offset) == 40, dltensor_byte_offset);
STATIC_ASSERT(offsetof(DLManagedTensor, manager_ctx) == 48, legacy_manager_ctx);
STATIC_ASSERT(offsetof(DLManagedTensor, deleter) == 56, legacy_deleter);
STATIC_ASSERT(CX_DLPACK_MAJOR_VERSION == 1, dlpack_major);

static int deleted = 0;
static void legacy_deleter(DLManagedTensor *self) {
  (void)self;
  deleted++;
}

/* Use dlpack.h's types with Cortex's functions: the prototypes must accept them. */
int dlpack_tu_check(void) {
  int failures = 0;
  float data[2] = {1.0f, 2.0f};
  int64_t shape[1] = {2};
  DLManagedTensor m;
  cx_tensor_t *t = NULL;
  const DLTensor *view = NULL;
  m.dl_tensor.data = data;
  m.dl_tensor.device.device_type = kDLCPU;
  m.dl_tensor.device.device_id = 0;
  m.dl_tensor.ndim = 1;
  m.dl_tensor.dtype.code = kDLFloat;
  m.dl_tensor.dtype.bits = 32;
  m.dl_tensor.dtype.lanes = 1;
  m.dl_tensor.shape = shape;
  m.dl_tensor.strides = NULL;
  m.dl_tensor.byte_offset = 0;
  m.manager_ctx = NULL;
  m.deleter = legacy_deleter;
  if (cx_tensor_from_dlpack_legacy(&m, &t) != CX_STATUS_OK || cx_tensor_view(t, &view) != CX_STATUS_OK ||
      view->data != data || view->shape[0] != 2) {
    printf("FAIL: legacy import through dlpack.h's DLManagedTensor: %s\n", cx_last_error());
    failures++;
  }
  cx_tensor_free(t);
  if (deleted != 1) {
    printf("FAIL: the producer's deleter ran %d times, want 1\n", deleted);
    failures++;
  }
#ifdef CORTEX_HAVE_DLPACK_H
  printf("dlpack.h (DLPACK_VERSION %d) + cortex.h (DLPack %d.%d): coexist\n", DLPACK_VERSION,
         CX_DLPACK_MAJOR_VERSION, CX_DLPACK_MINOR_VERSION);
#endif
  return failures;
}
