// stream.cpp — the C example (examples/c/stream.c) with the C++ wrapper cortex.hpp.
//
//   cortex_stream_cpp [MODEL_DIR] [BATCH] [STEPS]
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <sys/stat.h>
#include <vector>

#include "cortex.hpp"

int main(int argc, char **argv) {
  std::string dir = argc > 1 ? argv[1] : "examples/models/lstm_stack";
#ifdef CORTEX_EXAMPLE_MODEL_DIR
  struct stat st;
  if (argc <= 1 && stat(dir.c_str(), &st) != 0) dir = CORTEX_EXAMPLE_MODEL_DIR;
#endif
  const int64_t batch = argc > 2 ? std::atoll(argv[2]) : 4;
  const long steps = argc > 3 ? std::atol(argv[3]) : 1000;
  if (batch < 1 || steps < 1) {
    std::fprintf(stderr, "usage: %s [MODEL_DIR] [BATCH>=1] [STEPS>=1]\n", argv[0]);
    return 2;
  }
  try {
    const cortex::Model model = cortex::Model::load(dir);
    std::printf("cortex %s, model %s\nmodel info: %s\n", cortex::version().c_str(), dir.c_str(),
                model.info_json().c_str());
    cortex::State state = model.new_state(batch);
    const int64_t d_in = model.d_in(), d_out = model.d_out();
    std::vector<float> x(static_cast<size_t>(batch * d_in)), y(static_cast<size_t>(batch * d_out));
    const auto xv = cortex::TensorView::of(x, {batch, d_in});
    const auto yv = cortex::TensorView::of(y, {batch, d_out});

    double busy = 0;
    for (long t = 0; t < steps; ++t) {
      for (int64_t b = 0; b < batch; ++b)
        for (int64_t i = 0; i < d_in; ++i)
          x[static_cast<size_t>(b * d_in + i)] = static_cast<float>(std::sin(0.05 * t + 0.3 * i + 1.7 * b));
      const auto t0 = std::chrono::steady_clock::now();
      model.step_into(state, xv, yv);
      busy += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      if (t < 3 || t == steps - 1) std::printf("step %5ld: y[0][0] = % .6f\n", t, y[0]);
    }
    std::printf("%ld steps x %lld streams: %.0f steps/s\n", steps, static_cast<long long>(batch), steps / busy);

    // A state snapshot round trip, and a deliberate error to show the exception.
    const std::vector<uint8_t> snapshot = state.to_bytes();
    cortex::State restored = model.state_from_bytes(snapshot);
    std::printf("state snapshot: %zu bytes, batch %lld\n", snapshot.size(), static_cast<long long>(restored.batch()));
    try {
      std::vector<float> wrong(static_cast<size_t>(batch * (d_in + 1)));
      model.step_into(state, cortex::TensorView::of(wrong, {batch, d_in + 1}), yv);
    } catch (const cortex::Error &e) {
      std::printf("expected error: %s: %s\n", e.status_name(), e.what());
    }
  } catch (const cortex::Error &e) {
    std::fprintf(stderr, "error: %s: %s\n", e.status_name(), e.what());
    return 1;
  }
  return 0;
}
