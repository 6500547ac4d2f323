/*
 * cortex_dlpack.h — the DLPack structures Cortex exchanges, self-contained.
 *
 * Cortex speaks DLPack 1.x (versioned managed tensors) and the legacy 0.6 layout
 * (DLManagedTensor). The core structs (DLDevice, DLDataType, DLTensor) have the same
 * layout in both. If <dlpack/dlpack.h> (any version) was included first, its
 * definitions are used and only what it lacks is added here; otherwise this header
 * declares them itself, layout-identical to dlpack.h v1.1.
 */
#ifndef CORTEX_DLPACK_H
#define CORTEX_DLPACK_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#if !defined(DLPACK_VERSION) && !defined(DLPACK_MAJOR_VERSION)
/* No dlpack.h seen: declare the core structs (identical layout in 0.6 and 1.x). */
typedef enum {
  kDLCPU = 1,
  kDLCUDA = 2,
  kDLCUDAHost = 3,
  kDLOpenCL = 4,
  kDLVulkan = 7,
  kDLMetal = 8,
  kDLVPI = 9,
  kDLROCM = 10,
  kDLROCMHost = 11,
  kDLExtDev = 12,
  kDLCUDAManaged = 13,
  kDLOneAPI = 14,
  kDLWebGPU = 15,
  kDLHexagon = 16
} DLDeviceType;

typedef struct {
  DLDeviceType device_type;
  int32_t device_id;
} DLDevice;

typedef enum {
  kDLInt = 0U,
  kDLUInt = 1U,
  kDLFloat = 2U,
  kDLOpaqueHandle = 3U,
  kDLBfloat = 4U,
  kDLComplex = 5U,
  kDLBool = 6U
} DLDataTypeCode;

typedef struct {
  uint8_t code;
  uint8_t bits;
  uint16_t lanes;
} DLDataType;

typedef struct {
  void *data;
  DLDevice device;
  int32_t ndim;
  DLDataType dtype;
  int64_t *shape;
  int64_t *strides; /* in elements; NULL means compact row-major */
  uint64_t byte_offset;
} DLTensor;

typedef struct DLManagedTensor {
  DLTensor dl_tensor;
  void *manager_ctx;
  void (*deleter)(struct DLManagedTensor *self);
} DLManagedTensor;
#endif /* core structs */

#ifndef DLPACK_MAJOR_VERSION
/* The versioned (1.x) structs are absent from dlpack.h 0.6 (Debian's libdlpack-dev). */
#define CX_DLPACK_MAJOR_VERSION 1
#define CX_DLPACK_MINOR_VERSION 1

typedef struct {
  uint32_t major;
  uint32_t minor;
} DLPackVersion;

#define DLPACK_FLAG_BITMASK_READ_ONLY (1UL << 0UL)
#define DLPACK_FLAG_BITMASK_IS_COPIED (1UL << 1UL)

typedef struct DLManagedTensorVersioned {
  DLPackVersion version;
  void *manager_ctx;
  void (*deleter)(struct DLManagedTensorVersioned *self);
  uint64_t flags;
  DLTensor dl_tensor;
} DLManagedTensorVersioned;
#else
#define CX_DLPACK_MAJOR_VERSION DLPACK_MAJOR_VERSION
#define CX_DLPACK_MINOR_VERSION DLPACK_MINOR_VERSION
#endif

/* dlpack.h 0.6 lacks kDLBool; Cortex accepts code 6 as bool either way. */
#define CX_DLPACK_CODE_BOOL 6

#ifdef __cplusplus
}
#endif
#endif /* CORTEX_DLPACK_H */
