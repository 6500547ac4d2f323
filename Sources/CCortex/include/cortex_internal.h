/* Internal helpers shared by the Swift ABI layer; not part of the public header. */
#ifndef CORTEX_INTERNAL_H
#define CORTEX_INTERNAL_H
#include <stddef.h>

/* Store the thread-local message returned by cx_last_error (truncated to fit). */
void cxk_internal_set_error(const char *message, size_t length);
void cxk_internal_clear_error(void);

#endif
