/* Downstream C program built against an installed Cortex (CMake or pkg-config). */
#include <stdio.h>

#include <cortex.h>

int main(int argc, char **argv) {
  cx_model_t *model = NULL;
  int64_t d_in = 0, d_out = 0;
  if (argc < 2) {
    fprintf(stderr, "usage: %s MODEL_DIR\n", argv[0]);
    return 2;
  }
  if (cx_abi_version() != CX_ABI_VERSION) {
    fprintf(stderr, "ABI mismatch: header %d, library %u\n", CX_ABI_VERSION, (unsigned)cx_abi_version());
    return 1;
  }
  if (cx_model_load(argv[1], NULL, &model) != CX_STATUS_OK ||
      cx_model_dims(model, &d_in, &d_out) != CX_STATUS_OK) {
    fprintf(stderr, "error: %s\n", cx_last_error());
    return 1;
  }
  printf("cortex %s: d_in=%lld d_out=%lld\n", cx_version_string(), (long long)d_in, (long long)d_out);
  cx_model_free(model);
  return 0;
}
