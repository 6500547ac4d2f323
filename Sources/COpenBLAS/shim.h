// OpenBLAS's CBLAS interface; the include path comes from `pkg-config openblas`.
#include <cblas.h>
// Not in every cblas.h: OpenBLAS's own thread controls.
void openblas_set_num_threads(int num_threads);
int openblas_get_num_threads(void);
