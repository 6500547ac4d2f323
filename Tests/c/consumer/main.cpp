// Downstream C++ program using the installed header-only wrapper cortex.hpp.
#include <cortex.hpp>

#include <iostream>
#include <vector>

int main(int argc, char **argv) {
  if (argc < 2) {
    std::cerr << "usage: " << argv[0] << " MODEL_DIR\n";
    return 2;
  }
  try {
    cortex::Model model = cortex::Model::load(argv[1]);
    cortex::State state = model.new_state(1);
    std::vector<float> x(static_cast<size_t>(model.d_in()), 0.5f);
    std::vector<float> y(static_cast<size_t>(model.d_out()));
    model.step_into(state, cortex::TensorView::of(x, {1, model.d_in()}),
                    cortex::TensorView::of(y, {1, model.d_out()}));
    std::cout << "cortex " << cortex::version() << ": y[0]=" << y[0] << "\n";
  } catch (const cortex::Error &e) {
    std::cerr << "error: " << e.what() << "\n";
    return 1;
  }
  return 0;
}
