//! Native LibTorch backward passes (added to upstream burn-tch; see `../README.md` of the
//! vendor folder): convolution gradients through `at::convolution_backward` (cuDNN's
//! backward-data and backward-filter on CUDA, oneDNN on the CPU) instead of burn's default of a
//! transposed convolution for the input and a forward convolution for the weight; training-mode
//! BatchNorm's through `at::native_batch_norm_backward`; ReLU's through `threshold_backward`.
//!
//! The shim is compiled when LibTorch's headers are found at build time (the `native_ops`
//! cfg); without them the convolution gradients fall back to burn's defaults, as upstream.

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
    }
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
