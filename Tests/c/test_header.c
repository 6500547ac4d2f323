/*
 * test_header.c — cortex.h on its own: a C99 translation unit that includes only
 * cortex.h compiles with -Wall -Wextra -Werror -pedantic; the DLPack structs it
 * declares have the dlpack.h v1.1 layout; the library matches the header.
 * test_header_dlpack.c is the second translation unit (<dlpack/dlpack.h> first).
 */
#include "cortex.h"

/* Nothing else before this point: the header is self-contained. */
#include <stddef.h>
#include <stdio.h>
#include <string.h>

/* C99 has no _Static_assert: a negative array size is the compile-time error. */
#define STATIC_ASSERT(cond, name) typedef char static_assert_##name[(cond) ? 1 : -1]

/* DLManagedTensorVersioned (DLPack 1.x) on LP64. */
STATIC_ASSERT(offsetof(DLManagedTensorVersioned, version) == 0, versioned_version);
STATIC_ASSERT(offsetof(DLManagedTensorVersioned, manager_ctx) == 8, versioned_manager_ctx);
STATIC_ASSERT(offsetof(DLManagedTensorVersioned, deleter) == 16, versioned_deleter);
STATIC_ASSERT(offsetof(DLManagedTensorVersioned, flags) == 24, versioned_flags);
STATIC_ASSERT(offsetof(DLManagedTensorVersioned, dl_tensor) == 32, versioned_dl_tensor);
STATIC_ASSERT(sizeof(DLManagedTensorVersioned) == 32 + 48, versioned_size);
STATIC_ASSERT(sizeof(DLPackVersion) == 8, version_size);
/* The core structs (identical in DLPack 0.6 and 1.x). */
STATIC_ASSERT(sizeof(DLTensor) == 48, dltensor_size);
STATIC_ASSERT(offsetof(DLTensor, data) == 0, dltensor_data);
STATIC_ASSERT(offsetof(DLTensor, device) == 8, dltensor_device);
STATIC_ASSERT(offsetof(DLTensor, ndim) == 16, dltensor_ndim);
STATIC_ASSERT(offsetof(DLTensor, dtype) == 20, dltensor_dtype);
STATIC_ASSERT(offsetof(DLTensor, shape) == 24, dltensor_shape);
STATIC_ASSERT(offsetof(DLTensor, strides) == 32, dltensor_strides);
STATIC_ASSERT(offsetof(DLTensor, byte_offset) == 40, dltensor_byte_offset);
STATIC_ASSERT(sizeof(DLDevice) == 8, dldevice_size);
STATIC_ASSERT(sizeof(DLDataType) == 4, dldatatype_size);
STATIC_ASSERT(offsetof(DLManagedTensor, dl_tensor) == 0, legacy_dl_tensor);
STATIC_ASSERT(offsetof(DLManagedTensor, manager_ctx) == 48, legacy_manager_ctx);
STATIC_ASSERT(offsetof(DLManagedTensor, deleter) == 56, legacy_deleter);
STATIC_ASSERT(sizeof(DLManagedTensor) == 64, legacy_size);
/* Enum values are part of the ABI and only ever appended. */
STATIC_ASSERT(CX_STATUS_OK == 0 && CX_STATUS_INVALID_ARGUMENT == 1 && CX_STATUS_INVALID_HANDLE == 2, status_a);
STATIC_ASSERT(CX_STATUS_SHAPE_MISMATCH == 3 && CX_STATUS_DTYPE_MISMATCH == 4 && CX_STATUS_DEVICE_MISMATCH == 5,
              status_b);
STATIC_ASSERT(CX_STATUS_IO_ERROR == 6 && CX_STATUS_PARSE_ERROR == 7 && CX_STATUS_UNSUPPORTED == 8, status_c);
STATIC_ASSERT(CX_STATUS_MISSING_TENSOR == 9 && CX_STATUS_STATE_MISMATCH == 10 &&
                  CX_STATUS_BUFFER_TOO_SMALL == 11, status_d);
STATIC_ASSERT(CX_STATUS_OUT_OF_MEMORY == 12 && CX_STATUS_NAN_INPUT == 13 && CX_STATUS_BUSY == 14 &&
                  CX_STATUS_INTERNAL == 15 && CX_STATUS_NOT_FOUND == 16, status_e);
STATIC_ASSERT(CX_NAN_PROPAGATE == 0 && CX_NAN_REJECT == 1, nan_policy);
STATIC_ASSERT(kDLCPU == 1 && kDLCUDA == 2 && kDLFloat == 2 && kDLBfloat == 4 && CX_DLPACK_CODE_BOOL == 6, dl_enums);
/* Options structs: struct_size first, reserved space last, no padding holes. */
STATIC_ASSERT(sizeof(cx_load_options) == 32 && offsetof(cx_load_options, nan_policy) == 4 &&
              offsetof(cx_load_options, reserved) == 12, load_options);
STATIC_ASSERT(sizeof(cx_generate_options) == 64 && offsetof(cx_generate_options, reserved) == 32, generate_options);
STATIC_ASSERT(sizeof(cx_store_options) == 56 && offsetof(cx_store_options, reserved2) == 24, store_options);
STATIC_ASSERT(sizeof(cx_spike_stream_options) == 64 && offsetof(cx_spike_stream_options, reserved2) == 32,
              spike_stream_options);
STATIC_ASSERT(CX_DLPACK_MAJOR_VERSION == 1, dlpack_major);
STATIC_ASSERT(sizeof(cx_status) == 4, status_size);

/* Defined in test_header_dlpack.c (the TU that includes <dlpack/dlpack.h> first). */
int dlpack_tu_check(void);

static const char *const status_names[] = {
    "CX_STATUS_OK",           "CX_STATUS_INVALID_ARGUMENT", "CX_STATUS_INVALID_HANDLE", "CX_STATUS_SHAPE_MISMATCH",
    "CX_STATUS_DTYPE_MISMATCH", "CX_STATUS_DEVICE_MISMATCH", "CX_STATUS_IO_ERROR",      "CX_STATUS_PARSE_ERROR",
    "CX_STATUS_UNSUPPORTED",  "CX_STATUS_MISSING_TENSOR", "CX_STATUS_STATE_MISMATCH", "CX_STATUS_BUFFER_TOO_SMALL",
    "CX_STATUS_OUT_OF_MEMORY", "CX_STATUS_NAN_INPUT",      "CX_STATUS_BUSY",           "CX_STATUS_INTERNAL",
    "CX_STATUS_NOT_FOUND"};

int main(void) {
  int failures = 0;
  cx_status s;
  cx_load_options o;

  if (cx_abi_version() != CX_ABI_VERSION) {
    printf("FAIL: cx_abi_version() = %u, header says %d\n", (unsigned)cx_abi_version(), CX_ABI_VERSION);
    failures++;
  }
  if (cx_version_string() == NULL || strcmp(cx_version_string(), CORTEX_EXPECTED_VERSION) != 0) {
    printf("FAIL: cx_version_string() = '%s', CMake project version is %s\n",
           cx_version_string() ? cx_version_string() : "(NULL)", CORTEX_EXPECTED_VERSION);
    failures++;
  }
  for (s = 0; s <= CX_STATUS_NOT_FOUND; ++s) {
    if (strcmp(cx_status_name(s), status_names[s]) != 0) {
      printf("FAIL: cx_status_name(%d) = '%s', want '%s'\n", (int)s, cx_status_name(s), status_names[s]);
      failures++;
    }
  }
  if (cx_status_name(-1) == NULL || cx_status_name(9999) == NULL) {
    printf("FAIL: cx_status_name of an unknown code is NULL\n");
    failures++;
  }
  if (cx_last_error() == NULL || cx_last_error()[0] != '\0') {
    printf("FAIL: cx_last_error() before any failure is not \"\"\n");
    failures++;
  }
  o = cx_load_default_options();
  if (o.struct_size != sizeof(cx_load_options) || o.nan_policy != CX_NAN_PROPAGATE || o.flags != 0) {
    printf("FAIL: cx_load_default_options() = {%u, %d, %u}\n", (unsigned)o.struct_size, (int)o.nan_policy,
           (unsigned)o.flags);
    failures++;
  }
  failures += dlpack_tu_check();
  printf("test_header: %s (%d failures)\n", failures ? "FAILED" : "ok", failures);
  return failures ? 1 : 0;
}
