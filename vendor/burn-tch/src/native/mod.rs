//! Native LibTorch backward passes (added to upstream burn-tch; see `../README.md` of the
//! vendor folder): convolution gradients through `at::convolution_backward` (cuDNN's
//! backward-data and backward-filter on CUDA, oneDNN on the CPU) instead of burn's default of a
//! transposed convolution for the input and a forward convolution for the weight; training-mode
//! BatchNorm's through `at::native_batch_norm_backward`; ReLU's through `threshold_backward`;
//! and AdamW's step through the fused `_fused_adamw_`.
//!
//! The shim is compiled when LibTorch's headers are found at build time (the `native_ops`
//! cfg); without them the convolution gradients fall back to burn's defaults, as upstream.

thread_local! {
    static BF16: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Sets whether this thread computes convolutions (forward and backward) and matrix products
/// in bfloat16, with float32 inputs and outputs: weights, optimizer state, BatchNorm and every
/// other op stay in float32. Returns the previous setting. Like PyTorch's autocast, the
/// setting is per thread.
pub fn set_bf16_compute(on: bool) -> bool {
    BF16.with(|c| c.replace(on))
}

/// Whether this thread computes convolutions and matrix products in bfloat16.
pub fn bf16_compute() -> bool {
    BF16.with(|c| c.get())
}

/// `t` in bfloat16 when this thread computes in bfloat16 and `t` is float32; else `t`.
pub(crate) fn lower(t: &tch::Tensor) -> tch::Tensor {
    if bf16_compute() && t.kind() == tch::Kind::Float {
        t.to_kind(tch::Kind::BFloat16)
    } else {
        t.shallow_clone()
    }
}

/// `t` back in `kind` (the kind of the operation's float32 input).
pub(crate) fn raise(t: tch::Tensor, kind: tch::Kind) -> tch::Tensor {
    if t.kind() == kind { t } else { t.to_kind(kind) }
}

/// True when the native convolution backward is compiled in.
pub fn native_backward() -> bool {
    cfg!(native_ops)
}

#[cfg(native_ops)]
mod ffi {
    use std::ffi::{c_char, c_int, c_void};

    unsafe extern "C" {
        pub fn ktrack_convolution_backward(
            grad_output: *mut c_void,
            input: *mut c_void,
            weight: *mut c_void,
            bias_size: i64,
            stride: *const i64,
            padding: *const i64,
            dilation: *const i64,
            dims: i64,
            groups: i64,
            mask_input: c_int,
            mask_weight: c_int,
            mask_bias: c_int,
            out: *mut *mut c_void,
        ) -> *mut c_char;

        pub fn ktrack_batch_norm_backward(
            grad_output: *mut c_void,
            input: *mut c_void,
            weight: *mut c_void,
            save_mean: *mut c_void,
            save_invstd: *mut c_void,
            eps: f64,
            out: *mut *mut c_void,
        ) -> *mut c_char;

        #[allow(clippy::too_many_arguments)]
        pub fn ktrack_fused_adamw(
            param: *mut c_void,
            grad: *mut c_void,
            exp_avg: *mut c_void,
            exp_avg_sq: *mut c_void,
            step: i64,
            lr: f64,
            beta1: f64,
            beta2: f64,
            weight_decay: f64,
            eps: f64,
            out: *mut *mut c_void,
        ) -> *mut c_char;
    }
}

/// AdamW's hyper-parameters (decoupled weight decay; `eps` added to the bias-corrected
/// second moment's square root).
#[derive(Clone, Copy, Debug)]
pub struct AdamW {
    /// Learning rate.
    pub lr: f64,
    /// Decay of the first moment.
    pub beta1: f64,
    /// Decay of the second moment.
    pub beta2: f64,
    /// Decoupled weight decay (the parameter is multiplied by `1 - lr * weight_decay`).
    pub weight_decay: f64,
    /// Added to the square root of the bias-corrected second moment.
    pub eps: f64,
}

/// One AdamW step of one parameter through LibTorch's fused kernel: returns the new
/// parameter (a new tensor) and updates the moments `exp_avg`, `exp_avg_sq` in place. `step`
/// counts this step (1 for the first). `None` when the shim is not compiled in.
#[cfg(not(native_ops))]
pub fn fused_adamw(
    _param: &tch::Tensor,
    _grad: &tch::Tensor,
    _exp_avg: &tch::Tensor,
    _exp_avg_sq: &tch::Tensor,
    _step: i64,
    _h: AdamW,
) -> Option<tch::Tensor> {
    None
}

/// One AdamW step of one parameter through LibTorch's fused kernel (see above).
#[cfg(native_ops)]
pub fn fused_adamw(
    param: &tch::Tensor,
    grad: &tch::Tensor,
    exp_avg: &tch::Tensor,
    exp_avg_sq: &tch::Tensor,
    step: i64,
    h: AdamW,
) -> Option<tch::Tensor> {
    let mut out: [*mut std::ffi::c_void; 3] = [std::ptr::null_mut(); 3];
    // SAFETY: as for `convolution_backward`; the shim writes one owned result into `out[0]`.
    let err = unsafe {
        ffi::ktrack_fused_adamw(
            param.as_ptr() as *mut _,
            grad.as_ptr() as *mut _,
            exp_avg.as_ptr() as *mut _,
            exp_avg_sq.as_ptr() as *mut _,
            step,
            h.lr,
            h.beta1,
            h.beta2,
            h.weight_decay,
            h.eps,
            out.as_mut_ptr(),
        )
    };
    let [param, _, _] = owned("_fused_adamw_", err, out);
    Some(param.expect("the fused step returns the parameter"))
}

/// The geometry of a (non-transposed) convolution.
pub struct Conv<'a> {
    pub stride: &'a [i64],
    pub padding: &'a [i64],
    pub dilation: &'a [i64],
    pub groups: i64,
}

/// Gradients of a convolution for the inputs `mask` asks for: (input, weight, bias).
#[cfg(native_ops)]
pub fn convolution_backward(
    grad_output: &tch::Tensor,
    input: &tch::Tensor,
    weight: &tch::Tensor,
    bias_size: Option<i64>,
    conv: &Conv<'_>,
    mask: [bool; 3],
) -> [Option<tch::Tensor>; 3] {
    let mut out: [*mut std::ffi::c_void; 3] = [std::ptr::null_mut(); 3];
    // SAFETY: the pointers are live tch tensors (`at::Tensor*`) borrowed for the call; the
    // shim writes three owned results (or null) into `out`, or returns an error message it
    // allocated with malloc.
    let err = unsafe {
        ffi::ktrack_convolution_backward(
            grad_output.as_ptr() as *mut _,
            input.as_ptr() as *mut _,
            weight.as_ptr() as *mut _,
            bias_size.unwrap_or(-1),
            conv.stride.as_ptr(),
            conv.padding.as_ptr(),
            conv.dilation.as_ptr(),
            conv.stride.len() as i64,
            conv.groups,
            mask[0].into(),
            mask[1].into(),
            mask[2].into(),
            out.as_mut_ptr(),
        )
    };
    owned("convolution_backward", err, out)
}

/// Gradients of a training-mode batch norm: (input, gamma, beta).
#[cfg(native_ops)]
pub fn batch_norm_backward(
    grad_output: &tch::Tensor,
    input: &tch::Tensor,
    weight: &tch::Tensor,
    save_mean: &tch::Tensor,
    save_invstd: &tch::Tensor,
    eps: f64,
) -> [tch::Tensor; 3] {
    let mut out: [*mut std::ffi::c_void; 3] = [std::ptr::null_mut(); 3];
    // SAFETY: as for `convolution_backward`.
    let err = unsafe {
        ffi::ktrack_batch_norm_backward(
            grad_output.as_ptr() as *mut _,
            input.as_ptr() as *mut _,
            weight.as_ptr() as *mut _,
            save_mean.as_ptr() as *mut _,
            save_invstd.as_ptr() as *mut _,
            eps,
            out.as_mut_ptr(),
        )
    };
    owned("native_batch_norm_backward", err, out)
        .map(|t| t.expect("every batch-norm gradient is computed"))
}

/// The shim's results as owned tensors, or a panic with its error message (LibTorch errors are
/// bugs here: shapes were checked by the forward pass).
#[cfg(native_ops)]
fn owned(
    what: &str,
    err: *mut std::ffi::c_char,
    out: [*mut std::ffi::c_void; 3],
) -> [Option<tch::Tensor>; 3] {
    if !err.is_null() {
        // SAFETY: a NUL-terminated message from strdup, freed once here.
        let message = unsafe { std::ffi::CStr::from_ptr(err) }
            .to_string_lossy()
            .into_owned();
        unsafe { libc::free(err.cast()) };
        panic!("{what} failed: {message}");
    }
    // SAFETY: each non-null pointer is a heap `at::Tensor` the shim handed over.
    out.map(|p| (!p.is_null()).then(|| unsafe { tch::Tensor::from_ptr(p.cast()) }))
}
