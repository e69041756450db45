// fastgan::gather_scale under the Autograd key: a fallthrough (the batch gather: no gradient), so a call on
// tensors that require grad needs no detach() and raises no missing-autograd warning.
#include <torch/library.h>

TORCH_LIBRARY_IMPL(fastgan, Autograd, m) {
  m.impl("gather_scale", torch::CppFunction::makeFallthrough());
}
