/* Thread-local storage behind cx_last_error(). Kept in C: one static buffer per
 * thread, no allocation, never NULL. */
#include <string.h>

#include "cortex.h"
#include "cortex_internal.h"

#define CX_ERROR_CAPACITY 2048

static _Thread_local char cx_error_buffer[CX_ERROR_CAPACITY];

void cxk_internal_set_error(const char *message, size_t length) {
  if (message == NULL) {
    cx_error_buffer[0] = '\0';
    return;
  }
  if (length >= CX_ERROR_CAPACITY) {
    length = CX_ERROR_CAPACITY - 1;
  }
  memcpy(cx_error_buffer, message, length);
  cx_error_buffer[length] = '\0';
}

void cxk_internal_clear_error(void) { cx_error_buffer[0] = '\0'; }

const char *cx_last_error(void) { return cx_error_buffer; }

const char *cx_version_string(void) { return CX_VERSION; }

const char *cx_status_name(cx_status status) {
  switch (status) {
    case CX_STATUS_OK: return "CX_STATUS_OK";
    case CX_STATUS_INVALID_ARGUMENT: return "CX_STATUS_INVALID_ARGUMENT";
    case CX_STATUS_INVALID_HANDLE: return "CX_STATUS_INVALID_HANDLE";
    case CX_STATUS_SHAPE_MISMATCH: return "CX_STATUS_SHAPE_MISMATCH";
    case CX_STATUS_DTYPE_MISMATCH: return "CX_STATUS_DTYPE_MISMATCH";
    case CX_STATUS_DEVICE_MISMATCH: return "CX_STATUS_DEVICE_MISMATCH";
    case CX_STATUS_IO_ERROR: return "CX_STATUS_IO_ERROR";
    case CX_STATUS_PARSE_ERROR: return "CX_STATUS_PARSE_ERROR";
    case CX_STATUS_UNSUPPORTED: return "CX_STATUS_UNSUPPORTED";
    case CX_STATUS_MISSING_TENSOR: return "CX_STATUS_MISSING_TENSOR";
    case CX_STATUS_STATE_MISMATCH: return "CX_STATUS_STATE_MISMATCH";
    case CX_STATUS_BUFFER_TOO_SMALL: return "CX_STATUS_BUFFER_TOO_SMALL";
    case CX_STATUS_OUT_OF_MEMORY: return "CX_STATUS_OUT_OF_MEMORY";
    case CX_STATUS_NAN_INPUT: return "CX_STATUS_NAN_INPUT";
    case CX_STATUS_BUSY: return "CX_STATUS_BUSY";
    case CX_STATUS_INTERNAL: return "CX_STATUS_INTERNAL";
    case CX_STATUS_NOT_FOUND: return "CX_STATUS_NOT_FOUND";
    default: return "CX_STATUS_UNKNOWN";
  }
}
