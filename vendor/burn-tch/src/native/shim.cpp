// LibTorch operations tch 0.22 does not expose, for the native backward passes of this
// patched burn-tch. Tensors cross as `at::Tensor*` (what tch's `C_tensor` points to); results
// are new heap tensors the Rust side owns. Exceptions become an error message (malloc'd, freed
// by the caller with `free`), never an unwind across the C boundary.
#include <ATen/ATen.h>

#include <array>
#include <cstdlib>
#include <cstring>
#include <exception>

extern "C" {

static char* ktrack_error(const std::exception& e) { return strdup(e.what()); }

// at::convolution_backward for an N-d convolution (not transposed). `mask` picks which of
// (input, weight, bias) gradients to compute; the ones not asked for come back null.
char* ktrack_convolution_backward(at::Tensor* grad_output, at::Tensor* input, at::Tensor* weight,
                                  int64_t bias_size, const int64_t* stride,
                                  const int64_t* padding, const int64_t* dilation, int64_t dims,
                                  int64_t groups, int mask_input, int mask_weight, int mask_bias,
                                  at::Tensor** out) {
  try {
    std::array<bool, 3> mask = {mask_input != 0, mask_weight != 0, mask_bias != 0};
    std::vector<int64_t> zeros(dims, 0);
    std::vector<int64_t> bias_sizes = {bias_size};
    auto grads = at::convolution_backward(
        *grad_output, *input, *weight,
        bias_size >= 0 ? at::OptionalIntArrayRef(bias_sizes) : at::OptionalIntArrayRef(),
        at::IntArrayRef(stride, dims), at::IntArrayRef(padding, dims),
        at::IntArrayRef(dilation, dims), false, at::IntArrayRef(zeros), groups, mask);
    out[0] = mask[0] ? new at::Tensor(std::get<0>(grads)) : nullptr;
    out[1] = mask[1] ? new at::Tensor(std::get<1>(grads)) : nullptr;
    out[2] = mask[2] ? new at::Tensor(std::get<2>(grads)) : nullptr;
    return nullptr;
  } catch (const std::exception& e) {
    return ktrack_error(e);
  }
}

// at::native_batch_norm_backward in training mode: gradients of input, weight (gamma) and bias
// (beta), from the batch's mean and inverse standard deviation.
char* ktrack_batch_norm_backward(at::Tensor* grad_output, at::Tensor* input, at::Tensor* weight,
                                 at::Tensor* save_mean, at::Tensor* save_invstd, double eps,
                                 at::Tensor** out) {
  try {
    auto grads = at::native_batch_norm_backward(*grad_output, *input, *weight, std::nullopt,
                                                std::nullopt, *save_mean, *save_invstd, true, eps,
                                                {true, true, true});
    out[0] = new at::Tensor(std::get<0>(grads));
    out[1] = new at::Tensor(std::get<1>(grads));
    out[2] = new at::Tensor(std::get<2>(grads));
    return nullptr;
  } catch (const std::exception& e) {
    return ktrack_error(e);
  }
}

// One AdamW step of one parameter with LibTorch's fused kernel (`_fused_adamw_`: a single
// pass over parameter, gradient and both moments, on the CPU and on CUDA). The moments are
// updated in place; the parameter is updated in a copy returned in `out`, so tensors that
// share the old parameter's storage keep their values. `step` is the step number after this
// one (1 for the first).
char* ktrack_fused_adamw(at::Tensor* param, at::Tensor* grad, at::Tensor* exp_avg,
                         at::Tensor* exp_avg_sq, int64_t step, double lr, double beta1,
                         double beta2, double weight_decay, double eps, at::Tensor** out) {
  try {
    auto p = param->clone(at::MemoryFormat::Contiguous);
    auto g = grad->contiguous();
    auto steps = at::full({}, static_cast<double>(step),
                          at::TensorOptions().dtype(at::kFloat).device(p.device()));
    // The kernel walks the four tensors in one order: all contiguous. Moments that are not
    // (none ktrack makes) are updated in contiguous copies and copied back.
    auto m = exp_avg->contiguous(), v = exp_avg_sq->contiguous();
    std::vector<at::Tensor> ps = {p}, gs = {g}, ms = {m}, vs = {v}, ss = {steps};
    at::_fused_adamw_(ps, gs, ms, vs, {}, ss, lr, beta1, beta2, weight_decay, eps, false, false);
    if (!m.is_same(*exp_avg)) exp_avg->copy_(m);
    if (!v.is_same(*exp_avg_sq)) exp_avg_sq->copy_(v);
    out[0] = new at::Tensor(p);
    return nullptr;
  } catch (const std::exception& e) {
    return ktrack_error(e);
  }
}

}  // extern "C"
