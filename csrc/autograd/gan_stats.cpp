// fastgan::gan_stats under the Autograd key: a fallthrough (the iteration's metrics: no gradient), so a call on
// tensors that require grad needs no detach() and raises no missing-autograd warning.
#include <torch/library.h>

TORCH_LIBRARY_IMPL(fastgan, Autograd, m) {
  m.impl("gan_stats", torch::CppFunction::makeFallthrough());
}
